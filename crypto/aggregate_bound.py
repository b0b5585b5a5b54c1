"""The check every member can run on a decrypted secure aggregate without learning any update.

Pairwise masks make each member's ring values uniform, so nobody can check what one member
encrypted (that would take zero-knowledge norm proofs, which flchain does not have): a
Byzantine member can put any value of the ring in the sum (`flchain.attacks.ringshift`). What
every member can check is the aggregate it learns anyway. When every honest member clips its
update to L2 norm C, the weighted mean of the members (weight shares summing to 1) is a convex
combination of vectors of norm <= C, so its norm is at most

    C + s * (sqrt(d) + NOISE_TAIL) + e * sqrt(d),

s the per-coordinate standard deviation of the DP noise in the mean (zero without noise) and e
the per-coordinate quantization error bound of the decrypted mean. A larger mean proves that
some member encrypted something no honest member sends; every member computes the same norm
from the same decrypted floats (`math.fsum`, exactly rounded) and rejects the round alike.

What remains: the bound holds the whole mean, not one member, so a Byzantine member that
estimates the honest sum (from its own update) can still set the mean to any vector inside
that ball, up to about 2C away from the honest mean. Without a clip (no `dp_clip`) there is no
bound beyond the quantization range itself, and `bound_for` returns None.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from flchain.crypto.errors import CryptoError

__all__ = ["NOISE_TAIL", "AggregateBound", "AggregateBoundError", "bound_for", "mean_noise_std"]

NOISE_TAIL = 6.0
"""Standard deviations of slack for the noise: the norm of d Gaussian coordinates of std s
exceeds s * (sqrt(d) + t) with probability at most exp(-t^2 / 2), 1.5e-8 per round for t = 6,
so an honest round is practically never rejected."""


class AggregateBoundError(CryptoError):
    """A decrypted aggregate that no set of clipped honest updates can produce."""


@dataclass(frozen=True)
class AggregateBound:
    """The largest L2 norm an honest round's decrypted mean can have."""

    clip: float
    noise_std: float = 0.0
    quant_error: float = 0.0

    def limit(self, length: int) -> float:
        """The norm bound for a mean of `length` coordinates."""
        root = math.sqrt(length)
        return self.clip + self.noise_std * (root + NOISE_TAIL) + self.quant_error * root

    def check(self, mean: torch.Tensor | np.ndarray) -> float:
        """The mean's L2 norm; raises `AggregateBoundError` when it exceeds `limit`."""
        values = np.asarray(
            mean.detach().cpu().double().numpy() if isinstance(mean, torch.Tensor) else mean,
            dtype=np.float64,
        ).ravel()
        if not np.isfinite(values).all():
            raise AggregateBoundError("the decrypted mean is not finite")
        norm = math.sqrt(math.fsum((values * values).tolist()))
        limit = self.limit(values.size)
        if norm > limit:
            raise AggregateBoundError(
                f"the decrypted mean has L2 norm {norm:.6g} > {limit:.6g}, the most clipped "
                f"honest updates (clip {self.clip:g}) can give: a member encrypted an "
                "out-of-bound value"
            )
        return norm


def mean_noise_std(
    dp_clip: float, dp_noise: float, shares: Sequence[float], min_members: int | None = None
) -> float:
    """An upper bound on the per-coordinate noise std of the mean: sigma * C * sqrt(sum s_i^2)
    when each member adds N(0, (sigma*C)^2) to its own update (local DP), plus, in quadrature,
    sigma * C * s_max * sqrt(k / n_min) when the members also share the central noise in the
    ring (distributed DP sized for `min_members`, `flchain.crypto.distributed_dp`). Counting
    both keeps honest rounds inside the bound whichever of them the members add."""
    sigma_c = float(dp_noise) * float(dp_clip)
    local = sigma_c * math.sqrt(math.fsum(s * s for s in shares))
    if min_members is None:
        return local
    ring = sigma_c * max(shares) * math.sqrt(len(shares) / min_members)
    return math.hypot(local, ring)


def bound_for(
    dp_clip: float | None,
    dp_noise: float,
    shares: Sequence[float],
    quant_error: float,
    min_members: int | None = None,
) -> AggregateBound | None:
    """The bound of a round whose members clip to `dp_clip` (None: no bound), add noise with
    multiplier `dp_noise` (`min_members`: also shared in the ring, see `mean_noise_std`) and
    weigh with `shares`; `quant_error` is the decrypted mean's per-coordinate quantization
    error bound (`DecryptedSum.error_bound`)."""
    if dp_clip is None:
        return None
    return AggregateBound(
        clip=float(dp_clip),
        noise_std=mean_noise_std(dp_clip, dp_noise, shares, min_members),
        quant_error=float(quant_error),
    )
