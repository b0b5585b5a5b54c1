"""Distributed DP for secure aggregation: each member adds a Skellam share inside the ring.

Central DP-FedAvg (McMahan et al. 2018) adds N(0, (sigma*C)^2) once to the sum of clipped
updates; a trusted aggregator is needed for that. In secure mode nobody sees a single update,
only the decrypted sum, so the members can add the noise themselves: the distributed Skellam
mechanism (Agarwal, Kairouz, Liu, NeurIPS 2021). Skellam(mu) = Poisson(mu/2) - Poisson(mu/2)
is an integer with variance mu, and a sum of independent Skellams is a Skellam, so when each of
n members adds Skellam(mu / n) to its quantized update, the decrypted sum carries exactly
Skellam(mu). The noise is integer, so it survives the modular ring of the masks bit for bit.

Units. A member quantizes its clipped update x (||x|| <= C) scaled by its weight share s_i, in
levels of width `step` (secure_sum.py). One unit of x is u = s_max / step levels for the member
with the largest share, so C becomes C*u levels and the central noise sigma*C becomes variance
mu = (sigma*C*u)^2 levels^2: after decryption the mean carries noise of std sigma*C*s_max, i.e.
sigma*C/n for equal shares, exactly what central DP-FedAvg's (sum + N(0, (sigma*C)^2)) / n has.

Sensitivity after rounding. Quantization rounds to the nearest level, which moves each
coordinate by at most 1/2 level, so two neighbouring contributions differ by at most
Delta_2 = f*C*u + sqrt(d) levels in L2 (f = 1 for add/remove-one-member adjacency as zeroing
one member's update, 2 for replace-one), the bound the Skellam paper uses for rounding without
its conditional re-draw; in integers Delta_1 <= Delta_2 * min(sqrt(d), Delta_2). The noise is
NOT inflated for the rounding: the sum carries exactly sigma*C, and the accounting uses the
rounded Delta_2, so the reported epsilon is a little above central DP's at the same sigma.

Accounting: the paper's RDP bound for the multi-dimensional Skellam mechanism (its Corollary
3.6 / 4.1, integer orders), summed over rounds, converted to (epsilon, delta) with dp-accounting
(`compute_epsilon`, Balle et al. 2020's conversion). No Gaussian approximation is made: the
bound is the Gaussian RDP alpha*Delta_2^2/(2 mu) plus the paper's correction term.

Who is protected from whom.
- The sum: the decryptor and every outsider see sum + Skellam(k * mu / n_min), k the members in
  the sum; `DistributedAccountant.epsilon`.
- One member's own share: members who collude can subtract their own shares; against all the
  others (k - 1 colluders) a member's update is protected by its share Skellam(mu / n_min) only;
  `member_epsilon`, and `epsilon_against(t)` for t colluders.
- Dropouts: the shares are sized for `min_members`, the fewest members a round may finalize
  with; a round with k >= min_members in its sum carries more noise than sigma*C and the
  guarantee is reported for the actual k. A round that finalizes with fewer carries less and
  its (larger) epsilon is reported too: nothing is hidden.
- Ring overflow: the noise is unbounded, so the quantization range is widened by a tail margin
  (`RING_TAIL` standard deviations of the largest possible noise sum plus RING_TAIL^2 levels;
  Bernstein's inequality puts an overflow below 1e-30 per coordinate); an overflow would be
  caught by the decoder's range check, never wrapped silently.
Byzantine members may add no noise: the honest members' shares alone are what
`epsilon_against(t)` with t = the Byzantine count reports.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from flchain.crypto.errors import DPError

__all__ = [
    "ORDERS",
    "RING_TAIL",
    "DistributedAccountant",
    "DistributedNoise",
    "distributed_noise",
    "learning_warning",
    "noise_to_signal",
    "rounded_sensitivity",
    "skellam_rdp",
]

# Integer Renyi orders (the Skellam bound is stated for integer alpha > 1).
ORDERS: tuple[int, ...] = (*range(2, 64), 80, 96, 128, 192, 256, 512, 1024)
# Standard deviations of tail margin the quantization range gets for the noise sum.
RING_TAIL = 12.0
# Noise-to-signal ratio sigma * sqrt(d) / n (the noise norm of one round's mean relative to a
# clipped update's norm C; sqrt(n) for local noise) over sqrt(T), above which a T-round run
# learns little or nothing. Measured with `make bench-dp` (digits, mlp, 20 rounds, sigma 0.8):
# 0.47 and 2.35 (noise on the sum, 50 and 10 peers) reach 0.88 and 0.76-0.86 accuracy; 3.3 and
# 7.4 (local noise, 50 and 10 peers) 0.29-0.50 and 0.10-0.19.
LEARNABLE_RATIO = 3.0


def _positive(name: str, value: float) -> float:
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise DPError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def _count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DPError(f"{name} must be an int >= 1, got {value!r}")
    return value


@dataclass(frozen=True)
class DistributedNoise:
    """What every member agrees on to share the central noise sigma*C among >= n_min members.

    `sensitivity_factor` is 1 for add/remove (zero-out) adjacency of one member, 2 for
    replace-one; it only changes the accounting, not the noise.
    """

    noise_multiplier: float
    clip_norm: float
    min_members: int
    sensitivity_factor: float = 1.0

    def __post_init__(self) -> None:
        _positive("noise_multiplier", self.noise_multiplier)
        _positive("clip_norm", self.clip_norm)
        _count("min_members", self.min_members)
        _positive("sensitivity_factor", self.sensitivity_factor)

    def central_variance(self, levels_per_unit: float) -> float:
        """mu = (sigma * C * u)^2: the noise variance of the whole sum, in levels^2."""
        return (self.noise_multiplier * self.clip_norm * levels_per_unit) ** 2

    def share_variance(self, levels_per_unit: float) -> float:
        """mu / n_min: the variance one member adds."""
        return self.central_variance(levels_per_unit) / self.min_members

    def margin(self, share_max: float, max_members: int, step: float) -> float:
        """How far the per-member range (lo, hi) must widen on each side so that the decrypted
        mean plus a sum of up to `max_members` shares stays inside the ring's range.

        The mean lies in (lo, hi) and the sum decodes in count * s_max * (lo', hi'), where
        count * s_max >= 1: widening by RING_TAIL standard deviations of the mean's noise
        (sigma*C*s_max*sqrt(N/n_min)) plus RING_TAIL^2 levels of `step` suffices. Bernstein's
        inequality for a Skellam of variance mu, P(|Z| >= t) <= 2 exp(-t^2 / (2(mu + t/3))),
        puts that tail below 1e-30 whether mu is large or tiny."""
        worst = max(max_members, self.min_members) / self.min_members
        std_mean = self.noise_multiplier * self.clip_norm * share_max * math.sqrt(worst)
        return RING_TAIL * std_mean + RING_TAIL**2 * step

    def sample(self, length: int, levels_per_unit: float, rng: np.random.Generator) -> np.ndarray:
        """One member's share: `length` draws of Skellam(mu / n_min) as int64."""
        half = self.share_variance(levels_per_unit) / 2.0
        return rng.poisson(half, length).astype(np.int64) - rng.poisson(half, length).astype(
            np.int64
        )


def rounded_sensitivity(scaled_l2: float, dimension: int) -> tuple[float, float]:
    """(Delta_2, Delta_1) in levels of a contribution whose exact L2 bound is `scaled_l2` levels
    after rounding each of `dimension` coordinates to the nearest level (module docstring)."""
    d = _count("dimension", dimension)
    l2 = float(scaled_l2) + math.sqrt(d)
    return l2, l2 * min(math.sqrt(d), l2)


def skellam_rdp(
    l2: float, l1: float, variance: float, orders: Sequence[int] = ORDERS
) -> np.ndarray:
    """RDP of one release with Skellam noise of `variance` per coordinate (Agarwal et al. 2021):
    eps(a) <= a*D2^2/(2 mu) + min(((2a - 1)*D2^2 + 6*D1) / (4 mu^2), 3*D1 / (2 mu))."""
    mu = _positive("variance", variance)
    a = np.asarray(orders, dtype=np.float64)
    gaussian = a * l2**2 / (2 * mu)
    correction = np.minimum(((2 * a - 1) * l2**2 + 6 * l1) / (4 * mu**2), 3 * l1 / (2 * mu))
    return gaussian + correction


@dataclass
class DistributedAccountant:
    """Running guarantees of distributed Skellam over secure rounds (every member each round)."""

    noise: DistributedNoise
    dimension: int
    delta: float
    _rounds: list[tuple[float, int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        _count("dimension", self.dimension)
        if not 0.0 < float(self.delta) < 1.0:
            raise DPError(f"delta must be in (0, 1), got {self.delta!r}")

    @property
    def rounds(self) -> int:
        return len(self._rounds)

    def step(self, levels_per_unit: float, members: int, min_members: int | None = None) -> None:
        """Account one round whose decrypted sum held `members` shares at scale u levels/unit,
        each sized for `min_members` (default: the noise's own `min_members`)."""
        sized = (
            self.noise.min_members if min_members is None else _count("min_members", min_members)
        )
        u = _positive("levels_per_unit", levels_per_unit)
        self._rounds.append((u, _count("members", members), sized))

    def _rdp(self, honest_shares: int | None, colluders: int) -> np.ndarray:
        total = np.zeros(len(ORDERS))
        for u, k, sized in self._rounds:
            shares = (k - colluders) if honest_shares is None else honest_shares
            if shares < 1:
                return np.full(len(ORDERS), np.inf)
            l2, l1 = rounded_sensitivity(
                self.noise.sensitivity_factor * self.noise.clip_norm * u, self.dimension
            )
            share = self.noise.central_variance(u) / sized
            total += skellam_rdp(l2, l1, shares * share)
        return total

    def _epsilon(self, rdp: np.ndarray) -> float:
        if not self._rounds:
            return 0.0
        if not np.isfinite(rdp).all():
            return math.inf
        # imported here: dp_accounting costs every node half a second to import (scipy.signal)
        from dp_accounting.rdp.rdp_privacy_accountant import compute_epsilon

        return float(compute_epsilon(ORDERS, rdp, float(self.delta))[0])

    @property
    def epsilon(self) -> float:
        """The sum's guarantee: against the decryptor and everyone outside the sum."""
        return self._epsilon(self._rdp(None, 0))

    @property
    def member_epsilon(self) -> float:
        """One member's own guarantee when every other member of the sum colludes."""
        return self._epsilon(self._rdp(1, 0))

    def epsilon_against(self, colluders: int) -> float:
        """Guarantee of an honest member against `colluders` members who pool their shares
        (Byzantine members who add no noise count as colluders)."""
        if isinstance(colluders, bool) or not isinstance(colluders, int) or colluders < 0:
            raise DPError(f"colluders must be an int >= 0, got {colluders!r}")
        return self._epsilon(self._rdp(None, colluders))


def noise_to_signal(noise_multiplier: float, members: int, dimension: int, local: bool) -> float:
    """Norm of one round's mean noise over the norm C of a clipped update: sigma*sqrt(d)/n when
    the sum carries sigma*C once (central or distributed DP), sigma*sqrt(d)/sqrt(n) when every
    member adds sigma*C itself (`local`)."""
    n = _count("members", members)
    spread = math.sqrt(n) if local else n
    return float(noise_multiplier) * math.sqrt(_count("dimension", dimension)) / spread


def learning_warning(
    noise_multiplier: float,
    members: int,
    dimension: int,
    rounds: int,
    *,
    local: bool,
    rule: str = "fedavg",
) -> str | None:
    """Why a DP setting cannot learn, or None: the noise of the mean, averaged over the run's
    rounds, must stay below LEARNABLE_RATIO times a clipped update (see LEARNABLE_RATIO); and
    what Siren loses under DP noise (its client alarms)."""
    if noise_multiplier <= 0:
        return None
    ratio = noise_to_signal(noise_multiplier, members, dimension, local)
    averaged = ratio / math.sqrt(_count("rounds", rounds))
    if rule == "siren":
        return (
            "Siren under DP noise: honest members raise no alarms (an alarm is an unnoised bit "
            "of their private validation data, `taskconfig.raises_alarms`), so only Siren's "
            "server side on the public set judges updates; in secure mode, which has no "
            "server side, the rule is plain FedAvg"
        )
    if averaged <= LEARNABLE_RATIO:
        return None
    who = "each of the" if local else "the sum of the"
    need = math.ceil(
        (noise_multiplier * math.sqrt(dimension) / (LEARNABLE_RATIO * math.sqrt(rounds)))
        ** (2 if local else 1)
    )
    return (
        f"DP noise drowns the updates: {who} {members} peers' noise (sigma {noise_multiplier:g} "
        f"x clip) over {dimension} parameters is {ratio:.3g} times a clipped update per round "
        f"({averaged:.3g} averaged over {rounds} rounds; learnable below {LEARNABLE_RATIO:g}). "
        f"Lower --dp-noise, use a smaller model, more rounds, or about {need} peers"
        + (" (or --secure, where the peers share one sigma*C)" if local else "")
        + "."
    )


def distributed_noise(
    noise_multiplier: float, clip_norm: float | None, min_members: int, adjacency: str | None = None
) -> DistributedNoise | None:
    """The distributed noise of a secure task with DP (None without noise), accounted with the
    adjacency of `flchain.crypto.dp` (its default: replace-one, sensitivity 2C)."""
    from flchain.crypto.dp import REPLACE_ONE, SENSITIVITY

    if clip_norm is None or noise_multiplier <= 0:
        return None
    factor = SENSITIVITY[adjacency or REPLACE_ONE]
    return DistributedNoise(noise_multiplier, clip_norm, min_members, factor)
