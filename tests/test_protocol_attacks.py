"""The protocol attacks' own pieces, without a network: the payloads are what each attack
claims, and the engine hooks commit what the attack says (and survive the contract's refusal).
The devnet tests (test_devnet_attacks.py) show what honest nodes make of them."""

from __future__ import annotations

import errno
import hashlib
import math
import os
import random
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import trio
from httpkit import QuietHandler, serving

from flchain import safe_json
from flchain.attacks import DESCRIPTIONS, PROTOCOL_ATTACKS
from flchain.attacks.payloads import (
    DEEPJSON_SIZES,
    JUNK_MARKER,
    LIE_SAMPLES,
    junk_blob,
    nested_brackets,
    nested_bundle,
    nested_rpc_request,
)
from flchain.contracts import ContractRevert, RoundStatus, UpdateCommit, bitmap
from flchain.crypto.ciphertext import PackedCiphertext
from flchain.crypto.errors import PaillierError
from flchain.node.blobstore import BlobStore, sha256
from flchain.node.engine import PROTOCOL_ATTACKS as ENGINE_PROTOCOL_ATTACKS
from flchain.node.engine import RoundEngine
from flchain.node.learner import Learner, LocalUpdate
from flchain.node.messages import MAX_MESSAGE_BYTES, encode
from flchain.node.metrics import Metrics
from flchain.node.protocol_attacks import (
    ACTIONS_METRIC,
    ATTACKS,
    BLOBFLOOD_COUNT,
    ProtocolAttacker,
    post_json,
)

NEW = ("liesamples", "copy", "replay", "slowloris", "blobflood", "deepjson")
ECONOMIC = ("freeride", "falsealarm", "novote")


def test_new_attacks_are_in_the_catalogue_and_the_engine_reads_it() -> None:
    assert set(NEW + ECONOMIC) <= set(PROTOCOL_ATTACKS)
    assert frozenset(PROTOCOL_ATTACKS) == ENGINE_PROTOCOL_ATTACKS
    # withhold, badvote and spam are behaviour hooks here too; equivocate lives in gossip
    assert frozenset(NEW + ECONOMIC) | {"withhold", "badvote", "spam"} == ATTACKS
    assert ATTACKS | {"equivocate"} == frozenset(PROTOCOL_ATTACKS)
    assert all(DESCRIPTIONS[name] for name in ECONOMIC)
    assert all(DESCRIPTIONS[name] for name in NEW)


# ---------------------------------------------------------------- payloads


@pytest.mark.parametrize("size", [2, 3, 4000, *DEEPJSON_SIZES])
def test_nested_brackets_are_exactly_size_bytes_and_size_over_two_deep(size: int) -> None:
    data = nested_brackets(size)
    assert len(data) == size
    assert safe_json.nesting_depth(data) == size // 2
    assert set(data) <= set(b"[] ")


@pytest.mark.parametrize("size", DEEPJSON_SIZES)
def test_nested_rpc_request_is_a_json_rpc_call_of_exactly_size_bytes(size: int) -> None:
    data = nested_rpc_request(size)
    assert len(data) == size
    assert data.startswith(b'{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[[[')
    assert data.endswith(b"]]]}") or data.endswith(b"] }")
    assert safe_json.nesting_depth(data) > size // 2 - 64


def test_the_issue_sizes_are_75k_1m_8m() -> None:
    assert DEEPJSON_SIZES == (75 * 1024, 2**20, 8 * 2**20)
    assert LIE_SAMPLES == 2**64 - 1


def test_nested_bundle_swaps_only_the_header_and_is_refused_cleanly() -> None:
    header = b'{"count":1}'
    body = bytes(range(200))
    bundle = b"FLPK\x01" + len(header).to_bytes(4, "big") + header + body
    nested = nested_brackets(4000)
    attacked = nested_bundle(bundle, nested)
    assert attacked[:5] == b"FLPK\x01"
    assert int.from_bytes(attacked[5:9], "big") == 4000
    assert attacked[9:4009] == nested
    assert attacked[4009:] == body
    with pytest.raises(PaillierError):  # refused before parsing, never a crash
        PackedCiphertext.from_bytes(attacked)


def test_junk_blobs_carry_the_marker_and_differ() -> None:
    rng = random.Random(1)
    a, b = junk_blob(1000, rng), junk_blob(1000, rng)
    assert len(a) == len(b) == 1000
    assert a.startswith(JUNK_MARKER) and b.startswith(JUNK_MARKER)
    assert a != b


# ---------------------------------------------------------------- commit hooks (fake chain)


class FakeChain:
    """The client calls the hooks make; round r's submitted members and commits are set up
    by the test, `submit` records each call and raises `revert` when set."""

    def __init__(
        self, commits: dict[tuple[int, int], UpdateCommit], revert: str | None, window: float = 30
    ) -> None:
        self.commits = commits
        self.deadline = time.time() + window
        self.revert = revert
        self.submits: list[tuple[Any, ...]] = []
        self.votes: list[tuple[Any, ...]] = []
        self.alarms: list[tuple[Any, ...]] = []
        self.alarm_revert: str | None = None
        self.finalized_at = time.time()
        self.account = "0x" + "11" * 20
        self.voter = 3  # the member index of the engine under test (`_engine`'s default)
        self.polls = 0

    def get_round(self, task_id: int, r: int) -> Any:
        self.polls += 1
        members = [i for (rr, i) in self.commits if rr == r]
        return SimpleNamespace(
            status=RoundStatus.OPEN,
            submitted=bitmap(members),
            eligible=bitmap([0, 1, 2, 3]),
            base_round=r - 1,
            base_digest=bytes(32),
            submit_deadline=self.deadline,
            vote_deadline=self.deadline + 30,
            finalized_at=self.finalized_at,
            voted=bitmap([self.voter]) if any(v[1] == r for v in self.votes) else 0,
        )

    def get_update(self, task_id: int, r: int, i: int) -> UpdateCommit:
        return self.commits.get((r, i), UpdateCommit(False, bytes(32), 0, 0, 0))

    def get_updates(self, task_id: int, keys: list[tuple[int, int]]) -> list[UpdateCommit]:
        return [self.get_update(task_id, r, i) for r, i in keys]

    def submit(self, *args: Any) -> None:
        self.submits.append(args)
        if self.revert:
            raise ContractRevert(self.revert)

    def vote(self, *args: Any) -> None:
        self.votes.append(args)

    def raise_alarm(self, *args: Any) -> None:
        self.alarms.append(args)
        if self.alarm_revert:
            raise ContractRevert(self.alarm_revert)


def _commit(tag: int, base_round: int) -> UpdateCommit:
    return UpdateCommit(True, bytes([tag]) * 32, 100 + tag, base_round, 7)


def _engine(
    chain: FakeChain, attacks: set[str], me: int = 3, store: BlobStore | None = None
) -> RoundEngine:
    p2p = SimpleNamespace(announced=[])

    async def announce(message: Any) -> None:
        p2p.announced.append(message)

    p2p.announce = announce
    engine = RoundEngine(
        client=chain,  # type: ignore[arg-type]
        task_id=1,
        learner=SimpleNamespace(dp_noise=0.0, num_params=4),  # type: ignore[arg-type]
        p2p=p2p,  # type: ignore[arg-type]
        store=store or SimpleNamespace(put=sha256, has=lambda d: True),  # type: ignore[arg-type]
        metrics=Metrics(),
        peer_id="me",
        attacks=frozenset(attacks),
        poll_interval=0.01,
    )
    engine.state.member_index = me
    return engine


def _actions(engine: RoundEngine) -> dict[str, float]:
    return engine.metrics.snapshot()[ACTIONS_METRIC.name]  # type: ignore[return-value]


def test_liesamples_commits_the_contract_bound_instead_of_the_true_count() -> None:
    chain = FakeChain({}, revert=None)
    engine = _engine(chain, {"liesamples"})
    info = chain.get_round(1, 1)
    update = LocalUpdate(b"blob", samples=450, loss=0.5)
    assert trio.run(engine._commit, 1, info, update, {}) is True
    (args,) = chain.submits
    assert args[3] == 2**64 - 1  # (task, round, digest, samples, base_round, loss)
    assert _actions(engine) == {"liesamples,claimed": 1}


def test_an_honest_node_commits_its_true_sample_count() -> None:
    chain = FakeChain({}, revert=None)
    engine = _engine(chain, set())
    assert engine.attacker is None
    trio.run(engine._commit, 1, chain.get_round(1, 1), LocalUpdate(b"blob", 450, 0.5), {})
    assert chain.submits[0][3] == 450


def test_a_node_that_cannot_store_its_update_does_not_commit_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk must not turn an honest node into a withholder: no blob, no commit."""
    chain = FakeChain({}, revert=None)
    metrics = Metrics()
    engine = _engine(chain, set(), store=BlobStore(tmp_path, metrics=metrics))

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    update = LocalUpdate(b"blob", 450, 0.5)
    assert trio.run(engine._commit, 1, chain.get_round(1, 1), update, {}) is False
    assert chain.submits == []
    assert "not committing" in (engine.state.last_error or "")
    assert metrics.snapshot()["store_errors_total"] == {"disk_full": 1}


def test_copy_waits_for_a_victim_commits_its_digest_and_survives_digest_taken() -> None:
    chain = FakeChain({}, revert="digest taken")
    engine = _engine(chain, {"copy"})

    async def main() -> bool:
        async with trio.open_nursery() as nursery:
            result: list[bool] = []

            async def attack() -> None:
                result.append(await engine.attacker.commit_instead(2, None))  # type: ignore[union-attr]

            nursery.start_soon(attack)
            await trio.sleep(0.1)
            assert chain.submits == []  # nothing to copy yet: it waits
            chain.commits[(2, 1)] = _commit(9, 1)
        return result[0]

    assert trio.run(main) is True  # the attack took the round: the node does not train
    (args,) = chain.submits
    assert args == (1, 2, bytes([9]) * 32, 109, 1, 7)  # the victim's digest, the round's base
    assert _actions(engine) == {"copy,refused": 1}


def test_copy_counts_a_commit_the_chain_takes() -> None:
    chain = FakeChain({(1, 0): _commit(5, 0)}, revert=None)
    engine = _engine(chain, {"copy"})
    assert trio.run(engine.attacker.commit_instead, 1, None) is True  # type: ignore[union-attr]
    assert chain.submits[0][2] == bytes([5]) * 32
    assert _actions(engine) == {"copy,committed": 1}


def test_replay_trains_in_round_one_then_replays_its_own_then_anothers_old_digest() -> None:
    commits = {(1, 3): _commit(3, 0), (1, 0): _commit(1, 0), (2, 0): _commit(2, 1)}
    chain = FakeChain(commits, revert="bad base round")
    engine = _engine(chain, {"replay"}, me=3)
    attacker = engine.attacker
    assert attacker is not None
    assert trio.run(attacker.commit_instead, 1, None) is False  # nothing old: train
    assert trio.run(attacker.commit_instead, 2, None) is True
    assert trio.run(attacker.commit_instead, 3, None) is True
    own, other = chain.submits
    assert own == (1, 2, bytes([3]) * 32, 103, 0, 7)  # its round-1 update, base round 0
    assert other == (1, 3, bytes([2]) * 32, 102, 1, 7)  # member 0's round-2 update
    assert _actions(engine) == {"replay,refused": 2}


def test_run_round_skips_training_when_copy_takes_the_commit() -> None:
    trained: dict[str, list[int]] = {}
    for attack in ("copy", "liesamples"):
        chain = FakeChain({(1, 0): _commit(5, 0)}, revert="digest taken", window=1.0)
        engine = _engine(chain, {attack})
        calls: list[int] = []
        trained[attack] = calls

        async def noop(*args: Any, calls: list[int] = calls) -> None:
            return None

        async def train(r: int, *args: Any, calls: list[int] = calls) -> None:
            calls.append(r)

        async def base(digest: bytes) -> bytes:
            return b"model"

        engine._model_blob = base  # type: ignore[method-assign]
        engine._train_and_commit = train  # type: ignore[method-assign]
        engine._aggregate_and_vote = noop  # type: ignore[method-assign]
        engine._await_end = noop  # type: ignore[method-assign]
        trio.run(engine.run_round, 1)
    assert trained == {"copy": [], "liesamples": [1]}


# ---------------------------------------------------------------- economic attacks


def _round_with_vote(
    attacks: set[str], *, voted_before: bool = False
) -> tuple[RoundEngine, FakeChain, list[int]]:
    """One round of the real engine (submit wait, aggregate, vote) for member 3 of four:
    members 0 and 1 committed; training and blob fetching are stubs. `voted_before`: the
    chain already holds member 3's vote (a node restarted after voting). The rounds the node
    trained in are returned with the engine and chain."""
    chain = FakeChain({(1, 0): _commit(5, 0), (1, 1): _commit(6, 0)}, revert=None, window=0.2)
    if voted_before:
        chain.votes.append((1, 1, bytes(32), 0))
    chain.consensus_weights = lambda *a: [1, 1, 1, 1]  # type: ignore[attr-defined]
    engine = _engine(chain, attacks)
    engine._proven = {i: True for i in range(4)}
    engine.learner.aggregate = lambda base, blobs, weights: SimpleNamespace(  # type: ignore[attr-defined]
        model_blob=b"aggregate", accepted=sorted(blobs), invalid=[]
    )
    trained: list[int] = []

    async def base(digest: bytes) -> bytes:
        return b"model"

    async def train(r: int, *args: Any) -> None:
        trained.append(r)

    async def fetch(r: int, digests: dict[int, bytes], *args: Any) -> dict[int, bytes]:
        return {i: b"update" for i in digests}

    async def noop(*args: Any) -> None:
        return None

    engine._model_blob = base  # type: ignore[method-assign]
    engine._train_and_commit = train  # type: ignore[method-assign]
    engine._fetch_blobs = fetch  # type: ignore[method-assign]
    engine._await_end = noop  # type: ignore[method-assign]
    trio.run(engine.run_round, 1)
    return engine, chain, trained


def test_freeride_never_trains_nor_commits_but_votes_with_the_honest_aggregate() -> None:
    engine, chain, trained = _round_with_vote({"freeride"})
    assert trained == [] and chain.submits == []
    # the honest vote: the aggregate of the others' updates, both accepted
    assert chain.votes == [(1, 1, sha256(b"aggregate"), bitmap([0, 1]))]
    assert _actions(engine) == {"freeride,skipped_commit": 1, "freeride,voted": 1}
    _, honest_chain, honest_trained = _round_with_vote(set())
    assert honest_trained == [1] and honest_chain.votes == chain.votes


def test_a_member_whose_vote_is_on_chain_does_not_vote_again() -> None:
    engine, chain, _ = _round_with_vote(set(), voted_before=True)
    assert chain.votes == [(1, 1, bytes(32), 0)]  # the earlier vote only
    assert engine.state.phase == "fetching"  # it stopped before aggregating


def test_novote_trains_and_commits_but_never_votes() -> None:
    engine, chain, trained = _round_with_vote({"novote"})
    assert trained == [1]  # the honest commit path
    assert chain.votes == []
    assert [m.kind for m in engine.p2p.announced] == []  # type: ignore[attr-defined]
    assert engine.state.last_accepted == [0, 1]  # it aggregated (and keeps the model)
    assert _actions(engine) == {"novote,withheld": 1}


def _task(r: int, window: int = 30) -> Any:
    return SimpleNamespace(alarm_window=window, global_round=r, global_digest=bytes([r]) * 32)


def _siren_engine(chain: FakeChain, attacks: set[str]) -> tuple[RoundEngine, list[int]]:
    """An engine whose Siren check says "the model is fine" and records that it ran."""
    engine = _engine(chain, attacks)
    checked: list[int] = []

    def siren(blob: bytes, threshold: float) -> bool:
        checked.append(1)
        return False

    async def model(digest: bytes) -> bytes:
        return b"model"

    engine.learner.siren_alarm = siren  # type: ignore[attr-defined]
    engine._model_blob = model  # type: ignore[method-assign]
    return engine, checked


def test_falsealarm_alarms_every_finalized_round_whatever_the_model() -> None:
    chain = FakeChain({}, revert=None)
    engine, checked = _siren_engine(chain, {"falsealarm"})
    trio.run(engine._maybe_alarm, _task(2))
    trio.run(engine._maybe_alarm, _task(2))  # once per round
    chain.alarm_revert = "reputation too low"
    trio.run(engine._maybe_alarm, _task(3))  # refused: counted, the node carries on
    chain.alarm_revert = None
    chain.finalized_at = time.time() - 60
    trio.run(engine._maybe_alarm, _task(4))  # its window closed: not even sent
    chain.finalized_at = time.time()
    trio.run(engine._maybe_alarm, _task(5, window=0))  # a task without alarms
    assert checked == []  # the model was never looked at
    assert chain.alarms == [(1, 2), (1, 3)]
    assert _actions(engine) == {
        "falsealarm,raised": 1,
        "falsealarm,refused": 1,
        "falsealarm,window_closed": 1,
    }
    assert engine.metrics.snapshot()["alarms_raised_total"] == 1
    (message,) = engine.p2p.announced  # type: ignore[attr-defined]
    assert (message.kind, message.round, message.digest) == ("alarm", 2, bytes([2]) * 32)
    # the task's last round, once the task is over
    trio.run(engine.attacker.at_task_end, _task(6))  # type: ignore[union-attr]
    assert chain.alarms[-1] == (1, 6)


def test_an_honest_node_alarms_only_when_siren_says_so() -> None:
    for attacks in (set(), {"novote"}):
        chain = FakeChain({}, revert=None)
        engine, checked = _siren_engine(chain, attacks)
        trio.run(engine._maybe_alarm, _task(2))
        if engine.attacker is not None:
            trio.run(engine.attacker.at_task_end, _task(3))
        assert checked == [1] and chain.alarms == []


def test_an_update_attacker_alarms_every_round_without_looking() -> None:
    # Siren's reference has every malicious client raise its alarm each round; the simulation
    # counts them the same way (`attacks.always_alarms`).
    chain = FakeChain({}, revert=None)
    engine, checked = _siren_engine(chain, set())
    engine.learner.attack = "signflip"  # type: ignore[attr-defined]
    trio.run(engine._maybe_alarm, _task(2))
    trio.run(engine._maybe_alarm, _task(3))
    trio.run(engine._maybe_alarm, _task(4, window=0))  # a task without alarms: none
    assert checked == [] and chain.alarms == [(1, 2), (1, 3)]
    engine.learner.attack = "labelflip"  # type: ignore[attr-defined]  # data attack: checks
    trio.run(engine._maybe_alarm, _task(5))
    assert checked == [1] and chain.alarms == [(1, 2), (1, 3)]


def test_a_training_whose_update_never_counts_leaves_no_siren_trace() -> None:
    # A round the alarms abort (or whose window closed) refuses the commit: the node's Siren
    # state goes back to before that training, as the simulation's peers never train then.
    for refusal, kept in (("round not open", False), (None, True)):
        chain = FakeChain({}, revert=refusal)
        engine = _engine(chain, set())
        learner = engine.learner
        learner.last_local, learner.resume_local = "own model", True  # type: ignore[attr-defined]

        def train(base: bytes, r: int, learner: Any = learner) -> LocalUpdate:
            learner.last_local, learner.resume_local = "trained", False
            return LocalUpdate(b"blob", samples=10, loss=0.5)

        learner.train = train  # type: ignore[attr-defined]
        learner.siren_state = lambda learner=learner: Learner.siren_state(learner)  # type: ignore[attr-defined]
        learner.restore_siren_state = lambda state, learner=learner: (  # type: ignore[attr-defined]
            Learner.restore_siren_state(learner, state)
        )
        trio.run(engine._train_and_commit, 2, chain.get_round(1, 2), b"model", {})
        assert len(chain.submits) == 1
        state = (learner.last_local, learner.resume_local)  # type: ignore[attr-defined]
        assert state == (("trained", False) if kept else ("own model", True))


def test_a_secure_bundle_gets_a_nested_header_only_under_deepjson() -> None:
    chain = FakeChain({}, revert=None)
    bundle = b"FLPK\x01" + (2).to_bytes(4, "big") + b"{}" + b"body"
    assert _engine(chain, {"copy"}).attacker.bundle(bundle) == bundle  # type: ignore[union-attr]
    attacked = _engine(chain, {"deepjson"}).attacker.bundle(bundle)  # type: ignore[union-attr]
    assert attacked.endswith(b"body") and safe_json.nesting_depth(attacked[9:-4]) > 1000


# ---------------------------------------------------------------- deepjson's RPC poster


class _ErrorHandler(QuietHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers["Content-Length"]))
        self.answer(b'{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"too deep"}}')


def test_post_json_tells_a_refusal_from_a_dead_server() -> None:
    with serving(_ErrorHandler) as url:
        assert post_json(url, nested_rpc_request(DEEPJSON_SIZES[0]), timeout=10) == "refused"
    assert post_json(url, b"{}", timeout=5) == "no_answer"  # nobody listens any more


def test_the_attacker_ignores_attacks_that_are_not_its_own() -> None:
    engine = _engine(FakeChain({}, revert=None), {"equivocate"})
    assert engine.attacker is not None and engine.attacker.attacks == frozenset()
    assert isinstance(engine.attacker, ProtocolAttacker)
    assert engine.attacker.claimed_samples(12) == 12


def test_deepjson_commits_a_nested_header_bundle_in_secure_mode() -> None:
    from flchain.node.secure_engine import SecureRoundEngine

    chain = FakeChain({}, revert=None)
    honest_bundle = b"FLPK\x01" + (2).to_bytes(4, "big") + b"{}" + b"ciphertexts"
    committed: list[bytes] = []
    learner = SimpleNamespace(
        dp_noise=0.0,
        num_params=4,
        train=lambda base, r, **options: LocalUpdate(b"update", 10, 0.1),
        decode_update=lambda blob: torch.zeros(4),
    )
    engine = SecureRoundEngine(
        codec=SimpleNamespace(noise=lambda members: None),  # type: ignore[arg-type]
        he_keypair=(None, None),  # type: ignore[arg-type]
        client=chain,  # type: ignore[arg-type]
        task_id=1,
        learner=learner,  # type: ignore[arg-type]
        p2p=SimpleNamespace(),  # type: ignore[arg-type]
        store=SimpleNamespace(),  # type: ignore[arg-type]
        metrics=Metrics(),
        peer_id="me",
        attacks=frozenset({"deepjson"}),
    )
    engine.state.member_index = 3
    engine._member_info = {i: SimpleNamespace(x25519=bytes(32)) for i in range(4)}

    async def decryptor(r: int, deadline: float) -> tuple[int, Any]:
        return 0, "key"

    async def encrypt(*args: Any) -> bytes:
        return honest_bundle

    async def commit(r: int, info: Any, update: LocalUpdate, timings: Any) -> bool:
        committed.append(update.blob)
        return True

    engine._decryptor = decryptor  # type: ignore[method-assign]
    engine._encrypt = encrypt  # type: ignore[method-assign]
    engine._commit = commit  # type: ignore[method-assign]
    trio.run(engine._train_and_commit, 1, chain.get_round(1, 1), b"base", {})
    (blob,) = committed
    assert blob.startswith(b"FLPK\x01") and blob.endswith(b"ciphertexts")
    assert safe_json.nesting_depth(blob[9 : -len(b"ciphertexts")]) > 1000
    with pytest.raises(PaillierError):
        PackedCiphertext.from_bytes(blob)


def test_node_run_and_devnet_up_offer_every_protocol_attack() -> None:
    import click

    from flchain.commands.devnet import up_command
    from flchain.commands.node import run_command

    for command in (run_command, up_command):
        (option,) = [p for p in command.params if p.name == "attacks"]
        assert isinstance(option.type, click.Choice)
        assert set(NEW + ECONOMIC) <= set(option.type.choices), command.name


class _Store:
    def __init__(self) -> None:
        self.blobs: dict[bytes, bytes] = {}

    def put(self, blob: bytes) -> bytes:
        digest = hashlib.sha256(blob).digest()
        self.blobs[digest] = blob
        return digest


def test_blobflood_announces_valid_messages_for_junk_it_keeps_to_serve() -> None:
    chain = FakeChain({}, revert=None)
    engine = _engine(chain, {"blobflood"})
    engine.store = _Store()  # type: ignore[assignment]
    engine.learner.num_params = 64  # type: ignore[misc]
    trio.run(engine.attacker._blobflood, 2)  # type: ignore[union-attr]
    announced = engine.p2p.announced  # type: ignore[attr-defined]
    assert len(announced) == BLOBFLOOD_COUNT
    assert all(encode(m) and m.kind == "update" and m.round == 2 for m in announced)
    assert {m.digest for m in announced} == set(engine.store.blobs)  # type: ignore[attr-defined]
    assert all(b.startswith(JUNK_MARKER) for b in engine.store.blobs.values())  # type: ignore[attr-defined]
    assert chain.submits == []  # never committed
    assert _actions(engine) == {"blobflood,announced": BLOBFLOOD_COUNT}


def test_deepjson_posts_every_size_to_the_rpc_and_publishes_nested_gossip() -> None:
    chain = FakeChain({}, revert=None)
    engine = _engine(chain, {"deepjson"})
    published: list[bytes] = []

    async def publish_raw(task: int, data: bytes) -> None:
        published.append(data)

    engine.p2p.publish_raw = publish_raw  # type: ignore[attr-defined]
    with serving(_ErrorHandler) as url:
        chain.w3 = SimpleNamespace(provider=SimpleNamespace(endpoint_uri=url))  # type: ignore[attr-defined]
        trio.run(engine.attacker._deepjson, 1)  # type: ignore[union-attr]
    assert _actions(engine) == {"deepjson,gossip_published": 2, "deepjson,rpc_refused": 3}
    assert [len(p) for p in published] == [MAX_MESSAGE_BYTES, DEEPJSON_SIZES[0]]
    assert all(safe_json.nesting_depth(p) == len(p) // 2 for p in published)


def test_withhold_commits_a_digest_it_never_stored() -> None:
    chain = FakeChain({}, revert=None)
    stored: list[bytes] = []
    store = SimpleNamespace(
        put=lambda blob: stored.append(blob) or sha256(blob), has=lambda d: True
    )
    engine = _engine(chain, {"withhold"}, store=store)  # type: ignore[arg-type]
    assert trio.run(engine._commit, 1, chain.get_round(1, 1), LocalUpdate(b"blob", 1, 0.5), {})
    assert chain.submits[0][2] == sha256(b"blob") and stored == []
    honest = _engine(FakeChain({}, revert=None), set(), store=store)  # type: ignore[arg-type]
    trio.run(honest._commit, 1, honest.client.get_round(1, 1), LocalUpdate(b"mine", 1, 0.5), {})
    assert stored == [b"mine"]


def test_badvote_ballots_a_random_digest_with_every_submitter_accepted() -> None:
    chain = FakeChain({}, revert=None)
    attacker = _engine(chain, {"badvote"}).attacker
    assert attacker is not None
    info = SimpleNamespace(submitted=0b1011)
    digest, accepted = attacker.ballot(info, b"\x01" * 32, 0b0011)
    assert digest != b"\x01" * 32 and len(digest) == 32 and accepted == 0b1011
    other = _engine(chain, {"novote"}).attacker
    assert other is not None and other.ballot(info, b"\x01" * 32, 3) == (b"\x01" * 32, 3)


def test_spam_commits_a_nan_update_with_a_new_digest_each_round() -> None:
    chain = FakeChain({}, revert=None)
    engine = _engine(chain, {"spam"})
    engine.learner.encode_update = lambda t: t.numpy().tobytes()  # type: ignore[attr-defined]
    attacker = engine.attacker
    assert attacker is not None
    one = attacker.committed_update(1, LocalUpdate(b"honest", 5, 0.1))
    two = attacker.committed_update(2, LocalUpdate(b"honest", 5, 0.1))
    assert one.blob != two.blob and one.samples == 5
    assert all(
        math.isnan(x) for x in torch.frombuffer(bytearray(one.blob), dtype=torch.float32)[1:]
    )
    assert len(attacker.committed_bundle(b"bundle")) == 4096
