"""Bulyan (El Mhamdi et al., ICML 2018): iterated Krum selection, then a trimmed median."""

from __future__ import annotations

from typing import Any

import torch

from flchain.aggregation._numerics import pairwise_sq_dists, rows_sum
from flchain.aggregation._validation import check_int, floor_fraction_of
from flchain.aggregation.base import Batch, RuleSpec
from flchain.aggregation.catalog import FACTS
from flchain.aggregation.errors import AggregationError
from flchain.aggregation.krum import krum_scores, ranked
from flchain.aggregation.median import coordinate_median
from flchain.aggregation.result import AggregateResult

F_BOUND = FACTS["bulyan"].f_bound


def max_f(n: int) -> int:
    """The largest f with n >= 4f + 3 (El Mhamdi et al. 2018); negative below n = 3."""
    return (n - 3) // 4


def default_f(n: int) -> int:
    """floor(0.3 n) capped at `max_f(n)` (n >= 4f + 3), >= 0."""
    return max(0, min(floor_fraction_of(0.3, n), max_f(n)))


def check_f(f: object, n: int | None) -> int:
    """f as an int >= 0 with n >= 4f + 3 (when n is known)."""
    f = check_int("bulyan f", f, low=0)
    if n is not None and n < 4 * f + 3:
        most = f"f can be at most {max_f(n)}" if n >= 3 else "no f is valid (it needs n >= 3)"
        raise AggregationError(f"bulyan needs {F_BOUND}; got n={n}, f={f}: {most}")
    return f


def check_params(params: dict[str, Any], n: int | None) -> None:
    if params.get("f") is not None:
        check_f(params["f"], n)


def fit_params(params: dict[str, Any], n: int) -> tuple[str, dict[str, Any]]:
    """For n arrived updates: below 3 the coordinate-wise median; f lowered to `max_f(n)`."""
    if n < 3:
        return "median", {}
    out = dict(params)
    f = out.get("f")
    if isinstance(f, int) and not isinstance(f, bool) and f > max_f(n):
        out["f"] = max_f(n)
    return "bulyan", out


def _neighbours(remaining: int, f: int) -> int:
    """Krum's neighbour count on `remaining` updates: r - f - 2, at least 1, at most r - 1.

    The last selections run on as few as 2f + 1 updates, where r - f - 2 drops below 1.
    """
    return min(remaining - 1, max(1, remaining - f - 2))


def run(batch: Batch, *, f: int | None = None) -> AggregateResult:
    """Select theta = n - 2f updates by repeated Krum, then per coordinate average the
    beta = theta - 2f selected values closest to their median.

    Needs n >= 4f + 3; f defaults to min(floor(0.3 n), (n - 3) // 4). Each Krum round
    runs on the updates not yet selected (pairwise distances are computed once); ties go
    to the lower index. `weights` do not enter. scores: Krum scores over all n updates
    (the first selection round). info["selected"]: indices in selection order.
    """
    n = batch.n
    f = check_f(default_f(n) if f is None else f, n)
    theta = n - 2 * f
    beta = theta - 2 * f
    D = pairwise_sq_dists(batch.updates, deterministic=batch.deterministic)
    D = D.to(device="cpu", dtype=torch.float64)

    remaining = list(range(n))
    selected: list[int] = []
    first_scores: dict[int, float] = {}
    while len(selected) < theta:
        scores = krum_scores(D, remaining, _neighbours(len(remaining), f))
        if not first_scores:
            first_scores = scores
        pick = ranked(scores)[0]
        selected.append(pick)
        remaining.remove(pick)

    rows = sorted(selected)
    S = batch.updates[rows]
    deviation = (S - coordinate_median(S)).abs()
    closest = torch.argsort(deviation, dim=0, stable=True)[:beta]
    update = rows_sum(torch.gather(S, 0, closest), deterministic=batch.deterministic) / beta

    accepted = torch.zeros(n, dtype=torch.bool)
    accepted[rows] = True
    return AggregateResult(
        update=update,
        accepted=accepted,
        scores=torch.tensor([first_scores[i] for i in range(n)], dtype=torch.float64),
        info={"selected": selected, "f": f, "theta": theta, "beta": beta},
    )


SPEC = RuleSpec(
    **FACTS["bulyan"].spec_fields(), run=run, max_f=max_f, check=check_params, fit=fit_params
)
