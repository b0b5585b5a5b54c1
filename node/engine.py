"""The round engine: one node's part in every FLChain round, driven by the chain's state.

The chain is the source of truth (current round, who committed what, votes, finalization), so
a node that restarts simply reads where the task stands and carries on; the blob store keeps
models and updates across restarts. Blocking work (web3 calls, training, aggregation) runs in
worker threads; the engine's own tasks live in one trio nursery.

A round:
1. get the round's base global model (own store, else any peer) and check its digest;
2. Siren: if the previous round was finalized and our own last local model beats its model on
   our held-out validation split (local > global + C_l * local), raise an alarm on chain and
   train from our own model this round;
3. train locally, write a deterministic safetensors blob, announce it, commit its digest;
4. when the submit phase ends (everyone committed, or the window passed), fetch every
   committed update from peers, verifying each against its on-chain digest. Commit, then
   reveal: a node serves its own update only from then on (`sealed`), so nobody can build
   its update from the others' (nor copy one: the digest is taken, the blob not yet served);
5. aggregate deterministically (consensus weights from chain), vote (digest, bitmap);
6. wait for finalization and adopt the agreed model, fetching it if ours lost; if the vote
   window passes without quorum, close the round (liveness).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import trio
from libp2p.crypto.keys import KeyPair

from flchain.attacks import catalog
from flchain.contracts import (
    ContractRevert,
    FLChainClient,
    MemberStatus,
    RoundStatus,
    TaskStatus,
    bitmap,
    bitmap_indices,
    encode_loss,
    in_bitmap,
)
from flchain.contracts.types import LOSS_WITHHELD
from flchain.crypto.dp import PrivacyAccountant
from flchain.node.blobstore import BlobStore, read_local, sha256
from flchain.node.chainview import DEFAULT_RETRY, ChainView, RetryPolicy
from flchain.node.events import emit
from flchain.node.gossip import Quarantine
from flchain.node.learner import Learner, LocalUpdate, SirenRound
from flchain.node.messages import Announcement, encode
from flchain.node.metrics import Metrics, MetricSpec
from flchain.node.p2p import BlobNotFound, Delivery, P2PNode
from flchain.node.peer_proof import sign as sign_peer_proof
from flchain.node.peer_proof import verify as verify_peer_proof
from flchain.node.protocol_attacks import ProtocolAttacker
from flchain.siren_defaults import CLIENT_THRESHOLD
from flchain.taskconfig import claimed_samples

log = logging.getLogger("flchain.node.engine")
T = TypeVar("T")

PROTOCOL_ATTACKS = frozenset(catalog.PROTOCOL_ATTACKS)

ENGINE_METRICS = (
    MetricSpec("round", "gauge", "The task's current round as this node sees it."),
    MetricSpec("accuracy", "gauge", "Test accuracy of the latest agreed global model."),
    MetricSpec("members", "gauge", "Active members of the task on chain."),
    MetricSpec(
        "members_unproven",
        "gauge",
        "Members whose peer-id proof does not verify: ignored (no gossip, no blobs, their "
        "updates count as missing).",
    ),
    MetricSpec("chain_errors_total", "counter", "Chain calls that failed and were retried."),
    MetricSpec(
        "clock_nudges_total",
        "counter",
        "Blocks this node asked a chain that mines only on transactions for (evm_mine), so "
        "its clock caught up with a phase the wall clock says is over.",
    ),
    MetricSpec("updates_missing_total", "counter", "Committed updates no peer delivered."),
    MetricSpec(
        "updates_invalid_total",
        "counter",
        "Fetched updates that matched their digest but were not valid updates (wrong shape, "
        "NaN/Inf, not safetensors).",
    ),
    MetricSpec("alarms_raised_total", "counter", "Siren alarms this node raised on chain."),
    MetricSpec("round_seconds_total", "counter", "Seconds spent per round step.", ("step",)),
    MetricSpec(
        "train_cpu_seconds_total",
        "counter",
        "CPU seconds of the thread that trained (all of training's CPU where torch computes on "
        "one thread, as devnet nodes do): with the wall-clock train step it tells waiting for "
        "a core from computing.",
    ),
)


# Early fetching of announced updates (`RoundEngine.consume`): how many announcements made
# before their commit is visible are held, in all and per peer; how often they are looked at
# again; and the most one chain look-up may take.
QUARANTINE_SIZE = 64
QUARANTINE_PER_PEER = 8
CONSUME_TICK = 1.0
COMMIT_CHECK_TIMEOUT = 10.0
COMMIT_RECHECK = 2.0
# Commit, then reveal: a peer may see the submit phase close a moment before the update's
# owner does, so an update refused as not revealed yet is asked for again every REVEAL_RETRY
# seconds for at most REVEAL_GRACE seconds (then it is missing). The owner reads the chain
# itself when asked (`sealed_now`), so an honest owner answers within REVEAL_CHECK_TIMEOUT; the
# grace is what a member that commits and then withholds its update can cost everyone a round.
REVEAL_RETRY = 0.5
# A sealed request makes the owner read the round from chain (`sealed_now`): at most once per
# REVEAL_CHECK seconds a round, each read given REVEAL_CHECK_TIMEOUT seconds.
REVEAL_CHECK = 0.2
REVEAL_CHECK_TIMEOUT = 2.0
REVEAL_GRACE = 6.0
# The owner's answers that mean "ask again" once it has said not revealed (its per-peer serve
# slots may be taken by our other fetches for a moment).
REVEAL_RETRYABLE = frozenset({"not_revealed", "busy"})
# Colluding attackers (attacks/channel.py) stop waiting for each other this many seconds
# before the submit deadline of the round they train for, to leave time to commit.
COLLUSION_MARGIN = 5.0
# `members_loop`: the member list is read at most every MEMBERS_EVERY seconds (on new blocks
# only), and the mesh re-dialed at least every MESH_EVERY seconds.
MEMBERS_EVERY = 1.0
MESH_EVERY = 5.0
# A chain that refused to close a stalled round (its clock lags ours) is asked again this often.
CLOSE_RETRY = 1.0


@dataclass
class _EarlyFetch:
    """`consume`'s memory: held announcements and the committed digests seen on chain."""

    quarantine: Quarantine
    round: int = -1
    # (round, member index) -> its committed update digest, then its re-mask digest
    commits: dict[tuple[int, int], list[bytes]] = field(default_factory=dict)
    # (round, member index) -> when the chain last had nothing (more) for it: one look-up per
    # member per COMMIT_RECHECK, however many announcements that member sends
    looked: dict[tuple[int, int], float] = field(default_factory=dict)
    store_error: str | None = None


@dataclass
class EngineState:
    """What /status reports; updated by the engine, read by the status thread."""

    phase: str = "starting"
    round: int = 0
    member_index: int | None = None
    global_digest: str | None = None
    global_round: int = 0
    accuracy: float | None = None
    rounds_done: int = 0
    last_accepted: list[int] = field(default_factory=list)
    last_error: str | None = None
    task_status: str = "unknown"
    timings: dict[str, float] = field(default_factory=dict)
    accuracy_history: dict[int, float] = field(default_factory=dict)  # round -> test accuracy
    epsilon: float | None = None  # DP budget spent so far, at `dp_delta`


# Rounds whose global model the members judged (and may have alarmed on).
_JUDGED = (RoundStatus.FINALIZED, RoundStatus.REVERTED)


class RoundEngine:
    """Runs rounds for one member of one task until the task ends."""

    # Whether members may commit a second digest in a round (secure mode's `remask`): only
    # then can an announced digest other than a member's committed update still become one.
    remasks = False

    def __init__(
        self,
        *,
        client: FLChainClient,
        task_id: int,
        learner: Learner,
        p2p: P2PNode,
        store: BlobStore,
        metrics: Metrics,
        peer_id: str,
        attacks: frozenset[str] = frozenset(),
        poll_interval: float = 0.3,
        alarm_threshold: float = CLIENT_THRESHOLD,
        stop_after_round: int | None = None,
        dp_delta: float = 1e-5,
        retry: RetryPolicy = DEFAULT_RETRY,
    ) -> None:
        self.client = client
        self.task_id = task_id
        self.learner = learner
        self.p2p = p2p
        self.store = store
        self.metrics = metrics
        self.peer_id = peer_id
        self.attacks = attacks
        self.poll = poll_interval
        self.alarm_threshold = alarm_threshold
        self.stop_after_round = stop_after_round
        self.state = EngineState()
        self.view = ChainView(client, task_id, retry=retry, on_error=self._chain_error)
        # Every member takes part in every round, so the sampling rate is 1.
        self._accountant = (
            PrivacyAccountant(learner.dp_noise, 1.0, dp_delta) if learner.dp_noise > 0 else None
        )
        for spec in ENGINE_METRICS:
            metrics.register(spec)
        self._members: dict[str, int] = {}  # peer id -> member index (active members)
        self._addresses: dict[str, str] = {}  # peer id -> address
        self._peer_of: dict[int, str] = {}  # member index -> peer id
        self._member_info: dict[int, Any] = {}  # member index -> MemberInfo (any status)
        self._proven: dict[int, bool] = {}  # member index -> its peer-id proof verifies
        self._alarmed: set[int] = set()
        # Commit, then reveal: our own update digests -> (round, submit deadline), served only
        # once that round's submit phase has closed; the rounds we saw it close in.
        self._sealed: dict[bytes, tuple[int, float]] = {}
        self._revealed: set[int] = set()
        self._reveal_checked: dict[int, float] = {}  # round -> trio time of the last check
        self._reveal_locks: dict[int, trio.Lock] = {}  # round -> one reveal check at a time
        self._fetching: set[bytes] = set()  # digests `_fetch_blobs` is fetching now
        # The round being trained for: its eligible members and submit deadline (what a
        # colluding attacker needs: attacks/channel.py's ColludingTrainer asks below).
        self._training: tuple[int, float] = (0, math.inf)
        self._initial: bytes | None = None
        self._last_announcement: Announcement | None = None
        # Round events (node/events.py): the member count last reported while registering,
        # and our vote of each recent round (round -> digest), to tell whether ours won.
        self._members_told: int | None = None
        self._my_votes: dict[int, bytes] = {}
        # copy, replay, liesamples, slowloris, blobflood, deepjson, freeride, falsealarm,
        # novote (node/protocol_attacks.py)
        self.attacker = ProtocolAttacker(self, attacks) if attacks else None

    # ------------------------------------------------------------------ helpers
    async def _chain(self, fn: Callable[..., T], *args: Any) -> T:
        """A chain call under the view's retry policy (`ChainView.call`): transient trouble
        (chain down) is retried, reverts go to the caller; the node never dies because the
        chain hiccups. Never cached: reads the rounds wait on go through `self.view`."""
        return await self.view.call(fn, *args)

    def _chain_error(self, error: str) -> None:
        self.state.last_error = error
        self.metrics.inc("chain_errors_total")

    def is_member(self, peer_id: str) -> bool:
        return peer_id in self._members

    def address_of(self, peer_id: str) -> str | None:
        return self._addresses.get(peer_id)

    def round_ok(self, round_: int) -> bool:
        return self.state.round - 2 <= round_ <= self.state.round + 1

    # ------------------------------------------------------------------ commit, then reveal
    def sealed(self, digest: bytes) -> bool:
        """True while `digest` is our own update of a round whose submit phase has not
        closed (not every eligible member submitted and its deadline has not passed): the
        blob server (`P2PNode.sealed`) then answers NOT_REVEALED. Global models, other
        members' updates and revealed updates are served as before."""
        entry = self._sealed.get(digest)
        if entry is None:
            return False
        r, deadline = entry
        return not self.revealed(r) and time.time() < deadline

    async def sealed_now(self, digest: bytes) -> bool:
        """`sealed`, checked against the chain before a refusal: whoever asks has seen the
        submit phase close, often before our own head follower does, so we read the round
        ourselves, fresh (not from the per-block cache, which may predate the closing block),
        and reveal when it has closed. One read per round at a time: the members asking at
        the same moment wait for it instead of being refused, and at most one read per
        REVEAL_CHECK seconds a round. The asker's word counts for nothing; a chain that does
        not answer within REVEAL_CHECK_TIMEOUT leaves it sealed."""
        if not self.sealed(digest):
            return False
        r = self._sealed[digest][0]
        lock = self._reveal_locks.setdefault(r, trio.Lock())
        with trio.move_on_after(REVEAL_CHECK_TIMEOUT):
            async with lock:
                if not self.sealed(digest):  # the read we waited for revealed it
                    return False
                if trio.current_time() - self._reveal_checked.get(r, -math.inf) < REVEAL_CHECK:
                    return True
                self._reveal_checked = {k: t for k, t in self._reveal_checked.items() if k >= r - 2}
                self._reveal_locks = {k: v for k, v in self._reveal_locks.items() if k >= r - 2}
                try:
                    info = await self.view.call(
                        self.client.get_round, self.task_id, r, timeout=REVEAL_CHECK_TIMEOUT
                    )
                except Exception as exc:  # the serve path never fails on the chain: sealed
                    log.debug("round %d: reveal check failed: %s", r, exc)
                    return True
                finally:
                    self._reveal_checked[r] = trio.current_time()
                everyone = info.submitted & info.eligible == info.eligible
                if info.status != RoundStatus.OPEN or time.time() >= info.submit_deadline:
                    everyone = True
                if everyone:
                    self._reveal(r)
                    return False
        return self.sealed(digest)

    def revealed(self, r: int) -> bool:
        """Whether this node saw round r's submit phase close (or the task moved past r)."""
        return r in self._revealed or r < self.state.round

    def _seal(self, r: int, digest: bytes, deadline: float) -> None:
        self._sealed[digest] = (r, deadline)
        for old in [d for d, (k, _) in self._sealed.items() if k < r - 2]:
            del self._sealed[old]

    def _reveal(self, r: int) -> None:
        self._revealed.add(r)
        self._revealed -= {k for k in self._revealed if k < r - 2}

    # ------------------------------------------------------------------ colluding attackers
    def training_members(self) -> int:
        """Eligible members of the round being trained for (the attack's n)."""
        return self._training[0] or len(self._members)

    def collusion_deadline(self) -> float:
        """The latest time.time() at which a colluder stops waiting for the others."""
        return self._training[1] - COLLUSION_MARGIN

    async def refresh_members(self) -> None:
        """Read the members from chain; only those whose peer-id proof verifies become
        gossip and blob peers (peer ids are not unique on chain: see node/peer_proof.py)."""
        members = await self.view.read(self.client.members, self.task_id)
        if any(m.index not in self._proven for m in members):
            await self._check_proofs(members)
        active = {}
        addresses, peer_of = {}, {}
        for m in members:
            if not self._proven.get(m.index):
                continue
            peer = m.peer_id.decode("utf-8", errors="replace")
            peer_of[m.index] = peer
            if m.status == MemberStatus.ACTIVE and peer not in active:
                active[peer] = m.index
                addresses[peer] = m.account
        self._members, self._addresses, self._peer_of = active, addresses, peer_of
        self._member_info = {m.index: m for m in members}
        self.metrics.set("members", len(active))
        self.metrics.set("members_unproven", sum(not self._proven.get(m.index) for m in members))

    async def _check_proofs(self, members: list[Any]) -> None:
        """Verify the join proofs of members not checked yet (a proof never changes, so each
        is checked once; one whose log is not visible yet is checked again next time)."""
        proofs = await self._chain(self.client.member_proofs, self.task_id)
        chain_id = await self._chain(lambda: int(self.client.w3.eth.chain_id))
        for m in members:
            if m.index in self._proven or m.index not in proofs:
                continue
            peer = m.peer_id.decode("utf-8", errors="replace")
            ok = verify_peer_proof(
                peer, proofs[m.index], chain_id, self.client.address, self.task_id, m.account
            )
            self._proven[m.index] = ok
            if not ok:
                log.warning("member %d's peer-id proof does not verify; ignoring it", m.index)

    async def members_loop(self) -> None:
        """Keep the member list fresh and the members' libp2p mesh dialed (each pair once,
        `P2PNode.connect_mesh`), so a round's fetches find every member connected. Members
        change only in blocks, and only with the task's counts: a join adds to n_members, an
        ejection takes from n_active, a withdrawal comes with the task's settlement. So on a
        new head (at most every MEMBERS_EVERY seconds) this reads the task, from the view's
        per-block cache, and the members (a view call each, EVM work on the chain server) only
        when those changed or a member's join proof was not found yet; it dials again
        (members that did not answer) every MESH_EVERY seconds."""
        counted = None
        while True:
            seen = self.view.head
            task = await self.view.task()
            counts = (task.n_members, task.n_active, task.status, task.settled)
            unproven = any(i not in self._proven for i in self._member_info)  # logs lagged
            if counts != counted or unproven:
                await self.refresh_members()
                counted = counts
            await self.p2p.connect_mesh(self._members)
            self.metrics.set("peers_connected", len(self.p2p.connected_peers()))
            await trio.sleep(MEMBERS_EVERY)
            await self.view.wait(seen, until=time.time() + MESH_EVERY)

    async def consume(self, deliveries: trio.MemoryReceiveChannel[Delivery]) -> None:
        """Announcements are hints: fetch announced updates early, but only digests the chain
        shows committed for that round by the announcing member (junk announcements would fill
        the store), and only once the round's submit phase is over (commit, then reveal: its
        owner would refuse it before; the round's own fetch then gets it, so early fetching
        now mostly serves secure re-masks and late announcements). One announced before
        its commit is visible waits in a bounded `Quarantine` until it is committed or its
        round is over; so does one announced before its round's submit phase closed, which
        then usually needs no chain read at all. Also keeps the store's round and the peers'
        per-round blob budgets in step with the task. Nothing a peer sends can raise out of
        here."""
        early = _EarlyFetch(Quarantine(QUARANTINE_SIZE, QUARANTINE_PER_PEER))
        last_check = trio.current_time()
        while True:
            delivery: Delivery | None = None
            with trio.move_on_after(CONSUME_TICK):
                try:
                    delivery = await deliveries.receive()
                except (trio.EndOfChannel, trio.ClosedResourceError):
                    return
            self._follow_round(early)
            if delivery is not None:
                await self._consider(early, delivery.peer_id, delivery.announcement)
            if len(early.quarantine) and trio.current_time() - last_check >= CONSUME_TICK:
                last_check = trio.current_time()
                for peer, message in early.quarantine.drain():
                    await self._consider(early, peer, message)

    def _follow_round(self, early: _EarlyFetch) -> None:
        """On a new round: tag new blobs with it, restart the peers' byte budgets, forget
        old commits. Also surfaces a blob-store error (disk full) in the node's state."""
        r = self.state.round
        if r != early.round:
            early.round = r
            if r > 0:  # 0: the engine has not read the task's round yet
                self.store.set_round(r)
            self.p2p.start_round(blob_bytes=self._max_update_bytes(), members=len(self._members))
            for old in [k for k in early.commits if k[0] < r - 2]:
                del early.commits[old]
            for old in [k for k in early.looked if k[0] < r - 2]:
                del early.looked[old]
        error = self.store.last_error
        if error is not None and error != early.store_error:
            early.store_error = self.state.last_error = error

    async def _consider(self, early: _EarlyFetch, peer: str, message: Announcement) -> None:
        """Fetch, hold or drop one announcement (see `consume`)."""
        if message.kind != "update":
            self.metrics.inc("announcements_dropped_total", reason="not_update")
            return
        if self.store.has(message.digest) or message.digest in self._fetching:
            return
        if not self.revealed(message.round) and message.round >= self.state.round:
            # Commit, then reveal: nobody serves an update before its round's submit phase
            # closes, so whether the chain shows it committed can wait until then. Held so,
            # most announcements are in the store (the round fetched them) when they come
            # out, and cost no chain read: each member announces while the others still
            # train, and a read per announcement was a quarter of a round's eth_calls.
            if not early.quarantine.add(peer, message):
                self.metrics.inc("announcements_dropped_total", reason="quarantine_full")
            return
        status = await self._commit_status(early, peer, message)
        if status == "pending" and message.round >= self.state.round:
            if not early.quarantine.add(peer, message):
                self.metrics.inc("announcements_dropped_total", reason="quarantine_full")
            return
        if status != "committed":
            self.metrics.inc("announcements_dropped_total", reason="uncommitted")
            return
        # On failure it is fetched again, from anyone, when the round needs it.
        with contextlib.suppress(BlobNotFound):
            await self.p2p.fetch_blob(
                message.digest, [peer], timeout=10.0, max_size=self._max_update_bytes()
            )

    async def _commit_status(self, early: _EarlyFetch, peer: str, message: Announcement) -> str:
        """The announcement's standing on chain: "committed" when the announcing member's
        update (or secure re-mask) in that round has this digest, "pending" when the chain
        may still show it, else "other"."""
        index = self._members.get(peer)
        if index is None:
            return "other"
        key = (message.round, index)
        known = early.commits.get(key)
        if known is not None and message.digest in known:
            return "committed"
        if known is not None and (len(known) == 2 or not self.remasks):
            return "other"  # its committed digest(s) are known, and this is not one of them
        if not early.quarantine.has_room(peer):
            return "pending"  # decided without a chain call: that peer's share is used up
        if trio.current_time() - early.looked.get(key, -math.inf) < COMMIT_RECHECK:
            return "pending"  # the chain had nothing for this member a moment ago
        early.looked[key] = trio.current_time()
        with trio.move_on_after(COMMIT_CHECK_TIMEOUT):
            try:
                if known is None:
                    update = await self.view.read(
                        self.client.get_update, self.task_id, message.round, index
                    )
                    if not update.submitted:
                        return "pending"
                    known = early.commits[key] = [update.digest]
                    if update.digest == message.digest:
                        return "committed"
                    if not self.remasks:
                        return "other"
                remask = await self.view.read(
                    self.client.get_remask, self.task_id, message.round, index
                )
            except ContractRevert:
                return "other"
            if remask is None:
                return "pending"  # secure mode re-masks after the submit phase
            known.append(remask)
            return "committed" if remask == message.digest else "other"
        return "pending"  # the chain did not answer in time; look again later

    def _peer_count(self) -> int | None:
        """Connected libp2p peers, for the round events (None where the transport cannot
        say)."""
        connected = getattr(self.p2p, "connected_peers", None)
        try:
            return len(connected()) if connected is not None else None
        except Exception:  # a report, never a reason for a round to fail
            return None

    def _max_update_bytes(self) -> int:
        return 4 * self.learner.num_params + 4096

    async def _model_blob(self, digest: bytes) -> bytes:
        """The model with this digest: the store, the task's initial model, or a peer."""
        if self._initial is None:
            self._initial = await trio.to_thread.run_sync(self.learner.initial_model)
            await trio.to_thread.run_sync(self.store.put, self._initial)
        blob = await read_local(self.store, digest)  # usually the model this node voted for
        if blob is not None:
            return blob
        providers = list(self._members)
        return await self.p2p.fetch_blob(digest, providers, timeout=60.0)

    # ------------------------------------------------------------------ join
    async def ensure_member(
        self, x25519: bytes, he_key: bytes = bytes(32), *, peer_key: KeyPair
    ) -> int:
        """Join the task unless already a member; `he_key` is the digest of our Paillier
        public key blob (secure tasks), zero when we never decrypt. `peer_key` (our libp2p
        key) signs the peer-id proof that other nodes check before they talk to us."""
        try:
            index = await self._chain(self.client.member_index, self.task_id, self.client.account)
        except ContractRevert:
            log.info("joining task %d with peer id %s", self.task_id, self.peer_id)
            chain_id = await self._chain(lambda: int(self.client.w3.eth.chain_id))
            proof = sign_peer_proof(
                peer_key, chain_id, self.client.address, self.task_id, self.client.account
            )
            index = await self.view.send(
                lambda: self.client.join(
                    self.task_id, self.peer_id.encode(), x25519, he_key, peer_proof=proof
                )
            )
            log.info("joined task %d as member %d", self.task_id, index)
            emit("joined", task=self.task_id, index=index, fresh=True)
        else:
            emit("joined", task=self.task_id, index=index, fresh=False)
        self.state.member_index = index
        return index

    # ------------------------------------------------------------------ main loop
    async def run(self) -> None:
        """Follow the task round by round until it finishes (or `stop_after_round`)."""
        me = self.state.member_index
        assert me is not None, "call ensure_member first"
        while True:
            seen = self.view.head  # before the reads: a block during them wakes the waits
            task = await self.view.task()
            self.state.task_status = task.status.name.lower()
            self.state.global_round = task.global_round
            if task.status in (TaskStatus.FINISHED, TaskStatus.CLOSED):
                # global_digest names the model this node holds (set by `_adopt`), never just
                # the chain's: a node that could not fetch the final model must not look as if
                # it had it. "done" comes after the adoption, so whoever waits for it (`devnet
                # up`'s summary) reads the final accuracy.
                await self._adopt(task.global_digest)
                if self.attacker is not None:  # falsealarm: the last round's alarm too
                    await self.attacker.at_task_end(task)
                self.state.phase = "done"
                emit(
                    "done",
                    task=self.task_id,
                    status=task.status,
                    accuracy=self.state.accuracy,
                    rounds=self.state.rounds_done,
                    digest=self.state.global_digest,
                )
                return
            if task.status == TaskStatus.REGISTERING:
                self.state.phase = "waiting for members"
                joined = getattr(task, "n_members", None)
                if joined != self._members_told:
                    self._members_told = joined
                    emit("waiting", members=joined, min_members=getattr(task, "min_members", None))
                await self.view.wait(seen)
                continue
            r = task.current_round
            self.state.round = r
            info = await self.view.round(r)
            if info.status != RoundStatus.OPEN or me not in bitmap_indices(info.eligible):
                self.state.phase = "waiting for round"
                await self.view.wait(seen)
                continue
            if await self._maybe_alarm(task):  # ours may have reverted the last round
                info = await self.view.round(r)
                if info.status != RoundStatus.OPEN:
                    continue
            await self.run_round(r)
            if self.stop_after_round is not None and r >= self.stop_after_round:
                return

    async def run_round(self, r: int) -> None:
        me = self.state.member_index
        assert me is not None
        timings: dict[str, float] = {}
        info = await self.view.round(r)
        try:
            base = await self._model_blob(info.base_digest)
        except BlobNotFound as exc:
            self.state.last_error = str(exc)
            await trio.sleep(self.poll)  # the peers' answer: no block marks it
            return
        # The round's bitmap says whether we committed; our commit itself is read only then
        # (a restart mid-round), not by every member every round.
        committed = in_bitmap(info.submitted, me)
        everyone = info.submitted & info.eligible == info.eligible
        submit_open = not everyone and time.time() < info.submit_deadline
        if committed and submit_open:  # restarted after committing: still sealed
            mine = await self.view.read(self.client.get_update, self.task_id, r, me)
            self._seal(r, mine.digest, info.submit_deadline)
        self._training = (len(bitmap_indices(info.eligible)), info.submit_deadline)
        if not committed and not submit_open:
            # Back too late to commit (e.g. restarted in the vote phase): still fetch, check
            # and vote on the others' updates; training now would be wasted.
            log.info("round %d: the submit phase is over; joining the vote", r)
            emit("late", r)
        if not committed and submit_open:
            # copy, replay and freeride take the commit over (they train nothing)
            taken = self.attacker is not None and await self.attacker.commit_instead(r, info)
            if not taken:
                await self._train_and_commit(r, info, base, timings)
        # ---- wait for the submit phase to end
        self.state.phase = "waiting for updates"
        t0 = time.perf_counter()
        while True:
            seen = self.view.head
            info = await self.view.round(r)
            if info.status == RoundStatus.FINALIZED:
                # The others finalized before we looked again: our vote is still owed (the
                # contract takes it late, until the next round ends, and fines its absence).
                break
            if info.status != RoundStatus.OPEN:
                self._reveal(r)
                return
            everyone = info.submitted & info.eligible == info.eligible
            if everyone or time.time() >= info.submit_deadline:
                break
            await self.view.wait(seen, until=info.submit_deadline)
        self._reveal(r)  # the submit phase is over: our update may be served now
        timings["wait"] = time.perf_counter() - t0
        await self._aggregate_and_vote(r, info, base, timings)
        await self._await_end(r, timings)
        self.state.timings = timings
        for name, seconds in timings.items():
            self.metrics.inc("round_seconds_total", seconds, step=name)

    async def _train_timed(self, train: Callable[..., T], *args: Any) -> T:
        """`train(*args)` in a worker thread, its CPU time counted (`train_cpu_seconds_total`)."""

        def timed() -> tuple[T, float]:
            started = time.thread_time()
            result = train(*args)
            return result, time.thread_time() - started

        result, cpu = await trio.to_thread.run_sync(timed)
        self.metrics.inc("train_cpu_seconds_total", cpu)
        return result

    async def _train_and_commit(
        self, r: int, info: Any, base: bytes, timings: dict[str, float]
    ) -> None:
        """Train on the round's base model, keep the update blob, commit its digest, gossip."""
        self.state.phase = "training"
        t0 = time.perf_counter()
        before = self.learner.siren_state()
        update = await self._train_timed(self.learner.train, base, r)
        if self.attacker is not None:  # spam: a well-formed blob full of NaN
            update = self.attacker.committed_update(r, update)
        timings["train"] = time.perf_counter() - t0
        if not await self._commit(r, info, update, timings):
            # An update that never reached the chain (the round was aborted by alarms, or its
            # window closed) leaves no trace: Siren's next check and training start from the
            # state before it, as the simulation's peers never trained in such a round.
            self.learner.restore_siren_state(before)

    async def _commit(
        self, r: int, info: Any, update: LocalUpdate, timings: dict[str, float]
    ) -> bool:
        """Store `update.blob`, commit its digest on chain and announce it; False if refused."""
        t0 = time.perf_counter()
        digest = sha256(update.blob)
        # A withholder commits but keeps no blob to serve; an honest node commits only what
        # it could store (a full disk would otherwise make it a withholder).
        keeps = self.attacker is None or self.attacker.keeps_blob()
        if keeps and await self._kept(r, update.blob) is None:
            return False
        self._seal(r, digest, info.submit_deadline)
        self.state.phase = "committing"
        try:
            await self.view.send(
                self.client.submit,
                self.task_id,
                r,
                digest,
                claimed_samples(update.samples, self.learner.dp_noise)
                if self.attacker is None
                else self.attacker.claimed_samples(update.samples),
                info.base_round,
                self._loss_on_chain(update.loss),
            )
        except ContractRevert as exc:  # e.g. the window closed while we trained
            log.info("round %d: submit refused (%s); joining the vote", r, exc)
            emit("refused", r, level=logging.WARNING, what="submit", reason=str(exc))
            timings["commit"] = time.perf_counter() - t0
            return False
        timings["commit"] = time.perf_counter() - t0
        emit(
            "committed",
            r,
            digest=digest,
            size=len(update.blob),
            samples=update.samples,
            train_s=timings.get("train"),
            peers=self._peer_count(),
        )
        if self._accountant is not None:
            self._accountant.step()
            self.state.epsilon = self._accountant.epsilon
        t0 = time.perf_counter()
        await self._announce("update", r, digest, len(update.blob))
        if self.attacker is not None:  # spam: junk gossip after the announcement
            await self.attacker.after_commit(r)
        timings["gossip"] = time.perf_counter() - t0
        return True

    def _loss_on_chain(self, loss: float) -> int:
        """The training loss as committed: withheld (`LOSS_WITHHELD`) while DP is on, since
        an unnoised statistic of our data on chain would escape the DP guarantee."""
        if self.learner.dp_noise > 0:
            return LOSS_WITHHELD
        return encode_loss(loss)

    async def _kept(self, r: int, blob: bytes) -> bytes | None:
        """Store a blob this node is about to commit to; its digest, or None (and the reason
        in /status) when the store refused it (disk full, over budget): nobody could fetch
        it from us."""
        digest = await trio.to_thread.run_sync(self.store.put, blob)  # fsynced: a thread
        if self.store.has(digest):
            return digest
        error = f"round {r}: not committing, blob not stored: {self.store.last_error}"
        self.state.last_error = error
        log.warning("%s", error)
        return None

    async def _aggregate_and_vote(
        self, r: int, info: Any, base: bytes, timings: dict[str, float]
    ) -> None:
        """Fetch every committed update, aggregate with the task's rule, vote."""
        self.state.phase = "fetching"
        t0 = time.perf_counter()
        if any(i not in self._proven for i in bitmap_indices(info.submitted)):
            await self.refresh_members()
        # A member without a valid peer-id proof is ignored: its update counts as missing.
        indices = [i for i in bitmap_indices(info.submitted) if self._proven.get(i)]
        keys = [(r, i) for i in indices]
        updates = await self._chain(self.client.get_updates, self.task_id, keys)
        commits = {i: u.digest for i, u in zip(indices, updates, strict=True)}
        blobs = await self._fetch_blobs(r, commits, info.vote_deadline, self._max_update_bytes())
        timings["fetch"] = time.perf_counter() - t0
        emit(
            "fetched",
            r,
            got=len(blobs),
            of=len(commits),
            missing=sorted(set(commits) - set(blobs)),
            seconds=timings["fetch"],
        )
        if await self._voted(r):
            return
        self.state.phase = "aggregating"
        t0 = time.perf_counter()
        weights = await self.view.read(self.client.consensus_weights, self.task_id, r)
        aggregate = functools.partial(self.learner.aggregate, base, blobs, dict(enumerate(weights)))
        config = getattr(self.learner, "config", None)
        if config is not None and config.rule == "siren":  # its server side reads the chain
            aggregate = functools.partial(aggregate, siren=await self._siren_round(r, info))
        outcome = await trio.to_thread.run_sync(aggregate)
        if outcome.invalid:
            self.metrics.inc("updates_invalid_total", len(outcome.invalid))
        timings["aggregate"] = time.perf_counter() - t0
        await self._cast_vote(r, info, outcome.model_blob, outcome.accepted, timings)

    async def _voted(self, r: int) -> bool:
        """Whether our vote in round r is on chain, from the round's `voted` bitmap: every
        member reads the same round at the same block (one EVM run for all, `ChainView`),
        where a `get_vote` of its own was one run per member."""
        me = self.state.member_index
        return me is not None and in_bitmap((await self.view.round(r)).voted, me)

    async def _siren_round(self, r: int, info: Any) -> SirenRound:
        """Siren's server-side state for round r, read from the chain so that every honest
        node derives the same (`Learner.aggregate`):
        - the lineage: the finalized rounds that built the round's base model, found by
          following base_round back to the initial model (reverted and failed rounds are
          not in it), with who submitted and who was accepted in each: the credits and the
          rollback state are replayed from them (`aggregation.siren.replay`);
        - the global models of t-1 and t-2 along it (what a rollback applies the update to);
        - the alarms: those raised on the latest round whose model the members judged (the
          base round, or the round their alarms just reverted on chain: the attacker is still
          among this round's members), each counting when the member's AlarmRaised event
          comes before its UpdateCommitted event of round r. Honest nodes alarm before they
          train (`_maybe_alarm`), and an alarm raised after the commit cannot make honest
          nodes that read the chain at different moments disagree."""
        rounds = {}
        if r > 1:
            infos = await self._chain(self.client.get_rounds, self.task_id, list(range(1, r)))
            rounds = {ri.round: ri for ri in infos}
        chain = []
        b = info.base_round
        while b >= 1 and b in rounds:
            chain.append(rounds[b])
            b = rounds[b].base_round
        chain.reverse()
        history = []
        for ri in reversed(chain[-2:]):  # the models of t-1, then t-2
            try:
                history.append(await self._model_blob(ri.base_digest))
            except BlobNotFound:
                break  # no rollback beyond what we can fetch (the vote says if others differ)
        task = await self._chain(self.client.get_task, self.task_id)
        judged = max(
            (k for k, ri in rounds.items() if ri.status in _JUDGED), default=info.base_round
        )
        alarms: set[int] = set()
        if judged >= 1:
            raised = await self._chain(self._positions, "AlarmRaised", judged)
            if raised:
                commits = await self._chain(self._positions, "UpdateCommitted", r)
                alarms = {m for m, at in raised.items() if m in commits and at < commits[m]}
        return SirenRound(
            alarms=frozenset(alarms),
            submitted=tuple(bitmap_indices(info.submitted)),
            lineage=tuple(
                (tuple(bitmap_indices(ri.submitted)), tuple(bitmap_indices(ri.accepted)))
                for ri in chain
            ),
            history=tuple(history),
            rounds=max(1, int(task.max_rounds)),
        )

    def _positions(self, event: str, round_: int) -> dict[int, tuple[int, int]]:
        """Member -> (block, log index) of its first `event` log of round `round_`."""
        out: dict[int, tuple[int, int]] = {}
        for ev in self.client.events(self.task_id, event=event):
            if int(ev["args"]["round"]) == round_:
                out.setdefault(int(ev["args"]["member"]), (ev["block_number"], ev["log_index"]))
        return out

    async def _cast_vote(
        self,
        r: int,
        info: Any,
        model_blob: bytes,
        accepted_members: list[int],
        timings: dict[str, float],
    ) -> None:
        digest = await trio.to_thread.run_sync(self.store.put, model_blob)
        accepted = bitmap(accepted_members)
        self.state.last_accepted = list(accepted_members)
        if self.attacker is not None and not self.attacker.casts_vote(r):  # novote
            return
        if self.attacker is not None:  # badvote: a random digest, every submitter accepted
            digest, accepted = self.attacker.ballot(info, digest, accepted)
        self.state.phase = "voting"
        t0 = time.perf_counter()
        if await self._vote(r, digest, accepted):
            self._my_votes = {k: v for k, v in self._my_votes.items() if k >= r - 2}
            self._my_votes[r] = digest
            emit(
                "voted",
                r,
                digest=digest,
                accepted=bitmap_indices(accepted),
                # hand-built round records (tests) may lack what only the report reads
                submitted=len(bitmap_indices(getattr(info, "submitted", 0))),
                quorum_bps=getattr(info, "quorum_bps", None),
            )
        timings["vote"] = time.perf_counter() - t0
        # Not announced on gossip: the chain's Voted event tells every member already, no
        # member acts on a vote announcement, and gossipsub's mesh in a small task is nearly
        # every pair, so each member read each announcement about eight times; the votes'
        # half of that was a fifth of a node's CPU per round at N = 10.

    async def _await_end(self, r: int, timings: dict[str, float]) -> None:
        """Wait for the round to finalize (adopt its model) or fail; close it if it stalls."""
        self.state.phase = "waiting for quorum"
        t0 = time.perf_counter()
        while True:
            seen = self.view.head
            info = await self.view.round(r)
            if info.status == RoundStatus.FINALIZED:
                await self._adopt(info.global_digest)
                await self._retain(r, info.global_digest)
                if self.state.accuracy is not None:
                    self.state.accuracy_history[r] = self.state.accuracy
                self.state.rounds_done += 1
                adopted = self.state.global_digest == "0x" + info.global_digest.hex()
                mine = self._my_votes.get(r)
                emit(
                    "finalized",
                    r,
                    digest=info.global_digest,
                    accuracy=self.state.accuracy if adopted else None,
                    accepted=bitmap_indices(info.accepted),
                    ours=None if mine is None else mine == info.global_digest,
                )
                break
            if info.status != RoundStatus.OPEN:
                log.info("round %d ended %s", r, info.status.name)
                emit(
                    "ended",
                    r,
                    level=logging.WARNING if info.status == RoundStatus.FAILED else logging.INFO,
                    status=info.status,
                )
                break
            stall = info.vote_deadline + 1
            if time.time() <= stall:
                await self.view.wait(seen, until=stall)
                continue
            try:
                await self.view.send(self.client.close_round, self.task_id, r)
            except ContractRevert as exc:
                log.debug("close_round(%d): %s", r, exc)
                await self._keep_time()
                await self.view.wait(seen, until=time.time() + CLOSE_RETRY)
        timings["finalize"] = time.perf_counter() - t0

    async def _retain(self, r: int, digest: bytes) -> None:
        """After round r is finalized: pin its global model (kept for good) and delete the
        blobs of rounds before the store's last `keep_rounds`."""
        if digest != bytes(32) and self.store.has(digest):
            await trio.to_thread.run_sync(self.store.pin, digest)
        await trio.to_thread.run_sync(self.store.prune, r)

    async def _vote(self, r: int, digest: bytes, accepted: int) -> bool:
        """Vote once the chain agrees the vote phase started (its clock may lag ours);
        True when the vote went on chain."""
        while True:
            seen = self.view.head
            try:
                await self.view.send(self.client.vote, self.task_id, r, digest, accepted)
                return True
            except ContractRevert as exc:
                info = await self.view.round(r)
                # The vote is sent without an estimate, so a refusal is a mined failed vote,
                # its reason replayed on the state before: where the endpoint cannot replay
                # it, the phase is as likely a cause as any, and a retry is cheap.
                unknown = "reason unavailable" in exc.reason
                if not ("phase" in exc.reason or unknown) or info.status != RoundStatus.OPEN:
                    log.info("round %d: vote refused (%s)", r, exc)
                    # once the round ended without our vote (quorum reached), not a problem
                    level = logging.INFO if info.status != RoundStatus.OPEN else logging.WARNING
                    emit("refused", r, level=level, what="vote", reason=str(exc))
                    return False
                if time.time() > info.vote_deadline:
                    emit("refused", r, level=logging.WARNING, what="vote", reason="too late")
                    return False
                await self._keep_time()  # the chain's clock may stand still (automine)
                await self.view.wait(seen, until=time.time() + self.poll)

    async def _keep_time(self) -> None:
        """Our wall clock says a phase is over and the chain refused because its clock says
        otherwise: ask a chain that mines only on transactions for a block
        (`FLChainClient.keep_time`), or the round waits for a transaction nobody sends."""
        keep_time = getattr(self.client, "keep_time", None)
        if keep_time is not None and await self.view.send(keep_time, time.time()):
            self.metrics.inc("clock_nudges_total")

    async def _fetch_blobs(
        self, r: int, digests: dict[int, bytes], deadline: float, max_size: int
    ) -> dict[int, bytes]:
        """Fetch each member's committed blob (member index -> digest) from that member first,
        then from anyone; every blob is checked against its digest. Missing ones are left out.
        A blob refused as not revealed yet (its owner has not seen the submit phase close), or
        not found anywhere yet (the others fetch it at the same moment), is asked for again for
        up to REVEAL_GRACE seconds."""
        blobs: dict[int, bytes] = {}
        budget = max(5.0, min(60.0, deadline - time.time() - 2.0))
        end = trio.current_time() + budget
        grace_end = trio.current_time() + min(REVEAL_GRACE, budget)

        async def fetch(index: int) -> None:
            provider = self._peer_of.get(index)
            providers = [provider] if provider else []
            digest = digests[index]
            sealed = False  # its owner refused it as not revealed yet: ask only the owner
            self._fetching.add(digest)
            try:
                while True:
                    try:
                        blobs[index] = await self.p2p.fetch_blob(
                            digest,
                            providers,
                            timeout=max(0.1, end - trio.current_time()),
                            max_size=max_size,
                            try_connected=provider is None or not sealed,
                        )
                        return
                    except BlobNotFound as exc:
                        sealed = sealed or "not_revealed" in exc.attempts.values()
                        why = {exc.attempts.get(provider)} if provider else exc.attempts.values()
                        # Right after the reveal the other members are fetching it too: one
                        # that said not_found a moment ago may hold it now, so ask everyone
                        # again within the grace (the owner alone while it says not revealed).
                        again = not sealed or bool(REVEAL_RETRYABLE & set(why))
                        if again and trio.current_time() + REVEAL_RETRY < grace_end:
                            await trio.sleep(REVEAL_RETRY)
                            continue
                        self.metrics.inc("updates_missing_total")
                        log.info("round %d: blob of member %d unavailable: %s", r, index, exc)
                        return
            finally:
                self._fetching.discard(digest)

        async with trio.open_nursery() as nursery:
            for index in digests:
                nursery.start_soon(fetch, index)
        return blobs

    async def _adopt(self, digest: bytes) -> None:
        if digest == bytes(32):
            return
        try:
            blob = await self._model_blob(digest)
        except BlobNotFound as exc:
            self.state.last_error = f"cannot fetch the agreed model: {exc}"
            return
        self.state.global_digest = "0x" + digest.hex()
        self.state.accuracy = await trio.to_thread.run_sync(self.learner.test_accuracy, blob)
        self.metrics.set("accuracy", self.state.accuracy)
        self.metrics.set("round", self.state.round)

    async def _maybe_alarm(self, task: Any) -> bool:
        """Siren's client side (`aggregation.siren`, as in the reference's `agents.py`): alarm
        on the latest finalized round if our own previous local model beats its model on our
        held-out validation split by more than C_l times its own accuracy; after an alarm we
        train from our own model (`Learner.siren_alarm`). An update attacker alarms every
        round without looking (`attacks.always_alarms`, the reference's malicious clients).
        Every node plays the reference's server with these alarms (`_siren_round`); on top,
        enough alarm stake (the task's alarm_bps) reverts the finalized round on chain.
        True when an alarm of ours went on chain (it may have aborted the round running)."""
        hold_out = getattr(self.learner, "hold_out_validation", None)
        if task.alarm_window != 0 and hold_out is not None:
            # before the task's first training, so the validation split is never trained on
            await trio.to_thread.run_sync(hold_out)
        prev = task.global_round
        if task.alarm_window == 0 or prev == 0 or prev in self._alarmed:
            return False
        self._alarmed.add(prev)
        if self.attacker is not None and await self.attacker.alarm_instead(prev, task):
            return True  # falsealarm: raised (or refused) whatever the model is
        if catalog.always_alarms(getattr(self.learner, "attack", None)):
            alarm = True  # an update attacker cries wolf every round, as in Siren's reference
        else:
            try:
                blob = await self._model_blob(task.global_digest)
            except BlobNotFound:
                return False
            check = self.learner.siren_alarm
            alarm = await trio.to_thread.run_sync(check, blob, self.alarm_threshold)
        if alarm:
            try:
                await self.view.send(self.client.raise_alarm, self.task_id, prev)
                self.metrics.inc("alarms_raised_total")
                emit("alarm", prev, digest=task.global_digest)
                await self._announce("alarm", prev, task.global_digest, 0)
                return True
            except ContractRevert as exc:
                log.info("alarm on round %d refused: %s", prev, exc)
        return False

    async def _announce(self, kind: str, r: int, digest: bytes, size: int) -> None:
        message = Announcement(
            kind=kind,
            task=self.task_id,
            round=r,
            digest=digest,
            sender=self.client.account,
            size=size,
        )
        try:
            await self.p2p.announce(message)
            self._last_announcement = message
        except Exception as exc:  # gossip is a hint; the chain is what counts
            log.info("announce failed: %s", exc)

    async def _spam(self, r: int) -> None:
        """The `spam` protocol attack: oversize, malformed and replayed messages."""
        junk = [
            os.urandom(2 * 1024 * 1024),
            b"{not json",
            b'{"v":1,"kind":"update","task":%d,"round":%d}' % (self.task_id, r),
            random.randbytes(512),
        ]
        for data in junk:
            try:
                await self.p2p.publish_raw(self.task_id, data)
            except Exception as exc:
                log.debug("spam publish failed: %s", exc)
        if self._last_announcement is not None:  # an exact replay of an earlier message
            with contextlib.suppress(Exception):
                await self.p2p.publish_raw(self.task_id, encode(self._last_announcement))
