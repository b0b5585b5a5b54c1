"""FedAvg: the weighted mean of the updates (McMahan et al. 2017)."""

from __future__ import annotations

import torch

from flchain.aggregation._numerics import combine, normalized
from flchain.aggregation.base import Batch, RuleSpec, no_f
from flchain.aggregation.catalog import FACTS
from flchain.aggregation.result import AggregateResult


def weighted_mean(batch: Batch, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of the rows in `mask` (default all) weighted by `batch.weights`.

    Shared by the rules that average a selected subset; the masked weights must not all
    be zero (callers check).
    """
    w = batch.weights if mask is None else torch.where(mask, batch.weights, 0.0)
    return combine(normalized(w), batch.updates, deterministic=batch.deterministic)


def run(batch: Batch) -> AggregateResult:
    """Weighted mean; `weights` are sample counts (times reputation on the network path).

    scores: each update's normalised weight. accepted: the updates with a positive weight.
    """
    coeffs = normalized(batch.weights)
    update = combine(coeffs, batch.updates, deterministic=batch.deterministic)
    return AggregateResult(
        update=update,
        accepted=batch.weights > 0,
        scores=torch.tensor(coeffs, dtype=torch.float64),
    )


SPEC = RuleSpec(**FACTS["fedavg"].spec_fields(), run=run, max_f=no_f)
