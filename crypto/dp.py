"""Differential privacy at the node: clip + Gaussian noise, and the (epsilon, delta) accountant.

Each round a node clips its update to L2 norm C and adds N(0, (sigma*C)^2) per coordinate (the
Gaussian mechanism of DP-FedAvg, McMahan et al. 2018). Its privacy loss over T rounds, when it is
picked with probability q each round, is accounted with Google's `dp-accounting` library.

Accountant: RDP (Renyi DP, Mironov 2017) with `PoissonSampledDpEvent(q, GaussianDpEvent(sigma))`
composed T times, converted to (epsilon, delta). Why RDP rather than PLD: RDP composes by scaling
one vector, so the cost does not grow with T and every node computes the same float from the same
inputs; PLD is somewhat tighter (it never reports more than RDP) but its cost and its
discretisation error depend on T and on a discretisation interval we would have to pick. RDP is
also what Opacus and TensorFlow Privacy report, so the figures are comparable.
"""

from __future__ import annotations

import math

import dp_accounting
import torch
from dp_accounting import rdp
from torch import Tensor

from flchain.crypto.errors import DPError

__all__ = ["PrivacyAccountant", "clip_and_noise", "epsilon"]


def _check_positive(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise DPError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def _check_noise_multiplier(noise_multiplier: float) -> float:
    sigma = float(noise_multiplier)
    if not math.isfinite(sigma) or sigma < 0:
        raise DPError(f"noise_multiplier must be a finite number >= 0, got {noise_multiplier!r}")
    return sigma


def _check_sample_rate(sample_rate: float) -> float:
    q = float(sample_rate)
    if not 0.0 <= q <= 1.0:
        raise DPError(f"sample_rate must be in [0, 1], got {sample_rate!r}")
    return q


def _check_delta(delta: float) -> float:
    d = float(delta)
    if not 0.0 < d < 1.0:
        raise DPError(f"delta must be in (0, 1), got {delta!r}")
    return d


def _check_rounds(rounds: int) -> int:
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
        raise DPError(f"rounds must be an int >= 0, got {rounds!r}")
    return rounds


def clip_and_noise(
    update: Tensor,
    clip_norm: float,
    noise_multiplier: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """L2-clip `update` to `clip_norm` and add N(0, (noise_multiplier * clip_norm)^2) noise.

    The arithmetic runs in float64 (a float32 norm of a million coordinates loses the digits
    the clip depends on) and the result is cast back to the update's dtype and device. The noise
    is drawn on the generator's device, so a seeded CPU generator gives the same noise whatever
    device the update lives on. `noise_multiplier=0` clips without noise.
    """
    if not isinstance(update, Tensor):
        raise DPError(f"update must be a torch.Tensor, got {type(update).__name__}")
    if not update.is_floating_point():
        raise DPError(f"update must be a floating-point tensor, got dtype {update.dtype}")
    C = _check_positive("clip_norm", clip_norm)
    sigma = _check_noise_multiplier(noise_multiplier)
    x = update.detach().to(torch.float64)
    if not bool(torch.isfinite(x).all()):
        raise DPError("update contains NaN or infinite values; refusing to clip and noise it")
    norm = float(torch.linalg.vector_norm(x))
    if norm > C:
        x = x * (C / norm)
    if sigma > 0:
        device = generator.device if generator is not None else x.device
        noise = torch.randn(x.shape, generator=generator, dtype=torch.float64, device=device)
        x = x + noise.to(x.device) * (sigma * C)
    return x.to(dtype=update.dtype, device=update.device)


def _event(noise_multiplier: float, sample_rate: float) -> dp_accounting.DpEvent:
    return dp_accounting.PoissonSampledDpEvent(
        sampling_probability=sample_rate,
        event=dp_accounting.GaussianDpEvent(noise_multiplier=noise_multiplier),
    )


def epsilon(noise_multiplier: float, sample_rate: float, rounds: int, delta: float) -> float:
    """Epsilon at `delta` after `rounds` Poisson-sampled Gaussian steps (RDP accountant).

    `noise_multiplier` is sigma (noise std / clip norm), `sample_rate` the probability q that
    the node takes part in a round. sigma == 0 gives `math.inf` (no privacy), not an error;
    zero rounds or q == 0 give 0.0.
    """
    sigma = _check_noise_multiplier(noise_multiplier)
    q = _check_sample_rate(sample_rate)
    T = _check_rounds(rounds)
    d = _check_delta(delta)
    if T == 0 or q == 0.0:
        return 0.0
    if sigma == 0.0:
        return math.inf
    accountant = rdp.RdpAccountant()
    accountant.compose(_event(sigma, q), T)
    return float(accountant.get_epsilon(d))


class PrivacyAccountant:
    """Running (epsilon, delta) of one node with fixed sigma, q and delta across rounds.

    >>> acc = PrivacyAccountant(noise_multiplier=1.1, sample_rate=0.1, delta=1e-5)
    >>> acc.step(); acc.step(rounds=9); acc.rounds
    10
    """

    def __init__(self, noise_multiplier: float, sample_rate: float, delta: float) -> None:
        self.noise_multiplier = _check_noise_multiplier(noise_multiplier)
        self.sample_rate = _check_sample_rate(sample_rate)
        self.delta = _check_delta(delta)
        self._rounds = 0
        self._accountant = rdp.RdpAccountant()

    @property
    def rounds(self) -> int:
        """Rounds accounted so far."""
        return self._rounds

    def step(self, rounds: int = 1) -> None:
        """Account for `rounds` more rounds (each a Poisson-sampled Gaussian release)."""
        T = _check_rounds(rounds)
        if T == 0:
            return
        self._rounds += T
        if self.noise_multiplier > 0 and self.sample_rate > 0:
            self._accountant.compose(_event(self.noise_multiplier, self.sample_rate), T)

    @property
    def epsilon(self) -> float:
        """Epsilon at `self.delta` for the rounds so far (inf when sigma == 0)."""
        if self._rounds == 0 or self.sample_rate == 0.0:
            return 0.0
        if self.noise_multiplier == 0.0:
            return math.inf
        return float(self._accountant.get_epsilon(self.delta))

    @property
    def spent(self) -> tuple[float, float]:
        """(epsilon, delta) spent so far, the pair a node reports."""
        return self.epsilon, self.delta

    def __repr__(self) -> str:
        return (
            f"PrivacyAccountant(noise_multiplier={self.noise_multiplier}, "
            f"sample_rate={self.sample_rate}, delta={self.delta}, rounds={self._rounds}, "
            f"epsilon={self.epsilon:.4g})"
        )
