"""How fast the CLI answers when it has no real work to do: --help, usage errors, and light
commands on a stopped devnet. Each command is run as a user runs it (a fresh `flchain`
process), wall clock from spawn to exit, median of several runs. Goal: under 1 s each.

Usage: python benchmarks/bench_cli.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _report import machine, write_section

from flchain.devnet.manifest import SUMMARY_FILE

FLCHAIN = [sys.executable, "-m", "flchain.cli"]
GOAL_S = 1.0
COMMANDS: tuple[tuple[str, list[str]], ...] = (
    ("flchain --help", ["--help"]),
    ("flchain -V", ["-V"]),
    ("flchain devnet --help", ["devnet", "--help"]),
    ("flchain devnet up --help", ["devnet", "up", "--help"]),
    ("flchain devnet up --nodes 0 (usage error)", ["devnet", "up", "--nodes", "0"]),
    ("flchain devnet status --dir MISSING", ["devnet", "status", "--dir", "{missing}"]),
    ("flchain devnet logs --dir MISSING 0", ["devnet", "logs", "--dir", "{missing}", "0"]),
    ("flchain simulate --help", ["simulate", "--help"]),
    ("flchain node --help", ["node", "--help"]),
    ("flchain node run --help", ["node", "run", "--help"]),
    ("flchain ledger --help", ["ledger", "--help"]),
    ("flchain ledger rounds --help", ["ledger", "rounds", "--help"]),
    ("flchain task create --help", ["task", "create", "--help"]),
    ("flchain chain serve --help", ["chain", "serve", "--help"]),
)


def _time(args: list[str], before: Callable[[], None] | None = None) -> float:
    if before is not None:
        before()
    start = time.perf_counter()
    subprocess.run([*FLCHAIN, *args], capture_output=True, check=False, timeout=120)
    return time.perf_counter() - start


# Light commands on a 5-round devnet: while its chain runs (2 logreg nodes on the same cores) and
# once it has stopped (the ledger replays its chain journal in the command; `devnet status` shows
# the summary `devnet down` saved, or replays the journal too when there is none).
ON_DEVNET: tuple[tuple[str, list[str]], ...] = (
    ("flchain devnet status (running devnet)", ["devnet", "status", "--dir", "{dir}"]),
    ("flchain devnet logs 0 (running devnet)", ["devnet", "logs", "--dir", "{dir}", "0"]),
    ("flchain node status (running node)", ["node", "status", "--dir", "{dir}/node-0"]),
    ("flchain ledger rounds (running devnet)", ["ledger", "rounds", "--devnet", "{dir}"]),
)
AFTER_DEVNET: tuple[tuple[str, list[str]], ...] = (
    ("flchain devnet status (stopped devnet)", ["devnet", "status", "--dir", "{dir}"]),
    ("flchain ledger rounds (stopped devnet)", ["ledger", "rounds", "--devnet", "{dir}"]),
)
REPLAYED = (
    (
        "flchain devnet status (stopped devnet, no saved summary: journal replayed)",
        ["devnet", "status", "--dir", "{dir}"],
    ),
)
DEVNET = ["--nodes", "2", "--rounds", "5", "--model", "logreg", "--rule", "fedavg"]


def _measure(
    commands: tuple[tuple[str, list[str]], ...],
    runs: int,
    before: Callable[[], None] | None = None,
    **values: str,
) -> list:
    """Each command's median time; `before` runs ahead of every run, outside the clock."""
    rows = []
    for label, template in commands:
        args = [a.format(**values) for a in template]
        _time(args, before)  # warm the file cache
        median = statistics.median(_time(args, before) for _ in range(runs))
        rows.append((label, median))
        print(f"{label}: {median:.2f} s", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    with tempfile.TemporaryDirectory() as tmp:
        rows = _measure(COMMANDS, runs, missing=str(Path(tmp) / "no-such-devnet"))
        devnet = str(Path(tmp) / "devnet")
        up = [*FLCHAIN, "devnet", "up", "--dir", devnet, "--detach", *DEVNET]
        subprocess.run(up, capture_output=True, check=True, timeout=300)
        try:
            rows += _measure(ON_DEVNET, runs, dir=devnet)
        finally:
            subprocess.run([*FLCHAIN, "devnet", "down", "--dir", devnet], capture_output=True)
        rows += _measure(AFTER_DEVNET, runs, dir=devnet)
        saved = Path(devnet) / SUMMARY_FILE
        rows += _measure(REPLAYED, runs, before=lambda: saved.unlink(missing_ok=True), dir=devnet)
    lines = [
        "## CLI response time",
        "",
        "`make bench-cli` (`python benchmarks/bench_cli.py`): each command as a fresh "
        f"`python -m flchain.cli` process, wall clock from spawn to exit, median of {runs} runs "
        f"after one warm-up; goal under {GOAL_S:g} s. The devnet rows run against a "
        "`devnet up --detach` of 2 logreg nodes and 5 rounds on the same cores, then against it "
        "stopped (the ledger replays its chain journal in the command; `devnet status` shows "
        f"the summary `devnet down` saved). On {machine()}.",
        "",
        "| command | seconds | under 1 s |",
        "|---|---:|:---:|",
    ]
    lines += [f"| `{label}` | {s:.2f} | {'yes' if s < GOAL_S else 'no'} |" for label, s in rows]
    lines += [
        "",
        "`devnet status` glances at the chain with `contracts/views.py` (eth_abi over urllib); "
        "the `ledger` commands read the whole ledger, views and every event, through web3, whose "
        "import (eth-account, and eth-keyfile's BLS constants) is 0.6-0.75 s of their time. On a "
        "stopped devnet the ledger replays the chain journal in py-evm; `devnet status` shows the "
        "summary `devnet down` saved, and replays only when there is none (last row).",
    ]
    print(f"wrote {write_section('cli', chr(10).join(lines))}")


if __name__ == "__main__":
    main()
