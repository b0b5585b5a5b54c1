"""The value every aggregation rule returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor


@dataclass(frozen=True)
class AggregateResult:
    """Outcome of one aggregation.

    update:   the aggregated update, shape [d], same dtype and device as the input updates.
    accepted: bool [n], which updates contributed to `update` (the on-chain bitmap).
    scores:   float64 [n], the rule's per-update score (Krum score, weight, distance, ...);
              each rule's docstring says what it is.
    info:     rule-specific extras (selected indices, iterations, new credits, ...).
    """

    update: Tensor
    accepted: Tensor
    scores: Tensor
    info: dict[str, Any] = field(default_factory=dict)
