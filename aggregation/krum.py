"""Krum and Multi-Krum (Blanchard et al., NeurIPS 2017).

As in the paper, a score sums the squared distances to the n - f - 2 nearest other updates,
and f must satisfy n > 2f + 2 (its Proposition 1). ByzFL (LPD-EPFL/byzfl) instead averages
over the n - f - 1 nearest others and accepts any f with 2f < n; with 4 updates it would
take f = 1, where the paper's guarantee needs 5 updates. Multi-Krum averages the m
best-scoring updates (m = n - f by default, as in ByzFL) weighted by `weights` (uniform on
the network unless the task asks otherwise); ByzFL's is unweighted.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
from torch import Tensor

from flchain.aggregation._numerics import pairwise_sq_dists
from flchain.aggregation._validation import check_int, floor_fraction_of
from flchain.aggregation.base import Batch, RuleSpec
from flchain.aggregation.catalog import FACTS
from flchain.aggregation.errors import AggregationError
from flchain.aggregation.fedavg import weighted_mean
from flchain.aggregation.result import AggregateResult

F_BOUND = FACTS["krum"].f_bound


def max_f(n: int) -> int:
    """The largest f with n > 2f + 2, the bound of Krum's guarantee (Blanchard et al. 2017,
    Proposition 1); negative below n = 3, where no f is valid."""
    return (n - 3) // 2


def default_f(n: int) -> int:
    """floor(0.3 n), capped at `max_f(n)` (n > 2f + 2), >= 0."""
    return max(0, min(floor_fraction_of(0.3, n), max_f(n)))


def check_f(rule: str, f: object, n: int | None) -> int:
    """f as an int >= 0 that Krum's guarantee covers with n updates: n > 2f + 2.

    The score itself only needs n - f - 2 >= 1 neighbours, but with 2f + 2 >= n the f
    Byzantine updates can outvote the honest ones' neighbourhoods and the paper's bound no
    longer holds, so such an f is refused rather than silently weaker.
    """
    f = check_int(f"{rule} f", f, low=0)
    if n is None:
        return f
    if n < 3:
        raise AggregationError(
            f"{rule} needs at least 3 updates ({F_BOUND} even with f = 0); got n={n}"
        )
    if f > max_f(n):
        raise AggregationError(
            f"{rule} needs {F_BOUND} (Blanchard et al. 2017): with n={n} updates f can be "
            f"at most {max_f(n)}; got f={f}"
        )
    return f


def check_params(params: dict[str, Any], n: int | None, *, rule: str = "krum") -> None:
    """Early check of f (and multikrum's m) for n updates (None: not known yet)."""
    f = params.get("f")
    if f is not None:
        f = check_f(rule, f, n)
    if "m" in params:
        high = None if n is None else n
        check_int(f"{rule} m", params["m"], low=1, high=high)


def fit_params(params: dict[str, Any], n: int, *, rule: str = "krum") -> tuple[str, dict]:
    """Parameters for n arrived updates: below 3 updates the coordinate-wise median (no f
    satisfies n > 2f + 2); f lowered to `max_f(n)` if larger; multikrum's m capped at n - f,
    since averaging more than n - f updates takes in a Byzantine one whenever f are present."""
    if n < 3:
        return "median", {}
    out = dict(params)
    f = out.get("f")
    if isinstance(f, int) and not isinstance(f, bool) and f > max_f(n):
        out["f"] = f = max_f(n)
    m = out.get("m")
    if isinstance(m, int) and not isinstance(m, bool):
        effective_f = default_f(n) if f is None else f
        out["m"] = max(1, min(m, n - effective_f))
    return rule, out


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

    score_i = sum of squared L2 distances to its n - f - 2 nearest other updates; f must
    satisfy n > 2f + 2 and defaults to default_f(n) = min(floor(0.3 n), (n - 3) // 2).
    `weights` do not enter.
    """
    n = batch.n
    f = check_f("krum", default_f(n) if f is None else f, n)  # n > 2f + 2
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


KRUM = RuleSpec(
    **FACTS["krum"].spec_fields(),
    run=run_krum,
    max_f=max_f,
    check=functools.partial(check_params, rule="krum"),
    fit=functools.partial(fit_params, rule="krum"),
)
MULTIKRUM = RuleSpec(
    **FACTS["multikrum"].spec_fields(),
    run=run_multikrum,
    max_f=max_f,
    check=functools.partial(check_params, rule="multikrum"),
    fit=functools.partial(fit_params, rule="multikrum"),
)
