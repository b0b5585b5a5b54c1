"""Where a devnet round's time goes: train, commit, gossip, fetch, aggregate, vote and finalize,
for N = 4, 8 and 16 node processes on this machine, and the share of round time that is not
training. Each size runs `flchain devnet up` (py-evm chain, CNN on digits, Multi-Krum)
and reads every node's per-step timers from its final status.

    python benchmarks/bench_devnet.py [--sizes 4 8 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:
    from benchmarks._report import machine, write_section
except ModuleNotFoundError:  # run as a script
    from _report import machine, write_section

STEPS = ("train", "commit", "gossip", "wait", "fetch", "aggregate", "vote", "finalize")


def run_devnet(nodes: int, rounds: int, workdir: Path) -> tuple[dict, float]:
    started = time.perf_counter()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "flchain.cli",
            "devnet",
            "up",
            "--dir",
            str(workdir),
            "--nodes",
            str(nodes),
            "--rounds",
            str(rounds),
            "--rule",
            "multikrum",
            "--json",
            "--submit-window",
            "300",
            "--vote-window",
            "300",
        ],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if result.returncode != 0:
        raise SystemExit(f"devnet with {nodes} nodes failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout), time.perf_counter() - started


def split(summary: dict, rounds: int) -> dict[str, float]:
    """Median over nodes of seconds per round in each step."""
    per_step = {}
    for step in STEPS:
        values = [
            n["metrics"].get("round_seconds_total", {}).get(step, 0.0) / rounds
            for n in summary["nodes"]
        ]
        per_step[step] = statistics.median(values)
    return per_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory(prefix=f"bench-devnet-{n}-") as tmp:
            summary, wall = run_devnet(n, args.rounds, Path(tmp))
        rounds = summary["rounds"]
        assert all(r["status"] == "finalized" for r in rounds), rounds
        durations = [r["finalized_at"] - r["start"] for r in rounds]
        steps = split(summary, args.rounds)
        round_time = statistics.median(durations)
        not_training = 1 - steps["train"] / round_time if round_time else float("nan")
        rows.append((n, round_time, steps, not_training, wall))
        print(
            f"N={n}: round {round_time:.1f}s, "
            + ", ".join(f"{k} {v:.2f}s" for k, v in steps.items())
            + f", not training {not_training:.0%}",
            flush=True,
        )
    lines = [
        "## Devnet round time split",
        "",
        f"`make bench-devnet` (`python benchmarks/bench_devnet.py`): `flchain devnet up` with "
        f"N node processes, {args.rounds} rounds, CNN on digits, Multi-Krum, py-evm chain, "
        f"all on this one machine ({machine()}). Round time is the chain's (finalization "
        "timestamp minus round start, median over rounds; block timestamps have 1 s "
        "resolution). Steps are each node's own timers, seconds per round, median over nodes: "
        "*train* local training, *commit* the submit transaction, *gossip* the announcement, "
        "*wait* until every member committed (the slowest peer's training), "
        "*fetch* getting every committed update from peers, *aggregate* the deterministic "
        "rule, *vote* the vote transaction, *finalize* waiting until quorum finalizes the round.",
        "",
        "| N | round (s) | " + " | ".join(STEPS) + " | other | not training | whole run (s) |",
        "|---:|---:|" + "---:|" * len(STEPS) + "---:|---:|---:|",
    ]
    for n, round_time, steps, not_training, wall in rows:
        lines.append(
            f"| {n} | {round_time:.1f} | "
            + " | ".join(f"{steps[s]:.2f}" for s in STEPS)
            + f" | {round_time - sum(steps.values()):.2f} | {not_training:.0%} | {wall:.0f} |"
        )
    lines += [
        "",
        "*other* is the round time no step accounts for: the steps are medians over nodes, so "
        "they miss the slowest node's critical path; chain reads (every node polls views "
        "through the one single-threaded py-evm server, each read executing EVM code), "
        "adopting and evaluating the new model, and the 1 s resolution of block timestamps. "
        "Subscribing to chain events instead of polling is the obvious next gain. "
        "All N node processes share 2 cores, so *train* grows with N (the nodes train at the "
        "same time) and the waits (*finalize*) include other nodes' training: on real "
        "machines each node has its own cores.",
    ]
    path = write_section("devnet", "\n".join(lines))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
