"""One peer pipeline (flchain/pipeline.py): the simulation and the node build a peer's update
with the same code, in the order train -> attack -> clip -> noise, from the same seeds."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from flchain.attacks.channel import ColludingTrainer, CollusionChannel, create_channel
from flchain.config import SimulationConfig
from flchain.crypto.dp import clip_and_noise
from flchain.node.learner import Learner
from flchain.pipeline import DP_STREAM, Privacy, Trained, finish, own_model, stream
from flchain.simulation import Simulation
from flchain.taskconfig import DataSpec, TaskConfig

SEED, NODES, ROUND = 3, 4, 2


def _pair(
    attack: str | None, byzantine: int, clip: float | None, noise: float, **params: float
) -> tuple[Simulation, Learner, int]:
    """A simulation and a node for the same peer: same seed, data, round, attack and DP (the
    simulation's peer gets the node's shard, and its global model is the node's)."""
    sim = Simulation(
        SimulationConfig(
            nodes=NODES,
            rounds=ROUND,
            local_epochs=1,
            model="logreg",
            byzantine=byzantine,
            attack=attack,
            attack_params=dict(params),
            seed=SEED,
            device="cpu",
            dp_clip=clip,
            dp_noise=noise,
        )
    )
    index = sim.byzantine_ids[0] if byzantine else 0
    config = TaskConfig(model="logreg", local_epochs=1, seed=SEED, dp_clip=clip, dp_noise=noise)
    node = Learner(
        config,
        DataSpec("digits", index, NODES),
        device="cpu",
        seed=SEED,
        noise_seed=SEED,  # a node draws a secret one; the simulation's comes from its seed
        attack=attack if attack not in ("alie", "ipm") else None,
        attack_params=dict(params),
    )
    peer = sim.clients[index]
    peer.x, peer.y = node.x, node.y
    sim._history[ROUND - 1] = node.model_params(node.initial_model())
    return sim, node, index


def _simulated(sim: Simulation, index: int) -> torch.Tensor:
    """The simulation's update of peer `index` in ROUND, as run_round builds it."""
    peer = sim.clients[index]
    trained, _ = sim._train(peer, ROUND - 1, ROUND)
    return sim._finish([trained], ROUND, [peer])[0]


@pytest.mark.parametrize(
    ("attack", "byzantine", "clip", "noise"),
    [(None, 0, 1.0, 0.8), ("gaussian", 1, 0.5, 1.2), ("signflip", 1, None, 0.0)],
)
def test_node_and_simulation_send_the_bit_identical_update(
    attack: str | None, byzantine: int, clip: float | None, noise: float
) -> None:
    sim, node, index = _pair(attack, byzantine, clip, noise)
    from_node = node.decode_update(node.train(node.initial_model(), ROUND).blob)
    from_sim = _simulated(sim, index)
    assert from_sim.dtype == torch.float32
    assert torch.equal(from_node, from_sim)
    # ... and another round draws another update
    assert not torch.equal(from_node, node.decode_update(node.train(node.initial_model(), 1).blob))


def test_an_omniscient_colluder_on_the_node_crafts_what_the_simulation_does(
    tmp_path: Path,
) -> None:
    """ALIE with DP: the node's colluder crafts from the honest updates leaked over the
    channel, the simulation's from the round's honest trained updates; same update."""
    sim, node, index = _pair("alie", 1, 2.0, 0.5, z=1.5)
    honest = [c for c in sim.clients if not c.byzantine]
    trained = [sim._train(c, ROUND - 1, ROUND)[0] for c in honest]
    peer = sim.clients[index]
    own, _ = sim._train(peer, ROUND - 1, ROUND)
    from_sim = sim._finish([*trained, own], ROUND, [*honest, peer])[-1]
    create_channel(tmp_path, colluders=1, omniscient=True)
    for c, update in zip(honest, trained, strict=True):
        CollusionChannel(tmp_path, f"honest-{c.index}", node.num_params).share(
            ROUND, update, honest=True
        )
    channel = CollusionChannel(tmp_path, "node-x", node.num_params)
    colluder = ColludingTrainer(node, channel, attack="alie", params={"z": 1.5})
    colluder.members = lambda: NODES
    colluder.deadline = lambda: time.time() + 5
    from_node = node.decode_update(colluder.train(node.initial_model(), ROUND).blob)
    assert torch.equal(from_node, from_sim)


def test_an_honest_node_that_leaks_in_the_omniscient_mode_sends_its_honest_update(
    tmp_path: Path,
) -> None:
    """The omniscient test mode hands honest updates to the colluders; the honest node's own
    update must stay the one it would send anyway (bit for bit), not be marked as crafted."""
    _, node, _ = _pair(None, 0, 2.0, 0.0)
    create_channel(tmp_path, colluders=1, omniscient=True)
    leaking = ColludingTrainer(
        node, CollusionChannel(tmp_path, "node-h", node.num_params), attack=None
    )
    base = node.initial_model()
    assert leaking.train(base, ROUND).blob == node.train(base, ROUND).blob
    names, leaked = CollusionChannel(tmp_path, "reader", node.num_params).gather(
        ROUND, time.time(), honest=True, want=1
    )
    assert names == ["node-h"] and leaked.shape == (1, node.num_params)  # it did leak


@pytest.mark.parametrize("factor", [50.0, 1e4])
def test_an_attacked_update_is_clipped_after_the_attack(factor: float) -> None:
    """train -> attack -> clip: a scale attack's update leaves with norm <= C (before noise),
    on the node and in the simulation."""
    clip = 0.3
    sim, node, index = _pair("scale", 1, clip, 0.0, factor=factor)
    from_node = node.decode_update(node.train(node.initial_model(), ROUND).blob)
    from_sim = _simulated(sim, index)
    trained = sim.clients[index].last_local - sim._history[ROUND - 1]
    assert float(trained.norm()) * factor > 10 * clip  # the attack alone would blow the norm
    for update in (from_node, from_sim):
        assert float(update.double().norm()) <= clip * (1 + 1e-6)
    assert torch.equal(from_node, from_sim)


def test_clip_without_noise_is_what_distributed_dp_asks_of_the_pipeline() -> None:
    """Privacy(C, 0): the node's `local_noise=False` and the simulation's secure mode clip and
    add no noise (distributed DP adds it inside the secure sum)."""
    update = torch.randn(500, generator=torch.Generator().manual_seed(0)) * 3
    clipped = finish(update, privacy=Privacy(1.0, 0.0), seed=1, index=2, round_=3)
    assert torch.equal(clipped, clip_and_noise(update, 1.0, 0.0))
    noised = finish(update, privacy=Privacy(1.0, 0.5), seed=1, index=2, round_=3)
    expected = clip_and_noise(update, 1.0, 0.5, stream(1, DP_STREAM, 3, 2))
    assert torch.equal(noised, expected)
    _, node, _ = _pair(None, 0, 1.0, 2.0)
    quiet = node.decode_update(node.train(node.initial_model(), ROUND, local_noise=False).blob)
    loud = node.decode_update(node.train(node.initial_model(), ROUND).blob)
    assert float(quiet.double().norm()) <= 1.0 + 1e-6 < float(loud.norm())
    with pytest.raises(ValueError, match="clipping norm"):
        Privacy(None, 1.0)


def test_siren_judges_and_resumes_from_the_model_the_peer_contributes() -> None:
    """With a clip, a peer's own model is base + its clipped update: against its unclipped
    local model a clipped global step always lost, and every honest peer alarmed every round
    (secure Siren with --dp-clip 1 stayed at 0.11 accuracy; now 0.91, logreg, 10 peers)."""
    base = torch.zeros(50)
    update = torch.ones(50)
    trained = Trained(update, base + update, 0.0)
    assert torch.equal(own_model(trained, base, None), trained.local)
    clipped = own_model(trained, base, 1.0)
    assert float((clipped - base).double().norm()) == pytest.approx(1.0)
    assert torch.allclose(clipped, base + update / update.norm())


def test_colluders_that_craft_one_vector_still_send_distinct_updates() -> None:
    # ALIE/IPM/zero colluders all craft the same vector, and `zero` the same one every round;
    # the contract takes a digest once a task, so without `distinct` three attackers would
    # count as one, and only in round 1.
    crafted = torch.zeros(50)

    def attack(own: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
        return crafted.clone()

    sent = {
        (i, r): finish(None, attack=attack, seed=0, index=i, round_=r)
        for i in (7, 8, 9)
        for r in (1, 2, 3)
    }
    blobs = {bytes(u.numpy().tobytes()) for u in sent.values()}
    assert len(blobs) == 9
    for (i, r), update in sent.items():
        moved = torch.nonzero(update != crafted).flatten().tolist()
        assert moved == [i]  # one coordinate, moved by r ulps from 0.0
        assert int(update.view(torch.int32)[i]) == r
