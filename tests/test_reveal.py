"""Commit, then reveal: a node serves its own update of a round only once that round's submit
phase has closed on chain, so no member can build its update from the others' (or copy one).

A request before the reveal is answered NOT_REVEALED and counted (`not_revealed`); global
models and revealed updates are served as before; an honest fetcher that sees the submit
phase close a moment before the owner does asks again and gets the update; announcements
of sealed updates wait in the early-fetch quarantine until the reveal.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio
from test_p2p_budgets import _FakeClient, _FakeP2P, _update
from test_p2p_network import TASK, Net, _blob_failures, _eventually, _run

from flchain.contracts import RoundStatus, bitmap
from flchain.node import engine as engine_module
from flchain.node.blobstore import BlobStore, sha256
from flchain.node.engine import RoundEngine
from flchain.node.learner import LocalUpdate
from flchain.node.metrics import Metrics
from flchain.node.p2p import BlobNotFound, Delivery, P2PNode

ROUND = 3


class _Chain:
    """The chain calls `RoundEngine._commit` makes: it records each submit."""

    account = "0x" + "12" * 20

    def __init__(self) -> None:
        self.submits: list[tuple[Any, ...]] = []

    def submit(self, *args: Any) -> None:
        self.submits.append(args)


def _engine(p2p: Any, store: Any, client: Any = None) -> RoundEngine:
    engine = RoundEngine(
        client=client or _Chain(),  # type: ignore[arg-type]
        task_id=TASK,
        learner=SimpleNamespace(num_params=10, dp_noise=0.0),  # type: ignore[arg-type]
        p2p=p2p,
        store=store,
        metrics=Metrics(),
        peer_id=getattr(p2p, "peer_id", "me"),
        poll_interval=0.05,
    )
    engine.state.round = ROUND
    engine.state.member_index = 1
    if isinstance(p2p, P2PNode):
        p2p.sealed = engine.sealed_now  # as the daemon wires it
    return engine


def _round(deadline: float) -> SimpleNamespace:
    return SimpleNamespace(submit_deadline=deadline, base_round=ROUND - 1)


def test_a_node_asking_for_an_update_before_the_reveal_gets_nothing(tmp_path: Path) -> None:
    async def scenario(net: Net) -> None:
        _, b, c = net.members
        owner = _engine(b, b.store)
        model = b.store.put(b"the round's global model")
        update = LocalUpdate(b"b's update of round 3", samples=10, loss=0.5)
        info = _round(time.time() + 60)
        assert await owner._commit(ROUND, info, update, {}) is True
        digest = sha256(update.blob)
        assert owner.sealed(digest) and not owner.sealed(model)
        with pytest.raises(BlobNotFound) as refused:
            await c.fetch_blob(digest, [b.peer_id], try_connected=False)
        assert refused.value.attempts == {b.peer_id: "not_revealed"}
        assert _blob_failures(b) == {"not_revealed": 1}
        assert _blob_failures(c) == {"not_revealed": 1}
        assert not c.store.has(digest)  # nothing of it reached the asker
        # global models are served as before
        assert await c.fetch_blob(model, [b.peer_id], try_connected=False)
        # the submit phase closes: the same request now gets the update
        owner._reveal(ROUND)
        assert not owner.sealed(digest)
        assert await c.fetch_blob(digest, [b.peer_id], try_connected=False) == update.blob
        assert _blob_failures(b) == {"not_revealed": 1}

    _run(tmp_path, scenario)


class _ClosedChain(_Chain):
    """A chain on which every eligible member has submitted round ROUND."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def get_round(self, task_id: int, r: int) -> SimpleNamespace:
        self.reads += 1
        return SimpleNamespace(
            status=RoundStatus.OPEN,
            submitted=bitmap([0, 1]),
            eligible=bitmap([0, 1]),
            submit_deadline=time.time() + 60,
        )


def test_an_owner_that_has_not_seen_the_phase_close_asks_the_chain_and_serves(
    tmp_path: Path,
) -> None:
    # The asker saw everyone commit before the owner's own poll did: the owner reads the
    # round itself, finds the phase closed and serves at once (no retry, no waiting).
    async def scenario(net: Net) -> None:
        _, b, c = net.members
        chain = _ClosedChain()
        owner = _engine(b, b.store, client=chain)
        update = LocalUpdate(b"b's update, everyone has committed", samples=10, loss=0.5)
        assert await owner._commit(ROUND, _round(time.time() + 60), update, {}) is True
        digest = sha256(update.blob)
        assert owner.sealed(digest)  # its own poll has not seen the phase close
        assert await c.fetch_blob(digest, [b.peer_id], try_connected=False) == update.blob
        assert owner.revealed(ROUND) and chain.reads == 1
        assert _blob_failures(b) == {}

    _run(tmp_path, scenario)


def test_members_asking_at_once_wait_for_one_fresh_reveal_check(tmp_path: Path) -> None:
    # Everyone fetches the moment the phase closes: the askers share the owner's one chain
    # read instead of being refused (and retrying half a second later), and the owner reads
    # fresh although its per-block cache still says the phase is open.
    async def scenario(net: Net) -> None:
        a, b, c = net.members
        chain = _ClosedChain()
        owner = _engine(b, b.store, client=chain)
        stale = SimpleNamespace(
            status=RoundStatus.OPEN,
            submitted=bitmap([1]),
            eligible=bitmap([0, 1]),
            submit_deadline=time.time() + 60,
        )
        update = LocalUpdate(b"b's update, asked for by two at once", samples=10, loss=0.5)
        assert await owner._commit(ROUND, _round(time.time() + 60), update, {}) is True
        owner.view.following = True
        owner.view._cache[("get_round", (TASK, ROUND))] = stale
        digest = sha256(update.blob)
        got: list[bytes] = []

        async def ask(node: P2PNode) -> None:
            got.append(await node.fetch_blob(digest, [b.peer_id], try_connected=False))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, a)
            nursery.start_soon(ask, c)
        assert got == [update.blob, update.blob]
        assert chain.reads == 1 and owner.revealed(ROUND)
        assert _blob_failures(b) == {}

    _run(tmp_path, scenario)


def test_an_update_is_revealed_when_the_submit_deadline_passes(tmp_path: Path) -> None:
    async def scenario(net: Net) -> None:
        _, b, c = net.members
        owner = _engine(b, b.store)
        update = LocalUpdate(b"committed just before the deadline", samples=10, loss=0.5)
        assert await owner._commit(ROUND, _round(time.time() + 1.0), update, {}) is True
        digest = sha256(update.blob)
        with pytest.raises(BlobNotFound):
            await c.fetch_blob(digest, [b.peer_id], try_connected=False)
        await trio.sleep(1.1)  # nobody saw everyone submit, but the window has passed
        assert await c.fetch_blob(digest, [b.peer_id], try_connected=False) == update.blob

    _run(tmp_path, scenario)


def test_a_fetcher_ahead_of_the_owner_asks_again_until_the_reveal(tmp_path: Path) -> None:
    async def scenario(net: Net) -> None:
        _, b, c = net.members
        owner, fetcher = _engine(b, b.store), _engine(c, c.store)
        fetcher._peer_of = {1: b.peer_id}
        update = LocalUpdate(b"b's update, fetched a moment early", samples=10, loss=0.5)
        assert await owner._commit(ROUND, _round(time.time() + 60), update, {}) is True
        digest = sha256(update.blob)

        async def reveal_later() -> None:
            await trio.sleep(1.2)  # the owner's next poll of the chain
            owner._reveal(ROUND)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reveal_later)
            got = await fetcher._fetch_blobs(ROUND, {1: digest}, time.time() + 30, 1 << 20)
        assert got == {1: update.blob}
        assert fetcher.metrics.get("updates_missing_total") == 0
        assert _blob_failures(b)["not_revealed"] >= 1
        # after the owner's first "not revealed", only the owner is asked again
        assert _blob_failures(c).get("not_found", 0) <= 1

    _run(tmp_path, scenario)


def test_a_sealed_update_that_is_never_revealed_ends_up_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "REVEAL_GRACE", 1.0)

    async def scenario(net: Net) -> None:
        _, b, c = net.members
        owner, fetcher = _engine(b, b.store), _engine(c, c.store)
        fetcher._peer_of = {1: b.peer_id}
        update = LocalUpdate(b"never revealed", samples=10, loss=0.5)
        assert await owner._commit(ROUND, _round(time.time() + 60), update, {}) is True
        start = trio.current_time()
        got = await fetcher._fetch_blobs(ROUND, {1: sha256(update.blob)}, time.time() + 30, 1 << 20)
        assert got == {} and trio.current_time() - start < 5  # bounded by REVEAL_GRACE
        assert fetcher.metrics.get("updates_missing_total") == 1

    _run(tmp_path, scenario)


def test_seals_follow_the_round() -> None:
    engine = _engine(SimpleNamespace(), SimpleNamespace())
    engine._seal(ROUND, b"\x01" * 32, time.time() + 60)
    assert engine.sealed(b"\x01" * 32) and not engine.revealed(ROUND)
    engine.state.round = ROUND + 1  # the task moved past the round
    assert not engine.sealed(b"\x01" * 32) and engine.revealed(ROUND)
    engine._seal(ROUND + 4, b"\x02" * 32, time.time() + 60)
    assert b"\x01" * 32 not in engine._sealed  # old rounds' seals are forgotten


def test_early_fetch_leaves_sealed_updates_to_the_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An announced update whose round's submit phase is still open is not asked for (its
    owner would refuse it; the round fetches it after the reveal), nor looked up on chain,
    and counts as nothing dropped; once the round is revealed, the held announcement and
    later ones are fetched early as before."""
    monkeypatch.setattr(engine_module, "CONSUME_TICK", 0.05)
    blob, late = b"update of member 0", b"re-mask of member 0"
    digest, late_digest = sha256(blob), sha256(late)
    store, client = BlobStore(tmp_path), _FakeClient()
    p2p = _FakeP2P(store, {digest: blob, late_digest: late})
    engine = _engine(p2p, store, client)
    engine._members = {"peer-a": 0}
    engine.remasks = True
    client.updates[(ROUND, 0)] = digest
    client.remasks[(ROUND, 0)] = late_digest

    async def main() -> None:
        send, receive = trio.open_memory_channel[Delivery](10)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(engine.consume, receive)
            await send.send(Delivery(_update(ROUND, digest), "peer-a"))
            await trio.sleep(0.5)
            assert p2p.fetched == []
            assert client.calls == 0
            assert not engine.metrics.snapshot().get("announcements_dropped_total")
            engine._reveal(ROUND)
            await send.send(Delivery(_update(ROUND, late_digest), "peer-a"))
            both = [(digest, ["peer-a"]), (late_digest, ["peer-a"])]
            await _eventually(lambda: sorted(p2p.fetched) == sorted(both), timeout=5)
            await send.aclose()

    trio.run(main)


def test_announcements_the_round_fetched_while_held_cost_no_chain_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every member announces its update while the others still train: held until the
    reveal, by when the round has fetched it, an announcement needs no chain read at all."""
    monkeypatch.setattr(engine_module, "CONSUME_TICK", 0.05)
    blobs = [f"update of member {i}".encode() for i in range(3)]
    store, client = BlobStore(tmp_path), _FakeClient()
    p2p = _FakeP2P(store, {sha256(b): b for b in blobs})
    engine = _engine(p2p, store, client)
    engine._members = {f"peer-{i}": i for i in range(3)}
    for i, blob in enumerate(blobs):
        client.updates[(ROUND, i)] = sha256(blob)

    async def main() -> None:
        send, receive = trio.open_memory_channel[Delivery](10)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(engine.consume, receive)
            for i, blob in enumerate(blobs):
                await send.send(Delivery(_update(ROUND, sha256(blob)), f"peer-{i}"))
            await trio.sleep(0.3)
            for blob in blobs:  # the round's own fetch, after the reveal
                store.put(blob, from_peer=True)
            engine._reveal(ROUND)
            await trio.sleep(0.3)  # several CONSUME_TICKs: the held ones come out
            assert p2p.fetched == [] and client.calls == 0
            assert not engine.metrics.snapshot().get("announcements_dropped_total")
            await send.aclose()

    trio.run(main)
