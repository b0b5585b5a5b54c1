"""The explorer's read model: one JSON-ready dict per view, from the ledger and member names.

Every view is built from `rebuild_ledger` (views plus events), read at most once per block
per task and shared by every request at that block, so a dozen open browsers cost the chain
what one does. A ledger with an open round is read again after a few seconds even without a
new block: its phase (open, voting, stalled) moves with the clock, and on anvil's automine no
block marks a deadline. Members are labelled by `MemberNames` as in every ledger table
(`#3 node-2 0x1234…abcd (byzantine: signflip)`). Verification reuses `verify_blobs`, the code
of `flchain ledger verify`.

When the chain of a `--devnet` stops while the explorer runs, `switch_to_journal` reads its
journal instead (`flchain.devnet.replay`), as the ledger commands do for a stopped devnet.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import urllib.request
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from flchain import safe_json
from flchain.contracts.artifact import load_artifact
from flchain.contracts.client import FLChainClient
from flchain.contracts.ledger import (
    BPS,
    Ledger,
    LedgerError,
    RoundRecord,
    TaskPrivacy,
    UnknownTaskError,
    count_commits,
    event_row,
    funded_wei,
    list_tasks,
    member_money,
    member_row,
    plain,
    rebuild_ledger,
    reputation_history,
    reputation_moves,
    round_detail,
    round_row,
    slash_records,
    task_row,
    verify_blobs,
)
from flchain.contracts.names import MemberNames, short_address
from flchain.contracts.types import REP_UNIT, TaskInfo, TaskStatus
from flchain.node.files import RUNTIME_FILE, STATUS_FILE

T = TypeVar("T")

VOLATILE_S = 5.0  # how long a ledger with an open round is served before it is read again
NODE_STATUS_S = 2.0  # how long node statuses (accuracy) are served before they are read again
NODE_TIMEOUT_S = 0.5  # one node's /status answer
MAX_EVENTS = 5000  # rows one /events answer may carry
_NODE_JSON_BYTES = 4 << 20
_OPEN = ("open", "voting")


class NotFoundError(LedgerError):
    """A view of something the chain does not have (a task, a round)."""


class BadRequestError(ValueError):
    """A view asked for with arguments it does not take (an unknown event name)."""


@dataclass(frozen=True)
class ExplorerSource:
    """Where the explorer reads: a client bound to one FLChain and what a devnet adds.

    `live`: follow new blocks (a running chain); False for a stopped devnet's journal,
    which never changes. `privacy` gives a task's DP settings from its config file (as
    `flchain ledger members --config` does), or None."""

    client: FLChainClient
    origin: str  # "rpc URL" or "journal DIR", for people
    live: bool = True
    default_task: int | None = None
    devnet_dir: Path | None = None
    devnet_task: int | None = None  # the task the devnet's nodes run (their accuracy)
    names: MemberNames = field(default_factory=MemberNames)
    nodes: tuple[dict[str, Any], ...] = ()  # devnet.json's nodes: name, dir, address
    blob_dirs: tuple[Path, ...] = ()
    privacy: Callable[[TaskInfo], TaskPrivacy | None] | None = None
    from_block: int = 0
    chunk_blocks: int | None = None


@dataclass
class _Entry:
    head: int
    expires: float
    value: Any


class LedgerViews:
    """The views the explorer serves, cached per block (see the module docstring).

    Thread-safe: chain reads run one at a time under one lock (web3's HTTP session and
    the replayed chain are not meant for concurrent callers), cached answers are shared."""

    def __init__(self, source: ExplorerSource, *, volatile_s: float = VOLATILE_S) -> None:
        self.source = source
        self.volatile_s = volatile_s
        self._lock = threading.RLock()  # chain reads and the cache
        self._nodes_lock = threading.Lock()  # node statuses (HTTP to the nodes, not the chain)
        self._cache: dict[Hashable, _Entry] = {}
        self._privacy: dict[int, tuple[TaskPrivacy | None, str | None]] = {}
        self._nodes: tuple[float, int, dict[str, dict[str, Any] | None]] | None = None
        self._head: int | None = None
        self.error: str | None = None  # the last failure to follow the chain, for the page
        self.reads = 0  # ledger rebuilds so far (tests check that browsers share them)
        self.chain_id = int(source.client.sender.chain_id)

    # ------------------------------------------------------------ the head block

    def read_head(self) -> int:
        """The chain's head block number, asked now (one eth_blockNumber, no retries: the
        follower polls again soon)."""
        with self._lock:
            return int(self.source.client.w3.eth.block_number)

    def note_head(self, head: int) -> bool:
        """Record the head the follower saw; True when it is new."""
        with self._lock:
            changed = head != self._head
            self._head = head
            return changed

    @property
    def head(self) -> int:
        """The last head seen (read once when nothing follows the chain)."""
        with self._lock:
            if self._head is None:
                self._head = self.read_head()
            return self._head

    def info(self) -> dict[str, Any]:
        """What the page shows in its header, and what every SSE event carries."""
        src = self.source
        return {
            "contract": src.client.address,
            "chain_id": self.chain_id,
            "head_block": self._head,
            "live": src.live,
            "origin": src.origin,
            "default_task": src.default_task,
            "devnet": None if src.devnet_dir is None else str(src.devnet_dir),
            "error": self.error,
            "time": int(time.time()),
        }

    def switch_to_journal(self) -> bool:
        """Once a `--devnet`'s chain has stopped, read its journal from now on; True when
        switched (False: no devnet, not stopped, or no journal to read)."""
        from flchain.devnet.manifest import (
            DevnetError,
            chain_stopped,
            read_manifest,
            stopped_journal,
        )

        src = self.source
        if src.devnet_dir is None or not src.live:
            return False
        try:
            manifest = read_manifest(src.devnet_dir)
            if not chain_stopped(manifest):
                return False
            journal = stopped_journal(src.devnet_dir, manifest)
        except DevnetError as exc:
            self.error = str(exc)
            return False

        from flchain.devnet.replay import replay_web3  # py-evm: only once it is needed

        try:
            client = FLChainClient.read_only(replay_web3(journal), src.client.address)
        except (ValueError, OSError) as exc:  # JournalError: a journal that does not replay
            self.error = f"cannot read the chain journal in {journal}: {exc}"[:300]
            return False
        with self._lock:
            origin = f"journal {journal}"
            self.source = dataclasses.replace(src, client=client, live=False, origin=origin)
            self._cache.clear()
            self._nodes = None
            self._head = None
            self.error = None
        return True

    # ------------------------------------------------------------ cache

    def _cached(self, key: Hashable, compute: Callable[[], tuple[int, bool, T]]) -> T:
        """`compute()` -> (block it read at, volatile?, value), once per head block."""
        with self._lock:
            head = self.head
            entry = self._cache.get(key)
            if entry is not None and entry.head >= head and time.monotonic() < entry.expires:
                return entry.value
            block, volatile, value = compute()
            expires = time.monotonic() + self.volatile_s if volatile else float("inf")
            self._cache[key] = _Entry(max(block, head), expires, value)
            if len(self._cache) > 256:  # old tasks' entries: keep the map bounded
                self._cache.pop(next(iter(self._cache)))
            return value

    def ledger(self, task_id: int) -> Ledger:
        """Task `task_id`'s ledger at the head block (NotFoundError for an unknown task)."""

        def read() -> tuple[int, bool, Ledger]:
            src = self.source
            try:
                book = rebuild_ledger(
                    src.client, task_id, from_block=src.from_block, chunk_blocks=src.chunk_blocks
                )
            except UnknownTaskError as exc:
                raise NotFoundError(str(exc)) from exc
            self.reads += 1
            # An open round's phase moves with the clock, and a running task waits for
            # blocks no one may send (automine): both are read again after VOLATILE_S.
            running = book.task.status == TaskStatus.RUNNING
            return book.head_block, running or any(r.status in _OPEN for r in book.rounds), book

        return self._cached(("ledger", task_id), read)

    def _names(self, book: Ledger) -> MemberNames:
        return self.source.names.with_accounts({m.index: m.account for m in book.members})

    def _task_privacy(self, task: TaskInfo) -> tuple[TaskPrivacy | None, str | None]:
        """The task's DP settings and, when its config file cannot be used, why."""
        if task.task_id not in self._privacy:
            found: tuple[TaskPrivacy | None, str | None] = (None, None)
            if self.source.privacy is not None:
                try:
                    found = (self.source.privacy(task), None)
                except (LedgerError, OSError, ValueError) as exc:
                    found = (None, str(exc))
            self._privacy[task.task_id] = found
        return self._privacy[task.task_id]

    # ------------------------------------------------------------ views

    def tasks(self) -> dict[str, Any]:
        """Every task on the contract, with the devnet's own task marked as the default."""

        def read() -> tuple[int, bool, list[dict[str, Any]]]:
            return self.head, False, [task_row(t) for t in list_tasks(self.source.client)]

        rows = self._cached(("tasks",), read)
        return {**self.info(), "tasks": rows}

    def task(self, task_id: int) -> dict[str, Any]:
        """One task: its on-chain parameters and money, privacy settings, counts."""
        book = self.ledger(task_id)
        privacy, note = self._task_privacy(book.task)
        names = self._names(book)
        statuses: dict[str, int] = {}
        for rnd in book.rounds:
            statuses[rnd.status] = statuses.get(rnd.status, 0) + 1
        return {
            **self.info(),
            "head_block": book.head_block,
            "now": book.now,
            "task": {**task_row(book.task), "funded_wei": funded_wei(book.events)},
            "privacy": _privacy_view(privacy, note),
            "rounds": len(book.rounds),
            "round_statuses": statuses,
            "members": len(book.members),
            "byzantine": names.byzantine(),
            "events": len(book.events),
        }

    def rounds(self, task_id: int) -> dict[str, Any]:
        """The rounds timeline: per round its status, counts, tallies against quorum,
        alarms, decryptor and rewards; and the members x rounds matrix of commitments
        (accepted, rejected, committed while undecided, missed), votes and alarms."""
        book = self.ledger(task_id)
        privacy, _ = self._task_privacy(book.task)
        names = self._names(book)
        rows = [_round_view(task_id, rnd, book.task, names, privacy) for rnd in book.rounds]
        matrix = [
            {
                **_member_label(names, m.index, m.account),
                "cells": [_cell(r, m.index) for r in book.rounds],
            }
            for m in book.members
        ]
        return {
            "task_id": task_id,
            "head_block": book.head_block,
            "now": book.now,
            "task_status": book.task.status.name.lower(),
            "quorum_bps": book.task.quorum_bps,
            "alarm_bps": book.task.alarm_bps,
            "members": [_member_label(names, m.index, m.account) for m in book.members],
            "rounds": rows,
            "matrix": matrix,
        }

    def round(self, task_id: int, number: int) -> dict[str, Any]:
        """One round in full (what `flchain ledger round N --json` shows), members named."""
        book = self.ledger(task_id)
        if not 1 <= number <= len(book.rounds):
            have = f"rounds 1..{len(book.rounds)}" if book.rounds else "no rounds yet"
            raise NotFoundError(f"task {task_id} has no round {number} ({have})")
        privacy, _ = self._task_privacy(book.task)
        names = self._names(book)
        rnd = book.rounds[number - 1]
        commits = count_commits(r.submitted for r in book.rounds[:number])
        moves = reputation_moves(book.rounds, book.events)
        slashes = slash_records(book.events, moves)
        detail = round_detail(task_id, rnd, privacy, commits, moves, slashes)
        for row in detail["members"]:
            row.update(_member_label(names, row["member"]))
        return {"head_block": book.head_block, **detail, **_round_extras(rnd, book.task, names)}

    def members(self, task_id: int) -> dict[str, Any]:
        """Members: address, peer id, node name, stake, status, reputation, money and
        penalties; epsilon when the task's config is known (as `flchain ledger members`)."""
        book = self.ledger(task_id)
        privacy, note = self._task_privacy(book.task)
        names = self._names(book)
        money = member_money(book)
        commits = count_commits(r.submitted for r in book.rounds) if privacy else {}
        rows = []
        for m in book.members:
            row = member_row(task_id, m, privacy, commits.get(m.index, 0), money[m.index])
            row.update(_member_label(names, m.index, m.account))
            row.setdefault("epsilon", None)
            rows.append(row)
        return {
            "task_id": task_id,
            "head_block": book.head_block,
            "privacy": _privacy_view(privacy, note),
            "members": rows,
        }

    def history(self, task_id: int) -> dict[str, Any]:
        """Reputation (factor, 1.0 at joining) and rewards credited (wei, cumulative; a
        revert's clawback taken off) of every member after each round 0..last."""
        book = self.ledger(task_id)
        names = self._names(book)
        reputation = reputation_history(book)
        series = []
        for m in book.members:
            total, rewards = 0, [0]
            for rnd in book.rounds:
                if m.index in rnd.paid and rnd.status != "reverted":
                    total += rnd.reward_share
                rewards.append(total)
            series.append(
                {
                    **_member_label(names, m.index, m.account),
                    "reputation": [
                        None if v is None else v / REP_UNIT for v in reputation[m.index]
                    ],
                    "rewards_wei": rewards,
                }
            )
        return {
            "task_id": task_id,
            "head_block": book.head_block,
            "rounds": list(range(len(book.rounds) + 1)),
            "members": series,
        }

    def curves(self, task_id: int) -> dict[str, Any]:
        """Accuracy per node and round, where the devnet's nodes report it (their live
        /status, or the status.json a stopped node left), and the training loss each member
        committed on chain per round (None where DP withholds it)."""
        book = self.ledger(task_id)
        names = self._names(book)
        loss = []
        for m in book.members:
            points = [
                [u.round, u.loss] for r in book.rounds for u in r.updates if u.member == m.index
            ]
            loss.append({**_member_label(names, m.index, m.account), "points": points})
        accuracy = []
        if self.source.nodes and self.source.devnet_task == task_id:
            index = {m.account.lower(): m.index for m in book.members}
            for node in self.source.nodes:
                status = self._node_statuses().get(str(node.get("name")))
                history = (status or {}).get("accuracy_history") or {}
                points = sorted(
                    [int(k), float(v)]
                    for k, v in history.items()
                    if str(k).isdigit() and isinstance(v, int | float)
                )
                member = index.get(str(node.get("address") or "").lower())
                label = _member_label(names, member, node.get("address"))
                accuracy.append({**label, "node": node.get("name"), "points": points})
        return {
            "task_id": task_id,
            "head_block": book.head_block,
            "rounds": len(book.rounds),
            "accuracy": accuracy,
            "accuracy_source": "devnet nodes" if accuracy else None,
            "loss": loss,
        }

    def events(
        self,
        task_id: int,
        *,
        name: str | None = None,
        round_number: int | None = None,
        offset: int = 0,
        limit: int = 1000,
    ) -> dict[str, Any]:
        """The task's decoded event log in chain order (as `flchain ledger events`), with
        member arguments named; filtered by event name and round, one page at a time."""
        book = self.ledger(task_id)
        names = self._names(book)
        known = sorted(i["name"] for i in load_artifact().abi if i["type"] == "event")
        if name is not None and name not in known:
            raise BadRequestError(f"unknown event {name!r}; events are {', '.join(known)}")
        picked = [
            ev
            for ev in book.events
            if (name is None or ev["event"] == name)
            and (round_number is None or ev["args"].get("round") == round_number)
        ]
        limit = max(0, min(limit, MAX_EVENTS))
        rows = []
        for ev in picked[offset : offset + limit]:
            row = event_row(task_id, ev)
            member = ev["args"].get("member")
            row["member_label"] = None if member is None else names.brief(int(member))
            rows.append(row)
        return {
            "task_id": task_id,
            "head_block": book.head_block,
            "total": len(picked),
            "offset": offset,
            "names": known,
            "events": rows,
        }

    def verify(self, task_id: int) -> dict[str, Any]:
        """`flchain ledger verify`'s checks: every on-chain digest re-hashed against the
        blob files of the devnet's nodes (or `--blobs`); read again on each new block."""
        dirs = [d for d in self.source.blob_dirs if d.is_dir()]
        if not dirs:
            return {
                "task_id": task_id,
                "available": False,
                "reason": "no blob directories: serve with --devnet DIR or --blobs DIR",
            }
        book = self.ledger(task_id)
        names = self._names(book)

        def read() -> tuple[int, bool, list[Any]]:
            return book.head_block, False, verify_blobs(book, dirs)

        checks = self._cached(("verify", task_id), read)
        rows = []
        for check in checks:
            row = plain(check)
            row["member_label"] = None if check.member is None else names.brief(check.member)
            rows.append(row)
        counts = {s: sum(c.status == s for c in checks) for s in ("ok", "mismatch", "missing")}
        return {
            "task_id": task_id,
            "head_block": book.head_block,
            "available": True,
            "blob_dirs": [str(d) for d in dirs],
            **counts,
            "checks": rows,
        }

    # ------------------------------------------------------------ devnet nodes

    def _node_statuses(self) -> dict[str, dict[str, Any] | None]:
        """Node name -> its status (None while starting), read at most every
        NODE_STATUS_S seconds and once per block; outside the chain lock."""
        with self._nodes_lock:
            now, head = time.monotonic(), self._head or 0
            cached = self._nodes
            if cached is not None and now - cached[0] < NODE_STATUS_S and cached[1] >= head:
                return cached[2]
            live = self.source.live
            found = {str(n.get("name")): _node_status(n, live=live) for n in self.source.nodes}
            self._nodes = (now, head, found)
            return found


def _node_status(node: dict[str, Any], *, live: bool) -> dict[str, Any] | None:
    """A devnet node's status: its /status while it runs (the address runtime.json names),
    else the status.json it wrote on its way out; None when neither answers."""
    directory = Path(str(node.get("dir")))
    if live:
        try:
            runtime = safe_json.load_file(directory / RUNTIME_FILE, max_bytes=_NODE_JSON_BYTES)
            url = runtime["status_url"]
            if isinstance(url, str) and url.startswith("http://"):
                with urllib.request.urlopen(url + "/status", timeout=NODE_TIMEOUT_S) as answer:
                    data = answer.read(_NODE_JSON_BYTES + 1)
                status = safe_json.loads(data, max_bytes=_NODE_JSON_BYTES)
                if isinstance(status, dict):
                    return status
        except (OSError, ValueError, KeyError, TypeError):
            pass
    try:
        status = safe_json.load_file(directory / STATUS_FILE, max_bytes=_NODE_JSON_BYTES)
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) else None


def _member_label(
    names: MemberNames, index: int | None, account: str | None = None
) -> dict[str, Any]:
    """How the page names a member: label, brief, node, attack, account."""
    account = account or (None if index is None else names.accounts.get(index))
    fields = names.fields(index, account)
    return {
        "index": index,
        "account": account,
        "short_account": short_address(account),
        "label": names.label(index, account),
        "brief": "-" if index is None else names.brief(index),
        "node": fields["node"],
        "attack": fields["attack"],
        "byzantine": bool(fields["attack"]),
    }


def _privacy_view(privacy: TaskPrivacy | None, note: str | None) -> dict[str, Any] | None:
    if privacy is None:
        return None if note is None else {"error": note}
    return {
        "dp_noise": privacy.dp_noise,
        "dp_delta": privacy.dp_delta,
        "dp_clip": privacy.dp_clip,
        "secure": privacy.secure,
        "has_dp": privacy.has_dp,
    }


def _round_extras(rnd: RoundRecord, task: TaskInfo, names: MemberNames) -> dict[str, Any]:
    """What the page adds to a round row: members by list, tallies against the quorum,
    the alarm threshold, the decryptor's name."""
    rejected = None if rnd.accepted is None else sorted(set(rnd.submitted) - set(rnd.accepted))
    total = rnd.total_reputation
    return {
        "eligible_members": list(rnd.eligible),
        "submitted_members": list(rnd.submitted),
        "voted_members": list(rnd.voted),
        "alarmed_members": list(rnd.alarmed),
        "rejected_members": rejected,
        "tally_list": [
            {
                "digest": plain(t.digest),
                "accepted": list(t.accepted),
                "weight": t.weight,
                "voters": list(t.voters),
                "quorum": t.weight * BPS >= rnd.quorum_bps * total and total > 0,
                "won": rnd.global_digest == t.digest and set(rnd.accepted or ()) == set(t.accepted),
            }
            for t in sorted(rnd.tallies, key=lambda t: -t.weight)
        ],
        "alarm_threshold": -(-task.alarm_bps * total // BPS),
        "decryptor_label": None if rnd.decryptor is None else names.brief(rnd.decryptor),
    }


def _round_view(
    task_id: int,
    rnd: RoundRecord,
    task: TaskInfo,
    names: MemberNames,
    privacy: TaskPrivacy | None,
) -> dict[str, Any]:
    return {**round_row(task_id, rnd, privacy), **_round_extras(rnd, task, names)}


def _cell(rnd: RoundRecord, member: int) -> dict[str, Any]:
    """One member in one round: what it committed and how it was judged, whether it
    voted (late?) and alarmed, and whether it decrypted the round's sum."""
    update = next((u for u in rnd.updates if u.member == member), None)
    vote = next((v for v in rnd.votes if v.member == member), None)
    if member not in rnd.eligible:
        state = "not-eligible"
    elif update is None:
        state = "missed"
    elif update.verdict is not None:
        state = update.verdict
    else:
        state = "committed"
    return {
        "round": rnd.round,
        "state": state,
        "loss": None if update is None else update.loss,
        "voted": vote is not None,
        "late_vote": None if vote is None else vote.late,
        "alarmed": member in rnd.alarmed,
        "decryptor": rnd.decryptor == member,
        "remasked": member in rnd.remasked,
        "paid": member in rnd.paid,
    }
