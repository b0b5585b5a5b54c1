"""Per-peer budgets and bounded parsing on the node: what one hostile member can no longer do.

A member that opens blob requests and never reads them keeps only its own share of serve
slots; a member that fetches too much in a round is refused; nested-bracket bodies (75 KB,
1 MB, 8 MB) as gossip, bundle headers, key or proof blobs are refused and counted, in a
process that imported eth_account (py_ecc raises the recursion limit to 100,000, so the C
JSON parser would overflow the stack instead of raising). The early fetch of announced
updates takes only digests committed on chain.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import eth_account  # noqa: F401  (imported for its side effect: recursion limit 100,000)
import pytest
import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from test_p2p_network import (
    TASK,
    Net,
    _announcement,
    _blob_failures,
    _eventually,
    _receive,
    _rejected,
    _run,
)

from flchain.crypto.ciphertext import MAX_HEADER_BYTES, PackedCiphertext
from flchain.crypto.errors import PaillierError
from flchain.crypto.masking import generate_mask_key
from flchain.crypto.paillier import generate_keypair
from flchain.crypto.wire import DecryptionProof, decode_public_key
from flchain.node import blobs
from flchain.node import engine as engine_module
from flchain.node.blobstore import BlobStore, sha256
from flchain.node.engine import RoundEngine
from flchain.node.messages import (
    MAX_MESSAGE_BYTES,
    Announcement,
    MessageError,
    decode,
    encode,
)
from flchain.node.metrics import Metrics
from flchain.node.p2p import BlobNotFound, Delivery, P2PConfig, _parse_addr_list
from flchain.node.secure import BundleError, SecureCodec
from flchain.taskconfig import TaskConfig

NESTED_SIZES = (75 * 1024, 1 << 20, 8 << 20)


def _nested(size: int) -> bytes:
    half = size // 2
    return b"[" * half + b"]" * half


def test_eth_account_raised_the_recursion_limit() -> None:
    assert sys.getrecursionlimit() >= 100_000  # the condition the parsers must survive


# --- direct parser tests ------------------------------------------------------------------


@pytest.mark.parametrize("size", NESTED_SIZES)
def test_nested_gossip_is_refused_by_size_before_parsing(size: int) -> None:
    with pytest.raises(MessageError) as info:
        decode(_nested(size))
    assert info.value.reason == "oversize"


def test_deep_gossip_within_the_size_limit_is_too_deep() -> None:
    with pytest.raises(MessageError) as info:
        decode(_nested(MAX_MESSAGE_BYTES))
    assert info.value.reason == "too_deep"
    # an announcement with one nested field is refused on depth, not looked at further
    deep = encode(_announcement()).replace(b'"size":0', b'"size":[[[0]]]')
    with pytest.raises(MessageError) as info:
        decode(deep)
    assert info.value.reason == "too_deep"


def _bundle(header: bytes, declared: int | None = None) -> bytes:
    length = len(header) if declared is None else declared
    return b"FLPK" + bytes([1]) + length.to_bytes(4, "big") + header + b"\x00" * 64


@pytest.mark.parametrize("size", NESTED_SIZES)
def test_nested_bundle_header_is_refused(size: int) -> None:
    with pytest.raises(PaillierError, match="header length"):
        PackedCiphertext.from_bytes(_bundle(_nested(size)))


def test_bundle_header_bounds_depth_and_declared_length() -> None:
    with pytest.raises(PaillierError, match="nested"):
        PackedCiphertext.from_bytes(_bundle(_nested(MAX_HEADER_BYTES)))
    with pytest.raises(PaillierError, match="past the end"):  # claims more than it carries
        PackedCiphertext.from_bytes(_bundle(b"{}", declared=4000))
    with pytest.raises(PaillierError, match="header length"):
        PackedCiphertext.from_bytes(_bundle(b"", declared=0))
    with pytest.raises(PaillierError, match="unexpected fields"):
        PackedCiphertext.from_bytes(_bundle(b"[1, 2]"))


@pytest.mark.parametrize("size", NESTED_SIZES)
def test_nested_key_and_proof_blobs_are_refused(size: int) -> None:
    body = _nested(size)
    with pytest.raises(PaillierError, match="bad magic"):
        decode_public_key(body)
    with pytest.raises(PaillierError, match="bad magic"):
        DecryptionProof.from_bytes(body, modulus=2**1023 + 1, count=3)
    # right magic and version, nested junk after them: refused on the declared widths
    with pytest.raises(PaillierError, match="width"):
        decode_public_key(b"FLPP\x01" + body)
    with pytest.raises(PaillierError, match="expected 3"):
        DecryptionProof.from_bytes(b"FLDP\x01" + body, modulus=2**1023 + 1, count=3)


@pytest.mark.parametrize("size", [1024, 4096])
def test_nested_peer_address_list_is_refused(size: int) -> None:
    peer = ID.from_base58("QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N")
    with pytest.raises(ValueError, match=r"nested .* exceeds"):
        _parse_addr_list(_nested(size), peer)


# --- a running node ----------------------------------------------------------------------


def test_nested_gossip_is_dropped_and_counted_by_a_running_node(tmp_path: Path) -> None:
    async def scenario(net: Net) -> None:
        a, b, c = net.members
        for size in NESTED_SIZES:
            with contextlib.suppress(Exception):  # the sender's libp2p may refuse 8 MB itself
                await b.publish_raw(TASK, _nested(size))
        await b.publish_raw(TASK, _nested(MAX_MESSAGE_BYTES))
        await _eventually(lambda: _rejected(a).get("too_deep") == 1, timeout=10)
        await _eventually(lambda: _rejected(c).get("too_deep") == 1, timeout=10)
        for node in (a, c):
            assert _rejected(node).get("oversize", 0) >= 1  # what gossipsub let through
        marker = _announcement(digest=b"\x09" * 32)
        await b.announce(marker)  # the receivers are alive and still listen
        assert (await _receive(net.inboxes[0])).announcement == marker
        assert (await _receive(net.inboxes[2])).announcement == marker

    _run(tmp_path, scenario)


def _blob_stream(node: Any, target: Any) -> Any:
    return node.host.new_stream(ID.from_base58(target.peer_id), [TProtocol(blobs.PROTOCOL_ID)])


def test_slowloris_member_keeps_only_its_own_slots(tmp_path: Path) -> None:
    """Member a opens every serve slot's worth of requests to b and never reads; member c's
    fetch from b still succeeds, and the slots a held come back after provider_timeout."""

    async def scenario(net: Net) -> None:
        a, b, c = net.members
        digest = b.store.put(os.urandom(4 * 2**20))  # far past what yamux buffers unread
        held = []
        for _ in range(b.config.max_concurrent_serves):
            stream = await _blob_stream(a, b)
            await blobs.write_request(stream, digest)  # ... and never reads the answer
            held.append(stream)
        refused = b.config.max_concurrent_serves - b.config.max_serves_per_peer
        await _eventually(lambda: _blob_failures(b).get("peer_slots") == refused, timeout=5)
        assert len(await c.fetch_blob(digest, [b.peer_id], try_connected=False)) == 4 * 2**20
        await _eventually(lambda: _blob_failures(b).get("slow_reader") == 2, timeout=10)
        # every slot a held is back once its stream's reset (bounded by _abort) is done; c
        # keeps its blob session open for its next fetch, which holds one of c's own slots
        await _eventually(lambda: b._peer_streams == {c.peer_id: 1}, timeout=5)
        for stream in held:
            with contextlib.suppress(Exception):
                await stream.reset()

    _run(tmp_path, scenario, provider_timeout=2.0)


def test_a_round_widens_serve_slots_to_the_other_members_within_the_memory_bound(
    tmp_path: Path,
) -> None:
    """Every other member fetches a node's update at the same moment: a round gives each of
    them its share of slots (answered BUSY, the last ones used to wait half a second and ask
    again), never more than max_serve_bytes of blobs at once."""

    async def scenario(net: Net) -> None:
        a, b, c = net.members
        assert b._serve_capacity(2 * 2**20, 6) == 10  # 2 each for the 5 others
        assert b._serve_capacity(4 * 2**20, 1) == 1  # the floor: max_concurrent_serves
        assert b._serve_capacity(4 * 2**20, 1000) == 8  # 32 MiB / 4 MiB
        assert b._serve_capacity(None, None) == 1
        digest = b.store.put(os.urandom(4 * 2**20))
        held = await _blob_stream(a, b)
        await blobs.write_request(held, digest)  # a never reads: its transfer holds a slot
        await _eventually(lambda: b._serving == 1, timeout=5)
        b.start_round(blob_bytes=4 * 2**20, members=3)
        assert len(await c.fetch_blob(digest, [b.peer_id], try_connected=False)) == 4 * 2**20
        assert "busy" not in _blob_failures(b)
        with contextlib.suppress(Exception):
            await held.reset()

    _run(
        tmp_path,
        scenario,
        max_concurrent_serves=1,
        max_serve_bytes=32 * 2**20,
        peer_round_bytes=10**9,
        provider_timeout=5.0,
    )


def test_requests_that_never_arrive_hold_only_the_peers_share(tmp_path: Path) -> None:
    async def scenario(net: Net) -> None:
        a, b, c = net.members
        silent = [await _blob_stream(a, b) for _ in range(3)]  # never send a digest
        await _eventually(lambda: _blob_failures(b).get("peer_slots") == 1, timeout=5)
        payload = b"served while a stalls"
        digest = b.store.put(payload)
        assert await c.fetch_blob(digest, [b.peer_id], try_connected=False) == payload
        await _eventually(lambda: _blob_failures(b).get("request_timeout") == 2, timeout=5)
        # a's share is free again: its next request is served
        assert await a.fetch_blob(digest, [b.peer_id], try_connected=False) == payload
        for stream in silent:
            with contextlib.suppress(Exception):
                await stream.reset()

    _run(tmp_path, scenario)


def test_per_peer_byte_budget_per_round(tmp_path: Path) -> None:
    async def scenario(net: Net) -> None:
        a, b, c = net.members
        first, second = b.store.put(b"x" * 600), b.store.put(b"y" * 600)
        assert len(await c.fetch_blob(first, [b.peer_id], try_connected=False)) == 600
        with pytest.raises(BlobNotFound) as info:
            await c.fetch_blob(second, [b.peer_id], try_connected=False)
        assert info.value.attempts == {b.peer_id: "busy"}
        assert _blob_failures(b) == {"peer_bytes": 1}
        # another peer has its own budget
        assert len(await a.fetch_blob(second, [b.peer_id], try_connected=False)) == 600
        assert b.start_round() == 1000  # a new round: budgets start over
        assert len(await c.fetch_blob(second, [b.peer_id], try_connected=False)) == 600

    _run(tmp_path, scenario, peer_round_bytes=1000)


def test_round_budget_is_derived_from_blob_size_and_members(tmp_path: Path) -> None:
    async def scenario(net: Net) -> None:
        b = net.members[1]
        factor = b.config.peer_budget_factor
        assert b.start_round(blob_bytes=1000, members=5) == factor * 1000 * 5
        # never above the largest blob the node serves at all
        assert b.start_round(blob_bytes=10**12, members=1) == factor * b.config.max_blob_bytes

    _run(tmp_path, scenario)


def test_serve_filter_refuses_digests_the_node_does_not_serve(tmp_path: Path) -> None:
    async def scenario(net: Net) -> None:
        _, b, c = net.members
        public, private = b.store.put(b"a committed update"), b.store.put(b"private")
        b.serve_filter = {public}.__contains__
        assert await c.fetch_blob(public, [b.peer_id], try_connected=False)
        with pytest.raises(BlobNotFound) as info:
            await c.fetch_blob(private, [b.peer_id], try_connected=False)
        assert info.value.attempts == {b.peer_id: "not_found"}
        assert _blob_failures(b) == {"not_committed": 1}

    _run(tmp_path, scenario)


def test_budget_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="max_serves_per_peer"):
        P2PConfig(max_serves_per_peer=0)
    with pytest.raises(ValueError, match="peer_round_bytes"):
        P2PConfig(peer_round_bytes=0)


# --- early fetch of announced updates (RoundEngine.consume) -----------------------------


class _FakeClient:
    """The two chain reads `consume` makes: (round, member index) -> committed digests."""

    def __init__(self) -> None:
        self.updates: dict[tuple[int, int], bytes] = {}
        self.remasks: dict[tuple[int, int], bytes] = {}
        self.calls = 0

    def get_update(self, task: int, round_: int, index: int) -> SimpleNamespace:
        self.calls += 1
        digest = self.updates.get((round_, index))
        return SimpleNamespace(submitted=digest is not None, digest=digest or bytes(32))

    def get_remask(self, task: int, round_: int, index: int) -> bytes | None:
        self.calls += 1
        return self.remasks.get((round_, index))


class _FakeP2P:
    def __init__(self, store: BlobStore, blobs_by_digest: dict[bytes, bytes]) -> None:
        self.store = store
        self.blobs = blobs_by_digest
        self.fetched: list[tuple[bytes, list[str]]] = []
        self.rounds: list[dict[str, int | None]] = []

    async def fetch_blob(self, digest: bytes, providers: list[str], **_: Any) -> bytes:
        self.fetched.append((digest, list(providers)))
        self.store.put(self.blobs[digest], from_peer=True)
        return self.blobs[digest]

    def start_round(self, **budget: int | None) -> int:
        self.rounds.append(budget)
        return 0


def _update(round_: int, digest: bytes, kind: str = "update") -> Announcement:
    return Announcement(kind, TASK, round_, digest, "0x" + "12" * 20, 100)


def test_only_committed_updates_are_fetched_early(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "CONSUME_TICK", 0.05)
    blob_a, blob_b = b"update of member 0", b"update of member 1"
    d_a, d_b = sha256(blob_a), sha256(blob_b)
    store, metrics, client = BlobStore(tmp_path), Metrics(), _FakeClient()
    p2p = _FakeP2P(store, {d_a: blob_a, d_b: blob_b})
    engine = RoundEngine(
        client=client,  # type: ignore[arg-type]
        task_id=TASK,
        learner=SimpleNamespace(num_params=10, dp_noise=0.0),  # type: ignore[arg-type]
        p2p=p2p,  # type: ignore[arg-type]
        store=store,
        metrics=metrics,
        peer_id="me",
    )
    engine._members = {"peer-a": 0, "peer-b": 1, "peer-c": 2}
    engine.state.round = 3
    engine._reveal(3)  # round 3's submit phase is over (tests/test_reveal.py: before it)
    client.updates[(3, 0)] = d_a

    def dropped() -> dict[str, float]:
        value = metrics.snapshot()["announcements_dropped_total"]
        assert isinstance(value, dict)
        return value

    async def main() -> None:
        send, receive = trio.open_memory_channel[Delivery](100)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(engine.consume, receive)
            await send.send(Delivery(_update(3, d_a), "peer-a"))  # committed: fetched
            # not a's commit, and a plain-mode member has no second digest: dropped at once
            await send.send(Delivery(_update(3, b"\x01" * 32), "peer-a"))
            await send.send(Delivery(_update(3, d_b), "peer-b"))  # announced before its commit
            for i in range(20):  # junk from b fills b's quarantine share, nobody else's
                await send.send(Delivery(_update(3, bytes([i + 2]) * 32), "peer-b"))
            await send.send(Delivery(_update(3, b"\x77" * 32), "outsider"))
            for i in range(2):  # c never commits: its announcements wait until the round ends
                await send.send(Delivery(_update(3, bytes([0x60 + i]) * 32), "peer-c"))
            await send.send(Delivery(_update(3, d_a, kind="vote"), "peer-a"))
            await _eventually(lambda: len(p2p.fetched) == 1, timeout=5)
            await _eventually(lambda: dropped().get("quarantine_full") == 13, timeout=5)
            assert dropped() == {"quarantine_full": 13, "uncommitted": 2, "not_update": 1}
            calls_before = client.calls
            client.updates[(3, 1)] = d_b  # b's commit lands: its held announcement is fetched
            await _eventually(lambda: len(p2p.fetched) == 2, timeout=5)
            assert p2p.fetched == [(d_a, ["peer-a"]), (d_b, ["peer-b"])]
            assert client.calls - calls_before <= 2 * 10  # each held entry: at most 2 reads
            # b's 7 held junk digests are not its commit: dropped once the commit is known
            await _eventually(lambda: dropped().get("uncommitted") == 2 + 7, timeout=5)
            engine.state.round = 4  # the round moves on: c's held announcements are dropped
            await _eventually(lambda: dropped().get("uncommitted") == 2 + 7 + 2, timeout=5)
            await _eventually(lambda: store.round == 4, timeout=5)
            assert store.round == 4 and p2p.rounds[-1] == {
                "blob_bytes": 4 * 10 + 4096,
                "members": 3,
            }
            assert set(store.digests()) == {d_a, d_b}  # no junk was ever stored
            await send.aclose()

    trio.run(main)


def test_nested_bundles_are_refused_by_the_codec_and_name_their_senders() -> None:
    config = TaskConfig(model="logreg", secure=True, secure_key_bits=1024)
    codec = SecureCodec(
        config, num_params=20, mask_key=generate_mask_key(), task_label=b"flchain/test/1"
    )
    public, _ = generate_keypair(1024)
    bundles = {i: _bundle(_nested(size)) for i, size in enumerate(NESTED_SIZES)}
    bundles[3] = _bundle(_nested(MAX_HEADER_BYTES))  # small enough to read, too deep to parse
    with pytest.raises(BundleError) as info:
        codec.sum_bundles(bundles, n_eligible=4, public_key=public)
    assert info.value.members == [0, 1, 2, 3]  # the engine counts these as invalid updates


def test_a_finalized_round_pins_its_model_and_prunes_old_rounds(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, keep_rounds=2)
    engine = RoundEngine(
        client=_FakeClient(),  # type: ignore[arg-type]
        task_id=TASK,
        learner=SimpleNamespace(num_params=10, dp_noise=0.0),  # type: ignore[arg-type]
        p2p=_FakeP2P(store, {}),  # type: ignore[arg-type]
        store=store,
        metrics=Metrics(),
        peer_id="me",
    )
    models, updates = {}, {}
    for r in range(1, 6):
        store.set_round(r)
        updates[r] = store.put(f"update {r}".encode())
        models[r] = store.put(f"model {r}".encode())
        trio.run(engine._retain, r, models[r])
    assert set(store.digests()) == {*models.values(), updates[4], updates[5]}
