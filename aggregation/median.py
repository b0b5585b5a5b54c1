"""Coordinate-wise median (Yin et al. 2018)."""

from __future__ import annotations

import torch
from torch import Tensor

from flchain.aggregation.base import Batch, RuleSpec, half_minus_one
from flchain.aggregation.catalog import FACTS
from flchain.aggregation.result import AggregateResult


def middle_of_sorted(values: Tensor) -> Tensor:
    """Median of each column of column-sorted `values`.

    For an even count it averages the two middle values (torch.median returns the lower
    one, which biases the result toward smaller values). Computed as a/2 + b/2: each
    halving is exact, so the only rounding is the final add, and (a + b) cannot overflow.
    """
    n = values.shape[0]
    if n % 2 == 1:
        return values[n // 2].clone()
    return values[n // 2 - 1] * 0.5 + values[n // 2] * 0.5


def middle_rows(n: int) -> list[int]:
    """Positions in a column sort that hold the median value(s)."""
    return [n // 2] if n % 2 == 1 else [n // 2 - 1, n // 2]


def coordinate_median(U: Tensor) -> Tensor:
    """Coordinate-wise median of the rows of U (sorting is exact, so no reduction order)."""
    return middle_of_sorted(torch.sort(U, dim=0).values)


def run(batch: Batch) -> AggregateResult:
    """Per coordinate, the middle value (mean of the two middle values for even n).

    `weights` are validated but do not enter: each update is one vote.
    scores: fraction of coordinates at which the update supplied a middle value.
    accepted: updates that supplied a middle value at one coordinate or more (with a
    stable sort, ties go to the lower index).
    """
    n, d = batch.n, batch.d
    values, order = torch.sort(batch.updates, dim=0, stable=True)
    update = middle_of_sorted(values)
    counts = torch.zeros(n, dtype=torch.int64)
    for pos in middle_rows(n):
        counts += torch.bincount(order[pos], minlength=n).cpu()
    return AggregateResult(
        update=update,
        accepted=counts > 0,
        scores=counts.to(torch.float64) / d,
    )


SPEC = RuleSpec(**FACTS["median"].spec_fields(), run=run, max_f=half_minus_one)
