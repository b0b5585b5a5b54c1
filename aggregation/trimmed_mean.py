"""Coordinate-wise trimmed mean (Yin et al. 2018).

Yin et al. trim a fraction beta of the n values per side; ByzFL's TrMean (LPD-EPFL/byzfl)
trims a count f per side and requires 2f < n. Both are accepted here (`beta` or `f`, not
both) and compute the same thing: k = floor(beta * n), exactly, or k = f values dropped at
each end of every coordinate and the mean of the n - 2k left. Unlike ByzFL, a beta or f that
trims nothing at this n is refused (ByzFL's default f = 0 is the plain mean) unless it is 0.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import torch

from flchain.aggregation._numerics import rows_sum
from flchain.aggregation._validation import check_fraction, check_int
from flchain.aggregation.base import Batch, RuleSpec, half_minus_one
from flchain.aggregation.catalog import FACTS
from flchain.aggregation.errors import AggregationError
from flchain.aggregation.result import AggregateResult

F_BOUND = FACTS["trimmed_mean"].f_bound
_BETA_MAX = Fraction(1, 2)


def max_f(n: int) -> int:
    """The most values trimmed per side that leave one: 2f < n."""
    return half_minus_one(n)


def default_trim(n: int) -> int:
    """Values trimmed per side when neither beta nor f is given: max(1, floor(n / 10)) for
    n >= 3, else 0.

    Why: a trimmed mean tolerates k Byzantine values per coordinate only if it trims k per
    side (Yin et al. need beta >= the Byzantine fraction), and with the fixed beta = 0.1 it
    used to default to, nothing was trimmed below 10 updates, the 4-node devnet included. So
    the default never trims less than one per side once something is left (n >= 3: on 4
    updates it averages the middle two, on 3 it is the median), and keeps the customary 10%
    for larger n. Give beta or f to trim more (e.g. f = the number of Byzantine peers).
    """
    return max(1, n // 10) if n >= 3 else 0


def _beta(value: object) -> Fraction:
    return check_fraction(
        "trimmed_mean beta", value, low=Fraction(0), high=_BETA_MAX, high_open=True
    )


def trim_count(n: int, beta: object = None, f: object = None) -> int:
    """k, the values trimmed per side for n updates; raises AggregationError if the setting
    is invalid for n or trims nothing although it is not 0."""
    if beta is not None and f is not None:
        raise AggregationError("trimmed_mean takes beta (a fraction) or f (a count), not both")
    if f is not None:
        k = check_int("trimmed_mean f", f, low=0)
        if 2 * k >= n:
            raise AggregationError(
                f"trimmed_mean needs {F_BOUND}: with n={n} updates f can be at most "
                f"{max_f(n)}; got f={k}"
            )
        return k
    if beta is None:
        return default_trim(n)
    frac = _beta(beta)
    k = math.floor(frac * n)
    if frac > 0 and k == 0:
        fix = (
            f"use beta >= {Fraction(1, n)} (or f=1) to trim one per side, or beta=0 for the "
            "plain mean"
            if n >= 3
            else "no value can be trimmed from fewer than 3 (use beta=0, the plain mean)"
        )
        raise AggregationError(
            f"trimmed_mean beta={beta} trims floor({frac} * {n}) = 0 of {n} updates per side, "
            f"i.e. nothing: {fix}"
        )
    return k


def check_params(params: dict[str, Any], n: int | None) -> None:
    """Values of beta / f; with n known, also that they trim something and leave something."""
    beta, f = params.get("beta"), params.get("f")
    if n is not None:
        trim_count(n, beta, f)
        return
    if beta is not None and f is not None:
        trim_count(1, beta, f)  # raises: not both
    if beta is not None:
        _beta(beta)
    if f is not None:
        check_int("trimmed_mean f", f, low=0)


def fit_params(params: dict[str, Any], n: int) -> tuple[str, dict[str, Any]]:
    """For n arrived updates: an f too large for n becomes max_f(n); a beta that trims
    nothing at this n (n < 1 / beta) trims one per side instead, where one can be trimmed,
    because the task asked for trimming and one is the least there is."""
    out = dict(params)
    f, beta = out.get("f"), out.get("beta")
    if isinstance(f, int) and not isinstance(f, bool) and f > max_f(n):
        out["f"] = max(0, max_f(n))
    elif beta is not None and f is None:
        frac = _beta(beta)
        if frac > 0 and math.floor(frac * n) == 0:
            del out["beta"]
            out["f"] = min(1, max(0, max_f(n)))
    return "trimmed_mean", out


def run(batch: Batch, *, beta: object = None, f: int | None = None) -> AggregateResult:
    """Per coordinate drop the k smallest and k largest values, average the n - 2k left.

    k = floor(beta * n) computed exactly (beta in [0, 1/2): a float is read as the fraction
    it was typed as, so 2/7 of 7 trims 2 and 0.29 of 100 trims 29; a string "2/7" is exact),
    or k = f, or by default `default_trim(n)` (max(1, floor(n / 10)) for n >= 3). beta = 0 is
    the plain mean. `weights` are validated but do not enter: each update is one vote. Ties
    are broken by index (stable sort) so the bits are reproducible.
    scores: fraction of coordinates at which the update was trimmed.
    accepted: updates that were kept at one coordinate or more.
    """
    n, d = batch.n, batch.d
    k = trim_count(n, beta, f)
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


SPEC = RuleSpec(
    **FACTS["trimmed_mean"].spec_fields(), run=run, max_f=max_f, check=check_params, fit=fit_params
)
