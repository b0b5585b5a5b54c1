"""Sageflow (Park et al., NeurIPS 2021): staleness-aware grouping with entropy-based
filtering and loss-weighted averaging, against both stragglers and adversaries.

As published (the paper and its reference code, savertm/Sageflow, `utils1.py`: `Eflow`, `Sag`):
updates are grouped by staleness; inside each group, models whose average prediction entropy on
the public set reaches E_th are filtered out and the rest are averaged with weights
1 / public_loss ** delta; group s then counts (s + 1) ** -lam times its number of surviving
models; and the global model moves to (1 - gamma_t) * current + gamma_t * (that average of
models), gamma_t halving every `gamma_every` rounds in the asynchronous setup.

Where this module deviates, and why:
- Callers pass updates relative to the CURRENT global model, update_i = model_i - w_t,
  whatever model_i's staleness: a weighted average of those is the average of the models minus
  w_t, so the result is exactly the reference's average of MODELS per staleness group (a stale
  peer's own delta, model_i - w_{t-s}, must be shifted by w_{t-s} - w_t first, as
  `flchain.simulation` does). With every staleness 0 (the synchronous network) it is plain
  model - current global.
- Group weights count the survivors' `weights` (1 each for robust rules, as in the reference;
  sample counts or consensus weights when the caller says so).
- When every update is filtered out the reference crashes (its group average is None and its
  `Sag` has no model to start from); here the update is zero and the global model stays
  (info["empty"]). `entropy_fallback=True` instead skips the entropy filter for such a round
  (loss weighting alone still starves high-loss models): an explicit option, off as in the
  reference.
- The reference hard-codes its gamma schedule per dataset (halving every 15 rounds on MNIST,
  20 on FMNIST, 300 on CIFAR-10); here it is the `gamma_every` parameter, and the asynchronous
  simulation defaults to MNIST's ASYNC_GAMMA_EVERY = 15 (our digits are MNIST-like).
"""

from __future__ import annotations

import math

import torch

from flchain.aggregation._numerics import combine, det_pow, exact_sum
from flchain.aggregation._validation import check_float, check_int
from flchain.aggregation.base import Batch, RuleSpec
from flchain.aggregation.catalog import FACTS
from flchain.aggregation.errors import AggregationError
from flchain.aggregation.result import AggregateResult

INPUTS = ("staleness", "public_loss", "public_entropy")
# A public loss of exactly 0 would get an infinite weight; it is read as this instead.
LOSS_FLOOR = 1e-12
# A group whose summed loss scores sum_i public_loss_i ** -delta (over its entropy survivors) is
# at most this counts as empty, as the reference's `Eflow` returns no average below 0.001.
EMPTY_GROUP_SCORE = 1e-3
# Rounds between halvings of gamma in the asynchronous reference's MNIST runs (`Sag`).
ASYNC_GAMMA_EVERY = 15


def gamma_at(gamma: float, gamma_every: int, round_index: int) -> float:
    """The mixing factor of round `round_index` (0-based, the reference's epoch):
    gamma * 0.5 ** (round_index // gamma_every), or gamma when gamma_every is 0 (the
    synchronous setup mixes nothing in). A power of two, so exact on every machine."""
    if gamma_every == 0:
        return gamma
    return math.ldexp(gamma, -(round_index // gamma_every))


def _pow(x: float, p: float, deterministic: bool) -> float:
    return det_pow(x, p) if deterministic else math.pow(x, p)


def run(
    batch: Batch,
    *,
    entropy_threshold: float = 1.0,
    delta: float = 1.0,
    lam: float = 0.5,
    gamma: float = 1.0,
    gamma_every: int = 0,
    round_index: int = 0,
    max_staleness: int | None = None,
    entropy_fallback: bool = False,
) -> AggregateResult:
    """Sageflow's aggregate, as an update relative to the current global model w_t.

    Side inputs, per update i: staleness (rounds between the global version the peer trained
    from and this round, 0 = fresh), public_loss and public_entropy (average prediction
    entropy) of model_i = w_t + update_i on the public set. update_i must be model_i - w_t
    for stale updates too (see the module docstring): then averaging updates is averaging
    models.

    1. Entropy-based filtering: update i is dropped when public_entropy_i >= entropy_threshold
       (poisoned models predict with high uncertainty); also when staleness_i > max_staleness
       (if given) or its weight is 0.
    2. Loss-weighted averaging inside each staleness group s:
       a_i = weights_i / public_loss_i ** delta, normalised within the group. A group whose
       sum of public_loss_i ** -delta is <= EMPTY_GROUP_SCORE is empty (info["empty_groups"];
       its updates are dropped), as in the reference.
    3. Staleness-aware grouping: group s counts (s + 1) ** -lam times the summed weights of
       its surviving updates; non-empty groups are normalised to sum to 1.
    4. Mixing: new = (1 - gamma_t) * w_t + gamma_t * average, gamma_t = `gamma_at(gamma,
       gamma_every, round_index)`; the returned update is gamma_t times the averaged update.

    Defaults are the paper's: entropy_threshold 1, delta 1, lam 0.5, and gamma 1 with no decay
    (the synchronous setup); the asynchronous one passes gamma_every (ASYNC_GAMMA_EVERY) and
    the round. In deterministic mode delta and lam must be multiples of 1/16 (see det_pow).
    If nothing survives, the update is zero (the global model stays) and info["empty"] is
    True, unless entropy_fallback lets a round whose every update the entropy filter dropped
    fall back to loss weighting alone (info["entropy_fallback"]).
    scores: each update's final coefficient (0 when dropped). info: filtered (dropped by
    entropy), too_stale, empty_groups, groups ({staleness: share}), gamma (gamma_t), empty.
    """
    entropy_threshold = check_float(
        "sageflow entropy_threshold", entropy_threshold, low=0.0, low_open=True
    )
    delta = check_float("sageflow delta", delta, low=0.0)
    lam = check_float("sageflow lam", lam, low=0.0)
    gamma = check_float("sageflow gamma", gamma, low=0.0, high=1.0, low_open=True)
    gamma_every = check_int("sageflow gamma_every", gamma_every, low=0)
    round_index = check_int("sageflow round_index", round_index, low=0)
    if max_staleness is not None:
        max_staleness = check_int("sageflow max_staleness", max_staleness, low=0)
    if not isinstance(entropy_fallback, bool):
        raise AggregationError(
            f"sageflow entropy_fallback must be true or false, got {entropy_fallback!r}"
        )
    gamma_t = gamma_at(gamma, gamma_every, round_index)

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
    fell_back = False
    if not survivors and filtered and entropy_fallback:
        survivors = [i for i in range(n) if i not in set(too_stale) and weights[i] > 0]
        fell_back = bool(survivors)

    members: dict[int, list[int]] = {}
    for i in survivors:
        members.setdefault(staleness[i], []).append(i)
    score = {i: 1.0 / _pow(max(loss[i], LOSS_FLOOR), delta, det) for i in survivors}
    groups = {
        s: idx
        for s, idx in sorted(members.items())
        if exact_sum([score[i] for i in idx]) > EMPTY_GROUP_SCORE
    }
    empty_groups = sorted(set(members) - set(groups))
    survivors = sorted(i for idx in groups.values() for i in idx)
    group_weight = {
        s: _pow(s + 1.0, -lam, det) * exact_sum([weights[i] for i in idx])
        for s, idx in groups.items()
    }
    total = exact_sum(list(group_weight.values()))
    if survivors and not total > 0.0:
        raise AggregationError(f"sageflow group weights underflow to 0 (lam={lam} too large)")

    coeffs = [0.0] * n
    for s, idx in groups.items():
        alpha = {i: weights[i] * score[i] for i in idx}
        alpha_sum = exact_sum(list(alpha.values()))
        if not alpha_sum > 0.0:
            raise AggregationError(
                f"sageflow loss weights underflow to 0 in staleness group {s}: "
                f"public_loss too large for delta={delta}"
            )
        share = group_weight[s] / total
        for i in idx:
            coeffs[i] = gamma_t * (share * (alpha[i] / alpha_sum))

    kept = set(survivors)
    update = combine(coeffs, batch.updates, deterministic=det) if survivors else batch.zeros()
    return AggregateResult(
        update=update,
        accepted=torch.tensor([i in kept for i in range(n)], dtype=torch.bool),
        scores=torch.tensor(coeffs, dtype=torch.float64),
        info={
            "filtered": [] if fell_back else filtered,
            "entropy_fallback": fell_back,
            "too_stale": too_stale,
            "empty_groups": empty_groups,
            "groups": {s: (w / total) for s, w in group_weight.items()},
            "gamma": gamma_t,
            "empty": not survivors,
        },
    )


# Its server step scores candidates on public data: on the network every node computes the
# scores on the public validation set the task config names (`flchain.public_set`).
SPEC = RuleSpec(**FACTS["sageflow"].spec_fields(), run=run, inputs=INPUTS)
