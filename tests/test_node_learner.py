"""The node's compute without the network: update blobs from peers, deterministic
aggregation, DP settings, the task config digest and data specs."""

from __future__ import annotations

import hashlib
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from flchain.contracts import FLChainClient, TaskParams
from flchain.contracts.testing import eth_tester_chain
from flchain.node.learner import BlobError, Learner, initial_model_bytes
from flchain.taskconfig import (
    MAX_CONFIG_BYTES,
    DataSpec,
    TaskConfig,
    TaskConfigError,
    capped_samples,
    rule_weights,
)

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


def test_a_nodes_dp_noise_is_secret_not_derived_from_its_public_seed() -> None:
    """Two nodes with the same data, seed and round train the same update, but their noise
    differs: it is seeded from the OS, or anyone knowing `--seed` could subtract it."""
    config = TaskConfig(model="logreg", local_epochs=1, dp_clip=1.0, dp_noise=0.5)
    a, b = (Learner(config, DataSpec("digits", 0, 2), device="cpu", seed=7) for _ in range(2))
    base = a.initial_model()
    sent_a = a.decode_update(a.train(base, 1).blob)
    sent_b = b.decode_update(b.train(base, 1).blob)
    assert torch.equal(a.last_local, b.last_local)  # the training itself is reproducible
    assert not torch.equal(sent_a, sent_b)
    twin = Learner(config, DataSpec("digits", 0, 2), device="cpu", seed=7, noise_seed=a.noise_seed)
    assert torch.equal(twin.decode_update(twin.train(base, 1).blob), sent_a)


def test_no_training_loss_or_sample_count_goes_on_chain_under_dp() -> None:
    """The loss and the shard's size are unnoised statistics of the node's data: with DP on
    the node commits LOSS_WITHHELD, which the contract takes and the ledger shows as no loss,
    and claims 1 sample, so FedAvg weighs members by reputation alone."""
    from types import SimpleNamespace

    from flchain.contracts import encode_loss
    from flchain.contracts.ledger import read_round
    from flchain.contracts.types import LOSS_WITHHELD
    from flchain.node.engine import RoundEngine
    from flchain.taskconfig import claimed_samples

    def on_chain(dp_noise: float, loss: float) -> int:
        engine = SimpleNamespace(learner=SimpleNamespace(dp_noise=dp_noise))
        return RoundEngine._loss_on_chain(engine, loss)  # type: ignore[arg-type]

    assert on_chain(0.5, 0.6931) == LOSS_WITHHELD
    assert on_chain(0.0, 0.6931) == encode_loss(0.6931)
    chain = eth_tester_chain()
    owner_key, private_key, public_key = chain.new_accounts(3)
    owner = FLChainClient.deploy(chain.w3, owner_key)
    private, public = (FLChainClient(chain.w3, owner.address, k) for k in (private_key, public_key))
    params = TaskParams(CONFIG.digest, b"\x01" * 32, 2, 2, 600, 600)
    task_id = owner.create_task(params)
    for i, member in enumerate((private, public)):
        member.join(task_id, f"peer-{i}".encode(), bytes([i + 1]) * 32)
    private.submit(task_id, 1, b"\x0a" * 32, claimed_samples(100, 0.5), 0, on_chain(0.5, 0.6931))
    public.submit(task_id, 1, b"\x0b" * 32, claimed_samples(100, 0.0), 0, on_chain(0.0, 0.6931))
    updates = read_round(owner, task_id, 1).updates
    assert [u.loss for u in updates] == [None, pytest.approx(0.6931)]
    assert [u.samples for u in updates] == [1, 100]


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


def test_task_config_weights_fields_are_checked_and_bounded(tmp_path: Path) -> None:
    config = TaskConfig(model="logreg", max_samples=500, robust_weights="consensus")
    assert TaskConfig.from_json_bytes(config.to_json_bytes()) == config
    assert config.digest != TaskConfig(model="logreg").digest  # both fields are committed
    assert TaskConfig().max_samples == 10_000 and TaskConfig().robust_weights == "uniform"
    for bad in ({"max_samples": -1}, {"max_samples": 2**64}, {"max_samples": True}):
        with pytest.raises(TaskConfigError, match="max_samples"):
            TaskConfig(**bad)
    with pytest.raises(TaskConfigError, match="robust_weights"):
        TaskConfig(robust_weights="reputation")
    with pytest.raises(TaskConfigError, match="limits"):
        TaskConfig.from_json_bytes(b'{"rule_params":' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (MAX_CONFIG_BYTES + 1))
    with pytest.raises(TaskConfigError, match="larger than"):
        TaskConfig.from_file(big)


def test_robust_rules_weigh_uniformly_unless_the_task_says_consensus() -> None:
    claims = [1_000.0 * 2**64, 0.0, 100_000.0]
    assert rule_weights("multikrum", "uniform", claims) == [1.0, 0.0, 1.0]
    assert rule_weights("multikrum", "consensus", claims) == claims
    for weighted in ("fedavg", "geomed"):
        assert rule_weights(weighted, "uniform", claims) == claims
    assert [capped_samples(s, 10_000) for s in (1, 10_000, 2**64 - 1)] == [1, 10_000, 10_000]
    assert capped_samples(2**64 - 1, 0) == 1  # max_samples 0: samples are not used


def _unit(learner: Learner, index: int) -> bytes:
    """An update that moves only parameter `index`, by 1: its share is readable directly."""
    vector = torch.zeros(learner.num_params)
    vector[index] = 1.0
    return learner.encode_update(vector)


def test_a_2_64_sample_claim_moves_fedavg_no_more_than_an_honest_member() -> None:
    """Claims go on chain as claimed; the chain's consensus weights cap them at the task's
    max_samples, so under FedAvg the liar's update weighs as an honest one at the cap."""
    config = TaskConfig(model="logreg", rule="fedavg", local_epochs=1)
    learner = Learner(config, DataSpec("digits", 0, 2), device="cpu")
    chain = eth_tester_chain()
    owner_key, liar_key, honest_key = chain.new_accounts(3)
    owner = FLChainClient.deploy(chain.w3, owner_key)
    liar, honest = (FLChainClient(chain.w3, owner.address, k) for k in (liar_key, honest_key))
    initial = hashlib.sha256(learner.initial_model()).digest()
    params = TaskParams(config.digest, initial, 2, 2, 600, 600, max_samples=config.max_samples)
    task_id = owner.create_task(params)
    for i, member in enumerate((liar, honest)):
        member.join(task_id, f"peer-{i}".encode(), bytes([i + 1]) * 32)
    base = learner.initial_model()
    blobs = {0: _unit(learner, 0), 1: _unit(learner, 1)}
    liar.submit(task_id, 1, hashlib.sha256(blobs[0]).digest(), 2**64 - 1, 0, 0)
    honest.submit(task_id, 1, hashlib.sha256(blobs[1]).digest(), config.max_samples, 0, 0)
    weights = owner.consensus_weights(task_id, 1)
    outcome = learner.aggregate(base, blobs, dict(enumerate(weights)))
    moved = learner.model_params(outcome.model_blob) - learner.model_params(base)
    assert outcome.accepted == [0, 1]
    assert moved[0] <= moved[1]
    assert float(moved[0]) == pytest.approx(0.5)


def test_multikrum_keeps_uniform_weights_against_a_sample_claim() -> None:
    base_config = TaskConfig(model="logreg", rule="multikrum", rule_params={"f": 0, "m": 3})
    claims = {0: 1_000.0 * (2**64 - 1), 1: 1_000.0 * 100, 2: 1_000.0 * 100}  # as from chain
    shares = {}
    for mode in ("uniform", "consensus"):
        config = replace(base_config, robust_weights=mode)
        learner = Learner(config, DataSpec("digits", 0, 2), device="cpu")
        base = learner.initial_model()
        blobs = {i: _unit(learner, i) for i in range(3)}
        outcome = learner.aggregate(base, blobs, claims)
        moved = learner.model_params(outcome.model_blob) - learner.model_params(base)
        shares[mode] = [float(moved[i]) for i in range(3)]
    assert shares["uniform"] == pytest.approx([1 / 3] * 3)
    # "consensus" takes the weights as given: here uncapped, so the claim owns the mean.
    assert shares["consensus"][0] == pytest.approx(1.0, abs=1e-6)


# --- Siren's client side on the node --------------------------------------------------


def test_siren_replays_credits_from_the_lineage_and_rolls_back_onto_t_minus_1() -> None:
    """The network Learner's Siren: credits replayed from the rounds that built the model
    blacklist a member rejected once under a one-credit limit (T = 4); a round whose check
    rejects an eligible member applies the accepted mean to the model of t-1."""
    from flchain.node.learner import SirenRound
    from flchain.taskconfig import build_task_config

    config = build_task_config(model="logreg", rule="siren", local_epochs=1)
    learner = Learner(config, DataSpec("digits", 0, 2), device="cpu")
    base = learner.initial_model()
    step = learner.decode_update(learner.train(base, 1).blob)
    older = learner.apply_update(base, -step)  # the global model of t-1
    updates = {0: step, 1: step, 2: -step}
    blobs = {i: learner.encode_update(u) for i, u in updates.items()}
    rejected_before = SirenRound(
        submitted=(0, 1, 2), lineage=(((0, 1, 2), (0, 1)),), history=(older,), rounds=4
    )
    blacklisted = learner.aggregate(base, blobs, {}, siren=rejected_before)
    assert blacklisted.accepted == [0, 1] and blacklisted.rollback == 0  # no alarm needed
    assert blacklisted.model_blob == learner.apply_update(base, step)
    alarmed = SirenRound(
        alarms=frozenset({0}),
        submitted=(0, 1, 2),
        lineage=(((0, 1, 2), (0, 1, 2)),),
        history=(older,),
        rounds=10,
    )
    outcome = learner.aggregate(base, blobs, {}, siren=alarmed)
    assert outcome.accepted == [0, 1] and outcome.rollback == 1
    assert outcome.model_blob == learner.apply_update(older, step)


def test_siren_validation_split_is_held_out_from_training() -> None:
    full = Learner(CONFIG, DataSpec("digits", 0, 4), device="cpu")
    learner = Learner(CONFIG, DataSpec("digits", 0, 4), device="cpu", siren_validation=True)
    assert learner.val_x is not None and learner.val_y is not None
    n = len(full.y)
    assert len(learner.val_y) == int(n * 0.1) and len(learner.y) == n - len(learner.val_y)
    # together the two parts are the shard, each sample in exactly one of them
    rows = sorted(map(bytes, torch.cat([learner.val_x, learner.x]).flatten(1).numpy()))
    assert rows == sorted(map(bytes, full.x.flatten(1).numpy()))
    learner.hold_out_validation()  # idempotent
    assert len(learner.y) == n - len(learner.val_y)
    update = learner.train(learner.initial_model(), 1)
    assert update.samples == len(learner.y)  # the claim counts training samples only


def test_siren_alarm_is_judged_on_the_validation_split_and_resumes_from_our_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import flchain.node.learner as learner_module

    learner = Learner(CONFIG, DataSpec("digits", 1, 4), device="cpu", siren_validation=True)
    initial = learner.initial_model()
    learner.train(initial, 1)
    own = learner.last_local
    assert own is not None
    seen: list[torch.Tensor] = []
    real_evaluate = learner_module.evaluate

    def spy_evaluate(model, x, y, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(x)
        return real_evaluate(model, x, y, **kwargs)

    monkeypatch.setattr(learner_module, "evaluate", spy_evaluate)
    # the untrained initial model is far worse than our trained one: alarm
    assert learner.siren_alarm(initial) is True and learner.resume_local is True
    assert len(seen) == 2 and all(x is learner.val_x for x in seen)
    starts: list[torch.Tensor] = []
    import flchain.pipeline as pipeline_module

    real_update = pipeline_module.local_update

    def spy_update(model, base, *args, **kwargs):  # type: ignore[no-untyped-def]
        starts.append(base.clone())
        return real_update(model, base, *args, **kwargs)

    monkeypatch.setattr(pipeline_module, "local_update", spy_update)
    blob = learner.train(initial, 2).blob
    assert torch.equal(starts[0], own)  # trained from our own previous model ...
    base = learner.model_params(initial)
    assert learner.last_local is not None
    # ... and reported relative to the global model, as the reference does
    assert torch.equal(learner.decode_update(blob), (learner.last_local - base).float())
    assert learner.resume_local is False
    learner.train(initial, 3)  # no alarm since: back to the global model
    assert torch.equal(starts[1], base)
    # no alarm when the global model is our own model (local > global + C_l * local fails)
    from flchain.models import load_flat_params, model_to_bytes

    load_flat_params(learner.model, learner.last_local)
    assert learner.siren_alarm(model_to_bytes(learner.model)) is False


def test_the_engine_holds_the_split_out_before_a_task_with_alarms_trains() -> None:
    from types import SimpleNamespace

    import trio

    from flchain.node.engine import RoundEngine

    calls: list[int] = []
    learner = SimpleNamespace(hold_out_validation=lambda: calls.append(1))
    engine = SimpleNamespace(learner=learner, _alarmed=set(), attacker=None)
    first_round = SimpleNamespace(alarm_window=30, global_round=0, global_digest=b"")
    trio.run(RoundEngine._maybe_alarm, engine, first_round)  # type: ignore[arg-type]
    assert calls == [1]
    no_alarms = SimpleNamespace(alarm_window=0, global_round=0, global_digest=b"")
    trio.run(RoundEngine._maybe_alarm, engine, no_alarms)  # type: ignore[arg-type]
    assert calls == [1]  # a task without alarms trains on the whole shard
