"""Time to 95% test accuracy against Flower, the simulation users would pick instead.

Three systems on one task, one after another, each clock started with its command: Flower's
simulation (Ray backend), `flchain simulate` and `flchain devnet up`. The task: scikit-learn
digits, 10 IID peers, the CNN, 2 local epochs, batch 16, lr 0.1, momentum 0.9, FedAvg over
all peers every round, seed 0. Flower's clients train with flchain's own pipeline
(`flchain.pipeline.train_step`) on the shards `flchain simulate` cuts (`flchain.peer_data`),
so all three do the same work per round; what differs is the framework around it.

Flower runs in its own virtual environment (`.venv-flower`, built by `make bench-vs-flower`;
`make test` never needs it), since its pins (rich, packaging) differ from ours.

How the clocks stop:
- Flower: its server's centralized evaluation prints each round's test accuracy with the wall
  time (`time.time()`) as it happens;
- devnet: this script watches the chain (the task's global round, every 0.2 s) and notes the
  wall time at which each round finalized; the accuracies come from the nodes' summary;
- simulate: the command's wall time minus the rounds after the first one at 95% (from the
  per-round timers in its JSON), so its figure includes start-up and the final report.

    python benchmarks/bench_vs_flower.py [--runs 3] [--rounds 15] [--flower-python PATH]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

try:
    from benchmarks._chainwatch import ChainWatch
    from benchmarks._report import machine, write_section
except ModuleNotFoundError:  # run as a script
    from _chainwatch import ChainWatch
    from _report import machine, write_section

NODES = 10
TARGET = 0.95
ROUNDS = 10  # these settings reach 95% in about 5 rounds
SEED = 0
MODEL = "cnn"
RUNS = 3
FLCHAIN = [sys.executable, "-m", "flchain.cli"]
ROOT = Path(__file__).resolve().parents[1]
FLOWER_PYTHON = ROOT / ".venv-flower" / "bin" / "python"
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def first_at_target(accuracies: list[float]) -> int | None:
    """0-based index of the first round whose accuracy reaches TARGET, or None."""
    return next((k for k, a in enumerate(accuracies) if a >= TARGET), None)


# ----------------------------------------------------------------------------- Flower worker
def flower_worker(rounds: int) -> None:
    """Runs inside .venv-flower: Flower's simulation with flchain's model, shards and local
    training; prints one JSON line per centralized evaluation (round 0 is the initial
    model)."""
    import numpy as np
    import torch
    from flwr.client import ClientApp, NumPyClient
    from flwr.common import Context, ndarrays_to_parameters
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.simulation import run_simulation

    from flchain.config import SimulationConfig
    from flchain.models import (
        TrainConfig,
        build_model,
        evaluate,
        flatten_params,
        load_dataset,
        load_flat_params,
    )
    from flchain.peer_data import shard_indices
    from flchain.pipeline import Peer, train_step

    torch.set_num_threads(1)
    cfg = SimulationConfig(nodes=NODES, rounds=rounds, model=MODEL, seed=SEED, device="cpu")
    data = load_dataset(cfg.dataset, seed=SEED)
    labels = data.y_train.numpy()
    everyone = np.arange(len(labels), dtype=np.int64)
    torch.manual_seed(SEED)
    model = build_model(MODEL, data.input_shape, data.num_classes)
    shapes = [p.detach().numpy().shape for p in model.parameters()]

    def to_flat(arrays: list[np.ndarray]) -> torch.Tensor:
        return torch.cat([torch.as_tensor(a, dtype=torch.float32).reshape(-1) for a in arrays])

    def to_arrays(flat: torch.Tensor) -> list[np.ndarray]:
        out, at = [], 0
        for shape in shapes:
            size = int(np.prod(shape))
            out.append(flat[at : at + size].reshape(shape).numpy().copy())
            at += size
        return out

    class Client(NumPyClient):
        def __init__(self, index: int) -> None:
            idx = shard_indices(labels, everyone, NODES, index, "iid", alpha=0.5, seed=SEED)
            self.index = index
            self.x, self.y = data.x_train[idx], data.y_train[idx]

        def fit(self, parameters: list, config: dict) -> tuple[list, int, dict]:
            base = to_flat(parameters)
            peer = Peer(model, self.x, self.y, TrainConfig.of(cfg), "cpu")
            trained = train_step(
                peer, base, seed=SEED, index=self.index, round_=int(config["round"])
            )
            return to_arrays(trained.local), len(self.y), {}

    def client_fn(context: Context) -> Any:
        return Client(int(context.node_config["partition-id"])).to_client()

    def central(server_round: int, parameters: list, config: dict) -> tuple[float, dict]:
        load_flat_params(model, to_flat(parameters))
        ev = evaluate(model, data.x_test, data.y_test)
        line = {"round": server_round, "accuracy": ev.accuracy, "time": time.time()}
        print(json.dumps(line), flush=True)
        return ev.loss, {"accuracy": ev.accuracy}

    def server_fn(context: Context) -> ServerAppComponents:
        strategy = FedAvg(
            fraction_fit=1.0,
            fraction_evaluate=0.0,
            min_fit_clients=NODES,
            min_available_clients=NODES,
            initial_parameters=ndarrays_to_parameters(to_arrays(flatten_params(model))),
            evaluate_fn=central,
            on_fit_config_fn=lambda r: {"round": r},
        )
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=rounds))

    run_simulation(
        server_app=ServerApp(server_fn=server_fn),
        client_app=ClientApp(client_fn=client_fn),
        num_supernodes=NODES,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
    )


# ----------------------------------------------------------------------------- the three runs
def run_flower(python: Path, rounds: int) -> dict[str, Any]:
    started = time.time()
    result = subprocess.run(
        [str(python), __file__, "--flower-worker", "--rounds", str(rounds)],
        capture_output=True,
        text=True,
        timeout=1800,
        env={**os.environ, **ONE_THREAD},
    )
    wall = time.time() - started
    lines = [json.loads(ln) for ln in result.stdout.splitlines() if ln.startswith('{"round"')]
    trained = [ln for ln in lines if ln["round"] >= 1]
    if result.returncode != 0 or len(trained) < rounds:
        raise SystemExit(f"Flower failed:\n{result.stderr[-3000:]}")
    accuracies = [ln["accuracy"] for ln in trained]
    ends = [ln["time"] - started for ln in trained]
    return _figures(accuracies, ends, wall)


def run_simulate(rounds: int) -> dict[str, Any]:
    started = time.time()
    cmd = [*FLCHAIN, "simulate", "--nodes", str(NODES), "--rounds", str(rounds)]
    cmd += ["--rule", "fedavg", "--model", MODEL, "--seed", str(SEED), "--device", "cpu"]
    result = subprocess.run(
        [*cmd, "--json"], capture_output=True, text=True, timeout=1800, env=os.environ
    )
    wall = time.time() - started
    if result.returncode != 0:
        raise SystemExit(f"flchain simulate failed:\n{result.stderr[-3000:]}")
    out = json.loads(result.stdout)
    accuracies = [r["accuracy"] for r in out["rounds"]]
    seconds = [r["seconds"] for r in out["rounds"]]
    # the end of round k: the command's end minus the rounds after it
    ends = [wall - sum(seconds[k + 1 :]) for k in range(len(seconds))]
    return _figures(accuracies, ends, wall)


def run_devnet(rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-vs-flower-") as tmp:
        workdir = Path(tmp) / "devnet"
        cmd = [*FLCHAIN, "devnet", "up", "--dir", str(workdir), "--force", "--nodes", str(NODES)]
        cmd += ["--rounds", str(rounds), "--rule", "fedavg", "--model", MODEL]
        cmd += ["--seed", str(SEED), "--json"]
        started = time.time()
        watch = ChainWatch(workdir, started).start()
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
        finally:
            watch.stop()
        wall = time.time() - started
        seen = watch.finalized
    if result.returncode != 0:
        raise SystemExit(f"flchain devnet up failed:\n{result.stderr[-3000:]}")
    summary = json.loads(result.stdout)
    honest = summary["nodes"][0]
    history = {int(k): v for k, v in honest.get("accuracy_history", {}).items()}
    accuracies = [history[r] for r in range(1, rounds + 1)]
    ends = [seen.get(r, wall) for r in range(1, rounds + 1)]
    return _figures(accuracies, ends, wall)


def _figures(accuracies: list[float], ends: list[float], wall: float) -> dict[str, Any]:
    """Time to TARGET (None if never), seconds per round after the first, and the rest."""
    k = first_at_target(accuracies)
    per_round = [b - a for a, b in itertools.pairwise(ends)]
    return {
        "to_target": None if k is None else ends[k],
        "round_at_target": None if k is None else k + 1,
        "first_round_end": ends[0],
        "per_round": statistics.median(per_round) if per_round else None,
        "final_accuracy": accuracies[-1],
        "wall": wall,
    }


# ----------------------------------------------------------------------------- report
SYSTEMS = ("Flower simulation (Ray)", "flchain simulate", "flchain devnet up")


def report(results: dict[str, list[dict]], rounds: int, runs: int, flower: str) -> str:
    def med(system: str, field: str) -> float | None:
        values = [r[field] for r in results[system] if r[field] is not None]
        return statistics.median(values) if values else None

    def fmt(value: float | None, unit: str = " s") -> str:
        return "never" if value is None else f"{value:.1f}{unit}"

    flower_time = med(SYSTEMS[0], "to_target")
    lines = [
        "## Against Flower: time to 95% accuracy",
        "",
        f"`make bench-vs-flower` (`python benchmarks/bench_vs_flower.py`): scikit-learn "
        f"digits, {NODES} IID peers, the CNN, 2 local epochs, batch 16, lr 0.1, momentum 0.9, "
        f"FedAvg over every peer, seed {SEED}, {rounds} rounds; each clock starts with the "
        f"command and stops when the global model first reaches {TARGET:.0%} test accuracy. "
        f"{flower}'s clients train with flchain's pipeline on flchain's shards, so every system "
        f"does the same work per round. Flower: its server's centralized evaluation timestamps "
        f"each round; devnet: a reader polling the chain every 0.2 s timestamps each "
        f"finalization; simulate: the command's wall time minus the rounds after the one at "
        f"{TARGET:.0%}. Medians of {runs} runs each, run one after another; all on this one "
        f"machine ({machine()}). *first round*: from the command to the end of round 1 "
        f"(start-up included); *per round*: median time between round ends.",
        "",
        "| system | time to 95% | round reaching it | first round | per round | "
        "whole run | vs Flower |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for system in SYSTEMS:
        t = med(system, "to_target")
        ratio = "—" if t is None or not flower_time else f"{t / flower_time:.2f}x"
        at = med(system, "round_at_target")
        lines.append(
            f"| {system} | {fmt(t)} | {'—' if at is None else f'{at:.0f}'} | "
            f"{fmt(med(system, 'first_round_end'))} | {fmt(med(system, 'per_round'))} | "
            f"{fmt(med(system, 'wall'))} | {ratio} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--flower-python", type=Path, default=FLOWER_PYTHON)
    parser.add_argument("--flower-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="write every run's figures here")
    parser.add_argument("--out", type=Path, help="write the markdown here, not docs/")
    args = parser.parse_args()
    if args.flower_worker:
        flower_worker(args.rounds)
        return
    if not args.flower_python.exists():
        raise SystemExit(f"no Flower environment at {args.flower_python}: `make bench-vs-flower`")
    version = subprocess.run(
        [str(args.flower_python), "-c", "import flwr; print(flwr.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    results: dict[str, list[dict]] = {s: [] for s in SYSTEMS}
    runners = {
        SYSTEMS[0]: lambda: run_flower(args.flower_python, args.rounds),
        SYSTEMS[1]: lambda: run_simulate(args.rounds),
        SYSTEMS[2]: lambda: run_devnet(args.rounds),
    }
    for run in range(1, args.runs + 1):
        for system, runner in runners.items():
            figures = runner()
            results[system].append(figures)
            print(f"run {run} {system}: {json.dumps(figures)}", flush=True)
    markdown = report(results, args.rounds, args.runs, f"Flower {version}")
    print(markdown)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if args.out:
        args.out.write_text(markdown)
    else:
        print(f"written to {write_section('vs-flower', markdown)}")


if __name__ == "__main__":
    main()
