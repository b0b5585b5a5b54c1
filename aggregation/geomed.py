"""Geometric median by smoothed Weiszfeld: RFA (Pillutla, Kakade & Harchaoui 2019/2022)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flchain.aggregation._numerics import combine, exact_sum, normalized, sq_dists_to
from flchain.aggregation._validation import check_float, check_int
from flchain.aggregation.base import Batch, RuleSpec, half_minus_one
from flchain.aggregation.catalog import FACTS
from flchain.aggregation.result import AggregateResult


def _distances(batch: Batch, v: Tensor) -> list[float]:
    sq = sq_dists_to(batch.updates, v, deterministic=batch.deterministic)
    return [math.sqrt(x) for x in sq.to(device="cpu", dtype=torch.float64).tolist()]


def run(
    batch: Batch, *, nu: float = 1e-6, max_iter: int = 100, tol: float = 1e-6
) -> AggregateResult:
    """Weighted geometric median: argmin_v sum_i a_i ||v - u_i||, a = weights / sum(weights).

    Starts at the weighted mean; each step re-weights update i by a_i / max(nu, ||v - u_i||)
    (nu smooths the objective so an iterate sitting on an update stays finite) and stops
    when the objective changes by at most tol * objective, or after max_iter steps.
    scores: final distances ||v - u_i||. accepted: updates with a positive weight.
    info: iterations (steps taken), converged, objective, weiszfeld_weights (the
    normalised weights of the last step).
    """
    nu = check_float("geomed nu", nu, low=0.0, low_open=True)
    max_iter = check_int("geomed max_iter", max_iter, low=1)
    tol = check_float("geomed tol", tol, low=0.0)
    alpha = normalized(batch.weights)
    v = combine(alpha, batch.updates, deterministic=batch.deterministic)
    dist = _distances(batch, v)
    objective = exact_sum([a * x for a, x in zip(alpha, dist, strict=True)])
    coeffs = alpha
    iterations = 0
    converged = False
    while iterations < max_iter:
        coeffs = normalized([a / max(nu, x) for a, x in zip(alpha, dist, strict=True)])
        v = combine(coeffs, batch.updates, deterministic=batch.deterministic)
        dist = _distances(batch, v)
        previous = objective
        objective = exact_sum([a * x for a, x in zip(alpha, dist, strict=True)])
        iterations += 1
        if abs(previous - objective) <= tol * objective:
            converged = True
            break
    return AggregateResult(
        update=v,
        accepted=batch.weights > 0,
        scores=torch.tensor(dist, dtype=torch.float64),
        info={
            "iterations": iterations,
            "converged": converged,
            "objective": objective,
            "weiszfeld_weights": torch.tensor(coeffs, dtype=torch.float64),
        },
    )


SPEC = RuleSpec(**FACTS["geomed"].spec_fields(), run=run, max_f=half_minus_one)
