"""The small interface each rule module implements, and the validated batch it receives."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from flchain.aggregation.result import AggregateResult


@dataclass(frozen=True)
class Batch:
    """Validated inputs of one aggregation call.

    updates: [n, d] working tensor: float64 on CPU in deterministic mode, otherwise the
             input's device in float32 (float64 inputs stay float64). Rules must not
             modify it in place (it may alias the caller's tensor).
    weights: float64 [n] on CPU, non-negative with a positive sum.
    inputs:  validated side inputs by name (see `flchain.aggregation.SIDE_INPUTS`),
             small [n] tensors on CPU.
    """

    updates: Tensor
    weights: Tensor
    deterministic: bool
    inputs: dict[str, Tensor] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.updates.shape[0])

    @property
    def d(self) -> int:
        return int(self.updates.shape[1])

    def zeros(self) -> Tensor:
        """A zero update in the working dtype/device (the result when nothing is accepted)."""
        return torch.zeros(self.d, dtype=self.updates.dtype, device=self.updates.device)


@dataclass(frozen=True)
class RuleSpec:
    """One registered rule.

    run(batch, **params) does the work; its keyword-only parameters are the rule's
    parameters, so the registry can reject misspelt ones. `inputs` are side inputs the
    caller must pass, `optional_inputs` ones it may pass (e.g. Siren's carried credits).
    """

    name: str
    run: Callable[..., AggregateResult]
    inputs: tuple[str, ...] = ()
    optional_inputs: tuple[str, ...] = ()
