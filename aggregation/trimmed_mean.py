"""Coordinate-wise trimmed mean (Yin et al. 2018)."""

from __future__ import annotations

import torch

from flchain.aggregation._numerics import rows_sum
from flchain.aggregation._validation import check_float, floor_fraction_of
from flchain.aggregation.base import Batch, RuleSpec
from flchain.aggregation.result import AggregateResult


def run(batch: Batch, *, beta: float = 0.1) -> AggregateResult:
    """Per coordinate drop the k = floor(beta * n) smallest and k largest values, average the rest.

    beta in [0, 0.5) (0 is the plain mean); it is read as the decimal it prints as, so
    beta=0.29 with n=100 trims 29. `weights` are validated but do not enter: each update
    is one vote. Ties are broken by index (stable sort) so the bits are reproducible.
    scores: fraction of coordinates at which the update was trimmed.
    accepted: updates that were kept at one coordinate or more.
    """
    beta = check_float("trimmed_mean beta", beta, low=0.0, high=0.5, high_open=True)
    n, d = batch.n, batch.d
    k = floor_fraction_of(beta, n)
    values, order = torch.sort(batch.updates, dim=0, stable=True)
    kept = values[k : n - k]
    update = rows_sum(kept, deterministic=batch.deterministic) / (n - 2 * k)
    trimmed = torch.zeros(n, dtype=torch.int64)
    if k > 0:
        trimmed += torch.bincount(order[:k].flatten(), minlength=n).cpu()
        trimmed += torch.bincount(order[n - k :].flatten(), minlength=n).cpu()
    return AggregateResult(
        update=update,
        accepted=trimmed < d,
        scores=trimmed.to(torch.float64) / d,
        info={"trimmed_per_side": k},
    )


SPEC = RuleSpec(name="trimmed_mean", run=run)
