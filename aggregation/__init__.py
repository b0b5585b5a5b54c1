"""flchain.aggregation: FedAvg and Byzantine-robust aggregation rules as pure tensor functions.

    res = aggregate("krum", updates, weights, f=2)
    res.update, res.accepted, res.scores, res.info

Each rule lives in its own module behind `RuleSpec` (base.py); this module is the registry
and the one entry point, which validates inputs once so the rules can trust them.
"""

from __future__ import annotations

import inspect

import torch
from torch import Tensor

from flchain.aggregation import bulyan, fedavg, geomed, krum, median, sageflow, siren, trimmed_mean
from flchain.aggregation._validation import (
    SIDE_INPUTS,
    check_known_params,
    check_side_input,
    check_updates,
    check_weights,
)
from flchain.aggregation.base import Batch, RuleSpec
from flchain.aggregation.errors import AggregationError
from flchain.aggregation.result import AggregateResult

__all__ = [
    "RULES",
    "SIDE_INPUTS",
    "AggregateResult",
    "AggregationError",
    "aggregate",
    "optional_inputs",
    "required_inputs",
    "rule_parameters",
]

_SPECS: dict[str, RuleSpec] = {
    spec.name: spec
    for spec in (
        fedavg.SPEC,
        median.SPEC,
        trimmed_mean.SPEC,
        krum.KRUM,
        krum.MULTIKRUM,
        bulyan.SPEC,
        geomed.SPEC,
        sageflow.SPEC,
        siren.SPEC,
    )
}

RULES: tuple[str, ...] = tuple(_SPECS)


def _spec(rule: object) -> RuleSpec:
    if not isinstance(rule, str) or rule not in _SPECS:
        known = ", ".join(RULES)
        raise AggregationError(f"unknown aggregation rule {rule!r}; known rules: {known}")
    return _SPECS[rule]


def required_inputs(rule: str) -> tuple[str, ...]:
    """Per-update side inputs the caller must pass to `rule` (empty for most rules)."""
    return _spec(rule).inputs


def optional_inputs(rule: str) -> tuple[str, ...]:
    """Per-update side inputs `rule` accepts but does not need (Siren's carried `credits`)."""
    return _spec(rule).optional_inputs


def rule_parameters(rule: str) -> tuple[str, ...]:
    """The tunable parameters `rule` accepts (e.g. `f`, `m` for multikrum), for early checks."""
    return _rule_params(_spec(rule))


def _rule_params(spec: RuleSpec) -> tuple[str, ...]:
    return tuple(
        name
        for name, p in inspect.signature(spec.run).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    )


def _working(updates: Tensor, deterministic: bool) -> Tensor:
    """Deterministic: float64 on CPU. Fast: the input's device, float32 unless float64."""
    if deterministic:
        return updates.to(device="cpu", dtype=torch.float64)
    if updates.dtype == torch.float64:
        return updates
    return updates.to(torch.float32)


def aggregate(
    rule: str,
    updates: Tensor,
    weights: Tensor | None = None,
    *,
    deterministic: bool = True,
    **params: object,
) -> AggregateResult:
    """Aggregate n flattened updates [n, d] with `rule` (one of RULES).

    weights: [n] non-negative (sample counts, times reputation on the network path);
    None means equal. params: the rule's parameters and side inputs (`required_inputs`).
    deterministic=True computes on CPU in float64 with fixed-order reductions and index
    tie-breaks, so every machine gets the same bits; False uses the input's device and
    fast (BLAS) reductions. The update comes back in the input's dtype and device,
    `accepted` (bool) and `scores` (float64) on the same device.
    Raises AggregationError for any invalid rule, input or parameter.
    """
    spec = _spec(rule)
    updates = check_updates(updates)
    n = int(updates.shape[0])
    side_names = spec.inputs + spec.optional_inputs
    check_known_params(rule, list(params), side_names + _rule_params(spec))
    missing = [name for name in spec.inputs if name not in params]
    if missing:
        raise AggregationError(
            f"rule '{rule}' needs side input(s) {', '.join(missing)} (one value per update)"
        )
    inputs = {
        name: check_side_input(name, params.pop(name), n) for name in side_names if name in params
    }
    batch = Batch(
        updates=_working(updates, bool(deterministic)),
        weights=check_weights(weights, n),
        deterministic=bool(deterministic),
        inputs=inputs,
    )
    raw = spec.run(batch, **params)
    device = updates.device
    return AggregateResult(
        update=raw.update.to(device=device, dtype=updates.dtype),
        accepted=raw.accepted.to(device=device, dtype=torch.bool),
        scores=raw.scores.to(device=device, dtype=torch.float64),
        info=raw.info,
    )
