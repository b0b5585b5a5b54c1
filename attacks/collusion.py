"""Colluding update attacks that shape their update from the round's benign updates."""

from __future__ import annotations

from statistics import NormalDist

import torch
from torch import Tensor

from flchain.attacks._checks import honest_matrix
from flchain.attacks.context import AttackContext, AttackError, check_params, float_param

IPM_EPSILON = 0.5
"""Default for `ipm`. Xie et al. (2019) show that a small epsilon (0.1 in their runs) slips
past median/Krum-style rules while a large one (100) defeats averaging; 0.5 keeps the update
within the benign spread yet, with a few colluders, turns the inner product of the aggregate
with the true gradient negative for mean-based rules."""


def alie_z(num_clients: int, num_byzantine: int) -> float:
    """ALIE's z from Baruch et al. (2019): the largest shift that still wins a majority.

    s = floor(n/2 + 1) - f honest peers must be "further" from the mean than the attacker
    for it to be picked, which happens with probability Phi(z) = (n - s) / n.
    """
    n, f = num_clients, num_byzantine
    if n < 1 or f < 0 or f > n:
        raise AttackError(
            f"attack 'alie' needs 0 <= num_byzantine <= num_clients and num_clients >= 1, "
            f"got n={n}, f={f} (set context.num_clients/num_byzantine or param 'z')"
        )
    s = n // 2 + 1 - f
    if not 0 < s < n:
        raise AttackError(
            f"attack 'alie': s = floor(n/2 + 1) - f = {s} for n={n}, f={f}; the paper's z "
            "exists only for 0 < s < n (give param 'z' explicitly)"
        )
    return NormalDist().inv_cdf((n - s) / n)


def alie(update: Tensor, context: AttackContext) -> Tensor:
    """ "A Little Is Enough": send mean - z * std of the benign updates, per coordinate.

    Param `z` overrides the paper's value from `alie_z(num_clients, num_byzantine)`. The std
    is the population one (divide by m), which stays defined with a single benign update.
    """
    check_params("alie", context.params, ("z",))
    honest = honest_matrix("alie", update, context)
    if "z" in context.params:
        z = float_param("alie", context.params, "z", 0.0)
    else:
        z = alie_z(context.num_clients, context.num_byzantine)
    mean = honest.mean(dim=0)
    std = torch.std(honest, dim=0, correction=0)
    return mean - z * std


def ipm(update: Tensor, context: AttackContext) -> Tensor:
    """Inner-product manipulation (Xie et al. 2019): send -epsilon x the benign mean.

    Param `epsilon` > 0, default 0.5 (see `IPM_EPSILON`).
    """
    check_params("ipm", context.params, ("epsilon",))
    epsilon = float_param("ipm", context.params, "epsilon", IPM_EPSILON)
    if epsilon <= 0:
        raise AttackError(f"attack 'ipm': epsilon must be > 0, got {epsilon}")
    honest = honest_matrix("ipm", update, context)
    return honest.mean(dim=0) * -epsilon
