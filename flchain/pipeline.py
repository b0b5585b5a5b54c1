"""One peer's update, built the same way by the simulation and by the network node:
train -> attack -> clip -> noise, with one seed scheme.

Order. The peer trains from the base model (`train_step`); a Byzantine peer's attack hook then
turns its trained update into the one it sends; the result is clipped to L2 norm C and gets
N(0, (sigma*C)^2) noise (`finish`). `peer_update` is the whole pipeline, as a node runs it. The
simulation trains every peer of a round first (its attackers craft from that round's honest
updates) and then calls `finish` for each: the same two functions, in the same order, with the
same seeds, so a simulated peer and a node with the same data, seed, index, round and attack
send the bit-identical update.

A Byzantine peer's attack output is made unique to it (`distinct`, one ulp), so colluders
that craft one vector still commit distinct digests.

Byzantine peers run the whole pipeline: their update is clipped and noised like everyone's,
as a node running this code is. That is the attacker the simulation and the devnet model. An
attacker that runs modified code can skip clipping and noise: its update's norm is then
unbounded (the `scale` attack at full strength), no privacy is lost but its own, and only the
aggregation rule stands in its way; under DP the experiments here understate such an attacker.

The attack hook (`AttackHook`) gets the peer's trained update (None when the peer skipped
training because its attack does not need it) and the attack stream's generator. The
simulation's hook crafts from the honest trained updates of the round (`AttackContext`); on a
node, `attacks.channel.ColludingTrainer` crafts from the colluders' channel, and a lone
attacker from its own update. Attacks see updates before clipping and noise, as their own.

Privacy. `Privacy(clip, noise)` says what the pipeline adds: `noise` is the noise multiplier
sigma applied here. `Privacy(clip, 0.0)` clips without noise: secure mode with distributed DP
adds its discrete noise inside the secure layer, after quantization, so the pipeline must not
add its own there.

Seeds. Every random draw comes from a CPU `torch.Generator` seeded with
`stream_seed(seed, stream, round, index)` (a SeedSequence, so streams are independent): the
simulation passes its run seed and the peer's index, a node its own seed (`node run --seed`)
and its shard. Draws never depend on the device. DP noise is only as secret as its seed:
whoever knows it can subtract the noise. So the noise stream takes its own `noise_seed` where
it must be secret: a node draws one from the OS at start (`node.learner.Learner`) and never
shows it; the simulation, whose peers are all ours, seeds it from the run seed for
reproducible experiments.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from flchain.crypto.dp import clip_and_noise
from flchain.models import TrainConfig, local_update

TRAIN_STREAM = 0x7A1
"""Stream tag of a peer's local training (batch order, dropout)."""
ATTACK_STREAM = 0xA77
"""Stream tag of a Byzantine peer's attack (e.g. the `gaussian` attack's noise)."""
DP_STREAM = 0xD9
"""Stream tag of a peer's DP noise."""

AttackHook = Callable[[Tensor | None, torch.Generator], Tensor]
"""(trained update or None, attack generator) -> the update the Byzantine peer sends."""


def stream_seed(*words: int) -> int:
    """A 63-bit torch seed from a tuple of non-negative ints (independent streams per tuple)."""
    state = np.random.SeedSequence(list(words)).generate_state(1, dtype=np.uint64)[0]
    return int(state) >> 1


def stream(seed: int, tag: int, round_: int, index: int) -> torch.Generator:
    """The CPU generator of one stream of peer `index` in round `round_`."""
    return torch.Generator().manual_seed(stream_seed(seed, tag, round_, index))


@dataclass(frozen=True)
class Peer:
    """What a peer trains with: its model object (overwritten), its data and training recipe."""

    model: nn.Module
    x: Tensor
    y: Tensor
    train_config: TrainConfig
    device: torch.device | str = "cpu"


@dataclass(frozen=True)
class Privacy:
    """What the pipeline adds after the attack: clip to `clip` (None: no DP at all), then
    noise with multiplier `noise` (0.0: clip only, as under distributed DP)."""

    clip: float | None = None
    noise: float = 0.0

    def __post_init__(self) -> None:
        if self.noise > 0 and self.clip is None:
            raise ValueError("DP noise needs a clipping norm")


@dataclass(frozen=True)
class Trained:
    """A peer's honest training: update = local - base, its local model and its loss."""

    update: Tensor
    local: Tensor
    loss: float


@dataclass(frozen=True)
class PeerUpdate:
    """What the pipeline produced: `update` leaves the peer; `trained` is None when the peer
    skipped training."""

    update: Tensor
    trained: Trained | None


def train_step(
    peer: Peer, base: Tensor, *, start: Tensor | None = None, seed: int, index: int, round_: int
) -> Trained:
    """Train from `start` (default `base`; Siren's resuming peer passes its own model) and
    report the update against `base`."""
    origin = base if start is None else start
    _, local, result = local_update(
        peer.model,
        origin,
        peer.x,
        peer.y,
        peer.train_config,
        generator=stream(seed, TRAIN_STREAM, round_, index),
        device=peer.device,
    )
    return Trained(local - base, local, result.loss)


def own_model(trained: Trained, base: Tensor, clip: float | None) -> Tensor:
    """The model a peer's Siren alarms hold up against the global one (and resumes from):
    base + its update clipped to `clip`, i.e. what it contributes, noise aside. Without a clip
    it is the trained local model, as in the reference. Against the unclipped local model a
    clipped global step always loses, and every honest peer would alarm every round."""
    if clip is None:
        return trained.local
    return base + clip_and_noise(trained.update, clip, 0.0)


def finish(
    trained: Tensor | None,
    *,
    attack: AttackHook | None = None,
    privacy: Privacy = Privacy(),
    seed: int,
    index: int,
    round_: int,
    noise_seed: int | None = None,
) -> Tensor:
    """Attack -> clip -> noise on a trained update (None only for an attack that crafts
    without it). The noise stream is seeded with `noise_seed` (a secret), else with `seed`."""
    update = trained
    if attack is not None:
        update = attack(trained, stream(seed, ATTACK_STREAM, round_, index))
        if update is not trained:  # crafted; a hook that passes the update on (an honest
            update = distinct(update, index, round_)  # node's omniscient leak) sends it as is
    if update is None:
        raise ValueError("a peer that skipped training needs an attack that crafts its update")
    if privacy.clip is not None:
        noise = stream(seed if noise_seed is None else noise_seed, DP_STREAM, round_, index)
        update = clip_and_noise(update, privacy.clip, privacy.noise, noise)
    return update


def distinct(update: Tensor | None, index: int, round_: int) -> Tensor | None:
    """A Byzantine update made unique to its sender and round: coordinate `index` moves by
    `round_` float32 ulps. Colluders that send one crafted vector (ALIE, IPM, zero) would
    otherwise commit the same digest, which the contract takes once a task, and three
    attackers would count as one (and `zero`, the same vector every round, would count only
    in round 1); the papers' aggregators see all f copies every round, and so do ours
    (simulation and network alike, since both call this)."""
    if update is None or update.numel() == 0:
        return update
    out = update.detach().to(torch.float32).clone().reshape(-1)
    k = index % out.numel()
    bits = out.view(torch.int32)  # one ulp per unit of the float's bit pattern
    bits[k] = bits[k] + int(round_)
    return out.reshape(update.shape)


def peer_update(
    peer: Peer,
    base: Tensor,
    *,
    seed: int,
    index: int,
    round_: int,
    start: Tensor | None = None,
    attack: AttackHook | None = None,
    privacy: Privacy = Privacy(),
    train: bool = True,
    noise_seed: int | None = None,
) -> PeerUpdate:
    """The whole pipeline for one peer: train (unless `train` is False) -> attack -> clip ->
    noise."""
    trained = (
        train_step(peer, base, start=start, seed=seed, index=index, round_=round_)
        if train
        else None
    )
    update = finish(
        trained.update if trained is not None else None,
        attack=attack,
        privacy=privacy,
        seed=seed,
        index=index,
        round_=round_,
        noise_seed=noise_seed,
    )
    return PeerUpdate(update, trained)
