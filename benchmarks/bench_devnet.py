"""Where a devnet round's time goes: train, commit, gossip, fetch, aggregate, vote and finalize,
for N = 4, 8 and 16 node processes on this machine, the round overhead (wall-clock round time
minus the slowest node's training) and the share of round time that is not training. Each
size runs `flchain devnet up` (py-evm chain, CNN on digits, Multi-Krum); round times are wall
clock, from a reader watching the chain (`benchmarks/_chainwatch.py`), never block timestamps;
the steps are every node's own timers from its final status.

    python benchmarks/bench_devnet.py [--sizes 4 8 10 16] [--rounds 8] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

try:
    from benchmarks._chainwatch import (
        ChainWatch,
        chain_up,
        cpu_per_round,
        devnet_up_command,
        median_round,
        slowest_training,
        training_cpu,
    )
    from benchmarks._proctree import usable_cores
    from benchmarks._report import machine, write_section
except ModuleNotFoundError:  # run as a script
    from _chainwatch import (
        ChainWatch,
        chain_up,
        cpu_per_round,
        devnet_up_command,
        median_round,
        slowest_training,
        training_cpu,
    )
    from _proctree import usable_cores
    from _report import machine, write_section

STEPS = ("train", "commit", "gossip", "wait", "fetch", "aggregate", "vote", "finalize")
# The targets on a 2-core machine (issue 12): round overhead in seconds by N, and the share of
# the round that is not training at N = 8.
OVERHEAD_GOALS = {10: 1.0, 16: 2.0}
NOT_TRAINING_GOAL = (8, 0.15)
# Every node joined within this many seconds of the chain serving, at N nodes.
JOINED_GOAL = (10, 5.0)


def run_devnet(
    nodes: int, rounds: int, workdir: Path
) -> tuple[dict, float, ChainWatch, float | None]:
    """The devnet's summary, its wall time, the watcher that saw its rounds finalize (wall
    time and the devnet's CPU at each), and how long after its chain served every node had
    joined (None if unseen)."""
    started = time.time()
    watch = ChainWatch(workdir / "devnet", started, members=nodes).start()
    try:
        with subprocess.Popen(
            devnet_up_command(
                workdir / "devnet",
                *("--nodes", str(nodes), "--rounds", str(rounds), "--rule", "multikrum"),
                *("--json", "--submit-window", "300", "--vote-window", "300"),
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as devnet:
            watch.cpu_root = devnet.pid
            stdout, stderr = devnet.communicate(timeout=3600)
    finally:
        watch.stop()
    if devnet.returncode != 0:
        raise SystemExit(f"devnet with {nodes} nodes failed:\n{stderr[-3000:]}")
    up = chain_up(workdir / "devnet", started)
    joined = None if up is None or watch.joined is None else watch.joined - up
    return json.loads(stdout), time.time() - started, watch, joined


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


@dataclass(frozen=True)
class RunFigures:
    """One devnet's figures, per round: wall-clock round time, overhead, the steps, the whole
    run, and the CPU its processes used (core-seconds: training, the nodes in all, the chain,
    everything; None where /proc cannot be read)."""

    round_time: float
    overhead: float
    steps: dict[str, float]
    wall: float
    train_cpu: float
    cpu: dict[str, float] | None
    joined: float | None  # every node joined, seconds after the chain served

    @property
    def cpu_total(self) -> float | None:
        return None if self.cpu is None else sum(self.cpu.values())


def _one_run(n: int, rounds: int) -> RunFigures:
    with tempfile.TemporaryDirectory(prefix=f"bench-devnet-{n}-") as tmp:
        summary, wall, watch, joined = run_devnet(n, rounds, Path(tmp))
    assert all(r["status"] == "finalized" for r in summary["rounds"]), summary["rounds"]
    round_time = median_round(watch.finalized, rounds)
    return RunFigures(
        round_time=round_time,
        overhead=round_time - slowest_training(summary, rounds),
        steps=split(summary, rounds),
        wall=wall,
        train_cpu=training_cpu(summary, rounds),
        cpu=cpu_per_round(watch.cpu, rounds),
        joined=joined,
    )


@dataclass(frozen=True)
class SizeFigures:
    """Medians over one size's devnets, and each run's overhead."""

    n: int
    runs: list[RunFigures]

    def median(self, figure: Callable[[RunFigures], float | None]) -> float:
        values = [v for v in map(figure, self.runs) if v is not None]
        return statistics.median(values) if values else math.nan

    @property
    def round_time(self) -> float:
        return self.median(lambda r: r.round_time)

    @property
    def overhead(self) -> float:
        return self.median(lambda r: r.overhead)

    def step(self, name: str) -> float:
        return self.median(lambda r: r.steps[name])

    @property
    def not_training(self) -> float:
        return 1 - self.step("train") / self.round_time if self.round_time else math.nan

    @property
    def train_cpu(self) -> float:
        return self.median(lambda r: r.train_cpu)

    def cpu(self, role: str) -> float:
        return self.median(lambda r: None if r.cpu is None else r.cpu[role])

    @property
    def cpu_total(self) -> float:
        return self.median(lambda r: r.cpu_total)

    @property
    def busy(self) -> float:
        """Share of the machine's cores the devnet kept busy through a round."""
        return self.median(
            lambda r: None if r.cpu_total is None else r.cpu_total / (CORES * r.round_time)
        )

    @property
    def not_training_cpu(self) -> float:
        """Share of the devnet's CPU that is not training: on cores it keeps busy, about the
        least share of round time not training could come to, since the protocol work waits
        for the updates that training makes."""
        return self.median(lambda r: None if not r.cpu_total else 1 - r.train_cpu / r.cpu_total)

    @property
    def joined(self) -> float:
        return self.median(lambda r: r.joined)

    @property
    def by_run(self) -> str:
        return " / ".join(f"{r.overhead:.2f}" for r in self.runs)


CORES = usable_cores()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 10, 16])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument(
        "--runs", type=int, default=3, help="devnets per size; figures are their medians"
    )
    args = parser.parse_args()
    rows = []
    for n in args.sizes:
        size = SizeFigures(n, [_one_run(n, args.rounds) for _ in range(args.runs)])
        rows.append(size)
        print(
            f"N={n}: round {size.round_time:.2f}s, overhead {size.overhead:.2f}s "
            f"(runs: {size.by_run}), "
            + ", ".join(f"{s} {size.step(s):.2f}s" for s in STEPS)
            + f", not training {size.not_training:.0%}; CPU per round: train "
            f"{size.train_cpu:.2f}, nodes {size.cpu('nodes'):.2f}, chain {size.cpu('chain'):.2f}"
            f" core-s, {size.busy:.0%} of {CORES} cores busy, "
            f"not training {size.not_training_cpu:.0%} of CPU; all joined "
            f"{size.joined:.1f}s after the chain served",
            flush=True,
        )
    lines = [
        "## Devnet round time split",
        "",
        f"`make bench-devnet` (`python benchmarks/bench_devnet.py`): `flchain devnet up` with "
        f"N node processes, {args.rounds} rounds, {args.runs} devnets per size (figures are "
        "their medians), CNN on digits, Multi-Krum, py-evm chain, "
        f"all on this one machine ({machine()}). Round time is wall clock: the time between "
        "two finalizations as a reader polling the chain every 0.2 s sees them, median over "
        "rounds 2 on (round 1 includes the start-up). *Overhead* is the round time minus the "
        "slowest node's training (its mean per round): what the protocol adds to the work "
        "every round must wait for. Steps are each node's own timers, seconds per round, "
        "median over nodes: "
        "*train* local training, *commit* the submit transaction, *gossip* the announcement, "
        "*wait* until every member committed (the slowest peer's training), "
        "*fetch* getting every committed update from peers, *aggregate* the deterministic "
        "rule, *vote* the vote transaction, *finalize* waiting until quorum finalizes the round.",
        "",
        "| N | round (s) | overhead (s) | "
        + " | ".join(STEPS)
        + " | other | not training | joined (s) | whole run (s) | overhead by run (s) |",
        "|---:|---:|---:|" + "---:|" * len(STEPS) + "---:|---:|---:|---:|---:|",
    ]
    for size in rows:
        steps = [size.step(s) for s in STEPS]
        lines.append(
            f"| {size.n} | {size.round_time:.2f} | {size.overhead:.2f} | "
            + " | ".join(f"{v:.2f}" for v in steps)
            + f" | {size.round_time - sum(steps):.2f} | {size.not_training:.0%} | "
            f"{size.joined:.1f} | {size.median(lambda r: r.wall):.0f} | {size.by_run} |"
        )
    lines += [
        "",
        "*joined* is how long after the chain served (its ready line, `devnet/chainproc.py`) "
        "the task first counted all N members, as the watcher saw it (deploy, task creation "
        "and the nodes' start-up in between). "
        "*other* is the round time no step accounts for: the steps are medians over nodes, so "
        "they miss the slowest node's critical path; adopting and evaluating the new model; "
        "the nodes' reaction to a new block (each follows `newHeads` over a WebSocket, "
        "woken at most every 0.1 s, and reads a round once per block, `node/chainview.py`); "
        "and the "
        "watcher's 0.2 s polling. "
        "All N node processes share 2 cores, so *train* grows with N (the nodes train at the "
        "same time) and the waits (*finalize*) include other nodes' training: on real "
        "machines each node has its own cores.",
        "",
        "Where the machine's CPU goes, in core-seconds per round (the same runs, rounds 2 on; "
        "the watcher reads the CPU the devnet's processes have used, from /proc, as each round "
        "finalizes): *train* is the nodes' training threads together "
        "(`train_cpu_seconds_total`), *nodes* all of the node processes (training included), "
        "*chain* the chain process, *busy* the share of the "
        f"{CORES} cores the devnet kept busy, *not training* the share of its CPU that is not "
        "training. While the cores are busy, the round's not-training share of time cannot "
        "come much below that share of CPU: the protocol's work waits for the updates "
        "training makes, and no scheduling makes it take less CPU.",
        "",
        "| N | train | nodes | chain | all | busy | not training (CPU) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size in rows:
        lines.append(
            f"| {size.n} | {size.train_cpu:.2f} | {size.cpu('nodes'):.2f} | "
            f"{size.cpu('chain'):.2f} | {size.cpu_total:.2f} | {size.busy:.0%} | "
            f"{size.not_training_cpu:.0%} |"
        )
    lines += ["", *_goal_lines(rows)]
    path = write_section("devnet", "\n".join(lines))
    print(f"wrote {path}")


def _goal_lines(rows: list[SizeFigures]) -> list[str]:
    """One line per target this run measured: the goal, the figure, met or not."""
    lines = []
    for size in rows:
        if size.n in OVERHEAD_GOALS:
            goal = OVERHEAD_GOALS[size.n]
            lines.append(
                f"* Goal: overhead <= {goal:g} s at N = {size.n}: {size.overhead:.2f} s, "
                f"{_verdict(size.overhead, goal)}."
            )
        if size.n == JOINED_GOAL[0]:
            goal = JOINED_GOAL[1]
            lines.append(
                f"* Goal: every node joined within {goal:g} s of the chain serving at "
                f"N = {size.n}: {size.joined:.1f} s, {_verdict(size.joined, goal)}."
            )
        if size.n == NOT_TRAINING_GOAL[0]:
            goal = NOT_TRAINING_GOAL[1]
            lines.append(
                f"* Goal: not training <= {goal:.0%} of the round at N = {size.n}: "
                f"{size.not_training:.0%}, {_verdict(size.not_training, goal)}; of the devnet's "
                f"CPU, {size.not_training_cpu:.0%} is not training, with {size.busy:.0%} of "
                "the cores busy."
            )
    return lines


def _verdict(figure: float, goal: float) -> str:
    return "met" if figure <= goal else "not met"


if __name__ == "__main__":
    main()
