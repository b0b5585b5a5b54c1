"""The node's libp2p layer: one host, gossip per task, and blob exchange by digest.

    store = BlobStore(node_dir, metrics=metrics)
    async with P2PNode(identity.libp2p_keypair, store, metrics=metrics, config=cfg) as node:
        inbox = await node.join_task(7, is_member=members.has_peer, round_ok=window)
        await node.announce(Announcement("update", 7, r, digest, identity.address, size))
        async for delivery in inbox:  # validated announcements from other members
            blob = await node.fetch_blob(delivery.announcement.digest, [delivery.peer_id])

The host speaks TCP + Noise + yamux only (py-libp2p's defaults would also offer plaintext
and secio) and listens on 127.0.0.1 unless told otherwise. Gossipsub signs every message
with the sender's peer key and verifies signatures strictly; on top of that every
incoming message goes through `GossipGate` (contract membership, schema, round window,
sender binding, de-duplication) before libp2p marks it seen, delivers it or relays it.
Blobs never ride on gossip: they are fetched over `/flchain/blob/1.0.0` (see `blobs`)
and re-hashed before use; a node's own update stays `sealed` (answered NOT_REVEALED)
until its round's submit phase has closed on chain (commit, then reveal). Hostile input
is dropped and counted in `Metrics`, never raised into the node. The py-libp2p specifics
(and its quirks) stay in this module.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import struct
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self, TypeVar

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetStream
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.protocol_muxer.exceptions import MultiselectCommunicatorError
from libp2p.protocol_muxer.multiselect_communicator import MultiselectCommunicator
from libp2p.pubsub.gossipsub import PROTOCOL_ID as GOSSIPSUB_V10
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11 as GOSSIPSUB_V11
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.validators import signature_validator
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.tools.anyio_service import background_trio_service

from flchain import safe_json
from flchain.node import blobs
from flchain.node.blobstore import (
    DEFAULT_MAX_BLOB_BYTES,
    BlobStore,
    as_digest,
    read_local,
    sha256,
)
from flchain.node.gossip import GossipGate, RejectError, TaskPolicy, topic_for
from flchain.node.messages import Announcement, MessageError, decode, encode
from flchain.node.metrics import Metrics
from flchain.node.pubsub_records import install as install_signed_record_cache
from flchain.node.yamux_credit import install as install_yamux_credit_batching

DEFAULT_LISTEN: Final = "/ip4/127.0.0.1/tcp/0"
# Peer routing: "which addresses does peer X listen on?", asked of connected members when
# a provider is not reachable directly (members know each other's peer ids from the
# contract, not their addresses). Request: 1 length byte + peer id bytes. Response:
# 2-byte big-endian length + a JSON array of multiaddr strings.
PEER_ADDRS_PROTOCOL: Final = "/flchain/peer-addrs/1.0.0"
_MAX_PEER_ID_BYTES: Final = 64
_MAX_ADDRS: Final = 16
_MAX_ADDRS_BYTES: Final = 4096
_EQUIVOCATION_CACHE_LIMIT: Final = 10_000
_MAX_BUDGET_PEERS: Final = 100_000
# Blob session streams kept idle at once (one per provider): past this, a fetch closes its own.
_MAX_IDLE_SESSIONS: Final = 256
T = TypeVar("T")
# Gossipsub's mesh: D, D_low, D_high = 3, 2, 4, not gossipsub's usual 6, 4, 12. A node's own
# announcements go to every member it is connected to (`_FloodPublishingGossipSub`), and
# members dial each other, so the mesh only relays: a backup path, not the delivery path.
# Each relay is a copy every mesh peer reads and drops as a duplicate, and at N = 16 reading
# them was a tenth of a node's CPU: with D = 3 a 16-node devnet's nodes spend about 7% less
# CPU per round than with D = 6 (paired runs, docs/architecture.md).
MESH_DEGREE: Final = 3
MESH_LOW: Final = 2
MESH_HIGH: Final = 4
# `connect_mesh`: how many members it dials at once
MESH_DIALS: Final = 4

log = logging.getLogger(__name__)
install_yamux_credit_batching()  # see node/yamux_credit.py: 60% of the frames a node wrote
install_signed_record_cache()  # see node/pubsub_records.py: a signature check per gossip RPC


def _harden_multiselect() -> None:
    """py-libp2p 0.8.1 decodes a peer's multistream-select message with `bytes.decode()` and
    lets a UnicodeDecodeError escape the stream handler, which takes the connection's task
    group and the host down with it: 300 random bytes on a fresh stream crash a node about
    one time in twenty. Invalid UTF-8 becomes the library's own MultiselectCommunicatorError,
    which its negotiation already answers by resetting that one stream. (A fix for upstream;
    done here, at import, because the host builds its communicators itself.)"""
    communicator = MultiselectCommunicator
    if getattr(communicator.read, "_flchain_hardened", False):
        return
    read = communicator.read

    @functools.wraps(read)
    async def checked_read(self: MultiselectCommunicator) -> str:
        try:
            return await read(self)
        except UnicodeDecodeError as exc:
            raise MultiselectCommunicatorError("multistream-select message is not UTF-8") from exc

    checked_read._flchain_hardened = True  # type: ignore[attr-defined]
    communicator.read = checked_read  # type: ignore[method-assign]


_harden_multiselect()


class P2PError(Exception):
    """A p2p operation that the caller asked for could not be done."""


class P2PConfigError(P2PError, ValueError):
    """A bad listen/bootstrap address or setting."""


class BlobNotFound(P2PError, LookupError):  # noqa: N818 (the name the node API promises)
    """No provider delivered a blob with the right digest in time.

    `attempts` maps each peer tried to why it failed (e.g. "not_found", "timeout",
    "digest_mismatch").
    """

    def __init__(self, digest: bytes, attempts: dict[str, str], timeout: float) -> None:
        tried = ", ".join(f"{peer}: {why}" for peer, why in attempts.items()) or "no providers"
        super().__init__(f"blob 0x{digest.hex()} not fetched within {timeout:g}s ({tried})")
        self.digest = digest
        self.attempts = attempts


@dataclass(frozen=True)
class P2PConfig:
    """Network settings of one node.

    listen: multiaddrs to listen on (loopback by default; a public node passes
        e.g. /ip4/0.0.0.0/tcp/4001).
    bootstrap: full multiaddrs (with /p2p/<peer id>) to connect to and stay connected to.
    peers: full multiaddrs of nodes known ahead (a devnet knows all of its own): the member
        mesh dials these directly once they are members, instead of asking connected
        members for their addresses first; never dialed otherwise, nor kept connected.
    max_blob_bytes: the largest blob served or fetched.
    fetch_timeout: default overall deadline of `fetch_blob`.
    provider_timeout: the most one provider may take to deliver a blob.
    stall_timeout: the most a provider may go without a byte (stream open included); a
        stalled transfer drops that connection, since py-libp2p's yamux can leave one dead
        while it still looks established, and the next attempt dials afresh.
    hedge_after: a fetch whose provider has not delivered after this many seconds also asks
        the next provider, and the first good answer wins: a transfer stuck on such a
        connection then costs this, not `stall_timeout` and a reconnect (one 10-node devnet
        in three lost 16 s that way in round 1).
    request_timeout: how long the server waits for a client's 32-byte request.
    session_idle: how long the server keeps a blob session (`node/blobs.py`) open without a
        request; a client reuses a session idle for at most half of this, then opens another.
    max_concurrent_serves: transfers served at once; more get a BUSY answer. A round
        (`P2PNode.start_round`) widens it to `max_serves_per_peer` for each of the task's
        other members, so all of them can fetch at once, as far as `max_serve_bytes` allows.
    max_serve_bytes: blob bytes the transfers served at once may hold, with the task's
        largest blob: what bounds that widening.
    max_serves_per_peer: of those, how many one peer may hold (counted from the moment its
        stream opens, request phase included), so a member that opens requests and never
        reads them cannot take every slot (BUSY, counted as `peer_slots`).
    peer_round_bytes: bytes one peer may fetch from this node per round (see
        `P2PNode.start_round`); None derives it as `peer_budget_factor` x the largest
        blob x the task's members (a fetcher takes each update once, plus retries and the
        global model). Over budget: BUSY, counted as `peer_bytes`.
    heartbeat_interval: gossipsub heartbeat in seconds (mesh repair speed).
    bootstrap_backoff: first and largest delay between reconnect attempts, seconds.
    dial_timeout: the most one connection attempt may take.
    delivery_buffer: announcements queued per task before new ones are dropped.
    dedup_size: accepted announcements remembered to drop exact replays.
    max_gossip_rate: messages per second one peer may relay on one topic (gossipsub's
        spam guard; its default of 10 would throttle a large task's bursts).
    evict_non_members: once a task is joined, close connections of peers that are not
        members of any joined task (bootstrap peers excepted) after `member_grace`
        seconds; they could only relay, or withhold, other members' gossip.
    """

    listen: tuple[str, ...] = (DEFAULT_LISTEN,)
    bootstrap: tuple[str, ...] = ()
    peers: tuple[str, ...] = ()
    max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES
    fetch_timeout: float = 120.0
    provider_timeout: float = 60.0
    stall_timeout: float = 5.0
    hedge_after: float = 2.0
    request_timeout: float = 5.0
    session_idle: float = 30.0
    max_concurrent_serves: int = 8
    max_serve_bytes: int = 256 * 2**20
    max_serves_per_peer: int = 2
    peer_round_bytes: int | None = None
    peer_budget_factor: int = 4
    heartbeat_interval: int = 1
    bootstrap_backoff: tuple[float, float] = (0.5, 30.0)
    dial_timeout: float = 10.0
    delivery_buffer: int = 1024
    dedup_size: int = 8192
    max_gossip_rate: float = 500.0
    evict_non_members: bool = True
    member_grace: float = 30.0

    def __post_init__(self) -> None:
        positive = {
            "max_blob_bytes": self.max_blob_bytes,
            "fetch_timeout": self.fetch_timeout,
            "provider_timeout": self.provider_timeout,
            "stall_timeout": self.stall_timeout,
            "hedge_after": self.hedge_after,
            "request_timeout": self.request_timeout,
            "session_idle": self.session_idle,
            "max_concurrent_serves": self.max_concurrent_serves,
            "max_serve_bytes": self.max_serve_bytes,
            "max_serves_per_peer": self.max_serves_per_peer,
            "peer_budget_factor": self.peer_budget_factor,
            "heartbeat_interval": self.heartbeat_interval,
            "dial_timeout": self.dial_timeout,
            "delivery_buffer": self.delivery_buffer,
            "dedup_size": self.dedup_size,
            "max_gossip_rate": self.max_gossip_rate,
            "member_grace": self.member_grace,
        }
        for name, value in positive.items():
            if not value > 0:
                raise P2PConfigError(f"{name} must be positive, got {value!r}")
        if self.peer_round_bytes is not None and not self.peer_round_bytes > 0:
            raise P2PConfigError(f"peer_round_bytes must be positive, got {self.peer_round_bytes}")
        first, largest = self.bootstrap_backoff
        if not 0 < first <= largest:
            raise P2PConfigError(
                f"bootstrap_backoff must be 0 < first <= largest, got {first}, {largest}"
            )
        if not self.listen:
            raise P2PConfigError("at least one listen address is needed")
        for addr in self.listen:
            _parse_multiaddr(addr)
        for addr in (*self.bootstrap, *self.peers):
            _parse_peer_addr(addr)


MAX_KNOWN_PEERS: Final = 4096  # a task holds at most 256 members; room for several tasks
_MAX_PEERS_FILE_BYTES: Final = 2 * 1024 * 1024


def load_peers_file(path: str | Path) -> tuple[str, ...]:
    """`P2PConfig.peers` from a JSON list of full multiaddrs (the devnet writes one); each is
    checked as a peer address, and the file's size, depth and length are bounded first."""
    try:
        doc = safe_json.load_file(path, max_bytes=_MAX_PEERS_FILE_BYTES, max_depth=2)
    except (OSError, ValueError) as exc:
        raise P2PConfigError(f"cannot read the peers file {path}: {exc}") from exc
    if not isinstance(doc, list) or not all(isinstance(a, str) for a in doc):
        raise P2PConfigError(f"{path}: expected a JSON list of multiaddr strings")
    if len(doc) > MAX_KNOWN_PEERS:
        raise P2PConfigError(f"{path}: {len(doc)} peers, more than {MAX_KNOWN_PEERS}")
    for addr in doc:
        _parse_peer_addr(addr)
    return tuple(doc)


@dataclass(frozen=True)
class Delivery:
    """An accepted announcement and the peer id that signed it (its origin)."""

    announcement: Announcement
    peer_id: str


class P2PNode:
    """A libp2p host with per-task gossip and a blob exchange, run as `async with`.

    Everything the node starts lives in a nursery owned by the `async with` block and is
    cancelled when the block exits. A node object is used for one block only.
    """

    def __init__(
        self,
        keypair: KeyPair,
        store: BlobStore,
        *,
        metrics: Metrics | None = None,
        config: P2PConfig | None = None,
    ) -> None:
        self.config = config or P2PConfig()
        self.store = store
        self.metrics = metrics or Metrics()
        self.peer_id: str = ID.from_pubkey(keypair.public_key).to_base58()
        self._keypair = keypair
        self._listen = [_parse_multiaddr(addr) for addr in self.config.listen]
        self._bootstrap = [_parse_peer_addr(addr) for addr in self.config.bootstrap]
        self._known = {
            info.peer_id.to_base58(): info for info in map(_parse_peer_addr, self.config.peers)
        }
        self._gate = GossipGate(self.config.dedup_size)
        self._deliveries: dict[str, trio.MemorySendChannel[Delivery]] = {}
        self._serving = 0  # transfers being served now
        self._serve_limit = self.config.max_concurrent_serves  # widened per round
        self._dropping: dict[str, trio.Event] = {}  # peer id -> set once its drop is done
        self._peer_streams: dict[str, int] = {}  # peer id -> blob streams it holds open now
        # peer id -> a blob session stream of ours, idle since a trio time; one per peer, so
        # with a fetch running beside it a peer never holds over `max_serves_per_peer` (2)
        self._idle_sessions: dict[str, tuple[INetStream, float]] = {}
        self._peer_spent: dict[str, int] = {}  # peer id -> bytes served to it this round
        self._peer_budget = self._round_budget(None, None)
        # Digests this node does not serve at all (None: everything in the store).
        self.serve_filter: Callable[[bytes], bool] | None = None
        # Commit, then reveal: True for a digest served only later (the node's own update of
        # a round whose submit phase is still open; see `RoundEngine.sealed_now`, which asks the
        # chain before it refuses).
        self.sealed: Callable[[bytes], Awaitable[bool]] | None = None
        self._first_seen: dict[ID, float] = {}
        self._stack: contextlib.AsyncExitStack | None = None
        self._nursery: trio.Nursery | None = None
        self._host: IHost | None = None
        self._pubsub: _GatedPubsub | None = None
        self._gossipsub: GossipSub | None = None
        self._used = False

    # -- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._used:
            raise P2PError("a P2PNode runs once; create a new one")
        self._used = True
        host = new_host(
            key_pair=self._keypair,
            sec_opt={
                NOISE_PROTOCOL_ID: NoiseTransport(
                    self._keypair, noise_privkey=new_x25519_key_pair().private_key
                )
            },
            muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
            listen_addrs=self._listen,
        )
        gossipsub = _FloodPublishingGossipSub(
            self._gate,
            protocols=[GOSSIPSUB_V11, GOSSIPSUB_V10],
            degree=MESH_DEGREE,
            degree_low=MESH_LOW,
            degree_high=MESH_HIGH,
            heartbeat_initial_delay=0.1,
            heartbeat_interval=self.config.heartbeat_interval,
            max_messages_per_topic_per_second=self.config.max_gossip_rate,
            # Membership is enforced by the contract binding, and every node of a local
            # devnet shares 127.0.0.1, so IP-diversity grafting only adds churn.
            eclipse_protection_enabled=False,
        )
        pubsub = _GatedPubsub(host, gossipsub, gate=self._gate, metrics=self.metrics)
        self._host, self._gossipsub, self._pubsub = host, gossipsub, pubsub
        _guard_stream_handlers(host, self.metrics)
        stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        try:
            await stack.enter_async_context(host.run(self._listen))
            # py-libp2p logs a listener that fails (port in use) and carries on deaf
            deaf = len(host.get_transport_addrs()) < len(self._listen)
            if not deaf:
                await stack.enter_async_context(background_trio_service(pubsub))
                await stack.enter_async_context(background_trio_service(gossipsub))
                self._nursery = await stack.enter_async_context(trio.open_nursery())
                await pubsub.wait_until_ready()
        except BaseException as exc:
            await stack.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        if deaf:
            await stack.aclose()
            wanted = ", ".join(str(addr) for addr in self._listen)
            raise P2PError(f"cannot listen on {wanted} (port in use or not a local address?)")
        assert self._nursery is not None
        self._stack = stack
        host.set_stream_handler(TProtocol(blobs.PROTOCOL_ID), self._serve_blob)
        host.set_stream_handler(TProtocol(blobs.SESSION_PROTOCOL_ID), self._serve_blob_session)
        host.set_stream_handler(TProtocol(PEER_ADDRS_PROTOCOL), self._serve_peer_addrs)
        self._nursery.start_soon(self._maintain, host)
        for info in self._bootstrap:
            if info.peer_id != host.get_id():
                self._nursery.start_soon(self._keep_connected, host, info)
        log.info("p2p node %s listening on %s", self.peer_id, ", ".join(self.addrs))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._stack is not None and self._nursery is not None
        for channel in self._deliveries.values():
            channel.close()
        self._deliveries.clear()
        self._idle_sessions.clear()  # their connections close with the host
        self._nursery.cancel_scope.cancel()
        stack, self._stack = self._stack, None
        return await stack.__aexit__(exc_type, exc, tb)

    # -- addresses and peers ---------------------------------------------------------

    @property
    def host(self) -> IHost:
        """The py-libp2p host underneath: an escape hatch for protocol attacks and tests."""
        return self._running_host()

    @property
    def addrs(self) -> list[str]:
        """Full multiaddrs of this node, each ending in /p2p/<peer id>."""
        return [str(addr) for addr in self._running_host().get_addrs()]

    def connected_peers(self) -> list[str]:
        """Peer ids with an open connection."""
        return [peer.to_base58() for peer in self._running_host().get_connected_peers()]

    async def connect(self, addr: str) -> str:
        """Connect to a full multiaddr (with /p2p/<peer id>); returns the peer id."""
        info = _parse_peer_addr(addr)
        try:
            with trio.fail_after(self.config.dial_timeout):
                await self._running_host().connect(info)
        except Exception as exc:
            raise P2PError(f"cannot connect to {addr}: {exc}") from exc
        return info.peer_id.to_base58()

    async def connect_mesh(self, peers: Iterable[str]) -> int:
        """Connect to the members in `peers` this node should dial; returns how many new.

        Of each pair of members only the one with the smaller peer id dials (the other waits
        for it): when two py-libp2p hosts dial each other at the same moment, each may keep a
        different one of the two connections and the other side's end goes dead, so a pair
        that first met in a round's fetch could not reach each other for the whole provider
        timeout. Dialing the mesh ahead of the rounds, one way per pair, leaves no dial on the
        fetch path. Addresses come from `config.peers`, else from connected members
        (`_discover`), at most MESH_DIALS dials at a time, each bounded by `dial_timeout`."""
        host = self._running_host()
        connected = {peer.to_base58() for peer in host.get_connected_peers()}
        wanted = sorted(
            {p for p in peers if p > self.peer_id and p not in connected and _is_peer_id(p)}
        )
        made = 0
        limit = trio.Semaphore(MESH_DIALS)

        async def dial(peer: str) -> None:
            nonlocal made
            async with limit:
                with contextlib.suppress(Exception):  # the fetch path dials again if need be
                    known = self._known.get(peer)
                    direct = known is not None and await self._dial(known)
                    if direct or await self._discover(ID.from_base58(peer)):
                        made += 1

        async with trio.open_nursery() as nursery:
            for peer in wanted:
                nursery.start_soon(dial, peer)
        return made

    # -- per-round budgets -------------------------------------------------------------

    def start_round(self, *, blob_bytes: int | None = None, members: int | None = None) -> int:
        """A new round: every peer's byte budget starts over; returns that budget.

        `blob_bytes` (the task's largest blob) and `members` size the budget unless the
        config fixes `peer_round_bytes`.
        """
        self._peer_spent.clear()
        self._peer_budget = self._round_budget(blob_bytes, members)
        self._serve_limit = self._serve_capacity(blob_bytes, members)
        return self._peer_budget

    def _serve_capacity(self, blob_bytes: int | None, members: int | None) -> int:
        """Transfers served at once this round: every other member fetches this node's
        update when the submit phase closes, all at the same moment, and may ask for others'
        it lacks; with fewer slots the last ones were answered BUSY and asked again half a
        second later, every round, once a task had more than 9 members. So each member may
        hold its `max_serves_per_peer`, within `max_serve_bytes` of blobs at once."""
        floor = self.config.max_concurrent_serves
        if not members:
            return floor
        largest = min(blob_bytes or self.config.max_blob_bytes, self.config.max_blob_bytes)
        wanted = (members - 1) * self.config.max_serves_per_peer  # each its share of slots
        return max(floor, min(wanted, self.config.max_serve_bytes // max(1, largest)))

    def _round_budget(self, blob_bytes: int | None, members: int | None) -> int:
        if self.config.peer_round_bytes is not None:
            return self.config.peer_round_bytes
        largest = min(blob_bytes or self.config.max_blob_bytes, self.config.max_blob_bytes)
        return self.config.peer_budget_factor * largest * max(1, members or 1)

    # -- gossip ----------------------------------------------------------------------

    async def join_task(
        self,
        task: int,
        *,
        is_member: Callable[[str], bool],
        round_ok: Callable[[int], bool],
        address_of: Callable[[str], str | None] | None = None,
    ) -> trio.MemoryReceiveChannel[Delivery]:
        """Subscribe to the task's topic; returns the channel of accepted announcements.

        See `TaskPolicy` for the callables. Membership also decides who may fetch blobs
        from this node. The channel closes when the task is left or the node stops.
        """
        topic = topic_for(task)
        if topic in self._deliveries:
            raise P2PError(f"already joined task {task}")
        pubsub = self._running_pubsub()
        send, receive = trio.open_memory_channel[Delivery](self.config.delivery_buffer)
        self._gate.add(TaskPolicy(task, is_member, round_ok, address_of))
        self._deliveries[topic] = send
        subscription = await pubsub.subscribe(topic)
        assert self._nursery is not None
        self._nursery.start_soon(self._pump, topic, subscription, send)
        return receive

    async def leave_task(self, task: int) -> None:
        """Unsubscribe from the task's topic and close its delivery channel."""
        topic = topic_for(task)
        send = self._deliveries.pop(topic, None)
        if send is None:
            return
        self._gate.remove(task)
        await self._running_pubsub().unsubscribe(topic)
        send.close()

    async def announce(self, message: Announcement) -> None:
        """Publish an announcement on its task's topic (the task must be joined)."""
        pubsub = self._running_pubsub()
        topic = topic_for(message.task)
        if topic not in self._deliveries:
            raise P2PError(f"join task {message.task} before announcing on it")
        data = encode(message)
        await pubsub.publish(topic, data)
        self.metrics.inc("messages_published_total")
        self.metrics.inc("bytes_out_total", len(data), channel="gossip")

    async def publish_raw(self, task: int, data: bytes) -> None:
        """Publish arbitrary bytes on a task's topic, unvalidated.

        For the protocol attacks (`spam`, `equivocate`) and tests only: honest code uses
        `announce`. Receivers validate and count whatever this sends.
        """
        await self._running_pubsub().publish(topic_for(task), bytes(data))

    def gossip_peers(self, task: int) -> list[str]:
        """Peers known to be subscribed to the task's topic."""
        peers = self._running_pubsub().peer_topics.get(topic_for(task), set())
        return sorted(peer.to_base58() for peer in peers)

    def mesh_peers(self, task: int) -> list[str]:
        """The peers this node relays the task's announcements to (its gossipsub mesh)."""
        if self._gossipsub is None:
            raise P2PError("the node is not running")
        return sorted(peer.to_base58() for peer in self._gossipsub.mesh.get(topic_for(task), ()))

    async def _pump(
        self,
        topic: str,
        subscription: Any,
        send: trio.MemorySendChannel[Delivery],
    ) -> None:
        """Move accepted messages from libp2p's subscription to the caller's channel."""
        me = ID.from_pubkey(self._keypair.public_key)
        async for msg in subscription:
            if ID(msg.from_id) == me:
                continue  # our own announcements come back through the subscription
            try:
                delivery = Delivery(decode(msg.data), ID(msg.from_id).to_base58())
                send.send_nowait(delivery)
            except MessageError:  # cannot happen after the gate; never crash the pump
                self.metrics.inc("messages_rejected_total", reason="malformed")
            except trio.WouldBlock:
                self.metrics.inc("messages_rejected_total", reason="backlog")
                log.warning("delivery queue of %s is full; dropping an announcement", topic)
            except trio.ClosedResourceError:
                return

    # -- blobs -----------------------------------------------------------------------

    async def fetch_blob(
        self,
        digest: bytes | str,
        providers: Sequence[str],
        *,
        timeout: float | None = None,
        max_size: int | None = None,
        try_connected: bool = True,
    ) -> bytes:
        """The verified bytes of blob `digest`, from the local store or from a peer.

        Providers are tried in order, then (if `try_connected`) every other connected
        member. A provider that times out, refuses, or sends bytes whose sha256 is not
        `digest` is counted and skipped. The blob is stored locally before returning,
        so this node can serve it too. Raises `BlobNotFound` if nobody delivers within
        `timeout` seconds (default `config.fetch_timeout`).
        """
        key = as_digest(digest)
        limit = self.config.max_blob_bytes
        if max_size is not None:
            limit = min(limit, max_size)
        timeout = self.config.fetch_timeout if timeout is None else timeout
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        local = await read_local(self.store, key)
        if local is not None:
            return local
        attempts: dict[str, str] = {}
        asking: set[str] = set()
        order = self._provider_order(providers, try_connected)
        with trio.move_on_after(timeout) as deadline:
            data = await self._first_delivery(order, key, limit, attempts, asking)
            if data is not None:
                await trio.to_thread.run_sync(
                    functools.partial(self.store.put, data, from_peer=True, verified=key)
                )
                self.metrics.inc("blobs_fetched_total")
                return data
        if deadline.cancelled_caught:
            for peer in sorted(asking - set(attempts)):
                attempts[peer] = "timeout"
                self.metrics.inc("blob_failures_total", reason="timeout")
        raise BlobNotFound(key, attempts, timeout)

    async def _first_delivery(
        self,
        order: list[str],
        digest: bytes,
        limit: int,
        attempts: dict[str, str],
        asking: set[str],
    ) -> bytes | None:
        """The first verified answer from the providers in `order`, or None if all failed.

        The next provider is asked when one fails, and also when the providers asked so far
        have given no answer for `hedge_after` seconds; the first good answer wins. The
        attempts run in the node's nursery, so a loser's shielded stream reset and a stalled
        connection's drop finish there, after the winner returned. `attempts` gets each
        failed provider's reason, `asking` every provider asked.
        """
        assert self._nursery is not None, "fetch_blob needs a running node"
        answers_in, answers = trio.open_memory_channel[bytes | None](len(order))
        running: list[_Progress] = []
        providers = iter(order)
        won = False

        async def attempt(peer: str, progress: _Progress) -> None:
            data: bytes | None = None
            with progress.scope:
                try:
                    data = await self._fetch_from(peer, digest, limit, progress)
                except _FetchError as failure:
                    attempts[peer] = failure.reason
                    self.metrics.inc("blob_failures_total", reason=failure.reason)
                    log.info("blob 0x%s from %s failed: %s", digest.hex()[:12], peer, failure)
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                answers_in.send_nowait(data)  # room for every provider: never blocks

        def ask_next() -> int:
            peer = next(providers, None)
            if peer is None:
                return 0
            asking.add(peer)
            running.append(_Progress())
            self._nursery.start_soon(attempt, peer, running[-1])  # type: ignore[union-attr]
            return 1

        try:
            waiting = ask_next()
            while waiting:
                with trio.move_on_after(self.config.hedge_after) as quiet:
                    data = await answers.receive()
                if quiet.cancelled_caught:
                    if ask_next():
                        self.metrics.inc("blob_hedges_total")
                        waiting += 1
                    continue
                waiting -= 1
                if data is not None:
                    won = True
                    return data
                waiting += ask_next()
            return None
        finally:
            # A loser that is sending is cancelled: its bytes are no longer needed. One that
            # has not answered yet runs on until it does (then it is cancelled) or to its
            # stall timeout, so a dead connection is still found and dropped, not left to
            # hold the next round's fetch again.
            for progress in running:
                progress.abandoned = True
                if not won or progress.answered:
                    progress.scope.cancel()
            answers.close()

    def _provider_order(self, providers: Sequence[str], try_connected: bool) -> list[str]:
        order: list[str] = []
        for peer in providers:
            if peer != self.peer_id and peer not in order:
                order.append(peer)
        if try_connected:
            for peer in sorted(self.connected_peers()):
                if peer not in order and self._gate.is_member_anywhere(peer):
                    order.append(peer)
        return order

    async def _fetch_from(
        self, peer: str, digest: bytes, limit: int, progress: _Progress | None = None
    ) -> bytes:
        """One attempt at one provider; every failure becomes a `_FetchError`. `progress`
        learns when the provider's first bytes arrive."""
        try:
            peer_id = ID.from_base58(peer)
        except Exception as exc:
            raise _FetchError("bad_peer_id", f"{peer!r} is not a peer id") from exc
        stream: INetStream | None = None
        paced: _Paced | None = None
        done = False
        stall = self.config.stall_timeout
        try:
            with trio.fail_after(self.config.provider_timeout):
                stream = self._take_idle_session(peer)
                if stream is not None:
                    paced = _Paced(stream, stall, progress)
                    try:
                        data = await _ask(paced, digest, limit)
                        done = True
                    except Exception:
                        if paced.stalled or paced.received:
                            raise
                        # The provider ended the idle session (it timed out there, or the
                        # provider serves one request per stream): ask on a new stream.
                        self.metrics.inc("blob_sessions_ended_total")
                        await _abort(stream)
                        stream = paced = None
                if not done:
                    dropping = self._dropping.get(peer)
                    if dropping is not None:  # a stalled connection still closing: dial afresh
                        await dropping.wait()
                    # a stream on a live connection opens in milliseconds; a new one may dial
                    host = self._running_host()
                    connected = peer_id in host.get_connected_peers()
                    opening = stall if connected else self.config.dial_timeout + stall
                    with trio.move_on_after(opening):
                        stream = await self._open_stream(peer_id, blobs.PROTOCOL_IDS)
                    if stream is None:
                        raise _StalledError("no stream opened")
                    paced = _Paced(stream, stall, progress)
                    data = await _ask(paced, digest, limit)
                    done = True
        except trio.TooSlowError as exc:
            limit_s = self.config.provider_timeout
            raise _FetchError("timeout", f"no blob within {limit_s:g}s") from exc
        except _FetchError:
            raise
        except Exception as exc:  # protocol errors, stalls, py-libp2p's stream errors
            stalled = isinstance(exc, _StalledError) or (paced is not None and paced.stalled)
            if stalled or stream is None:
                # a connection that cannot open a stream or carry bytes is dead, even if
                # py-libp2p still counts it established: drop it, the next try dials afresh
                self._drop_connection(peer_id)
            if stalled:
                raise _FetchError("stalled", f"no progress for {stall:g}s") from exc
            if isinstance(exc, blobs.BlobProtocolError):
                raise _FetchError(exc.reason, str(exc)) from exc
            raise _FetchError("stream_error", repr(exc)) from exc
        finally:  # also on cancellation by the caller's overall deadline
            if not done:
                await _abort(stream)
            elif stream is not None and not self._keep_idle_session(peer, stream):
                await _close(stream)
        self.metrics.inc("bytes_in_total", len(data), channel="blob")
        if sha256(data) != digest:
            raise _FetchError("digest_mismatch", f"got sha256 0x{sha256(data).hex()}")
        return data

    def _take_idle_session(self, peer: str) -> INetStream | None:
        """Our idle blob session with `peer` if the provider should still be holding it open
        (idle for under half of `session_idle`); an older one is closed in the background."""
        idle = self._idle_sessions.pop(peer, None)
        if idle is None:
            return None
        stream, since = idle
        if trio.current_time() - since < self.config.session_idle / 2:
            self.metrics.inc("blob_sessions_reused_total")
            return stream
        self._close_in_background(stream)
        return None

    def _keep_idle_session(self, peer: str, stream: INetStream) -> bool:
        """Keep `stream` for the next fetch from `peer`: True if it is a session stream and
        no other one is kept for that peer already."""
        if stream.get_protocol() != blobs.SESSION_PROTOCOL_ID or peer in self._idle_sessions:
            return False
        if peer in self._dropping or self._nursery is None:
            return False
        if len(self._idle_sessions) >= _MAX_IDLE_SESSIONS:
            return False
        self._idle_sessions[peer] = (stream, trio.current_time())
        return True

    def _close_in_background(self, stream: INetStream) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(_close, stream)

    def _drop_connection(self, peer_id: ID) -> None:
        """Close our connections to `peer_id` in the background; counted.

        Not awaited: closing a connection whose yamux is stuck waits on that same stuck
        writer, up to `dial_timeout`, and the fetch that found it dead has other providers
        to try meanwhile.
        """
        self.metrics.inc("connections_dropped_total")
        log.info("dropping the connection to %s: it stalled", peer_id)
        peer = peer_id.to_base58()
        idle = self._idle_sessions.pop(peer, None)
        if idle is not None and self._nursery is not None:
            self._nursery.start_soon(_abort, idle[0])
        if self._nursery is not None and peer not in self._dropping:
            self._dropping[peer] = trio.Event()
            self._nursery.start_soon(self._disconnect, peer_id, peer)

    async def _disconnect(self, peer_id: ID, peer: str) -> None:
        """Close the connections; the next transfer with `peer` waits for this, then dials."""
        try:
            with trio.move_on_after(self.config.dial_timeout), contextlib.suppress(Exception):
                await self._running_host().disconnect(peer_id)
        finally:
            self._dropping.pop(peer).set()

    async def _open_stream(self, peer_id: ID, protocols: Sequence[str]) -> INetStream:
        """A stream to `peer_id` on the first of `protocols` it speaks, dialing it first,
        and asking other members for its addresses when this node knows none that work."""
        host = self._running_host()
        wanted = [TProtocol(protocol) for protocol in protocols]
        try:
            return await host.new_stream(peer_id, wanted)
        except Exception as exc:
            if isinstance(exc, trio.TooSlowError) or peer_id in host.get_connected_peers():
                raise
            first_error = exc
        if not await self._discover(peer_id):
            raise _FetchError("unreachable", f"no known address works ({first_error!r})")
        try:
            return await host.new_stream(peer_id, wanted)
        except Exception as exc:
            if isinstance(exc, trio.TooSlowError):
                raise
            raise _FetchError("unreachable", repr(exc)) from exc

    async def _dial(self, info: PeerInfo) -> bool:
        """Connect to a peer at addresses known ahead; True on success."""
        try:
            with trio.fail_after(self.config.dial_timeout):
                await self._running_host().connect(info)
        except Exception as exc:
            self.metrics.inc("dial_failures_total")
            log.info("cannot dial %s at its known address: %r", info.peer_id, exc)
            return False
        return True

    async def _discover(self, peer_id: ID) -> bool:
        """Ask connected members for `peer_id`'s addresses and connect; True on success."""
        host = self._running_host()
        for helper in host.get_connected_peers():
            if helper == peer_id or not self._gate.is_member_anywhere(helper.to_base58()):
                continue
            stream: INetStream | None = None
            try:
                with trio.fail_after(self.config.request_timeout):
                    stream = await host.new_stream(helper, [TProtocol(PEER_ADDRS_PROTOCOL)])
                    raw = peer_id.to_bytes()
                    await stream.write(bytes([len(raw)]) + raw)
                    (length,) = struct.unpack(
                        ">H", await blobs.read_exact(stream, 2, what="addrs length")
                    )
                    if length > _MAX_ADDRS_BYTES:
                        raise blobs.BlobProtocolError("oversize", f"{length}-byte address list")
                    addrs = _parse_addr_list(
                        await blobs.read_exact(stream, length, what="addrs"), peer_id
                    )
            except Exception as exc:
                log.info("peer routing via %s failed: %r", helper, exc)
                await _abort(stream)
                continue
            await _close(stream)
            if not addrs:
                continue
            # py-libp2p refuses to redial a peer for 60 s after a failed dial; these are
            # fresh addresses, so forget that failure.
            _forget_failed_dial(host, peer_id)
            try:
                with trio.fail_after(self.config.dial_timeout):
                    await host.connect(PeerInfo(peer_id, addrs))
            except Exception as exc:
                self.metrics.inc("dial_failures_total")
                log.info("cannot dial %s at %s: %r", peer_id, addrs, exc)
                continue
            return True
        return False

    async def _serve_peer_addrs(self, stream: INetStream) -> None:
        """Tell a member the addresses of a connected member (peer routing)."""
        try:
            asker = stream.muxed_conn.peer_id.to_base58()
            if not self._gate.is_member_anywhere(asker):
                self.metrics.inc("blob_failures_total", reason="not_member")
                await _abort(stream)
                return
            with trio.fail_after(self.config.request_timeout):
                (size,) = await blobs.read_exact(stream, 1, what="peer id length")
                if not 0 < size <= _MAX_PEER_ID_BYTES:
                    raise blobs.BlobProtocolError("bad_request", f"peer id of {size} bytes")
                wanted = ID(await blobs.read_exact(stream, size, what="peer id"))
                host = self._host
                assert host is not None  # handlers are registered after the host exists
                addrs: list[str] = []
                known = wanted in host.get_connected_peers()
                if known and self._gate.is_member_anywhere(wanted.to_base58()):
                    with contextlib.suppress(Exception):
                        addrs = [str(a) for a in host.get_peerstore().addrs(wanted)][:_MAX_ADDRS]
                body = json.dumps(addrs).encode()
                while len(body) > _MAX_ADDRS_BYTES:
                    addrs.pop()
                    body = json.dumps(addrs).encode()
                await stream.write(struct.pack(">H", len(body)) + body)
            await _close(stream)
        except Exception as exc:
            self.metrics.inc("blob_failures_total", reason="bad_request")
            log.info("bad peer-address request: %r", exc)
            await _abort(stream)

    async def _serve_blob(self, stream: INetStream) -> None:
        """Answer one blob request (`/flchain/blob/1.0.0`), then close."""
        await self._serve_blobs(stream, session=False)

    async def _serve_blob_session(self, stream: INetStream) -> None:
        """Answer blob requests one after another (`/flchain/blob-session/1.0.0`) until the
        client closes the stream or sends nothing for `session_idle` seconds."""
        await self._serve_blobs(stream, session=True)

    def set_blob_handler(self, handler: Callable[[INetStream], Awaitable[None]]) -> None:
        """Serve both blob protocols with `handler` (an attack's server, a test's): a
        handler that answers once and closes works for session clients too, which open a
        new stream when the one they kept has been closed."""
        for protocol in blobs.PROTOCOL_IDS:
            guarded = _guarded(protocol, handler, self.metrics)
            self._running_host().set_stream_handler(TProtocol(protocol), guarded)

    async def _serve_blobs(self, stream: INetStream, *, session: bool) -> None:
        """Answer a stream's blob requests; any failure ends this stream and nothing else.

        Budgets, in order: membership, the peer's share of serve slots (held from here on,
        so even a request that never arrives counts, and a session holds one while idle),
        `request_timeout` for the first request (`session_idle` for a session's next ones),
        the node's serve slots, `serve_filter`, `sealed` (an update not revealed yet is
        answered NOT_REVEALED), the peer's byte budget for the round, and
        `provider_timeout` for each answer (a reader that stops reading is cut off).
        Membership is checked again before every request of a session.
        """
        peer: str | None = None
        try:
            peer = stream.muxed_conn.peer_id.to_base58()
            if not self._gate.is_member_anywhere(peer):
                peer = None
                await self._refuse(stream, blobs.Status.REFUSED, "not_member")
                return
            held = self._peer_streams.get(peer, 0)
            if held >= self.config.max_serves_per_peer:
                peer = None  # this stream holds no slot of its own
                await self._refuse(stream, blobs.Status.BUSY, "peer_slots")
                return
            self._peer_streams[peer] = held + 1
            first = True
            while True:
                wait = self.config.request_timeout if first else self.config.session_idle
                with trio.move_on_after(wait) as scope:
                    if session:
                        digest = await blobs.read_next_request(stream)
                    else:
                        digest = await blobs.read_request(stream)
                if scope.cancelled_caught and first:
                    await self._refuse(stream, blobs.Status.BAD_REQUEST, "request_timeout")
                    return
                if scope.cancelled_caught or digest is None:  # an idle or ended session
                    await _close(stream)
                    return
                if not self._gate.is_member_anywhere(peer):
                    await self._refuse(stream, blobs.Status.REFUSED, "not_member")
                    return
                if self._serving >= self._serve_limit:
                    if not session:
                        await self._refuse(stream, blobs.Status.BUSY, "busy")
                        return
                    self.metrics.inc("blob_failures_total", reason="busy")
                    with trio.fail_after(self.config.request_timeout):
                        await blobs.write_response(stream, blobs.Status.BUSY)
                else:
                    self._serving += 1
                    try:
                        await self._answer(stream, peer, digest)
                    finally:
                        self._serving -= 1
                if not session:
                    await _close(stream)
                    return
                first = False
        except blobs.BlobProtocolError as exc:
            self.metrics.inc("blob_failures_total", reason="bad_request")
            log.info("bad blob request: %s", exc)
            await _abort(stream)
        except trio.TooSlowError:
            self.metrics.inc("blob_failures_total", reason="slow_reader")
            await _abort(stream)
        except Exception as exc:
            self.metrics.inc("blob_failures_total", reason="stream_error")
            log.info("blob stream failed: %r", exc)
            await _abort(stream)
        finally:
            if peer is not None:
                left = self._peer_streams.get(peer, 1) - 1
                if left > 0:
                    self._peer_streams[peer] = left
                else:
                    self._peer_streams.pop(peer, None)

    async def _answer(self, stream: INetStream, peer: str, digest: bytes) -> None:
        """The response to one admitted request (the caller holds a serve slot)."""
        if self.serve_filter is not None and not self.serve_filter(digest):
            self.metrics.inc("blob_failures_total", reason="not_committed")
            with trio.fail_after(self.config.request_timeout):
                await blobs.write_response(stream, blobs.Status.NOT_FOUND)
            return
        if self.sealed is not None and await self.sealed(digest):
            self.metrics.inc("blob_failures_total", reason="not_revealed")
            with trio.fail_after(self.config.request_timeout):
                await blobs.write_response(stream, blobs.Status.NOT_REVEALED)
            return
        data = await read_local(self.store, digest)
        if data is None:
            with trio.fail_after(self.config.request_timeout):
                await blobs.write_response(stream, blobs.Status.NOT_FOUND)
            return
        if len(data) > self.config.max_blob_bytes:
            with trio.fail_after(self.config.request_timeout):
                await blobs.write_response(stream, blobs.Status.TOO_LARGE)
            return
        spent = self._peer_spent.get(peer, 0)
        if spent + len(data) > self._peer_budget:
            self.metrics.inc("blob_failures_total", reason="peer_bytes")
            log.info("peer %s spent its %d-byte budget for the round", peer, self._peer_budget)
            with trio.fail_after(self.config.request_timeout):
                await blobs.write_response(stream, blobs.Status.BUSY)
            return
        if len(self._peer_spent) >= _MAX_BUDGET_PEERS and peer not in self._peer_spent:
            self._peer_spent.clear()  # members only reach here; this bounds a churn of ids
        self._peer_spent[peer] = spent + len(data)  # reserved up front: no parallel overspend
        with trio.fail_after(self.config.provider_timeout):
            await blobs.write_response(stream, blobs.Status.OK, data)
        self.metrics.inc("blobs_served_total")
        self.metrics.inc("bytes_out_total", len(data), channel="blob")

    async def _refuse(self, stream: INetStream, status: blobs.Status, reason: str) -> None:
        self.metrics.inc("blob_failures_total", reason=reason)
        with trio.move_on_after(self.config.request_timeout):
            await blobs.write_response(stream, status)
        await _close(stream)

    # -- background tasks ------------------------------------------------------------

    async def _keep_connected(self, host: IHost, info: PeerInfo) -> None:
        """Stay connected to one bootstrap peer, retrying with capped exponential backoff."""
        first, largest = self.config.bootstrap_backoff
        delay = first
        while True:
            if info.peer_id in host.get_connected_peers():
                delay = first
                await trio.sleep(1.0)
                continue
            # py-libp2p refuses to redial a peer for 60 s after a failed dial; our own
            # backoff decides when to retry, so forget that failure first.
            _forget_failed_dial(host, info.peer_id)
            try:
                with trio.fail_after(self.config.dial_timeout):
                    await host.connect(info)
                log.info("connected to bootstrap peer %s", info.peer_id)
                delay = first
            except Exception as exc:
                self.metrics.inc("dial_failures_total")
                log.info("bootstrap %s unreachable (%r); retry in %.1fs", info.peer_id, exc, delay)
                await trio.sleep(delay)
                delay = min(delay * 2, largest)

    async def _maintain(self, host: IHost) -> None:
        """Once a second: evict non-members, refresh the peer gauge, and bound
        py-libp2p's never-pruned equivocation cache."""
        while True:
            if self.config.evict_non_members:
                await self._evict_non_members(host)
            self.metrics.set("peers_connected", len(host.get_connected_peers()))
            cache = getattr(self._gossipsub, "equivocation_detection", None)
            if isinstance(cache, dict) and len(cache) > _EQUIVOCATION_CACHE_LIMIT:
                cache.clear()
            await trio.sleep(1.0)

    async def _evict_non_members(self, host: IHost) -> None:
        now = trio.current_time()
        connected = set(host.get_connected_peers())
        for peer in list(self._first_seen):
            if peer not in connected:
                del self._first_seen[peer]
        if not self._gate.policies:
            return  # before joining a task there is no member list to enforce
        exempt = {info.peer_id for info in self._bootstrap}
        for peer in connected - exempt:
            since = self._first_seen.setdefault(peer, now)
            if now - since < self.config.member_grace:
                continue
            if not self._gate.is_member_anywhere(peer.to_base58()):
                log.info("closing connection to non-member %s", peer)
                self.metrics.inc("peers_evicted_total")
                with trio.move_on_after(self.config.dial_timeout):
                    with contextlib.suppress(Exception):
                        await host.disconnect(peer)
                # forget its addresses too, or py-libp2p's auto-connector dials it again
                with contextlib.suppress(Exception):
                    host.get_peerstore().clear_addrs(peer)
                self._first_seen.pop(peer, None)

    def _running_host(self) -> IHost:
        if self._host is None or self._stack is None:
            raise P2PError("the node is not running; use `async with P2PNode(...) as node`")
        return self._host

    def _running_pubsub(self) -> _GatedPubsub:
        self._running_host()
        assert self._pubsub is not None
        return self._pubsub


class _FloodPublishingGossipSub(GossipSub):
    """Gossipsub that sends a message this node publishes to every connected member
    subscribed to its topic, not only to its mesh peers (go-libp2p's flood publishing, on by
    default there; py-libp2p lacks it). Relayed messages still go over the mesh.

    py-libp2p publishes to the mesh only, and its mesh churns: a node pruned by its mesh
    peers may stay without any for the prune backoff (a minute), and what it published in
    that time reached nobody. Members of a task dial each other (`connect_mesh`), so one
    hop from the publisher reaches them all, and the mesh can stay small (`MESH_HIGH`)."""

    def __init__(self, gate: GossipGate, **options: Any) -> None:
        super().__init__(**options)
        self._gate = gate

    def _get_peers_to_send(
        self,
        topic_ids: Iterable[str],
        msg_forwarder: ID,
        origin: ID,
        msg_id: bytes | None = None,
    ) -> Iterable[ID]:
        topics = list(topic_ids)
        peers = set(super()._get_peers_to_send(topics, msg_forwarder, origin, msg_id))
        pubsub = self.pubsub
        if pubsub is not None and origin == pubsub.my_id:
            for topic in topics:
                peers.update(
                    peer
                    for peer in pubsub.peer_topics.get(topic, ())
                    if peer != msg_forwarder and self._gate.is_member_anywhere(peer.to_base58())
                )
        return peers


class _GatedPubsub(Pubsub):
    """Pubsub that runs `GossipGate` on every message from another peer.

    `push_msg` is where py-libp2p handles each message, local or remote, before it marks
    it seen, delivers it and relays it; checking here means a rejected message does
    none of those. It also counts what the library would drop silently (bad signatures)
    and keeps a malformed message from raising inside libp2p's service (which would
    stop pubsub for everyone).
    """

    def __init__(
        self, host: IHost, router: GossipSub, *, gate: GossipGate, metrics: Metrics
    ) -> None:
        super().__init__(host, router, strict_signing=True)
        self._gate = gate
        self._metrics = metrics

    async def push_msg(self, msg_forwarder: ID, msg: rpc_pb2.Message) -> None:
        if msg_forwarder == self.my_id:
            await super().push_msg(msg_forwarder, msg)
            return
        try:
            if self._is_msg_seen(msg):
                self._metrics.inc("messages_duplicate_total")
                return
            self._metrics.inc("messages_received_total")
            self._metrics.inc("bytes_in_total", len(msg.data), channel="gossip")
            reason = self._reject_reason(msg)
        except Exception as exc:
            log.info("unreadable gossip message from %s: %r", msg_forwarder, exc)
            reason = "malformed"
        if reason is not None:
            self._metrics.inc("messages_rejected_total", reason=reason)
            return
        self._metrics.inc("messages_accepted_total")
        try:
            await super().push_msg(msg_forwarder, msg)
        except Exception:
            log.exception("py-libp2p failed to handle an accepted gossip message")

    def _reject_reason(self, msg: rpc_pb2.Message) -> str | None:
        try:
            signed = signature_validator(msg)
        except Exception:
            signed = False
        if not signed:
            return "bad_signature"
        try:
            self._gate.check(ID(msg.from_id).to_base58(), list(msg.topicIDs), msg.data)
        except RejectError as rejected:
            log.debug("gossip message rejected: %s", rejected)
            return rejected.reason
        return None


class _FetchError(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


async def _ask(stream: blobs.Stream, digest: bytes, limit: int) -> bytes:
    """One blob request and its answer, on a fresh stream or a kept session alike."""
    await blobs.write_request(stream, digest)
    return await blobs.read_response(stream, limit)


async def _close(stream: INetStream | None) -> None:
    if stream is None:
        return
    with trio.CancelScope(shield=True), trio.move_on_after(2.0):
        try:
            await stream.close()
        except Exception:
            await _abort(stream)


async def _abort(stream: INetStream | None) -> None:
    if stream is None:
        return
    with trio.CancelScope(shield=True), trio.move_on_after(2.0), contextlib.suppress(Exception):
        await stream.reset()


def _guard_stream_handlers(host: IHost, metrics: Metrics) -> None:
    """Make every registered protocol handler contain its own errors.

    py-libp2p runs inbound stream handlers in the connection's nursery without catching
    what they raise, so one handler that trips on a peer's garbage (pubsub's protobuf
    parser does) would take the whole node down. Wrapped, the error ends that stream.
    """
    handlers = host.get_mux().handlers
    for protocol, handler in list(handlers.items()):
        if handler is not None:
            handlers[protocol] = _guarded(str(protocol), handler, metrics)


def _guarded(
    protocol: str, handler: Callable[[INetStream], Awaitable[None]], metrics: Metrics
) -> Callable[[INetStream], Awaitable[None]]:
    async def guarded(stream: INetStream) -> None:
        try:
            await handler(stream)
        except Exception as exc:
            metrics.inc("stream_errors_total", protocol=protocol)
            log.info("%s stream failed: %r", protocol, exc)
            await _abort(stream)

    return guarded


def _forget_failed_dial(host: IHost, peer_id: ID) -> None:
    negative_cache = getattr(host.get_network(), "_negative_peer_cache", None)
    if negative_cache is not None:
        negative_cache.evict(str(peer_id))


def _parse_addr_list(body: bytes, peer_id: ID) -> list[multiaddr.Multiaddr]:
    """Dialable TCP addresses of `peer_id` from a peer-routing answer; junk is skipped."""
    # a flat array of strings: depth 1, and the length prefix already bounded the size
    entries = safe_json.loads(body, max_bytes=_MAX_ADDRS_BYTES, max_depth=1)
    if not isinstance(entries, list):
        raise ValueError("address list is not a JSON array")
    addrs: list[multiaddr.Multiaddr] = []
    for entry in entries[:_MAX_ADDRS]:
        if not isinstance(entry, str):
            continue
        try:
            addr = multiaddr.Multiaddr(entry)
            names = [proto.name for proto in addr.protocols()]
        except Exception:
            continue
        if "p2p" in names:
            if addr.get_peer_id() != peer_id.to_base58():
                continue
            addr = addr.decapsulate(multiaddr.Multiaddr(f"/p2p/{peer_id.to_base58()}"))
            names = [proto.name for proto in addr.protocols()]
        if names[:2] in (["ip4", "tcp"], ["ip6", "tcp"]) and len(names) == 2:
            addrs.append(addr)
    return addrs


def _parse_multiaddr(addr: str) -> multiaddr.Multiaddr:
    try:
        return multiaddr.Multiaddr(addr)
    except Exception as exc:
        raise P2PConfigError(f"{addr!r} is not a multiaddr: {exc}") from exc


def _parse_peer_addr(addr: str) -> PeerInfo:
    try:
        return info_from_p2p_addr(_parse_multiaddr(addr))
    except P2PConfigError:
        raise
    except Exception as exc:
        raise P2PConfigError(
            f"{addr!r} is not a full peer address (/ip4/1.2.3.4/tcp/4001/p2p/12D3Koo...): {exc}"
        ) from exc


def _is_peer_id(peer: str) -> bool:
    try:
        ID.from_base58(peer)
    except Exception:
        return False
    return True


class _StalledError(Exception):
    """A provider sent nothing for `stall_timeout` seconds."""


class _Progress:
    """Whether a blob attempt's provider has sent any byte of its answer yet, and whether
    the fetch it serves is over (then the attempt ends as soon as its provider answers)."""

    __slots__ = ("abandoned", "answered", "scope")

    def __init__(self) -> None:
        self.answered = False
        self.abandoned = False
        self.scope = trio.CancelScope()

    def arrived(self) -> None:
        self.answered = True
        if self.abandoned:
            self.scope.cancel()


class _Paced:
    """A stream whose every read and write must finish within `stall` seconds: a transfer
    may be long, but one that stops moving is over."""

    def __init__(self, stream: INetStream, stall: float, progress: _Progress | None = None) -> None:
        self._stream = stream
        self._stall = stall
        self._progress = progress
        self.stalled = False
        self.received = False  # any byte arrived

    async def read(self, n: int | None = None) -> bytes:
        data = await self._paced(self._stream.read(n))
        if data:
            self.received = True
            if self._progress is not None:
                self._progress.arrived()
        return data

    async def write(self, data: bytes) -> None:
        await self._paced(self._stream.write(data))

    async def close(self) -> None:
        await self._stream.close()

    async def reset(self) -> None:
        await self._stream.reset()

    async def _paced(self, step: Awaitable[T]) -> T:
        try:
            with trio.fail_after(self._stall):
                return await step
        except trio.TooSlowError as exc:
            self.stalled = True
            raise _StalledError(f"no progress for {self._stall:g}s") from exc
