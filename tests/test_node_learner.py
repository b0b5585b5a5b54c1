"""The node's compute without the network: update blobs from peers, deterministic
aggregation, DP settings, the task config digest and data specs."""

from __future__ import annotations

import hashlib
import math

import pytest
import torch

from flchain.node.learner import BlobError, Learner, initial_model_bytes
from flchain.taskconfig import DataSpec, TaskConfig, TaskConfigError

CONFIG = TaskConfig(model="logreg", rule="multikrum", rule_params={"f": 1}, local_epochs=1)


@pytest.fixture(scope="module")
def learners() -> list[Learner]:
    return [Learner(CONFIG, DataSpec("digits", i, 4), device="cpu", seed=i) for i in range(4)]


def test_every_node_derives_the_same_initial_model(learners: list[Learner]) -> None:
    blobs = {learner.initial_model() for learner in learners}
    assert len(blobs) == 1
    data = learners[0].dataset
    assert blobs == {initial_model_bytes(CONFIG, data.input_shape, data.num_classes)}


def test_shards_are_disjoint_slices_of_the_training_set(learners: list[Learner]) -> None:
    sizes = [len(learner.y) for learner in learners]
    assert sum(sizes) == len(learners[0].dataset.y_train)
    assert min(sizes) > 0


def test_peer_blobs_that_are_not_valid_updates_are_refused(learners: list[Learner]) -> None:
    learner = learners[0]
    d = learner.num_params
    good = learner.encode_update(torch.ones(d))
    assert torch.equal(learner.decode_update(good), torch.ones(d))
    bad = {
        "garbage": b"\x00\x01garbage",
        "nan": learner.encode_update(torch.full((d,), math.nan)),
        "inf": learner.encode_update(torch.full((d,), math.inf)),
        "short": learner.encode_update(torch.ones(d - 1)),
        "oversize": b"x" * (8 * d + 10_000),
    }
    for name, blob in bad.items():
        with pytest.raises(BlobError):
            learner.decode_update(blob)
            pytest.fail(f"{name} blob was accepted")


def test_aggregation_is_bit_identical_across_nodes_and_skips_invalid_blobs(
    learners: list[Learner],
) -> None:
    base = learners[0].initial_model()
    updates = {i: learner.train(base, 1).blob for i, learner in enumerate(learners)}
    d = learners[0].num_params
    updates[3] = learners[0].encode_update(torch.full((d,), math.nan))  # a hostile peer
    weights = {i: 100.0 for i in range(4)}
    outcomes = [learner.aggregate(base, updates, weights) for learner in learners]
    assert len({o.model_blob for o in outcomes}) == 1
    assert outcomes[0].invalid == [3]
    assert 3 not in outcomes[0].accepted
    assert outcomes[0].model_blob != base


def test_krum_lowers_f_when_too_few_updates_arrive(learners: list[Learner]) -> None:
    base = learners[0].initial_model()
    only_two = {i: learners[i].train(base, 2).blob for i in range(2)}
    outcome = learners[0].aggregate(base, only_two, {0: 1.0, 1: 1.0})
    assert outcome.accepted == [0, 1]  # median of two: both contribute


def test_a_node_may_add_privacy_but_not_remove_it() -> None:
    config = TaskConfig(model="logreg", dp_clip=1.0, dp_noise=0.5)
    strict = Learner(config, DataSpec("digits", 0, 2), device="cpu", dp_clip=2.0, dp_noise=1.0)
    assert strict.dp_clip == 1.0  # the task's tighter clip stays
    assert strict.dp_noise == 1.0  # the node's larger noise wins
    base = strict.initial_model()
    update = strict.decode_update(strict.train(base, 1).blob)
    assert update.norm() > 0.5  # noise sigma*C = 1 per coordinate dwarfs the clipped update


def test_task_config_digest_is_canonical_and_checked() -> None:
    data = CONFIG.to_json_bytes()
    assert TaskConfig.from_json_bytes(data) == CONFIG
    assert CONFIG.digest == hashlib.sha256(data).digest()
    assert b" " not in data
    with pytest.raises(TaskConfigError, match="unknown task config field"):
        TaskConfig.from_json_bytes(b'{"model": "cnn", "evil": 1}')
    with pytest.raises(TaskConfigError, match="not JSON"):
        TaskConfig.from_json_bytes(b"\xff")
    with pytest.raises(TaskConfigError, match="has no parameter"):
        TaskConfig(rule="median", rule_params={"f": 1})


def test_data_specs_parse_and_reject_nonsense() -> None:
    spec = DataSpec.parse("digits#shard=2/4,partition=dirichlet,alpha=0.3")
    assert (spec.dataset, spec.shard, spec.shards, spec.partition, spec.alpha) == (
        "digits",
        2,
        4,
        "dirichlet",
        0.3,
    )
    assert DataSpec.parse("npz:/data/x.npz").dataset == "npz:/data/x.npz"
    for bad in ("digits#shard=4/4", "digits#shard=a/b", "digits#color=red", "#shard=0/1"):
        with pytest.raises(TaskConfigError):
            DataSpec.parse(bad)
