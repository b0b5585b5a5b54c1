"""Differential privacy at the node: clip + Gaussian noise, and the (epsilon, delta) accountant.

Each round a node clips its update to L2 norm C and adds N(0, (sigma*C)^2) per coordinate (the
Gaussian mechanism of DP-FedAvg, McMahan et al. 2018). Its privacy loss over T rounds, when it is
picked with probability q each round, is accounted with Google's `dp-accounting` library.

Adjacency: the unit of privacy is one node's whole data set (user-level DP, as in DP-FedAvg).
The default is replace-one (`REPLACE_ONE`): two worlds differ in the data of one node, replaced
by any other data. That is the relation that holds here, because each node's noised update is
released attributed to it (its digest and blob, under its member index), and a member takes part
whatever its data: swapping one node's data moves that node's release by up to 2C (from one
clipped vector to its opposite), so the Gaussian release is accounted with L2 sensitivity 2C,
i.e. noise multiplier sigma / 2. The sum that secure aggregation decrypts moves by the same 2C.
`ADD_REMOVE` (sensitivity C, noise multiplier sigma) is what DP-FedAvg papers report: one user
more or fewer in an unattributed sum. It is offered for comparison only; it does not describe
an attributed per-node release, whose neighbour must keep the member.

Sampling: with replace-one, dp-accounting amplifies only sampling without replacement, not
Poisson sampling; every node here takes part in every round (q = 1), so replace-one accepts
q = 1 only and add/remove keeps Poisson subsampling.

Accountant: RDP (Renyi DP, Mironov 2017) with `GaussianDpEvent(sigma / sensitivity)` (or
`PoissonSampledDpEvent(q, ...)` under add/remove) composed T times, converted to
(epsilon, delta). Why RDP rather than PLD: RDP composes by scaling one vector, so the cost does
not grow with T and every node computes the same float from the same inputs; PLD is somewhat
tighter (it never reports more than RDP) but its cost and its discretisation error depend on T
and on a discretisation interval we would have to pick. RDP is also what Opacus and TensorFlow
Privacy report, so the figures are comparable.

What the accountant does not cover (docs/security.md, "Privacy"): the Siren alarm bit a node
posts on chain is a deterministic function of its held-out data, so it has no finite epsilon;
the training loss is not posted while DP is on (node/engine.py).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from flchain.crypto.errors import DPError

if TYPE_CHECKING:  # imported where used: half a second (scipy.signal) a node without DP skips
    import dp_accounting
    from dp_accounting import rdp

__all__ = [
    "ADD_REMOVE",
    "REPLACE_ONE",
    "SENSITIVITY",
    "PrivacyAccountant",
    "accounted_noise_multiplier",
    "clip_and_noise",
    "epsilon",
]

REPLACE_ONE = "replace-one"
"""One node's whole data replaced by any other data (the default; module docstring)."""
ADD_REMOVE = "add-remove"
"""One node's whole data added or removed (DP-FedAvg's figure; for comparison only)."""
SENSITIVITY: dict[str, float] = {REPLACE_ONE: 2.0, ADD_REMOVE: 1.0}
"""L2 sensitivity of a release of one clipped update (or of a sum of them), in units of C."""
_RELATION = {REPLACE_ONE: "REPLACE_ONE", ADD_REMOVE: "ADD_OR_REMOVE_ONE"}
"""dp_accounting's NeighboringRelation member for each adjacency."""


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


def _check_adjacency(adjacency: str, sample_rate: float) -> str:
    if adjacency not in SENSITIVITY:
        raise DPError(f"adjacency must be one of {', '.join(SENSITIVITY)}, got {adjacency!r}")
    if adjacency == REPLACE_ONE and 0.0 < sample_rate < 1.0:
        raise DPError(
            "replace-one adjacency is accounted for nodes that take part in every round "
            f"(sample_rate 1); got sample_rate {sample_rate!r} (use add-remove for Poisson "
            "subsampling)"
        )
    return adjacency


def accounted_noise_multiplier(noise_multiplier: float, adjacency: str = REPLACE_ONE) -> float:
    """The Gaussian mechanism's noise multiplier as the accountant sees it: noise std over L2
    sensitivity, (sigma * C) / (SENSITIVITY[adjacency] * C); sigma / 2 under replace-one."""
    sigma = _check_noise_multiplier(noise_multiplier)
    if adjacency not in SENSITIVITY:
        raise DPError(f"adjacency must be one of {', '.join(SENSITIVITY)}, got {adjacency!r}")
    return sigma / SENSITIVITY[adjacency]


def _event(noise_multiplier: float, sample_rate: float, adjacency: str) -> dp_accounting.DpEvent:
    import dp_accounting

    gaussian = dp_accounting.GaussianDpEvent(
        noise_multiplier=accounted_noise_multiplier(noise_multiplier, adjacency)
    )
    if sample_rate == 1.0:
        return gaussian
    return dp_accounting.PoissonSampledDpEvent(sampling_probability=sample_rate, event=gaussian)


def _rdp_accountant(adjacency: str) -> rdp.RdpAccountant:
    import dp_accounting
    from dp_accounting import rdp

    relation = getattr(dp_accounting.NeighboringRelation, _RELATION[adjacency])
    return rdp.RdpAccountant(neighboring_relation=relation)


def epsilon(
    noise_multiplier: float,
    sample_rate: float,
    rounds: int,
    delta: float,
    *,
    adjacency: str = REPLACE_ONE,
) -> float:
    """Epsilon at `delta` after `rounds` Gaussian releases of a clipped update (RDP accountant).

    `noise_multiplier` is sigma (noise std / clip norm), `sample_rate` the probability q that
    the node takes part in a round, `adjacency` the neighbouring relation (module docstring):
    the accountant's noise multiplier is sigma / SENSITIVITY[adjacency]. sigma == 0 gives
    `math.inf` (no privacy), not an error; zero rounds or q == 0 give 0.0.
    """
    sigma = _check_noise_multiplier(noise_multiplier)
    q = _check_sample_rate(sample_rate)
    T = _check_rounds(rounds)
    d = _check_delta(delta)
    _check_adjacency(adjacency, q)
    if T == 0 or q == 0.0:
        return 0.0
    if sigma == 0.0:
        return math.inf
    accountant = _rdp_accountant(adjacency)
    accountant.compose(_event(sigma, q, adjacency), T)
    return float(accountant.get_epsilon(d))


class PrivacyAccountant:
    """Running (epsilon, delta) of one node with fixed sigma, q, delta and adjacency.

    >>> acc = PrivacyAccountant(noise_multiplier=1.1, sample_rate=1.0, delta=1e-5)
    >>> acc.step(); acc.step(rounds=9); acc.rounds
    10
    """

    def __init__(
        self,
        noise_multiplier: float,
        sample_rate: float,
        delta: float,
        *,
        adjacency: str = REPLACE_ONE,
    ) -> None:
        self.noise_multiplier = _check_noise_multiplier(noise_multiplier)
        self.sample_rate = _check_sample_rate(sample_rate)
        self.delta = _check_delta(delta)
        self.adjacency = _check_adjacency(adjacency, self.sample_rate)
        self._rounds = 0
        self._accountant = _rdp_accountant(adjacency)

    @property
    def rounds(self) -> int:
        """Rounds accounted so far."""
        return self._rounds

    def step(self, rounds: int = 1) -> None:
        """Account for `rounds` more rounds (each a Gaussian release, Poisson-sampled if q < 1)."""
        T = _check_rounds(rounds)
        if T == 0:
            return
        self._rounds += T
        if self.noise_multiplier > 0 and self.sample_rate > 0:
            self._accountant.compose(
                _event(self.noise_multiplier, self.sample_rate, self.adjacency), T
            )

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
            f"sample_rate={self.sample_rate}, delta={self.delta}, adjacency={self.adjacency!r}, "
            f"rounds={self._rounds}, epsilon={self.epsilon:.4g})"
        )
