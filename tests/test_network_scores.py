"""SageFlow and Siren on the network: the public validation set the task config names, the
scores every node computes on it, and aggregates that honest nodes agree on bit for bit."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from flchain.aggregation import NETWORK_RULES
from flchain.cli import cli
from flchain.devnet import launcher
from flchain.devnet.launcher import DevnetError, DevnetPlan
from flchain.node.learner import Learner, SirenRound
from flchain.public_set import PublicSetError, quantize, update_scores
from flchain.taskconfig import DataSpec, TaskConfig, TaskConfigError, build_task_config

# Runs in a fresh interpreter with a given torch thread count; prints what a node would vote.
_CHILD = r"""
import hashlib, json, sys
from pathlib import Path
import torch
torch.set_num_threads(int(sys.argv[2]))
from flchain.node.learner import Learner, SirenRound
from flchain.public_set import update_scores
from flchain.taskconfig import DataSpec, TaskConfig
work = Path(sys.argv[1])
blobs = json.loads((work / "updates.json").read_text())
out = {"threads": torch.get_num_threads()}
for rule in ("sageflow", "siren"):
    config = TaskConfig.from_file(work / f"{rule}.json")
    learner = Learner(config, DataSpec("digits", 0, 4), device="cpu")
    base = learner.initial_model()
    updates = {int(i): bytes.fromhex(b) for i, b in blobs.items()}
    siren = SirenRound(alarms=frozenset({1}), submitted=tuple(sorted(updates)), rounds=10)
    outcome = learner.aggregate(base, updates, {i: 1.0 for i in updates}, siren=siren)
    out[rule] = {
        "accepted": outcome.accepted,
        "model": hashlib.sha256(outcome.model_blob).hexdigest(),
    }
stacked = torch.stack([learner.decode_update(updates[i]) for i in sorted(updates)])
scores = update_scores(learner.model, learner.model_params(base), stacked, learner.public)
out["scores"] = [v.hex() for v in scores.loss + scores.entropy + scores.accuracy]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def configs() -> dict[str, TaskConfig]:
    return {
        rule: build_task_config(model="cnn", rule=rule, local_epochs=1)
        for rule in ("sageflow", "siren")
    }


def _random_updates(learner: Learner, n: int, byzantine: int) -> dict[int, bytes]:
    """Small seeded honest perturbations and one large hostile one (no training needed: the
    test is about the scores and the aggregate, not about learning)."""
    gen = torch.Generator().manual_seed(5)
    d = learner.num_params
    updates = {i: 0.05 * torch.randn(d, generator=gen) for i in range(n)}
    updates[byzantine] = -8.0 * updates[0]
    return {i: learner.encode_update(u) for i, u in updates.items()}


def test_scores_and_aggregates_are_bit_identical_across_processes_and_thread_counts(
    configs: dict[str, TaskConfig], tmp_path: Path
) -> None:
    learner = Learner(configs["sageflow"], DataSpec("digits", 0, 4), device="cpu")
    updates = _random_updates(learner, 4, byzantine=3)
    for rule, config in configs.items():
        (tmp_path / f"{rule}.json").write_bytes(config.to_json_bytes())
    (tmp_path / "updates.json").write_text(json.dumps({i: b.hex() for i, b in updates.items()}))
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(tmp_path), str(threads)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for threads in (1, 2)
    ]
    results = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        results.append(json.loads(out))
    assert [r.pop("threads") for r in results] == [1, 2]
    assert results[0] == results[1]
    assert len(set(results[0]["scores"])) > 3  # the updates do score differently


def test_scores_lie_on_the_quantization_grid_and_a_non_finite_model_scores_worst(
    configs: dict[str, TaskConfig],
) -> None:
    learner = Learner(configs["siren"], DataSpec("digits", 1, 4), device="cpu")
    base = learner.model_params(learner.initial_model())
    scores = update_scores(learner.model, base, torch.zeros(1, len(base)), learner.public)
    assert all(quantize(v) == v for v in scores.loss + scores.entropy + scores.accuracy)
    assert 0.0 <= scores.accuracy[0] <= 1.0 and min(scores.loss[0], scores.entropy[0]) > 0.0
    huge = torch.full((1, len(base)), 3e38)
    worst = update_scores(learner.model, huge[0], huge, learner.public)  # overflows float32
    assert worst.accuracy == [0.0] and worst.loss[0] > 1e29
    assert worst.entropy == [quantize(float(np.log(10)))]


def test_a_public_set_whose_digest_does_not_match_is_refused(
    configs: dict[str, TaskConfig],
) -> None:
    spec = dict(configs["sageflow"].public_data or {})
    spec["sha256"] = "0" * 64
    forged = dataclasses.replace(configs["sageflow"], public_data=spec)
    with pytest.raises(PublicSetError, match="refusing to run"):
        Learner(forged, DataSpec("digits", 0, 4), device="cpu")
    other_draw = build_task_config(model="cnn", rule="sageflow", public_seed=1)
    assert other_draw.public_data != configs["sageflow"].public_data
    assert other_draw.digest != configs["sageflow"].digest  # the set's digest is on chain


def test_sageflow_and_siren_task_configs_run_on_the_network_with_a_public_set(
    configs: dict[str, TaskConfig],
) -> None:
    assert {"sageflow", "siren"} <= set(NETWORK_RULES)
    for rule, config in configs.items():
        public = config.public_spec
        assert public is not None and (public.dataset, public.fraction) == ("digits", 0.05)
        assert TaskConfig.from_json_bytes(config.to_json_bytes()) == config
        with pytest.raises(TaskConfigError, match="public validation set"):
            TaskConfig(rule=rule)
    with pytest.raises(TaskConfigError, match="exactly"):
        TaskConfig(rule="sageflow", public_data={"dataset": "digits"})
    # A config without a public set keeps the JSON (and so the digest) it always had.
    assert b"public_data" not in TaskConfig(rule="median").to_json_bytes()


def test_the_shards_are_cut_from_what_the_public_set_leaves(
    configs: dict[str, TaskConfig],
) -> None:
    learners = [Learner(configs["siren"], DataSpec("digits", i, 3), device="cpu") for i in range(3)]
    public = learners[0].public
    assert public is not None
    sizes = sum(len(learner.y) for learner in learners) + len(public.y)
    assert sizes == len(learners[0].dataset.y_train)


def test_byzantine_updates_are_rejected_by_the_network_learner() -> None:
    """As their servers do in simulation: with an alarm raised, Siren rejects an update that
    points away from the best one; SageFlow's entropy filter drops an update whose model
    predicts with high uncertainty on the public set (here the honest peers move on from a
    model trained for a round, and a Byzantine peer pushes it back to the untrained one)."""
    learners = {
        rule: Learner(
            build_task_config(model="logreg", rule=rule, local_epochs=3),
            DataSpec("digits", 0, 2),
            device="cpu",
        )
        for rule in ("sageflow", "siren")
    }
    trainer = learners["sageflow"]
    init = trainer.initial_model()
    step = trainer.decode_update(trainer.train(init, 1).blob)
    base = trainer.apply_update(init, step)  # the global model after one round
    updates = {i: trainer.encode_update(0.2 * (1 + 0.1 * i) * step) for i in range(3)}
    updates[3] = trainer.encode_update(-step)
    siren = SirenRound(alarms=frozenset({0}), submitted=(0, 1, 2, 3), rounds=10)
    for rule, learner in learners.items():
        outcome = learner.aggregate(base, updates, {}, siren=siren)
        assert outcome.accepted == [0, 1, 2], rule
        honest_only = learner.aggregate(base, {i: updates[i] for i in range(3)}, {}, siren=siren)
        assert outcome.model_blob == honest_only.model_blob, rule


def test_devnet_up_plans_sageflow_and_siren_tasks_with_their_public_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plans: list[DevnetPlan] = []

    def fake_up(plan: DevnetPlan, **_: object) -> dict:
        plans.append(plan)
        raise DevnetError("not started in this test")

    monkeypatch.setattr(launcher, "up", fake_up)
    for rule in ("sageflow", "siren"):
        result = CliRunner().invoke(
            cli, ["devnet", "up", "--dir", str(tmp_path), "--rule", rule, "--model", "logreg"]
        )
        assert "not started in this test" in result.output, result.output
        assert plans[-1].task_config().public_spec is not None
    assert plans[-1].alarm_window == plans[-1].submit_window  # Siren needs its alarms


def test_the_engine_reads_siren_state_from_the_chain_alike_on_every_node() -> None:
    """`RoundEngine._siren_round` on a chain where round 1 was finalized, round 2 reverted by
    alarms (round 3 aborted) and round 4 is open on round 1's model: the alarms of the judged
    round 2 count when raised before the member's round-4 commit; the lineage and the t-1
    model follow base_round back to the initial model."""
    from types import SimpleNamespace

    import trio

    from flchain.contracts import RoundStatus, bitmap
    from flchain.node.engine import RoundEngine

    def info(k: int, status: RoundStatus, base: int, submitted: list[int], accepted: list[int]):
        return SimpleNamespace(
            round=k,
            status=status,
            base_round=base,
            base_digest=bytes([base]) * 32,
            submitted=bitmap(submitted),
            accepted=bitmap(accepted),
        )

    rounds = [
        info(1, RoundStatus.FINALIZED, 0, [0, 1, 2], [0, 1]),
        info(2, RoundStatus.REVERTED, 1, [0, 1, 2], [0, 1, 2]),
        info(3, RoundStatus.ABORTED, 1, [], []),
    ]
    current = info(4, RoundStatus.OPEN, 1, [0, 1, 2], [])

    def ev(name: str, k: int, member: int, block: int) -> dict:
        return {"event": name, "args": {"round": k, "member": member}, "block_number": block,
                "log_index": 0}  # fmt: skip

    logs = [
        ev("AlarmRaised", 2, 0, 10),
        ev("UpdateCommitted", 4, 0, 11),  # alarmed, then committed: counts
        ev("UpdateCommitted", 4, 1, 12),
        ev("AlarmRaised", 2, 1, 13),  # alarmed after its commit: does not count
        ev("AlarmRaised", 1, 2, 5),  # an alarm on another round
        ev("UpdateCommitted", 4, 2, 14),
    ]
    client = SimpleNamespace(
        get_rounds=lambda task, ks: [rounds[k - 1] for k in ks],
        get_task=lambda task: SimpleNamespace(max_rounds=20),
        events=lambda task, event=None: [e for e in logs if e["event"] == event],
    )

    async def chain(fn, *args):  # type: ignore[no-untyped-def]
        return fn(*args)

    async def model_blob(digest: bytes) -> bytes:
        return b"model of round %d" % digest[0]

    engine = SimpleNamespace(client=client, task_id=1, _chain=chain, _model_blob=model_blob)
    engine._positions = lambda event, k: RoundEngine._positions(engine, event, k)  # type: ignore[arg-type]
    siren = trio.run(RoundEngine._siren_round, engine, 4, current)  # type: ignore[arg-type]
    assert siren.alarms == {0}
    assert siren.submitted == (0, 1, 2)
    assert siren.lineage == (((0, 1, 2), (0, 1)),)  # round 1 built the base; 2 was reverted
    assert siren.history == (b"model of round 0",)  # t-1: round 1's base, the initial model
    assert siren.rounds == 20
