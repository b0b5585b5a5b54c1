"""Fuzz every surface that parses outside input, 10,000 generated inputs each (`make fuzz`).

Runs the suite's property-based fuzz tests (tests/test_fuzz_*.py) with a larger example count,
collects what each surface saw (inputs, accepted, rejections by reason, crashes) and writes the
table to docs/benchmarks.md. Exit status 1 when any surface crashed or a test failed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import machine, write_section

ROOT = Path(__file__).resolve().parents[1]


def run_surface(test_file: Path, examples: int) -> tuple[list[dict], float, int]:
    """Run one fuzz test file; its report rows, wall-clock seconds and pytest's exit code."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "fuzz.jsonl"
        env = dict(os.environ, FLCHAIN_FUZZ_EXAMPLES=str(examples), FLCHAIN_FUZZ_REPORT=str(report))
        started = time.perf_counter()
        code = subprocess.call(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)],
            cwd=ROOT,
            env=env,
        )
        seconds = time.perf_counter() - started
        rows = (
            [json.loads(line) for line in report.read_text().splitlines()]
            if report.exists()
            else []
        )
    return rows, seconds, code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=10_000, help="inputs per surface")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()

    lines = [
        "## Fuzzing (hypothesis)",
        "",
        f"`make fuzz` ({machine()}): {args.examples:,} generated inputs per surface (split "
        "over its properties), every surface that parses bytes from a peer or a client. A "
        "crash is any exception other than the surface's declared rejection, or a server "
        "that stops answering.",
        "",
        "| surface | inputs | accepted | rejected (by reason) | crashes | wall clock |",
        "|---|---:|---:|---|---:|---:|",
    ]
    failed = False
    for test_file in sorted((ROOT / "tests").glob("test_fuzz_*.py")):
        rows, seconds, code = run_surface(test_file, args.examples)
        failed |= code != 0
        if not rows:
            lines.append(
                f"| {test_file.stem} | - | - | no report (pytest exit {code}) | - | "
                f"{seconds:.0f} s |"
            )
            failed = True
            continue
        for row in rows:
            reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(row["rejected"].items())) or "-"
            failed |= row["crashes"] != 0
            lines.append(
                f"| {row['surface']} | {row['inputs']:,} | {row['accepted']:,} | {reasons} | "
                f"{row['crashes']} | {seconds:.0f} s |"
            )
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        print(f"written to {write_section('fuzz', text)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
