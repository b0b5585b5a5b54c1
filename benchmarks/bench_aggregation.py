"""Aggregation speed: every rule at n = 50 updates of d = 1M parameters on the CPU, in the
bit-exact deterministic mode the network uses and in the fast float32 mode; plus how Krum's cost
grows with n. Medians of several runs; results go to docs/benchmarks.md.

    python benchmarks/bench_aggregation.py [--n 50] [--d 1000000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from flchain.aggregation import RULES, aggregate, required_inputs

try:
    from benchmarks._report import machine, write_section
except ModuleNotFoundError:  # run as a script: benchmarks/ is on sys.path, not the repo root
    from _report import machine, write_section


def _side_inputs(rule: str, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Plausible per-update evaluations for the rules that need them."""
    side = {
        "staleness": torch.randint(0, 3, (n,), generator=generator),
        "public_loss": torch.rand(n, generator=generator, dtype=torch.float64) + 0.1,
        "public_entropy": torch.rand(n, generator=generator, dtype=torch.float64),
        "public_accuracy": torch.rand(n, generator=generator, dtype=torch.float64),
        "alarms": torch.zeros(n, dtype=torch.bool),
    }
    return {k: v for k, v in side.items() if k in required_inputs(rule)}


def _params(rule: str, n: int) -> dict[str, int]:
    f = max(0, (n - 3) // 4)  # allowed by every rule, Bulyan's n >= 4f + 3 included
    return {"f": f} if rule in {"krum", "multikrum", "bulyan"} else {}


def time_rule(rule: str, updates: torch.Tensor, *, deterministic: bool, repeats: int) -> float:
    n = updates.shape[0]
    side = _side_inputs(rule, n, torch.Generator().manual_seed(1))
    weights = torch.full((n,), 100.0)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        aggregate(rule, updates, weights, deterministic=deterministic, **_params(rule, n), **side)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--d", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--krum-n", type=int, nargs="+", default=[10, 25, 50, 100])
    args = parser.parse_args()

    gen = torch.Generator().manual_seed(0)
    updates = torch.randn(args.n, args.d, generator=gen)
    rows = []
    for rule in RULES:
        det = time_rule(rule, updates, deterministic=True, repeats=args.repeats)
        fast = time_rule(rule, updates, deterministic=False, repeats=args.repeats)
        rows.append((rule, det, fast))
        print(f"{rule:>13}: deterministic {det:8.3f} s   fast {fast:8.3f} s", flush=True)
    krum_rows = []
    for n in args.krum_n:
        big = torch.randn(n, args.d, generator=gen)
        det = time_rule("krum", big, deterministic=True, repeats=max(1, args.repeats // 2))
        fast = time_rule("krum", big, deterministic=False, repeats=max(1, args.repeats // 2))
        krum_rows.append((n, det, fast))
        print(f"krum n={n:>4}: deterministic {det:8.3f} s   fast {fast:8.3f} s", flush=True)
        del big

    lines = [
        "## Aggregation speed",
        "",
        f"`make bench-agg` (`python benchmarks/bench_aggregation.py`): n = {args.n} updates, "
        f"d = {args.d:,} float32 parameters, median of {args.repeats} runs, {machine()}. "
        "*deterministic* is the network path (float64, fixed reduction order, bit-identical "
        "on every node); *fast* is float32 with BLAS.",
        "",
        "| rule | deterministic (s) | fast (s) | deterministic / fast |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {r} | {d:.3f} | {f:.3f} | {d / f:.1f}x |" for r, d, f in rows]
    lines += [
        "",
        f"Krum as n grows (d = {args.d:,}; pairwise distances make it O(n^2 d)):",
        "",
        "| n | deterministic (s) | fast (s) |",
        "|---:|---:|---:|",
    ]
    lines += [f"| {n} | {d:.3f} | {f:.3f} |" for n, d, f in krum_rows]
    path = write_section("aggregation", "\n".join(lines))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
