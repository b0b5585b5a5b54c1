"""Stragglers as in SageFlow's asynchronous setup (Park et al., NeurIPS 2021; the reference
savertm/Sageflow, `Sageflow.py`): a peer that starts in round r trains from the global model of
version r - 1, and its update arrives d rounds later, in round r + d (d = 0: on time). Until then
the peer is busy and starts nothing new, so each round's fresh group shrinks by the peers in
flight, and an update that arrives in round r + d is d rounds stale.

The reference draws every device's delay uniformly from {0, ..., S} and forces the first S + 1
devices of a round onto delays 0..S so that no staleness group is ever empty (its averaging
cannot take an empty group); here a peer is late with probability P and then d is uniform in
{1, ..., D} (P = D / (D + 1) gives the reference's distribution), and a staleness group may be
empty: it then simply has no weight. Draws depend on (seed, round) only, so a run is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

# Stream tag of the per-round delay draws (apart from the simulation's other streams).
_DELAY_STREAM = 0x57A1E


@dataclass(frozen=True)
class Arrival:
    """One update delivered in round `round`: peer `peer` started it in round `started`, from
    global version started - 1, so it is round - started rounds stale."""

    peer: int
    started: int
    round: int
    update: torch.Tensor

    @property
    def staleness(self) -> int:
        return self.round - self.started

    @property
    def base_version(self) -> int:
        return self.started - 1


@dataclass
class StragglerSchedule:
    """Who starts in each round, and when each started update arrives.

    `start(r)` returns the delays of the peers idle in round r (in peer order) and marks the
    late ones busy until their update arrives; `post` holds an update until its round and
    `collect(r)` returns the updates that arrive in round r, in (peer, started) order.
    Call `start` once per round, in increasing r.
    """

    nodes: int
    probability: float = 0.0
    max_delay: int = 0
    seed: int = 0
    _busy_until: dict[int, int] = field(default_factory=dict)
    _pending: dict[int, list[Arrival]] = field(default_factory=dict)

    def delays(self, r: int) -> list[int]:
        """Each peer's delay if it starts in round r: 0 with probability 1 - P, else uniform
        in 1..D (one draw per peer whether or not it is idle, so draws never shift)."""
        if self.probability <= 0.0 or self.max_delay < 1:
            return [0] * self.nodes
        rng = np.random.Generator(np.random.PCG64([self.seed, _DELAY_STREAM, r]))
        late = rng.random(self.nodes) < self.probability
        delay = rng.integers(1, self.max_delay + 1, size=self.nodes)
        return [int(delay[i]) if late[i] else 0 for i in range(self.nodes)]

    def start(self, r: int) -> dict[int, int]:
        """{peer: delay} for the peers that start an update in round r (those not in flight)."""
        drawn = self.delays(r)
        started = {}
        for peer in range(self.nodes):
            if self._busy_until.get(peer, 0) >= r:
                continue
            started[peer] = drawn[peer]
            # Busy through the round its update arrives in; it starts again the round after,
            # from the newest global model (the reference's `scheduler` counts down alike).
            self._busy_until[peer] = r + drawn[peer]
        return started

    def post(self, peer: int, started: int, delay: int, update: torch.Tensor) -> None:
        """Hold the update `peer` started in round `started` until round started + delay."""
        arrival = Arrival(peer=peer, started=started, round=started + delay, update=update)
        self._pending.setdefault(arrival.round, []).append(arrival)

    def collect(self, r: int) -> list[Arrival]:
        """The updates that arrive in round r: fresh ones and those started d rounds ago."""
        return sorted(self._pending.pop(r, []), key=lambda a: (a.peer, a.started))
