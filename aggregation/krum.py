"""Krum and Multi-Krum (Blanchard et al., NeurIPS 2017)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flchain.aggregation._numerics import pairwise_sq_dists
from flchain.aggregation._validation import check_int, floor_fraction_of
from flchain.aggregation.base import Batch, RuleSpec
from flchain.aggregation.errors import AggregationError
from flchain.aggregation.fedavg import weighted_mean
from flchain.aggregation.result import AggregateResult


def default_f(n: int) -> int:
    """floor(0.3 n), capped at the largest f Krum's guarantee allows (2f + 2 < n), >= 0."""
    return max(0, min(floor_fraction_of(0.3, n), (n - 3) // 2))


def check_f(rule: str, f: object, n: int) -> int:
    """f as an int with at least one neighbour per score (n - f - 2 >= 1)."""
    f = check_int(f"{rule} f", f, low=0)
    if n - f - 2 < 1:
        raise AggregationError(
            f"{rule} needs n - f - 2 >= 1 (each score sums over n - f - 2 neighbours); "
            f"got n={n}, f={f}"
        )
    return f


def krum_scores(D: Tensor, members: list[int], neighbours: int) -> dict[int, float]:
    """Krum score of each member: sum of its `neighbours` smallest squared distances to others.

    The sum is math.fsum (correctly rounded), so a score does not depend on the order of
    the members, and on a machine-independent D it is machine independent too.
    """
    rows = D.tolist()
    scores = {}
    for i in members:
        nearest = sorted(rows[i][j] for j in members if j != i)[:neighbours]
        scores[i] = math.fsum(nearest)
    return scores


def ranked(scores: dict[int, float]) -> list[int]:
    """Members by ascending score; ties go to the lower index."""
    return sorted(scores, key=lambda i: (scores[i], i))


def _distances(batch: Batch) -> Tensor:
    D = pairwise_sq_dists(batch.updates, deterministic=batch.deterministic)
    return D.to(device="cpu", dtype=torch.float64)


def run_krum(batch: Batch, *, f: int | None = None) -> AggregateResult:
    """The single update with the lowest Krum score (ties -> lowest index).

    score_i = sum of squared L2 distances to its n - f - 2 nearest other updates.
    f defaults to default_f(n) = min(floor(0.3 n), (n - 3) // 2). `weights` do not enter.
    """
    n = batch.n
    f = check_f("krum", default_f(n) if f is None else f, n)
    scores = krum_scores(_distances(batch), list(range(n)), n - f - 2)
    chosen = ranked(scores)[0]
    accepted = torch.zeros(n, dtype=torch.bool)
    accepted[chosen] = True
    return AggregateResult(
        update=batch.updates[chosen].clone(),
        accepted=accepted,
        scores=torch.tensor([scores[i] for i in range(n)], dtype=torch.float64),
        info={"selected": [chosen], "f": f},
    )


def run_multikrum(batch: Batch, *, f: int | None = None, m: int | None = None) -> AggregateResult:
    """Average of the m lowest-scoring updates, weighted by `weights`.

    Scores are computed once, as for Krum (f defaults as in Krum); m defaults to n - f.
    """
    n = batch.n
    f = check_f("multikrum", default_f(n) if f is None else f, n)
    m = check_int("multikrum m", n - f if m is None else m, low=1, high=n)
    scores = krum_scores(_distances(batch), list(range(n)), n - f - 2)
    chosen = ranked(scores)[:m]
    accepted = torch.zeros(n, dtype=torch.bool)
    accepted[chosen] = True
    if not bool((batch.weights[accepted] > 0).any()):
        raise AggregationError(f"multikrum selected updates {sorted(chosen)}, all with weight 0")
    return AggregateResult(
        update=weighted_mean(batch, accepted),
        accepted=accepted,
        scores=torch.tensor([scores[i] for i in range(n)], dtype=torch.float64),
        info={"selected": chosen, "f": f, "m": m},
    )


KRUM = RuleSpec(name="krum", run=run_krum)
MULTIKRUM = RuleSpec(name="multikrum", run=run_multikrum)
