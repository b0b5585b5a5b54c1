"""Update attacks that need nothing but the peer's own update (and an RNG)."""

from __future__ import annotations

import torch
from torch import Tensor

from flchain.attacks.context import AttackContext, AttackError, check_params, float_param

SIGNFLIP_FACTOR = 4.0
"""Default for `signflip`: -4 x the honest update, as in the RSA / Karimireddy et al. line of
work. With 3 of 10 peers sending it, the FedAvg mean becomes (7 - 12) / 10 = -0.5 x the benign
direction, so plain averaging walks uphill."""

SCALE_FACTOR = 50.0
"""Default for `scale`: one peer's update x50 outweighs the other peers' together in a
10-peer FedAvg round, enough for the mean to diverge, yet finite in float32."""

GAUSSIAN_SIGMA = 1.0
"""Default standard deviation of the `gaussian` attack's replacement update."""


def signflip(update: Tensor, context: AttackContext) -> Tensor:
    """Send `-factor * update` (param `factor` > 0, default 4)."""
    check_params("signflip", context.params, ("factor",))
    factor = float_param("signflip", context.params, "factor", SIGNFLIP_FACTOR)
    if factor <= 0:
        raise AttackError(f"attack 'signflip': factor must be > 0, got {factor}")
    return update * -factor


def scale(update: Tensor, context: AttackContext) -> Tensor:
    """Send `factor * update` (param `factor` != 0, default 50): a boosted, norm-blowing update."""
    check_params("scale", context.params, ("factor",))
    factor = float_param("scale", context.params, "factor", SCALE_FACTOR)
    if factor == 0:
        raise AttackError("attack 'scale': factor must be non-zero (use the 'zero' attack)")
    return update * factor


def gaussian(update: Tensor, context: AttackContext) -> Tensor:
    """Replace the update by N(0, sigma^2) noise (param `sigma` >= 0, default 1).

    Drawn from `context.generator` on the generator's device, so the same seed gives the same
    update on every machine; without a generator torch's global RNG is used.
    """
    check_params("gaussian", context.params, ("sigma",))
    sigma = float_param("gaussian", context.params, "sigma", GAUSSIAN_SIGMA)
    if sigma < 0:
        raise AttackError(f"attack 'gaussian': sigma must be >= 0, got {sigma}")
    generator = context.generator
    device = generator.device if generator is not None else update.device
    noise = torch.randn(update.shape, generator=generator, dtype=update.dtype, device=device)
    return (noise * sigma).to(update.device)


def zero(update: Tensor, context: AttackContext) -> Tensor:
    """Send an all-zero update: a free rider that contributes nothing (no params)."""
    check_params("zero", context.params, ())
    return torch.zeros_like(update)
