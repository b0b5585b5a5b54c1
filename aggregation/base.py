"""The small interface each rule module implements, and the validated batch it receives."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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


def no_f(n: int) -> int:
    """`max_f` of a rule that tolerates no Byzantine update (FedAvg)."""
    return 0


def half_minus_one(n: int) -> int:
    """The largest f < n / 2: what a coordinate-wise median or a geometric median tolerates."""
    return (n - 1) // 2


@dataclass(frozen=True)
class RuleSpec:
    """One registered rule and the facts the CLI, launcher, config and node read about it.

    run(batch, **params) does the work; its keyword-only parameters are the rule's
    parameters, so the registry can reject misspelt ones. `inputs` are side inputs the
    caller must pass, `optional_inputs` ones it may pass (e.g. Siren's carried credits).

    Facts:
    network:     runs on the network, where every honest node must derive the same model
                 from the peers' blobs alone (no data only a server holds).
    secure:      runs in secure mode, where only the sum of the updates is revealed (the
                 rule is then FedAvg, plus alarms for Siren).
    public_data: needs per-update scores on data the aggregator holds (a public set).
    weighted:    its result is a weighted statistic of every update, so it takes the
                 consensus weights (sample counts times reputation); other rules weigh the
                 updates they keep uniformly unless the task says otherwise.
    max_f(n):    the most Byzantine updates among n that the rule's guarantee tolerates
                 (negative: the rule cannot run on n updates); None where no such bound is
                 stated (SageFlow and Siren judge updates on data, not by counting).
    f_bound:     that bound in words, for error messages ("n > 2f + 2").
    takes_f:     `f` is a parameter (krum, multikrum, bulyan; trimmed_mean's per-side trim),
                 valid for 0 <= f <= max_f(n).
    check(params, n): validates parameter values (n None: the number of updates is not
                 known yet, e.g. a task config) and raises AggregationError naming the fix.
    fit(params, n): the rule and parameters to use when only n updates arrived, as every
                 honest node derives them alike (see `flchain.aggregation.fit_params`).
    """

    name: str
    run: Callable[..., AggregateResult]
    inputs: tuple[str, ...] = ()
    optional_inputs: tuple[str, ...] = ()
    network: bool = True
    secure: bool = False
    public_data: bool = False
    weighted: bool = False
    max_f: Callable[[int], int] | None = None
    f_bound: str = ""
    takes_f: bool = False
    check: Callable[[dict[str, Any], int | None], None] | None = None
    fit: Callable[[dict[str, Any], int], tuple[str, dict[str, Any]]] | None = None
