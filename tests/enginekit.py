"""Fakes for running real round engines in one trio run, in milliseconds per step.

* `FakeChain`: the FLChain contract's round protocol in memory (contracts/FLChainCore.vy,
  FLChain.vy), as the engine sees it through `FLChainClient`: tasks, joins, the submit and
  vote phases, quorum, finalization, `close_round`, reputations (with ejection), late votes,
  consensus weights, and secure mode's decryptor, `remask` and `publish_sum`. Every
  transaction mines a block, as anvil's automine does, and the same revert reasons come back
  as `ContractRevert`. Money (stakes beyond the join check, rewards, payouts) and alarm
  reverts are not modelled: the engine's rounds do not depend on them.
* `FakeChain.client(account)`: the per-node facade with the client methods the engines
  call, and a `w3.eth` with blocks and block filters, so `ChainView.follow` runs unchanged.
* `FakeNetwork` / `FakeP2P`: the part of `P2PNode` the engine uses. Announcements go through
  the real `GossipGate` of every receiving node; blobs are served from the provider's real
  `BlobStore` after the checks `P2PNode._answer` makes (membership, commit-then-reveal), and
  re-hashed by the fetcher. Hooks cut a peer off (`drop`), make it serve nothing
  (`withhold`) or slow what it publishes (`slow_uplink`).
* `Node`: one member (engine, chain client, P2P, blob store), subscribed, joined and run as
  `flchain node run` wires them (node/daemon.py).

tests/test_enginekit.py runs one scripted task on FakeChain and on the real contract side
by side and compares every view and revert reason, so the fake is checked, not trusted.

Block timestamps follow the wall clock, because the engine compares deadlines with
`time.time()`. In whole seconds by default, as on chain; `whole_seconds=False` gives
fractional timestamps so tests can use sub-second windows (the engine never assumes integers).
"""

from __future__ import annotations

import functools
import hashlib
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import trio
from eth_utils import to_checksum_address
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.peer.id import ID
from web3.exceptions import Web3RPCError

from flchain.contracts import ContractRevert
from flchain.contracts.client import TxResult
from flchain.contracts.types import (
    MAX_MEMBERS,
    MemberInfo,
    MemberStatus,
    RoundInfo,
    RoundStatus,
    TaskInfo,
    TaskParams,
    TaskStatus,
    UpdateCommit,
    Vote,
)
from flchain.node.blobstore import BlobStore, as_digest, read_local, sha256
from flchain.node.chainview import HeadFollowing, RetryPolicy
from flchain.node.engine import RoundEngine
from flchain.node.gossip import GossipGate, RejectError, TaskPolicy, topic_for
from flchain.node.messages import Announcement, encode
from flchain.node.metrics import Metrics
from flchain.node.p2p import BlobNotFound, Delivery, P2PConfig, P2PError

# The contract's constants (contracts/FLChainCore.vy).
BPS = 10_000
REP_UNIT, REP_MAX = 1000, 2000
REP_ACCEPT, REP_REJECT, REP_BAD_VOTE = 20, 50, 50
REP_NO_SUBMIT, REP_NO_VOTE, REP_NO_LATE_VOTE, REP_ALARM = 50, 100, 50, 100
ALL_ONES = (1 << MAX_MEMBERS) - 1
ZERO = bytes(32)
CHAIN_ID = 31337
CONTRACT = to_checksum_address("0x" + "fc" * 20)

# Chain calls retried fast; heads followed often: the engine's waits wake within ~20 ms.
FAST_RETRY = RetryPolicy(first=0.01, largest=0.05, read_timeout=5.0, send_timeout=5.0)
FAST_HEADS = HeadFollowing(interval=0.02)


def bits(indices: Iterable[int]) -> int:
    out = 0
    for i in indices:
        out |= 1 << i
    return out


def _popcount(x: int) -> int:
    return bin(x).count("1")


def _nth_bit(x: int, n: int) -> int:
    """Index of the n-th (from 0) set bit of x, ascending (the contract's `_nth_bit`)."""
    return [i for i in range(MAX_MEMBERS) if x >> i & 1][n]


def _require(ok: bool, reason: str) -> None:
    if not ok:
        raise ContractRevert(reason)


# ---------------------------------------------------------------------------- the chain


@dataclass
class _Member:
    account: str
    peer_id: bytes
    x25519: bytes
    he_key: bytes
    since: int
    status: MemberStatus = MemberStatus.ACTIVE
    rep: int = REP_UNIT


@dataclass
class _Round:
    start: float
    base_digest: bytes
    base_round: int
    eligible: int
    total_rep: int
    quorum_bps: int
    status: RoundStatus = RoundStatus.OPEN
    unsubmitted: int = ALL_ONES
    notvoted: int = 0
    late: int = 0
    accepted: int = 0
    global_digest: bytes = ZERO
    finalized_at: float = 0
    alarmed: int = 0
    alarm_weight: int = 0
    remasked: int = 0
    sum_digest: bytes = ZERO
    commits: dict[int, bytes] = field(default_factory=dict)
    remasks: dict[int, bytes] = field(default_factory=dict)
    votes: dict[int, tuple[bytes, int]] = field(default_factory=dict)
    tally: dict[tuple[bytes, int], int] = field(default_factory=dict)


@dataclass
class _Task:
    task_id: int
    owner: str
    params: TaskParams
    status: TaskStatus = TaskStatus.REGISTERING
    good_digest: bytes = ZERO
    good_round: int = 0
    current: int = 0
    round_start: float = 0
    members: list[_Member] = field(default_factory=list)
    by_account: dict[str, int] = field(default_factory=dict)
    active: int = 0
    keyed: int = 0
    total_rep: int = 0
    slashed: int = 0
    rounds: dict[int, _Round] = field(default_factory=dict)
    # digest -> (samples, base round, loss): the contract's `_commit_meta`, once per task
    commit_meta: dict[bytes, tuple[int, int, int]] = field(default_factory=dict)


class FakeChain:
    """FLChain's round protocol in memory; see the module docstring. Thread-safe: engines
    call their client from worker threads."""

    def __init__(
        self, *, clock: Callable[[], float] = time.time, whole_seconds: bool = True
    ) -> None:
        self.clock = clock
        self.whole_seconds = whole_seconds
        self.address = CONTRACT
        self.chain_id = CHAIN_ID
        self.block_number = 0
        self.timestamps: list[float] = [self._now()]  # block number -> timestamp
        self.tasks: dict[int, _Task] = {}
        self.events: list[dict[str, Any]] = []
        self.transactions = 0
        self._filters: dict[str, list[bytes]] = {}
        self._accounts = 0
        self._lock = threading.RLock()
        self._log: list[tuple[str, dict[str, Any]]] = []  # the running transaction's events

    # ------------------------------------------------------------------ accounts, clients
    def new_account(self) -> str:
        with self._lock:
            self._accounts += 1
            return to_checksum_address(f"0x{self._accounts:040x}")

    def client(self, account: str | None = None) -> FakeClient:
        return FakeClient(self, account or self.new_account())

    # ------------------------------------------------------------------ blocks
    def _now(self) -> float:
        t = self.clock()
        return int(t) if self.whole_seconds else t

    def timestamp(self) -> float:
        """The latest block's timestamp."""
        with self._lock:
            return self.timestamps[-1]

    def _transact(self, fn: Callable[[float], Any]) -> Any:
        """Run one transaction in a new block at the clock's time; a revert mines nothing
        (the client's gas estimate reverts before anything is sent)."""
        with self._lock:
            ts = max(self.timestamps[-1], self._now())
            self._log = []
            value = fn(ts)
            self.block_number += 1
            self.timestamps.append(ts)
            self.transactions += 1
            tx_hash = "0x" + hashlib.sha256(b"tx%d" % self.block_number).hexdigest()
            events = []
            for i, (name, args) in enumerate(self._log):
                events.append(
                    {
                        "event": name,
                        "block_number": self.block_number,
                        "tx_hash": tx_hash,
                        "log_index": i,
                        "args": args,
                    }
                )
            self.events += events
            block_hash = hashlib.sha256(b"block%d" % self.block_number).digest()
            for pending in self._filters.values():
                pending.append(block_hash)
            result = TxResult(tx_hash, self.block_number, 0, 0, events)
            return result if value is None else value

    def mine(self) -> None:
        """An empty block (as `evm_mine`): wakes every head follower."""
        self._transact(lambda ts: None)

    def _emit(self, name: str, **args: Any) -> None:
        self._log.append((name, args))

    def new_filter(self) -> str:
        with self._lock:
            filter_id = f"0x{len(self._filters) + 1:x}"
            self._filters[filter_id] = []
            return filter_id

    def filter_changes(self, filter_id: str) -> list[bytes]:
        with self._lock:
            if filter_id not in self._filters:
                raise Web3RPCError("filter not found")
            changes, self._filters[filter_id] = self._filters[filter_id], []
            return changes

    # ------------------------------------------------------------------ state checks
    def _task(self, task_id: int) -> _Task:
        _require(task_id in self.tasks, "no task")
        return self.tasks[task_id]

    def _running(self, task_id: int, r: int) -> _Task:
        t = self._task(task_id)
        _require(t.status != TaskStatus.REGISTERING, "not started")
        _require(t.status == TaskStatus.RUNNING, "closed task")
        _require(r == t.current, "wrong round")
        return t

    def _active_member(self, t: _Task, account: str) -> int:
        index = t.by_account.get(account)
        _require(index is not None, "not member")
        assert index is not None
        status = t.members[index].status
        _require(status != MemberStatus.EJECTED, "ejected")
        _require(status == MemberStatus.ACTIVE, "withdrawn")
        return index

    def _eligible(self, t: _Task, account: str, r: int) -> int:
        index = self._active_member(t, account)
        _require(t.members[index].since <= r, "not eligible")
        return index

    def _checked_round(self, task_id: int, r: int) -> tuple[_Task, _Round]:
        t = self._task(task_id)
        _require(1 <= r <= t.current, "wrong round")
        return t, t.rounds[r]

    def _check_index(self, t: _Task, index: int) -> None:
        _require(0 <= index < len(t.members), "no member")

    # ------------------------------------------------------------------ transactions
    def create_task(self, sender: str, p: TaskParams) -> int:
        def tx(ts: float) -> int:
            _require(p.config_digest != ZERO and p.initial_digest != ZERO, "bad digest")
            _require(1 <= p.min_members <= p.max_members <= MAX_MEMBERS, "bad members")
            _require(p.submit_window > 0 and p.vote_window > 0, "bad window")
            _require(BPS // 2 < p.quorum_bps <= BPS, "bad quorum")
            _require(p.quorum_bps <= p.alarm_bps <= BPS, "bad alarm threshold")
            _require(p.max_rounds >= 1, "bad max rounds")
            _require(p.rep_floor < REP_UNIT, "bad floor")
            if p.reward or p.allowlist:
                raise NotImplementedError("FakeChain models neither rewards nor allowlists")
            task_id = len(self.tasks) + 1
            self.tasks[task_id] = _Task(task_id, sender, p, good_digest=p.initial_digest)
            self._emit("TaskCreated", task_id=task_id, owner=sender)
            return task_id

        return self._transact(tx)

    def join(
        self,
        sender: str,
        task_id: int,
        peer_id: bytes,
        x25519: bytes,
        he_key: bytes,
        peer_proof: bytes,
        value: int | None,
    ) -> int:
        def tx(ts: float) -> int:
            t = self._task(task_id)
            _require(t.status <= TaskStatus.RUNNING, "closed task")
            _require(sender not in t.by_account, "already member")
            index = len(t.members)
            _require(index < t.params.max_members, "task full")
            _require((t.params.stake if value is None else value) == t.params.stake, "wrong stake")
            _require(len(peer_id) > 0, "bad peer id")
            _require(x25519 != ZERO, "bad key")
            since = t.current + 1
            t.members.append(_Member(sender, bytes(peer_id), x25519, he_key, since))
            t.by_account[sender] = index
            if he_key != ZERO:
                t.keyed |= 1 << index
            t.active |= 1 << index
            t.total_rep += REP_UNIT
            self._emit(
                "MemberJoined",
                task_id=task_id,
                account=sender,
                member=index,
                peer_id=bytes(peer_id),
                x25519=x25519,
                since_round=since,
                he_key=he_key,
                peer_proof=bytes(peer_proof),
            )
            n_active = _popcount(t.active)
            if t.status == TaskStatus.REGISTERING and n_active >= t.params.min_members:
                t.status = TaskStatus.RUNNING
                self._open_round(t, 1, ts)
            return index

        return self._transact(tx)

    def submit(
        self,
        sender: str,
        task_id: int,
        r: int,
        digest: bytes,
        samples: int,
        base_round: int,
        loss: int,
    ) -> TxResult:
        def tx(ts: float) -> None:
            t = self._running(task_id, r)
            index = self._eligible(t, sender, r)
            rd = t.rounds[r]
            _require(ts < rd.start + t.params.submit_window, "wrong phase")
            bit = 1 << index
            _require(rd.unsubmitted & bit != 0, "already submitted")
            _require(digest != ZERO, "bad digest")
            _require(1 <= samples < 2**64, "bad samples")
            _require(base_round == rd.base_round, "bad base round")
            _require(-(2**63) <= loss < 2**63, "bad loss")
            _require(digest not in t.commit_meta, "digest taken")
            rd.unsubmitted ^= bit
            rd.commits[index] = digest
            t.commit_meta[digest] = (samples, base_round, loss)
            self._emit(
                "UpdateCommitted",
                task_id=task_id,
                round=r,
                member=index,
                digest=digest,
                samples=samples,
            )

        return self._transact(tx)

    def vote(self, sender: str, task_id: int, r: int, digest: bytes, accepted: int) -> TxResult:
        def tx(ts: float) -> None:
            t = self._task(task_id)
            if t.status == TaskStatus.RUNNING and t.current == r + 1:
                self._late_vote(t, sender, r, digest, accepted)
                return
            self._running(task_id, r)
            index = self._eligible(t, sender, r)
            rd = t.rounds[r]
            submit_end = rd.start + t.params.submit_window
            _require(ts < submit_end + t.params.vote_window, "wrong phase")
            if ts < submit_end:
                _require(rd.unsubmitted & rd.eligible == 0, "wrong phase")
            bit = 1 << index
            _require(rd.notvoted & bit != 0, "already voted")
            _require(accepted & rd.unsubmitted == 0, "bad bitmap")
            _require(digest != ZERO, "bad digest")
            rd.notvoted ^= bit
            rd.votes[index] = (digest, accepted)
            weight = t.members[index].rep
            tally = rd.tally.get((digest, accepted), 0) + weight
            rd.tally[(digest, accepted)] = tally
            self._emit(
                "VoteCast", task_id=task_id, round=r, member=index, digest=digest, tally=tally
            )
            if tally > 0 and tally * BPS >= rd.quorum_bps * rd.total_rep:
                self._finalize(t, r, digest, accepted, ts)

        return self._transact(tx)

    def _late_vote(self, t: _Task, sender: str, r: int, digest: bytes, accepted: int) -> None:
        rd = t.rounds[r]
        _require(rd.status == RoundStatus.FINALIZED, "wrong round")
        index = self._eligible(t, sender, r)
        bit = 1 << index
        _require(rd.notvoted & bit != 0, "already voted")
        _require(accepted & rd.unsubmitted == 0, "bad bitmap")
        _require(digest != ZERO, "bad digest")
        rd.notvoted ^= bit
        rd.late |= bit
        rd.votes[index] = (digest, accepted)
        self._emit("VoteCast", task_id=t.task_id, round=r, member=index, digest=digest, tally=0)

    def close_round(self, sender: str, task_id: int, r: int) -> TxResult:
        def tx(ts: float) -> None:
            t = self._running(task_id, r)
            rd = t.rounds[r]
            deadline = rd.start + t.params.submit_window + t.params.vote_window
            if ts < deadline:
                _require(rd.notvoted == 0, "too early")
            rd.status = RoundStatus.FAILED
            self._emit("RoundFailed", task_id=task_id, round=r, reason=1)
            self._move_reputations(t, r, ZERO, 0, failed=True)
            self._advance(t, r, ts)

        return self._transact(tx)

    def remask(self, sender: str, task_id: int, r: int, digest: bytes) -> TxResult:
        def tx(ts: float) -> None:
            t = self._running(task_id, r)
            index = self._eligible(t, sender, r)
            rd = t.rounds[r]
            submit_end = rd.start + t.params.submit_window
            _require(ts >= submit_end, "wrong phase")
            _require(ts < submit_end + t.params.vote_window, "wrong phase")
            bit = 1 << index
            _require(rd.unsubmitted & bit == 0, "not submitted")
            _require(rd.unsubmitted & rd.eligible != 0, "nothing to remask")
            _require(rd.remasked & bit == 0, "already remasked")
            _require(digest != ZERO, "bad digest")
            rd.remasked |= bit
            rd.remasks[index] = digest
            self._emit("UpdateRemasked", task_id=task_id, round=r, member=index, digest=digest)

        return self._transact(tx)

    def publish_sum(self, sender: str, task_id: int, r: int, digest: bytes) -> TxResult:
        def tx(ts: float) -> None:
            t = self._running(task_id, r)
            index = self._decryptor(t, r)
            _require(t.members[index].account == sender, "not decryptor")
            rd = t.rounds[r]
            submit_end = rd.start + t.params.submit_window
            _require(ts < submit_end + t.params.vote_window, "wrong phase")
            if ts < submit_end:
                _require(rd.unsubmitted & rd.eligible == 0, "wrong phase")
            _require(rd.sum_digest == ZERO, "already published")
            _require(digest != ZERO, "bad digest")
            rd.sum_digest = digest
            self._emit("SumPublished", task_id=task_id, round=r, member=index, digest=digest)

        return self._transact(tx)

    def raise_alarm(self, sender: str, task_id: int, r: int) -> TxResult:
        """The checks and the bond; an alarm that reverts a round, or whose bond ejects its
        raiser, is not modelled (tests run with alarms off: alarm_window 0)."""

        def tx(ts: float) -> None:
            t = self._task(task_id)
            _require(t.status != TaskStatus.REGISTERING, "not started")
            _require(t.status != TaskStatus.CLOSED, "closed task")
            _require(r >= 1 and r == t.good_round, "wrong round")
            rd = t.rounds[r]
            _require(ts < rd.finalized_at + t.params.alarm_window, "alarm closed")
            index = self._active_member(t, sender)
            bit = 1 << index
            _require(rd.alarmed & bit == 0, "already alarmed")
            weight = t.members[index].rep
            _require(weight >= REP_ALARM, "reputation too low")
            held = REP_ALARM * _popcount(rd.alarmed)  # the earlier bonds, none ejected
            total = t.total_rep + held  # before this bond, as the contract counts it
            if (rd.alarm_weight + weight) * BPS >= t.params.alarm_bps * total:
                raise NotImplementedError("FakeChain does not model alarm reverts")
            if weight - REP_ALARM < t.params.rep_floor:
                raise NotImplementedError("FakeChain does not model ejection by a bond")
            rd.alarmed |= bit
            rd.alarm_weight += weight
            t.members[index].rep -= REP_ALARM
            t.total_rep -= REP_ALARM
            self._emit("AlarmRaised", task_id=task_id, round=r, member=index, weight=weight)

        return self._transact(tx)

    # ------------------------------------------------------------------ settlement
    def _open_round(self, t: _Task, r: int, ts: float) -> None:
        t.rounds[r] = _Round(
            start=ts,
            base_digest=t.good_digest,
            base_round=t.good_round,
            eligible=t.active,
            total_rep=t.total_rep,
            quorum_bps=t.params.quorum_bps,
            notvoted=t.active,
        )
        t.current, t.round_start = r, ts
        self._emit("RoundOpened", task_id=t.task_id, round=r, eligible=t.active)

    def _advance(self, t: _Task, r: int, ts: float) -> None:
        if r >= t.params.max_rounds:
            t.status = TaskStatus.FINISHED
            self._emit("TaskEnded", task_id=t.task_id, global_digest=t.good_digest)
            return
        self._open_round(t, r + 1, ts)

    def _finalize(self, t: _Task, r: int, digest: bytes, accepted: int, ts: float) -> None:
        self._move_reputations(t, r, digest, accepted, failed=False)
        rd = t.rounds[r]
        rd.status, rd.finalized_at = RoundStatus.FINALIZED, ts
        rd.global_digest, rd.accepted = digest, accepted
        t.good_digest, t.good_round = digest, r
        self._emit("RoundFinalized", task_id=t.task_id, round=r, global_digest=digest)
        self._advance(t, r, ts)

    def _move_reputations(
        self, t: _Task, r: int, digest: bytes, accepted: int, *, failed: bool
    ) -> None:
        """The contract's `_move_reputations`: this round's moves, the previous finalized
        round's missing and wrong late votes, ejection below the floor."""
        rd = t.rounds[r]
        blame = not failed or rd.eligible & ~rd.notvoted != 0
        prev = t.rounds.get(r - 1)
        settle_prev = prev is not None and prev.status == RoundStatus.FINALIZED
        for index in range(len(t.members)):
            bit = 1 << index
            m = t.members[index]
            if not (rd.eligible & t.active & bit):
                continue
            up = down = 0
            if not blame:
                pass
            elif rd.unsubmitted & bit:
                down = REP_NO_SUBMIT
            elif failed:
                pass
            elif accepted & bit:
                up = REP_ACCEPT
            else:
                down = REP_REJECT
            if rd.notvoted & bit:
                if failed and blame:
                    down += REP_NO_VOTE
            elif not failed and rd.votes[index] != (digest, accepted):
                down += REP_BAD_VOTE
            if settle_prev and prev is not None:
                if prev.eligible & prev.notvoted & bit:
                    down += REP_NO_LATE_VOTE
                elif prev.late & bit and prev.votes[index] != (prev.global_digest, prev.accepted):
                    down += REP_BAD_VOTE
            new = min(m.rep + up - down, REP_MAX) if m.rep + up > down else 0
            t.total_rep += new - m.rep
            m.rep = new
            if new < t.params.rep_floor:
                m.status = MemberStatus.EJECTED
                t.active &= ~bit
                t.total_rep -= new
                t.slashed += t.params.stake
                self._emit("MemberEjected", task_id=t.task_id, round=r, member=index)

    def _decryptor(self, t: _Task, r: int) -> int:
        rd = t.rounds[r]
        cands = rd.eligible & t.keyed
        prev = t.rounds.get(r - 1)
        if prev is not None:
            submitted_prev = ~prev.unsubmitted & prev.eligible
            if cands & submitted_prev:
                cands &= submitted_prev
        _require(cands != 0, "no decryptor")
        return _nth_bit(cands, (r - 1) % _popcount(cands))

    # ------------------------------------------------------------------ views
    def get_task(self, task_id: int) -> TaskInfo:
        with self._lock:
            t = self._task(task_id)
            p = t.params
            good = t.rounds.get(t.good_round)
            settled = t.status >= TaskStatus.FINISHED and (
                good is None or self.timestamps[-1] >= good.finalized_at + p.alarm_window
            )
            return TaskInfo(
                task_id=task_id,
                owner=t.owner,
                status=t.status,
                config_digest=p.config_digest,
                initial_digest=p.initial_digest,
                global_digest=t.good_digest,
                global_round=t.good_round,
                min_members=p.min_members,
                max_members=p.max_members,
                submit_window=p.submit_window,
                vote_window=p.vote_window,
                alarm_window=p.alarm_window,
                quorum_bps=p.quorum_bps,
                alarm_bps=p.alarm_bps,
                stake=p.stake,
                max_rounds=p.max_rounds,
                rep_floor=p.rep_floor,
                allowlist=p.allowlist,
                max_samples=p.max_samples,
                current_round=t.current,
                round_start=t.round_start,
                n_members=len(t.members),
                n_active=_popcount(t.active),
                total_reputation=t.total_rep,
                reward_pool=0,
                rewards_paid=0,
                slashed=t.slashed,
                settled=settled,
            )

    def get_round(self, task_id: int, r: int) -> RoundInfo:
        with self._lock:
            t, rd = self._checked_round(task_id, r)
            submit_deadline = rd.start + t.params.submit_window
            return RoundInfo(
                task_id=task_id,
                round=r,
                status=rd.status,
                start=rd.start,
                submit_deadline=submit_deadline,
                vote_deadline=submit_deadline + t.params.vote_window,
                finalized_at=rd.finalized_at,
                base_digest=rd.base_digest,
                base_round=rd.base_round,
                global_digest=rd.global_digest,
                accepted=rd.accepted,
                eligible=rd.eligible,
                submitted=rd.eligible & ~rd.unsubmitted,
                voted=rd.eligible & ~rd.notvoted,
                alarmed=rd.alarmed,
                alarm_weight=rd.alarm_weight,
                total_reputation=rd.total_rep,
                quorum_bps=rd.quorum_bps,
                remasked=rd.remasked,
                sum_digest=rd.sum_digest,
            )

    def get_member(self, task_id: int, index: int) -> MemberInfo:
        with self._lock:
            t = self._task(task_id)
            self._check_index(t, index)
            m = t.members[index]
            return MemberInfo(
                index=index,
                account=m.account,
                peer_id=m.peer_id,
                x25519=m.x25519,
                status=m.status,
                since_round=m.since,
                reputation=m.rep,
                he_key=m.he_key,
            )

    def member_index(self, task_id: int, account: str) -> int:
        with self._lock:
            t = self._task(task_id)
            _require(account in t.by_account, "not member")
            return t.by_account[account]

    def get_update(self, task_id: int, r: int, index: int) -> UpdateCommit:
        with self._lock:
            t, rd = self._checked_round(task_id, r)
            self._check_index(t, index)
            digest = rd.commits.get(index, ZERO)
            if digest == ZERO:
                return UpdateCommit(False, ZERO, 0, 0, 0)
            samples, base_round, loss = t.commit_meta[digest]
            return UpdateCommit(True, digest, samples, base_round, loss)

    def get_vote(self, task_id: int, r: int, index: int) -> Vote:
        with self._lock:
            t, rd = self._checked_round(task_id, r)
            self._check_index(t, index)
            bit = 1 << index
            digest, accepted = rd.votes.get(index, (ZERO, 0))
            return Vote(bool(rd.eligible & bit) and not rd.notvoted & bit, digest, accepted)

    def get_remask(self, task_id: int, r: int, index: int) -> bytes | None:
        with self._lock:
            t, rd = self._checked_round(task_id, r)
            self._check_index(t, index)
            return rd.remasks.get(index)

    def decryptor(self, task_id: int, r: int) -> int:
        with self._lock:
            t, _ = self._checked_round(task_id, r)
            return self._decryptor(t, r)

    def get_tally(self, task_id: int, r: int, digest: bytes, accepted: int) -> int:
        with self._lock:
            _, rd = self._checked_round(task_id, r)
            return rd.tally.get((digest, accepted), 0)

    def consensus_weights(self, task_id: int, r: int) -> list[int]:
        """min(samples, max_samples) x the member's reputation now (0: no update)."""
        with self._lock:
            t, rd = self._checked_round(task_id, r)
            cap = t.params.max_samples
            out = []
            for index, m in enumerate(t.members):
                digest = rd.commits.get(index)
                weight = 0
                if digest is not None:
                    weight = m.rep * (min(t.commit_meta[digest][0], cap) if cap else 1)
                out.append(weight)
            return out

    def reputations(self, task_id: int) -> list[int]:
        with self._lock:
            return [m.rep for m in self._task(task_id).members]

    def logs(self, task_id: int, event: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [
                ev
                for ev in self.events
                if ev["args"].get("task_id") == task_id and event in (None, ev["event"])
            ]


class FakeEth:
    """What `ChainView` and the engine use of web3's `w3.eth`."""

    def __init__(self, chain: FakeChain) -> None:
        self._chain = chain
        self.chain_id = chain.chain_id

    @property
    def block_number(self) -> int:
        return self._chain.block_number

    def filter(self, kind: str) -> Any:
        assert kind == "latest", kind
        return SimpleNamespace(filter_id=self._chain.new_filter())

    def get_filter_changes(self, filter_id: str) -> list[bytes]:
        return self._chain.filter_changes(filter_id)


class FakeClient:
    """One account's `FLChainClient` on a `FakeChain`: the methods the engines call, with the
    client's signatures and return types. No `keep_time`: every transaction's block carries
    the wall clock, so the chain's clock never lags the engine's."""

    def __init__(self, chain: FakeChain, account: str) -> None:
        self.chain = chain
        self.account = account
        self.address = chain.address
        self.w3 = SimpleNamespace(eth=FakeEth(chain))

    # transactions
    def create_task(self, params: TaskParams) -> int:
        return self.chain.create_task(self.account, params)

    def join(
        self,
        task_id: int,
        peer_id: bytes,
        x25519: bytes,
        he_key: bytes = ZERO,
        *,
        peer_proof: bytes = b"",
        value: int | None = None,
    ) -> int:
        return self.chain.join(self.account, task_id, peer_id, x25519, he_key, peer_proof, value)

    def submit(
        self, task_id: int, round: int, digest: bytes, samples: int, base_round: int, loss: int
    ) -> TxResult:
        return self.chain.submit(self.account, task_id, round, digest, samples, base_round, loss)

    def vote(self, task_id: int, round: int, digest: bytes, accepted: int) -> TxResult:
        return self.chain.vote(self.account, task_id, round, digest, accepted)

    def close_round(self, task_id: int, round: int) -> TxResult:
        return self.chain.close_round(self.account, task_id, round)

    def remask(self, task_id: int, round: int, digest: bytes) -> TxResult:
        return self.chain.remask(self.account, task_id, round, digest)

    def publish_sum(self, task_id: int, round: int, digest: bytes) -> TxResult:
        return self.chain.publish_sum(self.account, task_id, round, digest)

    def raise_alarm(self, task_id: int, round: int) -> TxResult:
        return self.chain.raise_alarm(self.account, task_id, round)

    # views
    def get_task(self, task_id: int) -> TaskInfo:
        return self.chain.get_task(task_id)

    def get_round(self, task_id: int, round: int) -> RoundInfo:
        return self.chain.get_round(task_id, round)

    def task_and_round(self, task_id: int, round: int) -> tuple[TaskInfo, RoundInfo]:
        return self.chain.get_task(task_id), self.chain.get_round(task_id, round)

    def get_rounds(self, task_id: int, rounds: Iterable[int]) -> list[RoundInfo]:
        return [self.chain.get_round(task_id, r) for r in rounds]

    def get_member(self, task_id: int, index: int) -> MemberInfo:
        return self.chain.get_member(task_id, index)

    def members(self, task_id: int) -> list[MemberInfo]:
        n = self.chain.get_task(task_id).n_members
        return [self.chain.get_member(task_id, i) for i in range(n)]

    def member_index(self, task_id: int, account: str) -> int:
        return self.chain.member_index(task_id, account)

    def get_update(self, task_id: int, round: int, index: int) -> UpdateCommit:
        return self.chain.get_update(task_id, round, index)

    def get_updates(self, task_id: int, keys: Iterable[tuple[int, int]]) -> list[UpdateCommit]:
        return [self.chain.get_update(task_id, r, i) for r, i in keys]

    def get_vote(self, task_id: int, round: int, index: int) -> Vote:
        return self.chain.get_vote(task_id, round, index)

    def get_remask(self, task_id: int, round: int, index: int) -> bytes | None:
        return self.chain.get_remask(task_id, round, index)

    def decryptor(self, task_id: int, round: int) -> int | None:
        try:
            return self.chain.decryptor(task_id, round)
        except ContractRevert as exc:
            if exc.reason == "no decryptor":
                return None
            raise

    def get_tally(self, task_id: int, round: int, digest: bytes, accepted: int) -> int:
        return self.chain.get_tally(task_id, round, digest, accepted)

    def reputations(self, task_id: int) -> list[int]:
        return self.chain.reputations(task_id)

    def consensus_weights(self, task_id: int, round: int) -> list[int]:
        return self.chain.consensus_weights(task_id, round)

    def member_proofs(self, task_id: int, from_block: int = 0) -> dict[int, bytes]:
        joined = self.events(task_id, from_block, event="MemberJoined")
        return {int(ev["args"]["member"]): bytes(ev["args"]["peer_proof"]) for ev in joined}

    def events(
        self,
        task_id: int,
        from_block: int = 0,
        to_block: int | str = "latest",
        *,
        chunk_blocks: int | None = None,
        event: str | None = None,
    ) -> list[dict[str, Any]]:
        last = math.inf if to_block == "latest" else int(to_block)
        return [
            ev for ev in self.chain.logs(task_id, event) if from_block <= ev["block_number"] <= last
        ]


# ---------------------------------------------------------------------------- the network


class FakeNetwork:
    """In-memory P2P between the `FakeP2P` nodes of one test: a full mesh for gossip,
    direct requests for blobs. `drop` cuts a peer off (it neither hears nor is heard, and
    every blob request to or from it fails); `withhold` makes a peer answer NOT_FOUND;
    `slow_uplink` delays what a peer publishes."""

    def __init__(self) -> None:
        self.nodes: dict[str, FakeP2P] = {}
        self.links: set[frozenset[str]] = set()
        self.dropped: set[str] = set()
        self.withheld: dict[str, Callable[[bytes], bool]] = {}
        self.uplink_delay: dict[str, float] = {}  # peer id -> seconds each publish takes
        # (requester, provider, digest, outcome: "ok" or the failure reason), in order
        self.requests: list[tuple[str, str, bytes, str]] = []

    def node(self, peer_id: str, store: BlobStore, metrics: Metrics) -> FakeP2P:
        p2p = FakeP2P(self, peer_id, store, metrics)
        self.nodes[peer_id] = p2p
        return p2p

    def drop(self, peer_id: str) -> None:
        self.dropped.add(peer_id)

    def restore(self, peer_id: str) -> None:
        self.dropped.discard(peer_id)

    def withhold(self, peer_id: str, digests: Iterable[bytes] | None = None) -> None:
        """`peer_id` answers NOT_FOUND for `digests` (None: for every blob)."""
        chosen = None if digests is None else set(digests)
        self.withheld[peer_id] = lambda d: chosen is None or d in chosen

    def slow_uplink(self, peer_id: str, seconds: float) -> None:
        """Each announcement `peer_id` publishes takes `seconds` to leave (a slow link)."""
        self.uplink_delay[peer_id] = seconds

    def reachable(self, a: str, b: str) -> bool:
        return a in self.nodes and b in self.nodes and not {a, b} & self.dropped


class FakeP2P:
    """What the engine uses of `P2PNode`; see `FakeNetwork`."""

    def __init__(
        self, network: FakeNetwork, peer_id: str, store: BlobStore, metrics: Metrics
    ) -> None:
        self.network = network
        self.peer_id = peer_id
        self.store = store
        self.metrics = metrics
        self.serve_filter: Callable[[bytes], bool] | None = None
        self.sealed: Callable[[bytes], Any] | None = None  # as the daemon wires it
        self.budgets: list[int] = []  # `start_round` calls: the byte budget of each round
        self._gate = GossipGate()
        self._deliveries: dict[str, trio.MemorySendChannel[Delivery]] = {}

    @property
    def addrs(self) -> list[str]:
        return [f"/memory/{self.peer_id}"]

    def connected_peers(self) -> list[str]:
        return sorted(
            other
            for link in self.network.links
            if self.peer_id in link
            for other in link - {self.peer_id}
            if self.network.reachable(self.peer_id, other)
        )

    async def connect_mesh(self, peers: Iterable[str]) -> int:
        """As `P2PNode.connect_mesh`: only the member with the smaller peer id dials."""
        await trio.lowlevel.checkpoint()
        connected = set(self.connected_peers())
        made = 0
        for peer in sorted(set(peers)):
            dials = peer > self.peer_id and peer not in connected
            if dials and self.network.reachable(self.peer_id, peer):
                self.network.links.add(frozenset({self.peer_id, peer}))
                made += 1
        return made

    def start_round(self, *, blob_bytes: int | None = None, members: int | None = None) -> int:
        """Records the round's per-peer byte budget as `P2PNode` sizes it (not enforced)."""
        config = P2PConfig()
        largest = min(blob_bytes or config.max_blob_bytes, config.max_blob_bytes)
        budget = config.peer_budget_factor * largest * max(1, members or 1)
        self.budgets.append(budget)
        return budget

    # -- gossip
    async def join_task(
        self,
        task: int,
        *,
        is_member: Callable[[str], bool],
        round_ok: Callable[[int], bool],
        address_of: Callable[[str], str | None] | None = None,
    ) -> trio.MemoryReceiveChannel[Delivery]:
        topic = topic_for(task)
        if topic in self._deliveries:
            raise P2PError(f"already joined task {task}")
        send, receive = trio.open_memory_channel[Delivery](1024)
        self._gate.add(TaskPolicy(task, is_member, round_ok, address_of))
        self._deliveries[topic] = send
        return receive

    async def announce(self, message: Announcement) -> None:
        topic = topic_for(message.task)
        if topic not in self._deliveries:
            raise P2PError(f"join task {message.task} before announcing on it")
        await self._publish(topic, encode(message))
        self.metrics.inc("messages_published_total")

    async def publish_raw(self, task: int, data: bytes) -> None:
        await self._publish(topic_for(task), bytes(data))

    async def _publish(self, topic: str, data: bytes) -> None:
        await trio.sleep(self.network.uplink_delay.get(self.peer_id, 0.0))
        for peer, node in list(self.network.nodes.items()):
            if peer != self.peer_id and self.network.reachable(self.peer_id, peer):
                node._receive(self.peer_id, topic, data)

    def _receive(self, origin: str, topic: str, data: bytes) -> None:
        """A message from `origin`, through the real gossip gate (`_GatedPubsub.push_msg`)."""
        send = self._deliveries.get(topic)
        if send is None:
            return  # not subscribed: gossipsub would not route it here
        self.metrics.inc("messages_received_total")
        try:
            message = self._gate.check(origin, [topic], data)
        except RejectError as rejected:
            self.metrics.inc("messages_rejected_total", reason=rejected.reason)
            return
        self.metrics.inc("messages_accepted_total")
        try:
            send.send_nowait(Delivery(message, origin))
        except trio.WouldBlock:
            self.metrics.inc("messages_rejected_total", reason="backlog")
        except trio.ClosedResourceError:
            pass

    # -- blobs
    async def fetch_blob(
        self,
        digest: bytes | str,
        providers: Iterable[str],
        *,
        timeout: float | None = None,
        max_size: int | None = None,
        try_connected: bool = True,
    ) -> bytes:
        """As `P2PNode.fetch_blob`: the local store, then each provider in order, then every
        connected member; whatever arrives is re-hashed and kept."""
        key = as_digest(digest)
        timeout = 60.0 if timeout is None else timeout
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        local = await read_local(self.store, key)
        if local is not None:
            return local
        order = [p for p in dict.fromkeys(providers) if p != self.peer_id]
        if try_connected:
            order += [
                p
                for p in self.connected_peers()
                if p not in order and self._gate.is_member_anywhere(p)
            ]
        attempts: dict[str, str] = {}
        with trio.move_on_after(timeout):
            for peer in order:
                outcome = await self._request(peer, key, max_size)
                self.network.requests.append(
                    (self.peer_id, peer, key, "ok" if isinstance(outcome, bytes) else outcome)
                )
                if isinstance(outcome, str):
                    attempts[peer] = outcome
                    self.metrics.inc("blob_failures_total", reason=outcome)
                    continue
                await trio.to_thread.run_sync(
                    functools.partial(self.store.put, outcome, from_peer=True)
                )
                self.metrics.inc("blobs_fetched_total")
                return outcome
        raise BlobNotFound(key, attempts, timeout)

    async def _request(self, peer: str, digest: bytes, max_size: int | None) -> bytes | str:
        """One request to one provider: its bytes, or the failure reason the real client
        reports (`_FetchError.reason`)."""
        await trio.lowlevel.checkpoint()
        provider = self.network.nodes.get(peer)
        if provider is None or not self.network.reachable(self.peer_id, peer):
            return "stream_error"
        data = await provider._serve(self.peer_id, digest)
        if isinstance(data, str):
            return data
        if max_size is not None and len(data) > max_size:
            return "oversize"
        if sha256(data) != digest:
            return "digest_mismatch"
        return data

    async def _serve(self, requester: str, digest: bytes) -> bytes | str:
        """The provider's side (`P2PNode._serve_blob` and `_answer`), without budgets."""
        if not self._gate.is_member_anywhere(requester):
            return "refused"
        if self.serve_filter is not None and not self.serve_filter(digest):
            self.metrics.inc("blob_failures_total", reason="not_committed")
            return "not_found"
        if self.sealed is not None and await self.sealed(digest):
            self.metrics.inc("blob_failures_total", reason="not_revealed")
            return "not_revealed"
        withheld = self.network.withheld.get(self.peer_id)
        if withheld is not None and withheld(digest):
            return "not_found"
        data = await read_local(self.store, digest)
        if data is None:
            return "not_found"
        self.metrics.inc("blobs_served_total")
        return data


# ---------------------------------------------------------------------------- members


@dataclass
class Node:
    """One member: its engine and everything `flchain node run` gives it (node/daemon.py)."""

    name: str
    keypair: KeyPair
    client: FakeClient
    p2p: FakeP2P
    store: BlobStore
    metrics: Metrics
    engine: RoundEngine
    x25519: bytes
    he_key: bytes = ZERO
    deliveries: trio.MemoryReceiveChannel[Delivery] | None = None

    @property
    def peer_id(self) -> str:
        return self.engine.peer_id

    @property
    def index(self) -> int:
        index = self.engine.state.member_index
        assert index is not None, f"{self.name} has not joined"
        return index

    async def join(self) -> int:
        """Join the task with a valid peer-id proof (`RoundEngine.ensure_member`)."""
        return await self.engine.ensure_member(self.x25519, self.he_key, peer_key=self.keypair)

    async def subscribe(self) -> None:
        """What `run_node` does before joining: wire commit-then-reveal into the blob
        server, read the members and subscribe to the task's gossip."""
        engine = self.engine
        self.p2p.sealed = engine.sealed_now
        await engine.refresh_members()
        self.deliveries = await self.p2p.join_task(
            engine.task_id,
            is_member=engine.is_member,
            round_ok=engine.round_ok,
            address_of=engine.address_of,
        )

    async def run(self) -> None:
        """What `run_node` does once joined: follow the chain, keep the members and mesh
        fresh, consume announcements and run the rounds until the task ends. The P2P side
        keeps serving after it returns (the daemon lingers for that)."""
        if self.deliveries is None:
            await self.subscribe()
            await self.join()
        assert self.deliveries is not None
        engine = self.engine
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.view.follow)
            nursery.start_soon(engine.members_loop)
            nursery.start_soon(engine.consume, self.deliveries)
            await engine.run()
            nursery.cancel_scope.cancel()


def peer_key(seed: int) -> KeyPair:
    """A deterministic libp2p Ed25519 key pair."""
    return create_new_key_pair(hashlib.sha256(b"enginekit peer %d" % seed).digest())


def make_node(
    name: str,
    *,
    chain: FakeChain,
    network: FakeNetwork,
    root: Path,
    task_id: int,
    learner: Any,
    seed: int,
    x25519: bytes,
    initial: bytes,
    engine_cls: type[RoundEngine] = RoundEngine,
    attacks: frozenset[str] = frozenset(),
    he_key: bytes = ZERO,
    **engine_kwargs: Any,
) -> Node:
    """A member with a fresh account, blob store and fake P2P, not joined yet. Its store
    holds the task's `initial` model, pinned, as `run_node` puts it there at start-up."""
    keypair = peer_key(seed)
    peer_id = ID.from_pubkey(keypair.public_key).to_base58()
    metrics = Metrics()
    store = BlobStore(root / name, metrics=metrics)
    store.put(initial, pin=True)
    p2p = network.node(peer_id, store, metrics)
    client = chain.client()
    engine = engine_cls(
        client=client,  # type: ignore[arg-type]
        task_id=task_id,
        learner=learner,
        p2p=p2p,  # type: ignore[arg-type]
        store=store,
        metrics=metrics,
        peer_id=peer_id,
        attacks=attacks,
        poll_interval=0.05,
        retry=FAST_RETRY,
        **engine_kwargs,
    )
    engine.view.heads = FAST_HEADS
    return Node(name, keypair, client, p2p, store, metrics, engine, x25519, he_key)
