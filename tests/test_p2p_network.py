"""Real libp2p nodes on 127.0.0.1: gossip, blob exchange, and hostile peers.

Each test starts a small network (three members, sometimes an outsider or a liar) in
one `trio.run`. Hostile input must be dropped and counted by its receivers, and the
network must keep working afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.exceptions import SwarmException
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.pb import rpc_pb2
from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux

from flchain.node import blobs
from flchain.node.blobstore import BlobStore
from flchain.node.gossip import round_window, topic_for
from flchain.node.messages import Announcement, encode
from flchain.node.p2p import (
    MAX_KNOWN_PEERS,
    MESH_HIGH,
    BlobNotFound,
    Delivery,
    P2PConfig,
    P2PConfigError,
    P2PError,
    P2PNode,
    load_peers_file,
)

TASK = 1
ROUND = 5
FAST: dict[str, Any] = {
    "heartbeat_interval": 1,
    "request_timeout": 1.0,
    "provider_timeout": 5.0,
    "fetch_timeout": 10.0,
    "dial_timeout": 3.0,
    "bootstrap_backoff": (0.2, 1.0),
}


@dataclass
class Net:
    members: list[P2PNode]
    inboxes: list[trio.MemoryReceiveChannel[Delivery]]
    outsiders: list[P2PNode]


def _announcement(round_: int = ROUND, size: int = 0, digest: bytes = b"\x42" * 32) -> Announcement:
    return Announcement("update", TASK, round_, digest, "0x" + "12" * 20, size)


async def _eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.05)


async def _receive(inbox: trio.MemoryReceiveChannel[Delivery], timeout: float = 5.0) -> Delivery:
    with trio.fail_after(timeout):
        return await inbox.receive()


def _run(tmp_path: Path, scenario: Callable[[Net], Awaitable[None]], **options: Any) -> None:
    async def main() -> None:
        async with _network(tmp_path, **options) as net:
            await scenario(net)

    _trio_run(main)


def _trio_run(main: Callable[[], Awaitable[None]]) -> None:
    """trio.run, re-raising a lone failure out of the nested nursery groups it comes in."""
    try:
        trio.run(main)
    except BaseExceptionGroup as group:
        leaves = list(_leaves(group))
        if len(leaves) == 1:
            raise leaves[0] from group
        raise


def _leaves(error: BaseException) -> Iterator[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from _leaves(inner)
    else:
        yield error


@contextlib.asynccontextmanager
async def _network(
    tmp_path: Path, *, members: int = 3, outsiders: int = 0, **config: Any
) -> AsyncIterator[Net]:
    """`members` nodes that accept each other, plus `outsiders` that nobody accepts.

    Every node bootstraps to all nodes started before it, so the network is a full mesh.
    """
    keys = [create_new_key_pair() for _ in range(members + outsiders)]
    member_ids = {ID.from_pubkey(k.public_key).to_base58() for k in keys[:members]}
    async with contextlib.AsyncExitStack() as stack:
        nodes: list[P2PNode] = []
        for index, keypair in enumerate(keys):
            cfg = P2PConfig(bootstrap=tuple(n.addrs[0] for n in nodes), **{**FAST, **config})
            store = BlobStore(tmp_path / f"node{index}")
            nodes.append(await stack.enter_async_context(P2PNode(keypair, store, config=cfg)))
        inboxes = []
        for index, node in enumerate(nodes):
            is_member = member_ids.__contains__ if index < members else (lambda peer: True)
            inboxes.append(
                await node.join_task(
                    TASK, is_member=is_member, round_ok=round_window(lambda: ROUND)
                )
            )
        everyone = {node.peer_id for node in nodes}
        await _eventually(
            lambda: all(set(n.gossip_peers(TASK)) == everyone - {n.peer_id} for n in nodes)
        )
        # gossipsub grafts every subscribed peer into a mesh this small (up to D_high): until
        # then, a message could miss a member
        if len(nodes) <= MESH_HIGH + 1:
            await _eventually(
                lambda: all(set(n.mesh_peers(TASK)) == everyone - {n.peer_id} for n in nodes)
            )
        else:  # pruned to at most D_high; a node's own announcements do not need the mesh
            await _eventually(lambda: all(len(n.mesh_peers(TASK)) <= MESH_HIGH for n in nodes))
        yield Net(nodes[:members], inboxes[:members], nodes[members:])


def _rejected(node: P2PNode) -> dict[str, float]:
    value = node.metrics.snapshot()["messages_rejected_total"]
    assert isinstance(value, dict)
    return value


def _blob_failures(node: P2PNode) -> dict[str, float]:
    value = node.metrics.snapshot()["blob_failures_total"]
    assert isinstance(value, dict)
    return value


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- gossip ------------------------------------------------------------------------------


def test_addresses_are_loopback_and_name_the_peer(tmp_path: Path) -> None:
    async def scenario(net: Net) -> None:
        for node in net.members:
            assert node.addrs
            for addr in node.addrs:
                assert addr.startswith("/ip4/127.0.0.1/tcp/")
                assert addr.endswith(f"/p2p/{node.peer_id}")
            assert len(node.connected_peers()) == 2

    _run(tmp_path, scenario)


def test_member_announcement_reaches_the_other_members(tmp_path: Path) -> None:
    async def scenario(net: Net) -> None:
        a, b, c = net.members
        sent = _announcement(size=123)
        await b.announce(sent)
        for node, inbox in ((a, net.inboxes[0]), (c, net.inboxes[2])):
            delivery = await _receive(inbox)
            assert delivery == Delivery(sent, b.peer_id)
            assert node.metrics.get("messages_accepted_total") == 1
        await trio.sleep(0.3)
        with pytest.raises(trio.WouldBlock):  # nobody hears their own announcement
            net.inboxes[1].receive_nowait()
        assert b.metrics.get("messages_published_total") == 1

    _run(tmp_path, scenario)


def test_a_larger_task_relays_over_a_bounded_mesh_and_every_member_hears_everyone(
    tmp_path: Path,
) -> None:
    """Past D_high members a node's mesh is pruned (each member read each announcement from
    all the others before), and every announcement still reaches every member."""

    async def scenario(net: Net) -> None:
        members = len(net.members)
        assert all(len(n.mesh_peers(TASK)) <= MESH_HIGH for n in net.members)
        sent = {}
        for index, node in enumerate(net.members):
            sent[node.peer_id] = _announcement(digest=bytes([index]) * 32)
            await node.announce(sent[node.peer_id])
        for node, inbox in zip(net.members, net.inboxes, strict=True):
            heard = {}
            for _ in range(members - 1):
                delivery = await _receive(inbox, timeout=10)
                heard[delivery.peer_id] = delivery.announcement
            assert heard == {peer: a for peer, a in sent.items() if peer != node.peer_id}
            assert node.metrics.get("messages_accepted_total") == members - 1

    _run(tmp_path, scenario, members=MESH_HIGH + 2)


def test_a_member_without_mesh_peers_still_reaches_every_member(tmp_path: Path) -> None:
    """py-libp2p's mesh churns, and a node pruned by all its mesh peers stays without any for
    the prune backoff: what it publishes goes to every connected member all the same."""

    async def scenario(net: Net) -> None:
        a = net.members[0]
        a._gossipsub.mesh[topic_for(TASK)] = set()  # pruned by everyone, as churn leaves it
        sent = _announcement(size=7)
        await a.announce(sent)
        for inbox in net.inboxes[1:]:
            assert (await _receive(inbox)) == Delivery(sent, a.peer_id)

    _run(tmp_path, scenario, members=4)


def test_non_member_announcement_is_dropped_and_counted(tmp_path: Path) -> None:
    async def scenario(net: Net) -> None:
        outsider = net.outsiders[0]
        await outsider.announce(_announcement(digest=b"\x01" * 32))
        await _eventually(lambda: all(_rejected(n).get("not_member") == 1 for n in net.members))
        marker = _announcement(digest=b"\x02" * 32)
        await net.members[1].announce(marker)
        first = await _receive(net.inboxes[0])
        assert first.announcement == marker  # the outsider's never arrived
        assert net.members[0].metrics.get("messages_accepted_total") == 1

    _run(tmp_path, scenario, outsiders=1)


def test_hostile_member_gossip_is_dropped_and_counted(tmp_path: Path) -> None:
    async def scenario(net: Net) -> None:
        a, b, c = net.members
        valid = encode(_announcement())
        hostile = [
            b"\x00\xffgarbage",
            valid.replace(b'"size":0', b'"size":NaN'),
            b"{" + b" " * 5000 + b"}",
            encode(_announcement(round_=1)),  # replay of an old round
            encode(_announcement(round_=ROUND + 50)),
            encode(Announcement("vote", TASK + 1, ROUND, b"\x42" * 32, "0x" + "12" * 20)),
        ]
        for data in hostile:
            await b.publish_raw(TASK, data)
        await b.publish_raw(TASK, valid)
        await b.publish_raw(TASK, valid)  # same bytes again: a replay
        expected = {
            "malformed": 2,
            "oversize": 1,
            "round_window": 2,
            "wrong_task": 1,
            "duplicate": 1,
        }
        await _eventually(lambda: _rejected(a) == expected and _rejected(c) == expected)
        for node, inbox in ((a, net.inboxes[0]), (c, net.inboxes[2])):
            assert (await _receive(inbox)).announcement == _announcement()
            with pytest.raises(trio.WouldBlock):
                inbox.receive_nowait()
            assert node.metrics.get("messages_received_total") == len(hostile) + 2
            assert node.metrics.get("messages_accepted_total") == 1

    _run(tmp_path, scenario)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def test_forged_signatures_and_garbage_on_the_gossip_stream_crash_nobody(tmp_path: Path) -> None:
    async def scenario(net: Net) -> None:
        a, b, _ = net.members
        evil = net.outsiders[0]
        victim = ID.from_base58(a.peer_id)

        def forged(origin: str, seqno: int) -> bytes:
            message = rpc_pb2.Message(
                data=encode(_announcement()),
                topicIDs=[f"flchain/{TASK}"],
                from_id=ID.from_base58(origin).to_bytes(),
                seqno=seqno.to_bytes(8, "big"),
                signature=os.urandom(64),
            )
            return rpc_pb2.RPC(publish=[message]).SerializeToString()

        stream = await evil.host.new_stream(victim, [TProtocol("/meshsub/1.1.0")])
        for rpc in (forged(evil.peer_id, 1), forged(b.peer_id, 2)):  # b is impersonated
            await stream.write(_varint(len(rpc)) + rpc)
        await _eventually(lambda: _rejected(a).get("bad_signature") == 2)
        await stream.write(_varint(40) + os.urandom(40))  # not protobuf
        await stream.write(b"\xff" * 12)  # not even a valid length prefix
        with contextlib.suppress(Exception):
            await stream.close()
        await _eventually(
            lambda: a.metrics.get("stream_errors_total", protocol="/meshsub/1.1.0") == 1
        )
        # a is still up and still hears honest members
        await b.announce(_announcement(digest=b"\x07" * 32))
        delivery = await _receive(net.inboxes[0])
        assert delivery.announcement.digest == b"\x07" * 32
        assert a.metrics.get("messages_accepted_total") == 1

    _run(tmp_path, scenario, outsiders=1)


def test_non_members_are_disconnected_after_the_grace_period(tmp_path: Path) -> None:
    async def scenario(net: Net) -> None:
        a = net.members[0]
        await _eventually(lambda: a.metrics.get("peers_evicted_total") >= 1)
        assert {n.peer_id for n in net.members[1:]} <= set(a.connected_peers())

    _run(tmp_path, scenario, outsiders=1, member_grace=0.5)


# --- blobs -------------------------------------------------------------------------------


def test_blob_is_fetched_by_digest_from_a_provider(tmp_path: Path) -> None:
    async def scenario(net: Net) -> None:
        a, b, c = net.members
        payload = os.urandom(3 * 2**20)  # well past yamux's 256 KiB initial window
        digest = b.store.put(payload)
        assert await c.fetch_blob(digest, [b.peer_id], timeout=10) == payload
        assert c.store.get(digest) == payload  # kept, so c can serve it too
        assert c.metrics.get("blobs_fetched_total") == 1
        assert c.metrics.get("bytes_in_total", channel="blob") == len(payload)
        assert b.metrics.get("blobs_served_total") == 1
        # a now fetches from c, which got it from b
        assert await a.fetch_blob("0x" + digest.hex(), [c.peer_id], try_connected=False) == (
            payload
        )
        assert c.metrics.get("blobs_served_total") == 1

    _run(tmp_path, scenario)


def test_lying_provider_is_caught_and_an_honest_one_used(tmp_path: Path) -> None:
    async def scenario(net: Net) -> None:
        _, b, c, liar = net.members
        payload = b"the real update" * 100
        digest = b.store.put(payload)

        async def lie(stream: Any) -> None:
            await blobs.read_request(stream)
            await blobs.write_response(stream, blobs.Status.OK, b"X" * len(payload))
            await stream.close()

        liar.set_blob_handler(lie)
        with pytest.raises(BlobNotFound) as info:
            await c.fetch_blob(digest, [liar.peer_id], timeout=5, try_connected=False)
        assert info.value.attempts == {liar.peer_id: "digest_mismatch"}
        assert c.store.get(digest) is None  # the wrong bytes were not stored
        assert await c.fetch_blob(digest, [liar.peer_id, b.peer_id], timeout=10) == payload
        assert _blob_failures(c)["digest_mismatch"] == 2
        assert c.metrics.get("blobs_fetched_total") == 1

    _run(tmp_path, scenario, members=4)


def test_oversize_offer_and_missing_blob_fail_cleanly(tmp_path: Path) -> None:
    async def scenario(net: Net) -> None:
        _, b, c = net.members
        digest = b.store.put(b"z" * 1000)
        with pytest.raises(BlobNotFound) as info:
            await c.fetch_blob(digest, [b.peer_id], max_size=10, try_connected=False)
        assert info.value.attempts == {b.peer_id: "oversize"}
        with pytest.raises(BlobNotFound, match="not fetched") as missing:
            await c.fetch_blob(b"\x00" * 32, [b.peer_id], timeout=5)
        assert set(missing.value.attempts.values()) == {"not_found"}
        assert set(missing.value.attempts) == {n.peer_id for n in net.members if n is not c}

    _run(tmp_path, scenario)


def test_non_member_blob_request_is_refused(tmp_path: Path) -> None:
    async def scenario(net: Net) -> None:
        b = net.members[1]
        outsider = net.outsiders[0]
        digest = b.store.put(b"members only")
        with pytest.raises(BlobNotFound) as info:
            await outsider.fetch_blob(digest, [b.peer_id], timeout=5, try_connected=False)
        assert info.value.attempts == {b.peer_id: "refused"}
        assert _blob_failures(b) == {"not_member": 1}
        assert b.metrics.get("blobs_served_total") == 0

    _run(tmp_path, scenario, outsiders=1)


def test_garbage_on_the_blob_protocol_crashes_nobody(tmp_path: Path) -> None:
    async def scenario(net: Net) -> None:
        a, b, c = net.members
        target = ID.from_base58(b.peer_id)
        protocol = [TProtocol(blobs.PROTOCOL_ID)]

        short = await a.host.new_stream(target, protocol)
        await short.write(b"\x01\x02\x03")
        await short.close()  # ends after 3 of 32 bytes
        silent = await a.host.new_stream(target, protocol)  # never sends its request
        noisy = await a.host.new_stream(target, protocol)
        await noisy.write(os.urandom(100))  # 32 random bytes name no blob; the rest is junk
        with pytest.raises(blobs.BlobProtocolError) as answer:
            await blobs.read_response(noisy, 1000)
        assert answer.value.reason == "not_found"
        await _eventually(
            lambda: _blob_failures(b) == {"bad_request": 1, "request_timeout": 1}, timeout=5
        )
        with contextlib.suppress(Exception):
            await silent.reset()
        payload = b"still serving"
        digest = b.store.put(payload)
        assert await c.fetch_blob(digest, [b.peer_id], timeout=10) == payload

    _run(tmp_path, scenario)


def test_a_transfer_that_stops_moving_drops_its_connection_and_the_next_dials_afresh(
    tmp_path: Path,
) -> None:
    """A connection py-libp2p still counts established can carry no more bytes; a fetch
    gives up on it after `stall_timeout`, not the whole provider timeout, and drops it."""

    async def scenario(net: Net) -> None:
        _, b, c = net.members
        payload = os.urandom(200_000)
        digest = b.store.put(payload)

        async def stall_midway(stream: Any) -> None:
            await blobs.read_request(stream)
            header = blobs.HEADER.pack(blobs.Status.OK, len(payload))
            await stream.write(header + payload[:50_000])
            await trio.sleep_forever()

        b.set_blob_handler(stall_midway)
        started = trio.current_time()
        with pytest.raises(BlobNotFound) as info:
            await c.fetch_blob(digest, [b.peer_id], try_connected=False)
        assert info.value.attempts == {b.peer_id: "stalled"}
        assert trio.current_time() - started < 4.0  # stall_timeout 1 s, not provider's 5 s
        assert c.metrics.get("connections_dropped_total") == 1
        assert _blob_failures(c) == {"stalled": 1}
        b.set_blob_handler(b._serve_blob_session)
        assert await c.fetch_blob(digest, [b.peer_id], try_connected=False) == payload

    _run(tmp_path, scenario, stall_timeout=1.0)


def test_a_fetch_waiting_on_a_silent_provider_also_asks_the_next_and_takes_its_answer(
    tmp_path: Path,
) -> None:
    """A provider that says nothing costs `hedge_after`, not the stall timeout: the fetch asks
    the next provider meanwhile and the first good answer wins."""

    async def scenario(net: Net) -> None:
        a, b, c = net.members
        payload = os.urandom(300_000)
        digest = a.store.put(payload)
        b.store.put(payload)

        async def silent(stream: Any) -> None:
            await blobs.read_request(stream)
            await trio.sleep_forever()

        b.set_blob_handler(silent)
        started = trio.current_time()
        assert await c.fetch_blob(digest, [b.peer_id, a.peer_id], try_connected=False) == payload
        assert 0.5 <= trio.current_time() - started < 2.5  # hedge_after 0.5 s, stall 3 s
        assert c.metrics.get("blob_hedges_total") == 1
        quick = a.store.put(os.urandom(1000))
        assert await c.fetch_blob(quick, [a.peer_id], try_connected=False)
        assert c.metrics.get("blob_hedges_total") == 1  # an answer in time asks nobody else
        # the silent attempt ran on to its stall timeout: its connection is dropped, so the
        # next round does not wait on it again
        assert c.metrics.get("connections_dropped_total") == 0
        await _eventually(lambda: c.metrics.get("connections_dropped_total") == 1, timeout=5)
        assert _blob_failures(c) == {"stalled": 1}

    _run(tmp_path, scenario, hedge_after=0.5, stall_timeout=3.0)


def test_a_slow_provider_that_answers_after_the_fetch_is_over_is_cut_off(
    tmp_path: Path,
) -> None:
    """A hedged fetch's loser that starts sending after another provider delivered sends
    no more than its first bytes: the blob is not transferred twice."""

    async def scenario(net: Net) -> None:
        a, b, c = net.members
        payload = os.urandom(2 * 2**20)
        digest = a.store.put(payload)
        b.store.put(payload)

        async def late(stream: Any) -> None:
            await trio.sleep(1.0)
            await b._serve_blob(stream)

        b.set_blob_handler(late)
        assert await c.fetch_blob(digest, [b.peer_id, a.peer_id], try_connected=False) == payload
        assert c.metrics.get("blob_hedges_total") == 1
        await trio.sleep(2.0)  # b answers meanwhile, and is cut off at its first bytes
        assert c.metrics.snapshot()["bytes_in_total"] == {"blob": len(payload)}
        assert c.metrics.get("connections_dropped_total") == 0
        assert _blob_failures(c) == {}

    _run(tmp_path, scenario, hedge_after=0.5, stall_timeout=3.0)


def test_busy_provider_says_so_and_a_stalled_reader_is_cut_off(tmp_path: Path) -> None:
    async def scenario(net: Net) -> None:
        a, b, c = net.members
        digest = b.store.put(os.urandom(4 * 2**20))
        stalled = await a.host.new_stream(ID.from_base58(b.peer_id), [TProtocol(blobs.PROTOCOL_ID)])
        await blobs.write_request(stalled, digest)  # ... and never reads the answer
        await trio.sleep(0.3)
        with pytest.raises(BlobNotFound) as info:
            await c.fetch_blob(digest, [b.peer_id], try_connected=False)
        assert info.value.attempts == {b.peer_id: "busy"}
        await _eventually(lambda: _blob_failures(b).get("slow_reader") == 1, timeout=5)
        assert len(await c.fetch_blob(digest, [b.peer_id], try_connected=False)) == 4 * 2**20
        with contextlib.suppress(Exception):
            await stalled.reset()

    _run(tmp_path, scenario, max_concurrent_serves=1, provider_timeout=1.0)


def test_fetches_from_one_provider_share_one_blob_session(tmp_path: Path) -> None:
    """A stream per fetch cost eight frames beyond the payload's; a session carries them all."""

    async def scenario(net: Net) -> None:
        _, b, c = net.members
        opened: list[str] = []

        async def counting(stream: Any) -> None:
            opened.append(str(stream.get_protocol()))
            await b._serve_blob_session(stream)

        b.set_blob_handler(counting)
        payloads = [os.urandom(size) for size in (10, 300_000, 70_000)]
        for payload in payloads:
            digest = b.store.put(payload)
            assert await c.fetch_blob(digest, [b.peer_id], try_connected=False) == payload
        assert opened == [blobs.SESSION_PROTOCOL_ID]
        assert c.metrics.get("blob_sessions_reused_total") == 2
        assert b.metrics.get("blobs_served_total") == 3
        # the idle session holds one of c's two serve slots at b, no more
        assert b._peer_streams == {c.peer_id: 1}

    _run(tmp_path, scenario)


def test_a_provider_that_closed_the_session_is_asked_again_on_a_new_stream(
    tmp_path: Path,
) -> None:
    """A provider that serves one request per stream (an older node, an attack's server)
    closes what the client keeps; the next fetch finds it closed and opens another."""

    async def scenario(net: Net) -> None:
        _, b, c = net.members
        b.set_blob_handler(b._serve_blob)  # answers once, then closes
        for payload in (b"first", b"second", b"third"):
            digest = b.store.put(payload)
            assert await c.fetch_blob(digest, [b.peer_id], try_connected=False) == payload
        assert c.metrics.get("blob_sessions_ended_total") == 2
        assert _blob_failures(c) == {}
        assert c.metrics.get("connections_dropped_total") == 0

    _run(tmp_path, scenario)


def test_an_idle_session_is_closed_by_the_provider_and_frees_its_slot(tmp_path: Path) -> None:
    async def scenario(net: Net) -> None:
        _, b, c = net.members
        digest = b.store.put(b"once")
        assert await c.fetch_blob(digest, [b.peer_id], try_connected=False) == b"once"
        assert b._peer_streams == {c.peer_id: 1}
        await _eventually(lambda: b._peer_streams == {}, timeout=3)
        await trio.sleep(0.3)  # past the client's own reuse window (half of session_idle)
        assert await c.fetch_blob(digest, [b.peer_id], try_connected=False) == b"once"
        assert c.metrics.get("blob_sessions_reused_total") == 0
        assert _blob_failures(c) == {}

    _run(tmp_path, scenario, session_idle=0.5)


def test_blob_sessions_keep_the_single_request_protocol_and_its_budgets(tmp_path: Path) -> None:
    async def scenario(net: Net) -> None:
        a, b, _ = net.members
        target = ID.from_base58(b.peer_id)
        digest = b.store.put(b"for old clients")
        single = await a.host.new_stream(target, [TProtocol(blobs.PROTOCOL_ID)])
        await blobs.write_request(single, digest)
        assert await blobs.read_response(single, 1000) == b"for old clients"
        with pytest.raises(StreamEOF):  # one request per stream: the server closed it
            await single.read(1)
        # junk after a request on a session: the request is answered, the junk cut off
        session = await a.host.new_stream(target, [TProtocol(blobs.SESSION_PROTOCOL_ID)])
        await session.write(digest + b"junk")
        assert await blobs.read_response(session, 1000) == b"for old clients"
        await session.close()  # a request of 4 of 32 bytes, then the end
        await _eventually(lambda: _blob_failures(b) == {"bad_request": 1}, timeout=5)
        await _eventually(lambda: a.peer_id not in b._peer_streams, timeout=5)
        assert b.metrics.get("blobs_served_total") == 2

    _run(tmp_path, scenario)


def test_garbage_below_the_protocols_crashes_nobody(tmp_path: Path) -> None:
    async def scenario(net: Net) -> None:
        a, b, _ = net.members
        port = int(b.addrs[0].split("/")[4])
        raw_tcp = await trio.open_tcp_stream("127.0.0.1", port)  # no Noise handshake
        await raw_tcp.send_all(os.urandom(4096))
        await raw_tcp.aclose()
        raw_stream = await a.host.get_network().new_stream(ID.from_base58(b.peer_id))
        await raw_stream.write(os.urandom(300))  # no multistream-select either
        # A well-framed multistream-select message that is not UTF-8: py-libp2p let the
        # decode error escape and took the whole host down (node/p2p.py hardens it).
        not_utf8 = await a.host.get_network().new_stream(ID.from_base58(b.peer_id))
        await not_utf8.write(b"\x05\xc3\xda\xff\xfe\n")
        await trio.sleep(0.5)
        await b.announce(_announcement())
        assert (await _receive(net.inboxes[0])).peer_id == b.peer_id
        digest = b.store.put(b"still here")
        assert await a.fetch_blob(digest, [b.peer_id]) == b"still here"

    _run(tmp_path, scenario)


@contextlib.asynccontextmanager
async def _star(tmp_path: Path) -> AsyncIterator[tuple[set[str], P2PNode, P2PNode]]:
    """Three members: a hub, and b and c that know only the hub (not each other)."""
    keys = [create_new_key_pair() for _ in range(3)]
    ids = {ID.from_pubkey(k.public_key).to_base58() for k in keys}
    async with P2PNode(keys[0], BlobStore(tmp_path / "hub"), config=P2PConfig(**FAST)) as hub:
        star = P2PConfig(bootstrap=(hub.addrs[0],), **FAST)
        async with (
            P2PNode(keys[1], BlobStore(tmp_path / "b"), config=star) as b,
            P2PNode(keys[2], BlobStore(tmp_path / "c"), config=star) as c,
        ):
            for node in (hub, b, c):
                await node.join_task(TASK, is_member=ids.__contains__, round_ok=lambda r: True)
            await _eventually(lambda: hub.peer_id in b.connected_peers())
            await _eventually(lambda: hub.peer_id in c.connected_peers())
            yield ids, b, c


def test_unknown_provider_is_found_through_connected_members(tmp_path: Path) -> None:
    async def main() -> None:
        async with _star(tmp_path) as (_, b, c):
            assert b.peer_id not in c.connected_peers()  # c knows no address of b
            digest = b.store.put(b"far away")
            assert await c.fetch_blob(digest, [b.peer_id], try_connected=False) == (b"far away")
            assert b.peer_id in c.connected_peers()

    _trio_run(main)


def test_the_member_mesh_is_dialed_once_per_pair_by_the_smaller_peer_id(tmp_path: Path) -> None:
    """Two members that both dial each other at once could each keep a different connection
    and find the other end dead; `connect_mesh` leaves each pair's dial to one side."""

    async def main() -> None:
        async with _star(tmp_path) as (ids, b, c):
            low, high = sorted((b, c), key=lambda n: n.peer_id)
            assert await high.connect_mesh(ids) == 0  # not its dial: it waits
            assert low.peer_id not in high.connected_peers()
            assert await low.connect_mesh(ids) == 1
            assert high.peer_id in low.connected_peers()
            await _eventually(lambda: low.peer_id in high.connected_peers())
            assert await low.connect_mesh(ids) == 0  # connected: nothing to dial
            digest = high.store.put(b"over the mesh")
            assert await low.fetch_blob(digest, [high.peer_id]) == b"over the mesh"

    _trio_run(main)


def test_members_known_ahead_are_dialed_directly_when_no_member_can_be_asked(
    tmp_path: Path,
) -> None:
    keys = sorted(
        (create_new_key_pair() for _ in range(2)),
        key=lambda k: ID.from_pubkey(k.public_key).to_base58(),
    )

    async def main() -> None:
        high_cfg = P2PConfig(**FAST)
        async with P2PNode(keys[1], BlobStore(tmp_path / "high"), config=high_cfg) as high:
            low_id = ID.from_pubkey(keys[0].public_key).to_base58()
            ids = [low_id, high.peer_id]
            unaware = P2PConfig(**FAST)
            async with P2PNode(keys[0], BlobStore(tmp_path / "a"), config=unaware) as low:
                assert await low.connect_mesh(ids) == 0  # nobody to ask for high's address
            aware = P2PConfig(peers=(high.addrs[0],), **FAST)
            async with P2PNode(keys[0], BlobStore(tmp_path / "b"), config=aware) as low:
                assert await low.connect_mesh(ids) == 1
                assert high.peer_id in low.connected_peers()

    _trio_run(main)


def test_a_peers_file_is_a_bounded_list_of_full_peer_addresses(tmp_path: Path) -> None:
    peer = ID.from_pubkey(create_new_key_pair().public_key).to_base58()
    good = f"/ip4/127.0.0.1/tcp/4001/p2p/{peer}"
    path = tmp_path / "peers.json"
    path.write_text(json.dumps([good]))
    assert load_peers_file(path) == (good,)
    for bad in ('{"a": 1}', '["/ip4/127.0.0.1/tcp/4001"]', "[[[1]]]", "[1]", "not json"):
        path.write_text(bad)
        with pytest.raises(P2PConfigError):
            load_peers_file(path)
    path.write_text(json.dumps([good] * (MAX_KNOWN_PEERS + 1)))
    with pytest.raises(P2PConfigError, match="more than"):
        load_peers_file(path)
    with pytest.raises(P2PConfigError, match="cannot read"):
        load_peers_file(tmp_path / "missing.json")


# --- start-up and shutdown -------------------------------------------------------------


def test_down_bootstrap_peer_does_not_break_start_up(tmp_path: Path) -> None:
    async def main() -> None:
        nobody = ID.from_pubkey(create_new_key_pair().public_key).to_base58()
        dead = f"/ip4/127.0.0.1/tcp/{_free_port()}/p2p/{nobody}"
        async with P2PNode(
            create_new_key_pair(), BlobStore(tmp_path / "a"), config=P2PConfig(**FAST)
        ) as alive:
            cfg = P2PConfig(bootstrap=(dead, alive.addrs[0]), **FAST)
            with trio.fail_after(5):  # start-up does not wait for bootstrap peers
                async with P2PNode(
                    create_new_key_pair(), BlobStore(tmp_path / "b"), config=cfg
                ) as node:
                    await _eventually(lambda: alive.peer_id in node.connected_peers())
                    await _eventually(lambda: node.metrics.get("dial_failures_total") >= 2)
                    assert nobody not in node.connected_peers()

    _trio_run(main)


def test_a_plaintext_dialer_is_turned_away(tmp_path: Path) -> None:
    async def main() -> None:
        cfg = P2PConfig(**FAST)
        async with P2PNode(create_new_key_pair(), BlobStore(tmp_path), config=cfg) as node:
            keypair = create_new_key_pair()
            insecure = new_host(
                key_pair=keypair,
                sec_opt={TProtocol(PLAINTEXT_PROTOCOL_ID): InsecureTransport(keypair)},
                muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
            )
            async with insecure.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
                with pytest.raises(SwarmException), trio.fail_after(5):  # no common security
                    await insecure.connect(info_from_p2p_addr(multiaddr.Multiaddr(node.addrs[0])))
                assert node.connected_peers() == []

    _trio_run(main)


def test_node_stops_cleanly_and_runs_only_once(tmp_path: Path) -> None:
    async def main() -> None:
        node = P2PNode(create_new_key_pair(), BlobStore(tmp_path), config=P2PConfig(**FAST))
        with pytest.raises(P2PError, match="not running"):
            _ = node.addrs
        with trio.move_on_after(0.5):  # cancellation from outside ends it cleanly
            async with node:
                left = await node.join_task(2, is_member=lambda p: True, round_ok=lambda r: True)
                with pytest.raises(P2PError, match="already joined"):
                    await node.join_task(2, is_member=lambda p: True, round_ok=lambda r: True)
                await node.leave_task(2)
                with pytest.raises(trio.EndOfChannel):
                    await left.receive()
                with pytest.raises(P2PError, match="join task 2"):
                    await node.announce(Announcement("vote", 2, 0, b"\x01" * 32, "0x" + "12" * 20))
                inbox = await node.join_task(
                    TASK, is_member=lambda p: True, round_ok=lambda r: True
                )
                await trio.sleep_forever()
        with pytest.raises(trio.EndOfChannel):  # the node closed it on the way out
            await inbox.receive()
        with pytest.raises(P2PError, match="runs once"):
            async with node:
                pass
        with pytest.raises(P2PError, match="not running"):
            await node.announce(_announcement())

    _trio_run(main)


def test_port_in_use_is_a_clear_error_and_a_quick_exit_is_clean(tmp_path: Path) -> None:
    async def main() -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            cfg = P2PConfig(listen=(f"/ip4/127.0.0.1/tcp/{port}",), **FAST)
            with pytest.raises(P2PError, match="cannot listen"):
                async with P2PNode(create_new_key_pair(), BlobStore(tmp_path), config=cfg):
                    pass
        # leaving right after joining, before any background task ran, is fine too
        node = P2PNode(create_new_key_pair(), BlobStore(tmp_path), config=P2PConfig(**FAST))
        async with node:
            await node.join_task(TASK, is_member=lambda p: True, round_ok=lambda r: True)
            with pytest.raises(ValueError, match="timeout"):
                await node.fetch_blob(b"\x00" * 32, [], timeout=0)

    _trio_run(main)


def test_bad_configuration_is_refused_up_front() -> None:
    with pytest.raises(ValueError, match="full peer address"):
        P2PConfig(bootstrap=("/ip4/127.0.0.1/tcp/4001",))
    with pytest.raises(ValueError, match="not a multiaddr"):
        P2PConfig(listen=("localhost:4001",))
    with pytest.raises(ValueError, match="positive"):
        P2PConfig(max_blob_bytes=0)
    with pytest.raises(ValueError, match="bootstrap_backoff"):
        P2PConfig(bootstrap_backoff=(5.0, 1.0))
