"""Sageflow (Park et al., NeurIPS 2021): staleness-aware grouping with entropy-based
filtering and loss-weighted averaging, against both stragglers and adversaries.
"""

from __future__ import annotations

import math

import torch

from flchain.aggregation._numerics import combine, det_pow, exact_sum
from flchain.aggregation._validation import check_float, check_int
from flchain.aggregation.base import Batch, RuleSpec
from flchain.aggregation.errors import AggregationError
from flchain.aggregation.result import AggregateResult

INPUTS = ("staleness", "public_loss", "public_entropy")
# A public loss of exactly 0 would get an infinite weight; it is read as this instead.
LOSS_FLOOR = 1e-12


def _pow(x: float, p: float, deterministic: bool) -> float:
    return det_pow(x, p) if deterministic else math.pow(x, p)


def run(
    batch: Batch,
    *,
    entropy_threshold: float = 1.0,
    delta: float = 1.0,
    lam: float = 0.5,
    gamma: float = 1.0,
    max_staleness: int | None = None,
) -> AggregateResult:
    """Sageflow's aggregate, as an update relative to the current global model.

    Side inputs, per update i (the caller evaluates base_global + update_i on the server's
    small public split): staleness (rounds behind, 0 = fresh), public_loss, public_entropy
    (average prediction entropy).

    1. Entropy-based filtering: update i is dropped when public_entropy_i >= entropy_threshold
       (poisoned models predict with high uncertainty); also dropped when staleness_i >
       max_staleness (if given) or its weight is 0. When the filter would drop every
       update (early rounds, when every model is uncertain), it is skipped for that round
       and info["entropy_fallback"] is True; the reference code would stall there.
    2. Loss-weighted averaging inside each staleness group:
       a_i = weights_i / public_loss_i ** delta, normalised within the group.
    3. Staleness-aware grouping: group s counts (s + 1) ** -lam times the summed weights of
       its surviving updates; groups are normalised to sum to 1.
    4. The paper mixes the result with the current global model,
       new = (1 - gamma) * current + gamma * average; the returned update is gamma times the
       averaged update, so with update_i = model_i - current_global, current + update is
       exactly that new global model.

    The paper's defaults: entropy_threshold 1, delta 1, lam 0.5; gamma 1 (no mixing).
    In deterministic mode delta and lam must be multiples of 1/16 (see det_pow).
    If every update is dropped the update is zero (the global model stays) and
    info["empty"] is True. scores: each update's final coefficient (0 when dropped).
    info: filtered (dropped by entropy), too_stale, groups ({staleness: weight}), gamma.
    """
    entropy_threshold = check_float(
        "sageflow entropy_threshold", entropy_threshold, low=0.0, low_open=True
    )
    delta = check_float("sageflow delta", delta, low=0.0)
    lam = check_float("sageflow lam", lam, low=0.0)
    gamma = check_float("sageflow gamma", gamma, low=0.0, high=1.0, low_open=True)
    if max_staleness is not None:
        max_staleness = check_int("sageflow max_staleness", max_staleness, low=0)

    det = batch.deterministic
    staleness = batch.inputs["staleness"].tolist()
    loss = batch.inputs["public_loss"].tolist()
    entropy = batch.inputs["public_entropy"].tolist()
    weights = batch.weights.tolist()
    n = batch.n

    filtered = [i for i in range(n) if entropy[i] >= entropy_threshold]
    too_stale = (
        [i for i in range(n) if staleness[i] > max_staleness] if max_staleness is not None else []
    )
    dropped = set(filtered) | set(too_stale)
    survivors = [i for i in range(n) if i not in dropped and weights[i] > 0]
    entropy_fallback = False
    if not survivors and filtered:
        # Early in training every model predicts with near-maximal entropy, and a filter that
        # drops everyone would freeze the global model for good. With nothing to tell apart,
        # fall back to loss weighting alone (which still starves high-loss poisoned models).
        survivors = [i for i in range(n) if i not in set(too_stale) and weights[i] > 0]
        entropy_fallback = bool(survivors)

    groups: dict[int, list[int]] = {}
    for i in survivors:
        groups.setdefault(staleness[i], []).append(i)
    group_weight = {
        s: _pow(s + 1.0, -lam, det) * exact_sum([weights[i] for i in members])
        for s, members in sorted(groups.items())
    }
    total = exact_sum(list(group_weight.values()))
    if survivors and not total > 0.0:
        raise AggregationError(f"sageflow group weights underflow to 0 (lam={lam} too large)")

    coeffs = [0.0] * n
    for s, members in groups.items():
        alpha = {i: weights[i] / _pow(max(loss[i], LOSS_FLOOR), delta, det) for i in members}
        alpha_sum = exact_sum(list(alpha.values()))
        if not alpha_sum > 0.0:
            raise AggregationError(
                f"sageflow loss weights underflow to 0 in staleness group {s}: "
                f"public_loss too large for delta={delta}"
            )
        share = group_weight[s] / total
        for i in members:
            coeffs[i] = gamma * (share * (alpha[i] / alpha_sum))

    kept = set(survivors)
    update = combine(coeffs, batch.updates, deterministic=det) if survivors else batch.zeros()
    return AggregateResult(
        update=update,
        accepted=torch.tensor([i in kept for i in range(n)], dtype=torch.bool),
        scores=torch.tensor(coeffs, dtype=torch.float64),
        info={
            "filtered": [] if entropy_fallback else filtered,
            "entropy_fallback": entropy_fallback,
            "too_stale": too_stale,
            "groups": {s: (w / total) for s, w in group_weight.items()},
            "gamma": gamma,
            "empty": not survivors,
        },
    )


# Its server step judges candidates on data the aggregator holds, so it runs in `simulate`
# only until every node can compute the scores on a public validation set (issue 11, item 4).
SPEC = RuleSpec(name="sageflow", run=run, inputs=INPUTS, network=False, public_data=True)
