"""flchain.aggregation: FedAvg and Byzantine-robust aggregation rules as pure tensor functions.

    res = aggregate("krum", updates, weights, f=2)
    res.update, res.accepted, res.scores, res.info

Each rule lives in its own module behind `RuleSpec` (base.py); this module is the registry
and the one entry point, which validates inputs once so the rules can trust them. The facts
about each rule (runs on the network? in secure mode? needs public data? weighs updates?
which f it tolerates among n and how its parameters degrade when fewer updates arrive) live
in its spec; the CLI, the devnet launcher, the configs and the node read them from here
(`rule_spec`, NETWORK_RULES, SECURE_RULES, `max_f`, `check_params`, `fit_params`).
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from flchain.aggregation import bulyan, fedavg, geomed, krum, median, sageflow, siren, trimmed_mean
from flchain.aggregation._validation import (
    check_known_params,
    check_side_input,
    check_updates,
    check_weights,
)
from flchain.aggregation.base import Batch, RuleSpec
from flchain.aggregation.catalog import (
    RULES,
)
from flchain.aggregation.errors import AggregationError
from flchain.aggregation.result import AggregateResult

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

# The specs take their facts from the catalog; a rule missing from either is a bug.
if tuple(_SPECS) != RULES:
    raise RuntimeError(f"aggregation/catalog.py lists {RULES}, the specs {tuple(_SPECS)}")


def _spec(rule: object) -> RuleSpec:
    if not isinstance(rule, str) or rule not in _SPECS:
        known = ", ".join(RULES)
        raise AggregationError(f"unknown aggregation rule {rule!r}; known rules: {known}")
    return _SPECS[rule]


def rule_spec(rule: str) -> RuleSpec:
    """The registered spec of `rule`: its facts (see RuleSpec) and its run function."""
    return _spec(rule)


def max_f(rule: str, n: int) -> int | None:
    """The most Byzantine updates among n that `rule`'s guarantee tolerates (negative: the
    rule cannot run on n updates; None: the rule states no such bound)."""
    spec = _spec(rule)
    return None if spec.max_f is None else spec.max_f(n)


def check_params(rule: str, params: dict[str, Any], n: int | None = None) -> None:
    """Check `params` for `rule` before any data exists: names (the message lists the valid
    parameters) and values, for n updates when n is known (e.g. krum's n > 2f + 2).
    Raises AggregationError."""
    spec = _spec(rule)
    check_known_params(rule, list(params), _rule_params(spec))
    if n is not None and spec.max_f is not None and spec.takes_f and spec.max_f(n) < 0:
        raise AggregationError(f"{rule} cannot run on {n} update(s): it needs {spec.f_bound}")
    if spec.check is not None:
        spec.check(dict(params), n)


def canonical_order(updates: Sequence[Tensor]) -> list[int]:
    """The order to aggregate `updates` in: by the SHA-256 of each one's float32 bytes, ties
    (equal updates) by position. Floating-point sums depend on their order, and Krum-style
    rules break ties by position, so an order taken from the caller would make the result
    depend on who joined the task first (the network's member indices) or how the peers are
    numbered (the simulation); by content, the result is a function of the set of updates, the
    same for every honest node and for the simulation of the same run."""

    def key(i: int) -> tuple[bytes, int]:
        flat = updates[i].detach().to("cpu", torch.float32).contiguous().reshape(-1)
        return hashlib.sha256(flat.numpy().tobytes()).digest(), i

    return sorted(range(len(updates)), key=key)


def fit_params(rule: str, params: dict[str, Any], n: int) -> tuple[str, dict[str, Any]]:
    """The rule and parameters to aggregate n arrived updates with, when fewer arrived than
    the task planned for (peers withheld): each spec says how its parameters degrade (Krum
    and Bulyan lower f to the largest their bound allows and fall back to the median below
    3 updates; trimmed mean trims at most what leaves one). Deterministic in (rule, params,
    n), so every honest node takes the same step and the model stays bit-identical."""
    spec = _spec(rule)
    if spec.fit is None:
        return rule, dict(params)
    return spec.fit(dict(params), n)


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
