"""Colluding attackers (attacks/channel.py): ALIE and IPM craft from the colluders' estimate.

Several Byzantine nodes share their honestly trained updates over the devnet's collusion
channel and craft ALIE (mean - z * std, z from Baruch et al.'s formula for n and f) or IPM
(-epsilon * mean) from the statistics of those updates, as the ALIE paper does; in the
omniscient test mode from the honest nodes' updates. Every wait is bounded.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from flchain.attacks import alie_z
from flchain.attacks.channel import (
    CHANNEL_FILE,
    ChannelError,
    ColludingTrainer,
    CollusionChannel,
    create_channel,
    read_spec,
)

D = 6


@dataclass(frozen=True)
class _Update:
    blob: bytes
    samples: int
    loss: float


class _Learner:
    """What ColludingTrainer needs of a node's Learner: it trains `vector` honestly."""

    num_params = D
    dp_noise = 0.0

    def __init__(self, vector: torch.Tensor) -> None:
        self.vector = vector

    def encode_update(self, update: torch.Tensor) -> bytes:
        return st_save({"update": update.to(torch.float32).contiguous()})

    def decode_update(self, blob: bytes) -> torch.Tensor:
        return st_load(blob)["update"]

    def train(
        self, global_blob: bytes, round_: int, *, attack=None, local_noise: bool = True
    ) -> _Update:  # the pipeline without DP: train (to `vector`) -> attack
        update = self.vector
        if attack is not None:
            update = attack(update, torch.Generator().manual_seed(round_))
        return _Update(self.encode_update(update), 100, 0.5)


def _vectors(k: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(D, generator=g) for _ in range(k)]


def _trainer(
    path: Path, name: str, vector: torch.Tensor, attack: str | None, **params: float
) -> ColludingTrainer:
    trainer = ColludingTrainer(
        _Learner(vector),  # type: ignore[arg-type]
        CollusionChannel(path, name, D),
        attack=attack,
        params=dict(params),
    )
    trainer.members = lambda: 10
    trainer.deadline = lambda: time.time() + 5.0
    return trainer


def _crafted(trainer: ColludingTrainer, round_: int = 4) -> torch.Tensor:
    update = trainer.train(b"global model", round_)
    return trainer.decode_update(update.blob)


def test_alie_sends_mean_minus_z_sigma_of_the_colluders_estimate(tmp_path: Path) -> None:
    create_channel(tmp_path, colluders=3)
    own, *others = _vectors(3)
    for name, vector in zip(("colluder-b", "colluder-c"), others, strict=True):
        CollusionChannel(tmp_path, name, D).share(4, vector)
    trainer = _trainer(tmp_path, "colluder-a", own, "alie")
    crafted = _crafted(trainer)
    estimate = torch.stack([own, *others])  # the three colluders' honest updates
    z = alie_z(10, 3)  # n = 10 members, f = 3 colluders: s = 3, z = Phi^-1(7/10)
    assert z == pytest.approx(0.5244, abs=1e-4)
    sigma = estimate.std(dim=0, correction=0)
    expected = estimate.mean(dim=0) - z * sigma
    assert torch.allclose(crafted, expected, atol=1e-6)
    assert torch.allclose(crafted - estimate.mean(dim=0), -z * sigma, atol=1e-6)
    assert not torch.allclose(crafted, own)  # not the node's honest update
    assert float((crafted - own).abs().max()) > 0.1
    context = trainer.last_context
    assert context is not None and context.num_clients == 10 and context.num_byzantine == 3


def test_ipm_with_a_large_epsilon_sends_minus_epsilon_times_the_mean(tmp_path: Path) -> None:
    create_channel(tmp_path, colluders=2)
    own, other = _vectors(2, seed=3)
    CollusionChannel(tmp_path, "colluder-b", D).share(4, other)
    crafted = _crafted(_trainer(tmp_path, "colluder-a", own, "ipm", epsilon=100.0))
    assert torch.allclose(crafted, -100.0 * (own + other) / 2, atol=1e-4)


def test_colluders_crafting_at_once_agree_on_the_estimate(tmp_path: Path) -> None:
    import threading

    create_channel(tmp_path, colluders=3)
    vectors = _vectors(3, seed=5)
    names = ["colluder-a", "colluder-b", "colluder-c"]
    trainers = [_trainer(tmp_path, n, v, "alie") for n, v in zip(names, vectors, strict=True)]
    out: dict[str, torch.Tensor] = {}

    def run(name: str, trainer: ColludingTrainer) -> None:
        out[name] = _crafted(trainer)

    pairs = zip(names, trainers, strict=True)
    threads = [threading.Thread(target=run, args=pair) for pair in pairs]
    start = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert time.time() - start < 4  # nobody waited for its deadline
    estimate = torch.stack(vectors)
    expected = estimate.mean(dim=0) - alie_z(10, 3) * estimate.std(dim=0, correction=0)
    for name in names:
        assert torch.allclose(out[name], expected, atol=1e-6)
    # the same vector, bit for bit, as the simulation's attackers craft it (the node's pipeline
    # then makes each sender's digest distinct: test_pipeline.py)
    assert all(torch.equal(out[name], out[names[0]]) for name in names)


def test_a_lone_colluder_waits_until_its_deadline_then_uses_its_own_update(
    tmp_path: Path,
) -> None:
    create_channel(tmp_path, colluders=3, wait=0.5)
    (own,) = _vectors(1)
    trainer = _trainer(tmp_path, "colluder-a", own, "ipm")
    start = time.time()
    crafted = _crafted(trainer)
    assert 0.4 <= time.time() - start < 3  # bounded by the channel's wait
    assert torch.allclose(crafted, -0.5 * own)
    trainer.deadline = lambda: time.time() - 1  # past the engine's deadline: no wait at all
    start = time.time()
    _crafted(trainer, round_=5)
    assert time.time() - start < 0.3


def test_omniscient_colluders_craft_from_the_honest_updates(tmp_path: Path) -> None:
    create_channel(tmp_path, colluders=1, omniscient=True)
    honest = _vectors(3, seed=7)
    for i, vector in enumerate(honest):
        node = _trainer(tmp_path, f"honest-{i}", vector, None)  # an honest node leaks
        assert torch.equal(_crafted(node), vector)  # ... and still sends its own update
    (own,) = _vectors(1, seed=8)
    trainer = _trainer(tmp_path, "colluder-a", own, "alie", z=1.5)
    trainer.members = lambda: 4
    crafted = _crafted(trainer)
    benign = torch.stack(honest)
    expected = benign.mean(dim=0) - 1.5 * benign.std(dim=0, correction=0)
    assert torch.allclose(crafted, expected, atol=1e-6)


def test_honest_nodes_leak_nothing_unless_omniscient(tmp_path: Path) -> None:
    create_channel(tmp_path, colluders=1)
    (vector,) = _vectors(1)
    assert torch.equal(_crafted(_trainer(tmp_path, "honest-0", vector, None)), vector)
    assert not list((tmp_path / "honest").rglob("*.safetensors"))


def test_alie_without_a_z_for_n_and_f_sends_the_honest_update(tmp_path: Path) -> None:
    create_channel(tmp_path, colluders=2, wait=0.2)
    (own,) = _vectors(1)
    trainer = _trainer(tmp_path, "colluder-a", own, "alie")
    trainer.members = lambda: 3  # s = floor(3/2 + 1) - 2 = 0: the paper has no z
    assert torch.equal(_crafted(trainer), own)


def test_junk_in_the_channel_is_skipped(tmp_path: Path) -> None:
    create_channel(tmp_path, colluders=2, wait=0.3)
    folder = tmp_path / "colluders" / "r4"
    folder.mkdir(parents=True)
    (folder / "nan.safetensors").write_bytes(st_save({"update": torch.full((D,), float("nan"))}))
    (folder / "short.safetensors").write_bytes(st_save({"update": torch.zeros(D - 1)}))
    (folder / "extra.safetensors").write_bytes(
        st_save({"update": torch.zeros(D), "x": torch.zeros(1)})
    )
    (folder / "pickle.safetensors").write_bytes(b"\x80\x04junk")
    (folder / "huge.safetensors").write_bytes(b"\x00" * (4 * D + 2048))
    (folder / "bad name!.safetensors").write_bytes(st_save({"update": torch.zeros(D)}))
    (own,) = _vectors(1)
    crafted = _crafted(_trainer(tmp_path, "colluder-a", own, "ipm"))
    assert torch.allclose(crafted, -0.5 * own)  # only our own update counted


def test_old_rounds_files_are_pruned_by_their_writer(tmp_path: Path) -> None:
    create_channel(tmp_path, colluders=1)
    channel = CollusionChannel(tmp_path, "colluder-a", D)
    for r in range(1, 6):
        channel.share(r, torch.zeros(D))
    left = sorted(p.parent.name for p in (tmp_path / "colluders").rglob("*.safetensors"))
    assert left == ["r3", "r4", "r5"]


def test_channel_spec_and_names_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ChannelError, match="no collusion channel"):
        read_spec(tmp_path)
    create_channel(tmp_path, colluders=2, omniscient=True)
    spec = read_spec(tmp_path)
    assert spec.colluders == 2 and spec.omniscient
    (tmp_path / CHANNEL_FILE).write_text(json.dumps({"colluders": 2, "extra": 1}))
    with pytest.raises(ChannelError, match="only"):
        read_spec(tmp_path)
    (tmp_path / CHANNEL_FILE).write_text(json.dumps({"colluders": 0}))
    with pytest.raises(ChannelError, match="colluders"):
        read_spec(tmp_path)
    (tmp_path / CHANNEL_FILE).write_text("[" * 5000)
    with pytest.raises(ChannelError, match="larger"):
        read_spec(tmp_path)
    create_channel(tmp_path, colluders=1)
    with pytest.raises(ChannelError, match="name"):
        CollusionChannel(tmp_path, "../escape", D)
    with pytest.raises(ValueError, match="does not collude"):
        ColludingTrainer(
            _Learner(torch.zeros(D)),  # type: ignore[arg-type]
            CollusionChannel(tmp_path, "a", D),
            attack="signflip",
        )


def test_colluding_nodes_wrap_the_real_learner(tmp_path: Path) -> None:
    """As the daemon wires it: the Learner trains honestly (no attack of its own), the
    wrapper crafts ALIE from both colluders' honest updates; the rest is the Learner's."""
    from flchain.node.learner import Learner
    from flchain.taskconfig import DataSpec, TaskConfig

    config = TaskConfig(model="logreg", rule="median", local_epochs=1)
    create_channel(tmp_path, colluders=2)
    learners = [Learner(config, DataSpec("digits", i, 4), device="cpu", seed=i) for i in (2, 3)]
    base = learners[0].initial_model()
    honest = [ln.decode_update(ln.train(base, 1).blob) for ln in learners]
    other = CollusionChannel(tmp_path, "colluder-b", learners[1].num_params)
    other.share(1, honest[1])
    trainer = ColludingTrainer(
        learners[0],
        CollusionChannel(tmp_path, "colluder-a", learners[0].num_params),
        attack="alie",
    )
    trainer.members = lambda: 4  # n = 4, f = 2: s = 1, z = Phi^-1(3/4)
    crafted = trainer.decode_update(trainer.train(base, 1).blob)
    estimate = torch.stack(honest)
    expected = estimate.mean(dim=0) - alie_z(4, 2) * estimate.std(dim=0, correction=0)
    assert torch.allclose(crafted, expected, atol=1e-5)
    assert not torch.allclose(crafted, honest[0], atol=1e-3)
    assert trainer.num_params == learners[0].num_params  # everything else is the Learner's
    assert trainer.initial_model() == base


def test_the_daemon_wraps_colluders_and_omniscient_honest_nodes_only(tmp_path: Path) -> None:
    from flchain.node.daemon import NodeError, NodeSettings, colluder_attack, with_collusion
    from flchain.taskconfig import DataSpec

    def settings(collude_dir: Path | None) -> NodeSettings:
        return NodeSettings(
            dir=tmp_path, rpc_url="", contract="", task_id=1, data=DataSpec("digits", 0, 1),
            collude_dir=collude_dir, attack_params={"z": 1.0}, seed=4,
        )  # fmt: skip

    learner = _Learner(torch.zeros(D))
    create_channel(tmp_path / "ch", colluders=2)
    alone, channel = settings(None), settings(tmp_path / "ch")
    assert colluder_attack(alone, "alie") is None  # no channel: the Learner attacks alone
    assert with_collusion(learner, alone, "alie", "node-3") is learner
    assert colluder_attack(channel, "ipm") == "ipm"
    wrapped = with_collusion(learner, channel, "alie", "node-3")
    assert isinstance(wrapped, ColludingTrainer)
    assert (wrapped.attack, wrapped.params) == ("alie", {"z": 1.0})
    honest = with_collusion(learner, channel, None, "node-0")
    assert isinstance(honest, ColludingTrainer) and honest.attack is None
    assert with_collusion(learner, channel, "signflip", "node-2") is learner
    with pytest.raises(NodeError, match="collusion channel"):
        with_collusion(learner, settings(tmp_path / "missing"), "alie", "node-3")
