"""What secure mode costs on the network: the same devnet task run in plaintext FedAvg and in
secure mode (masked, packed Paillier bundles; a decryptor chosen on chain), side by side.

For each N both variants run `flchain devnet up` with the CNN on digits (151k parameters),
2048-bit Paillier keys, FedAvg, one after the other on this machine; reported per variant:
the wall-clock round time (median over rounds 2 on; `benchmarks/_chainwatch.py`) and its
overhead over the slowest node's training, each node's secure steps (encrypt, sum, decrypt,
open = verify the proof and apply the mean; median over nodes), and the bytes each node
fetched per round.

    python benchmarks/bench_secure_devnet.py [--sizes 4 8] [--rounds 4]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

try:
    from benchmarks._chainwatch import (
        ChainWatch,
        devnet_up_command,
        median_round,
        slowest_training,
    )
    from benchmarks._report import machine, write_section
except ModuleNotFoundError:  # run as a script
    from _chainwatch import ChainWatch, devnet_up_command, median_round, slowest_training
    from _report import machine, write_section

SECURE_STEPS = ("train", "encrypt", "fetch", "sum", "decrypt", "open")


def run(nodes: int, rounds: int, secure: bool, workdir: Path) -> tuple[dict, dict[int, float]]:
    """The devnet's summary and the wall time each round finalized at."""
    args = ["--nodes", str(nodes), "--rounds", str(rounds), "--rule", "fedavg"]
    args += ["--submit-window", "300", "--vote-window", "300", "--json"]
    if secure:
        args.append("--secure")
    watch = ChainWatch(workdir, time.time()).start()
    try:
        result = subprocess.run(
            devnet_up_command(workdir, *args),
            capture_output=True,
            text=True,
            timeout=3600,
        )
    finally:
        watch.stop()
    if result.returncode != 0:
        raise SystemExit(f"devnet N={nodes} secure={secure} failed:\n{result.stderr[-3000:]}")
    summary = json.loads(result.stdout)
    statuses = [r["status"] for r in summary["rounds"]]
    if statuses != ["finalized"] * rounds:
        raise SystemExit(f"devnet N={nodes} secure={secure}: rounds ended {statuses}")
    return summary, watch.finalized


def figures(summary: dict, finalized: dict[int, float], rounds: int) -> dict[str, float]:
    round_time = median_round(finalized, rounds)
    out = {
        "round": round_time,
        "overhead": round_time - slowest_training(summary, rounds),
        "fetched_mb": statistics.median(
            n["metrics"]["bytes_in_total"].get("blob", 0) / rounds / 1e6 for n in summary["nodes"]
        ),
        "accuracy": statistics.median(n["accuracy"] for n in summary["nodes"]),
    }
    for step in SECURE_STEPS:
        per_node = [
            n["metrics"].get("round_seconds_total", {}).get(step, 0.0) / rounds
            for n in summary["nodes"]
        ]
        # One node decrypts per round: the sum over nodes is the decryptor's time per round.
        out[step] = sum(per_node) if step == "decrypt" else statistics.median(per_node)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    rows = []
    for n in args.sizes:
        for secure in (False, True):
            with tempfile.TemporaryDirectory(prefix=f"bench-secure-{n}-") as tmp:
                summary, finalized = run(n, args.rounds, secure, Path(tmp) / "devnet")
            row = figures(summary, finalized, args.rounds)
            rows.append((n, secure, row))
            print(f"N={n} secure={secure}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()))
    lines = [
        "## Secure mode on the devnet",
        "",
        f"`make bench-secure` (`python benchmarks/bench_secure_devnet.py`): `flchain devnet up` "
        f"with N node processes, {args.rounds} rounds, CNN on digits (151,306 parameters), "
        "FedAvg, py-evm chain, plaintext and `--secure` (2048-bit Paillier, 16-bit "
        f"quantization) run one after the other on this machine ({machine()}). Round time is "
        "wall clock: between two finalizations as a reader polling the chain every 0.2 s "
        "sees them, median over rounds 2 on; *overhead* is that minus the slowest node's "
        "training; steps are each node's own timers "
        "in seconds per round, median over nodes, except *decrypt*: the round's decryptor's "
        "decryption and proof (one node per round does it); *open* checks the decryptor's "
        "proof against the node's own sum and applies the mean; *fetched* is blob bytes each "
        "node downloaded per round.",
        "",
        "| N | mode | round (s) | overhead (s) | "
        + " | ".join(SECURE_STEPS)
        + " | fetched (MB) | accuracy |",
        "|---:|---|---:|---:|" + "---:|" * len(SECURE_STEPS) + "---:|---:|",
    ]
    for n, secure, row in rows:
        lines.append(
            f"| {n} | {'secure' if secure else 'plain'} | {row['round']:.1f} | "
            f"{row['overhead']:.1f} | "
            + " | ".join(f"{row[s]:.2f}" for s in SECURE_STEPS)
            + f" | {row['fetched_mb']:.2f} | {row['accuracy']:.4f} |"
        )
    by = {(n, s): row for n, s, row in rows}
    ratios = [
        f"N={n}: {by[(n, True)]['round'] / by[(n, False)]['round']:.2f}x"
        for n in args.sizes
        if by[(n, False)]["round"]
    ]
    lines += ["", "Secure / plain round time, same run: " + ", ".join(ratios) + "."]
    path = write_section("secure-devnet", "\n".join(lines))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
