"""The on-chain model ledger of one task, rebuilt from FLChain views and events.

Views hold the state an auditor needs (rounds, commitments, votes, members, reputations, and
the money: reward pool, each round's reward share, what each member earned and would be
paid); events add what storage does not keep: each vote's and alarm's weight, the tally that
finalized a round, why a round failed, every reputation move (`reputation_moves` names its
reasons), every ejection's forfeit (`slash_records`) and every transfer in or out
(`transfer_records`). `rebuild_ledger` reads both into plain dataclasses; the `*_row`
functions flatten them for JSON, CSV and tables (amounts in wei), and `verify_blobs`
re-hashes local blob files against the digests the chain committed to.

The chain holds only the digest of the task config, so the privacy budget needs the config
file itself: `load_task_privacy` accepts it only when it hashes to that digest, and the rows
then carry each member's epsilon (`TaskPrivacy.epsilon`) next to what the chain recorded.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flchain.contracts.errors import ContractRevert, FLChainError
from flchain.contracts.types import (
    LOSS_WITHHELD,
    REP_UNIT,
    FailReason,
    MemberStatus,
    RoundInfo,
    RoundStatus,
    TaskInfo,
    bitmap_indices,
    decode_loss,
)

if TYPE_CHECKING:  # web3 loads with the first client, not with the ledger model
    from flchain.contracts.client import FLChainClient

BPS = 10_000
_HASH_CHUNK = 1 << 20
_BASE58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_MULTIHASH_IDENTITY, _MULTIHASH_SHA256 = 0x00, 0x12
# Rounds that have a global model and verdicts (a reverted round keeps both on chain).
_FINALIZED = (RoundStatus.FINALIZED, RoundStatus.REVERTED)


class LedgerError(FLChainError, ValueError):
    """The ledger cannot be read as asked (unknown task or round, bad blob directory)."""


class UnknownTaskError(LedgerError):
    """No task with this id on the contract."""


class UnknownRoundError(LedgerError):
    """The task has no such round (yet)."""


class ConfigMismatchError(LedgerError):
    """A task config file that is not the one the task committed to on chain."""


# ---------------------------------------------------------------- records


@dataclass(frozen=True)
class MemberRecord:
    """A member as the chain has it now; `stake_wei` is the deposit every member paid.

    `earned` (wei): rewards credited by finalized rounds (for an ejected member, what it
    forfeited with its stake); `payout` (wei): what `withdraw` pays it once the task is
    settled (stake, rewards and its share of the pool left), zero unless active."""

    index: int
    account: str
    peer_id: bytes
    x25519: bytes
    status: str
    since_round: int
    reputation: int
    stake_wei: int
    he_key: bytes = bytes(32)
    earned: int = 0
    payout: int = 0

    @property
    def forfeited(self) -> int:
        """Wei an ejected member lost to the reward pool (its stake and its rewards)."""
        return self.stake_wei + self.earned if self.status == "ejected" else 0

    @property
    def reputation_factor(self) -> float:
        return self.reputation / REP_UNIT

    @property
    def has_he_key(self) -> bool:
        """Whether the member registered a Paillier key (and so may decrypt a round's sum)."""
        return self.he_key != bytes(32)

    @property
    def peer_id_text(self) -> str:
        return format_peer_id(self.peer_id)


@dataclass(frozen=True)
class UpdateRecord:
    """A committed update; `verdict` is "accepted"/"rejected" once its round was finalized
    (a reverted round keeps its verdicts), None while open and for failed rounds."""

    round: int
    member: int
    digest: bytes
    samples: int
    base_round: int
    loss: float | None  # None: withheld under DP (LOSS_WITHHELD)
    verdict: str | None


@dataclass(frozen=True)
class VoteRecord:
    """A vote; weight, block and tx come from the VoteCast event (None when not fetched).

    `late`: cast after the round finalized (a *late vote*, weight 0: it moves no tally, but
    voting at all, and for the finalized pair, is settled when the next round ends); None
    when its event was not read."""

    round: int
    member: int
    digest: bytes
    accepted: tuple[int, ...]
    weight: int | None
    block_number: int | None
    tx_hash: str | None
    late: bool | None = None


@dataclass(frozen=True)
class TallyRecord:
    """Reputation voted for one (global digest, accepted bitmap) pair in a round."""

    digest: bytes
    accepted: tuple[int, ...]
    weight: int
    voters: tuple[int, ...]


@dataclass(frozen=True)
class AlarmRecord:
    """A Siren alarm; weight, running alarm weight, block and tx come from AlarmRaised."""

    round: int
    member: int
    weight: int | None
    alarm_weight: int | None
    block_number: int | None
    tx_hash: str | None


@dataclass(frozen=True)
class RoundRecord:
    """One round. `status` is open, voting, stalled (windows over, waiting for anyone to
    close it), finalized, failed, reverted or aborted; `accepted` is None until finalized.

    Secure mode: `decryptor` is the member the contract picked to decrypt the sum (None when
    no eligible member registered a Paillier key), `remasks` the (member, digest) of updates
    re-committed after a dropout, `sum_digest` the published sum+proof blob (None until then).

    Rewards (wei): a finalized round credited `reward_share` to each member of `paid` (its
    accepted, still active members, less those that did not vote on the round before when
    that one finalized or failed with votes); a revert clawed back `clawed_back` of it into
    the pool (None unless the RoundReverted event was read).
    """

    round: int
    status: str
    start: int
    submit_deadline: int
    vote_deadline: int
    finalized_at: int | None
    base_digest: bytes
    base_round: int
    global_digest: bytes | None
    accepted: tuple[int, ...] | None
    eligible: tuple[int, ...]
    submitted: tuple[int, ...]
    voted: tuple[int, ...]
    alarmed: tuple[int, ...]
    alarm_weight: int
    total_reputation: int
    quorum_bps: int
    final_tally: int | None
    fail_reason: str | None
    updates: tuple[UpdateRecord, ...]
    votes: tuple[VoteRecord, ...]
    tallies: tuple[TallyRecord, ...]
    alarms: tuple[AlarmRecord, ...]
    decryptor: int | None = None
    remasks: tuple[tuple[int, bytes], ...] = ()
    sum_digest: bytes | None = None
    reward_share: int = 0
    paid: tuple[int, ...] = ()
    clawed_back: int | None = None

    @property
    def reward_paid(self) -> int:
        """Wei the round credited at finalization: its share to each member of `paid`."""
        return self.reward_share * len(self.paid)

    @property
    def remasked(self) -> tuple[int, ...]:
        return tuple(member for member, _ in self.remasks)

    @property
    def quorum_weight(self) -> int:
        """Reputation a pair needs to finalize the round (tally * BPS >= quorum * total)."""
        return -(-self.quorum_bps * self.total_reputation // BPS)

    @property
    def n_accepted(self) -> int | None:
        return None if self.accepted is None else len(self.accepted)

    @property
    def n_rejected(self) -> int | None:
        return None if self.accepted is None else len(self.submitted) - len(self.accepted)


@dataclass(frozen=True)
class Ledger:
    """Everything the chain records about one task, read at block `head_block`."""

    contract: str
    chain_id: int
    head_block: int
    now: int
    task: TaskInfo
    members: tuple[MemberRecord, ...]
    rounds: tuple[RoundRecord, ...]
    events: tuple[dict[str, Any], ...]

    def round(self, number: int) -> RoundRecord:
        if not 1 <= number <= len(self.rounds):
            have = f"rounds 1..{len(self.rounds)}" if self.rounds else "no rounds yet"
            raise UnknownRoundError(f"task {self.task.task_id} has no round {number} ({have})")
        return self.rounds[number - 1]

    @property
    def updates(self) -> list[UpdateRecord]:
        return [u for r in self.rounds for u in r.updates]

    @property
    def votes(self) -> list[VoteRecord]:
        return [v for r in self.rounds for v in r.votes]

    @property
    def alarms(self) -> list[AlarmRecord]:
        return [a for r in self.rounds for a in r.alarms]


@dataclass(frozen=True)
class BlobCheck:
    """One on-chain digest checked against local blob files named by it.

    status: "ok" (every copy hashes to the digest), "mismatch" (some copy does not: listed
    in bad_paths) or "missing" (no copy in any blob directory).
    """

    kind: str
    round: int
    member: int | None
    digest: bytes
    status: str
    paths: tuple[str, ...]
    bad_paths: tuple[str, ...]


# ---------------------------------------------------------------- formatting helpers


def hex0x(value: bytes) -> str:
    return "0x" + bytes(value).hex()


def _base58(data: bytes) -> str:
    number = int.from_bytes(data, "big")
    out = ""
    while number:
        number, digit = divmod(number, 58)
        out = _BASE58_ALPHABET[digit] + out
    leading_zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * leading_zeros + out


def _is_multihash(data: bytes) -> bool:
    if len(data) < 2 or data[0] not in (_MULTIHASH_IDENTITY, _MULTIHASH_SHA256):
        return False
    return data[1] == len(data) - 2 and (data[0] == _MULTIHASH_IDENTITY or data[1] == 32)


def format_peer_id(peer_id: bytes) -> str:
    """A libp2p peer id (multihash bytes) in its usual base58 form; other bytes as text when
    printable ASCII, else 0x-hex, so that nothing on chain is hidden or mangled."""
    if _is_multihash(peer_id):
        return _base58(peer_id)
    if peer_id and all(0x21 <= b < 0x7F for b in peer_id):
        return peer_id.decode("ascii")
    return hex0x(peer_id)


def plain(value: Any) -> Any:
    """JSON-ready copy: bytes as 0x-hex, enums as lower-case names, tuples as lists."""
    if isinstance(value, IntEnum):
        return value.name.lower()
    if isinstance(value, bytes | bytearray):
        return hex0x(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


# ---------------------------------------------------------------- privacy budget


@dataclass(frozen=True)
class TaskPrivacy:
    """The privacy settings of a task, from a config file that matched its on-chain digest.

    Every member runs the Gaussian mechanism (noise multiplier `dp_noise`) once per update it
    commits, and takes part in every round (sampling rate 1.0), so its budget after k commits
    is that of k Gaussian releases. Nodes may add more noise than the task demands: the
    figures are an upper bound on what a node spent.
    """

    config_digest: bytes
    dp_noise: float
    dp_delta: float
    dp_clip: float | None
    secure: bool

    @property
    def has_dp(self) -> bool:
        return self.dp_noise > 0

    def epsilon(self, rounds: int) -> float | None:
        """Epsilon at `dp_delta` after `rounds` committed updates; None without DP noise,
        where no finite guarantee exists."""
        if not self.has_dp:
            return None
        return _epsilon(self.dp_noise, rounds, self.dp_delta)


@functools.lru_cache(maxsize=4096)
def _epsilon(noise: float, rounds: int, delta: float) -> float:
    # Imported here: the accountant pulls in scipy, which ledger commands without a
    # config should not pay for. Cached because every round and member asks again.
    from flchain.crypto.dp import epsilon

    return epsilon(noise, 1.0, rounds, delta)


def load_task_privacy(data: bytes, task: TaskInfo, source: str) -> TaskPrivacy:
    """The privacy settings in task config bytes (`source` names them in errors).

    The bytes must hash (sha256) to the task's on-chain config digest, as the nodes check:
    a budget computed from another task's config would be a confident wrong answer.
    """
    digest = hashlib.sha256(data).digest()
    if digest != task.config_digest:
        raise ConfigMismatchError(
            f"{source} is not task {task.task_id}'s config: it hashes to {hex0x(digest)}, "
            f"the config digest on chain is {hex0x(task.config_digest)}"
        )
    from flchain.taskconfig import TaskConfig, TaskConfigError

    try:  # its digest is on chain: the privacy fields are all this reads of it
        fields = TaskConfig.json_fields(data)
    except TaskConfigError as exc:
        raise LedgerError(f"{source} is not a flchain task config: {exc}") from exc

    def number(name: str, *, none: bool = False) -> float | None:
        value = fields.get(name, getattr(TaskConfig, name))
        if value is None and none:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise LedgerError(f"{source}: {name} must be a number, got {value!r}")
        return float(value)

    noise, delta = number("dp_noise") or 0.0, number("dp_delta") or 0.0
    if not math.isfinite(noise) or noise < 0:
        raise LedgerError(f"{source}: dp_noise must be a finite number >= 0, got {noise!r}")
    if noise > 0 and not 0 < delta < 1:
        raise LedgerError(f"{source}: dp_delta must be in (0, 1), got {delta!r}")
    return TaskPrivacy(
        config_digest=digest,
        dp_noise=noise,
        dp_delta=delta,
        dp_clip=number("dp_clip", none=True),
        secure=bool(fields.get("secure", TaskConfig.secure)),
    )


def count_commits(submitted: Iterable[Iterable[int]]) -> dict[int, int]:
    """Member index -> number of rounds it committed an update in, from each round's
    submitters: the number of times its DP mechanism ran."""
    counts: Counter[int] = Counter()
    for members in submitted:
        counts.update(set(members))
    return dict(counts)


def read_commit_counts(client: FLChainClient, task_id: int, last_round: int) -> dict[int, int]:
    """`count_commits` over rounds 1..last_round, from the round views alone (no events)."""
    infos = client.get_rounds(task_id, range(1, last_round + 1))
    return count_commits(bitmap_indices(info.submitted) for info in infos)


# ---------------------------------------------------------------- reading the chain


def get_task_checked(client: FLChainClient, task_id: int) -> TaskInfo:
    """The task, or UnknownTaskError naming the ids that do exist."""
    if isinstance(task_id, bool) or not isinstance(task_id, int) or task_id < 1:
        raise UnknownTaskError(f"task ids start at 1, got {task_id!r}")
    try:
        return client.get_task(task_id)
    except ContractRevert as exc:
        if exc.reason != "no task":
            raise
        count = client.task_count()
        have = f"task ids 1..{count}" if count else "no tasks yet"
        message = f"no task {task_id} on FLChain at {client.address} ({have})"
        raise UnknownTaskError(message) from exc


def list_tasks(client: FLChainClient) -> list[TaskInfo]:
    """Every task on the contract, by id."""
    return [client.get_task(i) for i in range(1, client.task_count() + 1)]


def round_status(info: RoundInfo, now: int) -> str:
    """The round's status word; an open round is split by phase at chain time `now`."""
    if info.status != RoundStatus.OPEN:
        return info.status.name.lower()
    everyone_voted = info.eligible != 0 and info.voted == info.eligible
    if now >= info.vote_deadline or everyone_voted:
        return "stalled"
    if now >= info.submit_deadline or info.submitted == info.eligible:
        return "voting"
    return "open"


def _chain_now(client: FLChainClient) -> tuple[int, int]:
    """(head block number, chain time): the later of the head's timestamp and the wall clock,
    since the next block is stamped at least then and a quiet chain mines no new head."""
    block = client.sender.rpc(lambda: client.w3.eth.get_block("latest"), "get latest block")
    return int(block["number"]), max(int(block["timestamp"]), int(time.time()))


def chain_time(client: FLChainClient) -> int:
    """Chain time now (seconds): the later of the head block's timestamp and the wall clock."""
    return _chain_now(client)[1]


def _index_events(
    events: Iterable[dict[str, Any]],
) -> tuple[dict[tuple[str, int, int], dict[str, Any]], dict[tuple[str, int], dict[str, Any]]]:
    """Events keyed by (name, round, member) and by (name, round), the last one winning."""
    by_member: dict[tuple[str, int, int], dict[str, Any]] = {}
    by_round: dict[tuple[str, int], dict[str, Any]] = {}
    for ev in events:
        args = ev["args"]
        if "round" not in args:
            continue
        if "member" in args:
            by_member[(ev["event"], int(args["round"]), int(args["member"]))] = ev
        else:
            by_round[(ev["event"], int(args["round"]))] = ev
    return by_member, by_round


def _is_late(
    cast: dict[str, Any] | None, final: dict[str, Any] | None, finalized: bool
) -> bool | None:
    """Whether a vote came after its round's finalization, from the order of their events
    (a finalization before `from_block` was not read, so a vote that was is later)."""
    if cast is None:
        return None
    if not finalized:
        return False
    if final is None:
        return True
    return (cast["block_number"], cast["log_index"]) > (final["block_number"], final["log_index"])


def _event_fields(event: dict[str, Any] | None, *names: str) -> list[Any]:
    """The named args of an event, then its block and tx; all None when it was not read."""
    if event is None:
        return [None] * (len(names) + 2)
    return [int(event["args"][n]) for n in names] + [event["block_number"], event["tx_hash"]]


def _read_rounds(
    client: FLChainClient,
    task_id: int,
    numbers: Sequence[int],
    now: int,
    events: Sequence[dict[str, Any]],
    *,
    keyed: bool = True,
) -> list[RoundRecord]:
    """Rounds `numbers` in full, with every view batched across them (few round trips).

    `keyed=False` says no member registered a Paillier key, so no round has a decryptor
    and its view (one call per round) is skipped."""
    by_member, by_round = _index_events(events)
    infos = client.get_rounds(task_id, numbers)
    remasks = {
        (i.round, m): client.get_remask(task_id, i.round, m)
        for i in infos
        for m in bitmap_indices(i.remasked)
    }
    decryptors = {i.round: client.decryptor(task_id, i.round) if keyed else None for i in infos}
    update_keys = [(i.round, m) for i in infos for m in bitmap_indices(i.submitted)]
    vote_keys = [(i.round, m) for i in infos for m in bitmap_indices(i.voted)]
    commits = dict(zip(update_keys, client.get_updates(task_id, update_keys), strict=True))
    ballots = dict(zip(vote_keys, client.get_votes(task_id, vote_keys), strict=True))
    pairs: dict[tuple[int, bytes, int], list[int]] = {}
    for (number, member), ballot in ballots.items():
        pairs.setdefault((number, ballot.digest, ballot.accepted), []).append(member)
    finals = [
        (i.round, i.global_digest, i.accepted)
        for i in infos
        if i.status in _FINALIZED and ("RoundFinalized", i.round) not in by_round
    ]
    tally_keys = list(pairs) + [k for k in finals if k not in pairs]
    tallies = dict(zip(tally_keys, client.get_tallies(task_id, tally_keys), strict=True))

    out = []
    for info in infos:
        number = info.round
        finalized = info.status in _FINALIZED
        accepted = tuple(bitmap_indices(info.accepted)) if finalized else None
        updates = []
        for member in bitmap_indices(info.submitted):
            commit = commits[(number, member)]
            verdict = None
            if accepted is not None:
                verdict = "accepted" if member in accepted else "rejected"
            updates.append(
                UpdateRecord(
                    round=number,
                    member=member,
                    digest=commit.digest,
                    samples=commit.samples,
                    base_round=commit.base_round,
                    loss=None if commit.loss == LOSS_WITHHELD else decode_loss(commit.loss),
                    verdict=verdict,
                )
            )
        votes = []
        final_event = by_round.get(("RoundFinalized", number))
        for member in bitmap_indices(info.voted):
            ballot = ballots[(number, member)]
            cast = by_member.get(("VoteCast", number, member))
            weight, block, tx = _event_fields(cast, "weight")
            votes.append(
                VoteRecord(
                    round=number,
                    member=member,
                    digest=ballot.digest,
                    accepted=tuple(bitmap_indices(ballot.accepted)),
                    weight=weight,
                    block_number=block,
                    tx_hash=tx,
                    late=_is_late(cast, final_event, finalized),
                )
            )
        alarms = []
        for member in bitmap_indices(info.alarmed):
            weight, running, block, tx = _event_fields(
                by_member.get(("AlarmRaised", number, member)), "weight", "alarm_weight"
            )
            alarms.append(
                AlarmRecord(
                    round=number,
                    member=member,
                    weight=weight,
                    alarm_weight=running,
                    block_number=block,
                    tx_hash=tx,
                )
            )
        final_tally = None
        if finalized:
            event = by_round.get(("RoundFinalized", number))
            final_tally = (
                int(event["args"]["tally"])
                if event
                else tallies[(number, info.global_digest, info.accepted)]
            )
        failed = by_round.get(("RoundFailed", number))
        reverted = by_round.get(("RoundReverted", number))
        out.append(
            RoundRecord(
                round=number,
                status=round_status(info, now),
                start=info.start,
                submit_deadline=info.submit_deadline,
                vote_deadline=info.vote_deadline,
                finalized_at=info.finalized_at or None,
                base_digest=info.base_digest,
                base_round=info.base_round,
                global_digest=info.global_digest if finalized else None,
                accepted=accepted,
                eligible=tuple(bitmap_indices(info.eligible)),
                submitted=tuple(bitmap_indices(info.submitted)),
                voted=tuple(bitmap_indices(info.voted)),
                alarmed=tuple(bitmap_indices(info.alarmed)),
                alarm_weight=info.alarm_weight,
                total_reputation=info.total_reputation,
                quorum_bps=info.quorum_bps,
                final_tally=final_tally,
                fail_reason=(
                    FailReason(int(failed["args"]["reason"])).name.lower() if failed else None
                ),
                updates=tuple(updates),
                votes=tuple(votes),
                tallies=tuple(
                    TallyRecord(
                        digest=digest,
                        accepted=tuple(bitmap_indices(bits)),
                        weight=tallies[(r, digest, bits)],
                        voters=tuple(voters),
                    )
                    for (r, digest, bits), voters in pairs.items()
                    if r == number
                ),
                alarms=tuple(alarms),
                decryptor=decryptors[number],
                remasks=tuple(
                    (member, digest)
                    for member in bitmap_indices(info.remasked)
                    if (digest := remasks[(number, member)]) is not None
                ),
                sum_digest=info.sum_digest if info.sum_digest != bytes(32) else None,
                reward_share=info.reward_share,
                paid=tuple(bitmap_indices(info.paid)),
                clawed_back=int(reverted["args"]["clawed_back"]) if reverted else None,
            )
        )
    return out


def read_members(client: FLChainClient, task: TaskInfo) -> list[MemberRecord]:
    """Every member that ever joined `task`, by index, as the chain has it now."""
    return [
        MemberRecord(
            index=m.index,
            account=m.account,
            peer_id=m.peer_id,
            x25519=m.x25519,
            status=MemberStatus(m.status).name.lower(),
            since_round=m.since_round,
            reputation=m.reputation,
            stake_wei=task.stake,
            he_key=m.he_key,
            earned=m.earned,
            payout=m.payout,
        )
        for m in client.members(task.task_id)
    ]


def read_round(
    client: FLChainClient,
    task_id: int,
    number: int,
    *,
    from_block: int = 0,
    chunk_blocks: int | None = None,
    now: int | None = None,
) -> RoundRecord:
    """One round in full (see `rebuild_ledger` for the options)."""
    task = get_task_checked(client, task_id)
    if not 1 <= number <= task.current_round:
        have = f"rounds 1..{task.current_round}" if task.current_round else "no rounds yet"
        raise UnknownRoundError(f"task {task_id} has no round {number} ({have})")
    head, chain_time = _chain_now(client)
    events = client.events(task_id, from_block, head, chunk_blocks=chunk_blocks)
    at = chain_time if now is None else now
    (record,) = _read_rounds(client, task_id, [number], at, events)
    return record


def read_round_events(
    client: FLChainClient,
    task_id: int,
    number: int,
    *,
    from_block: int = 0,
    chunk_blocks: int | None = None,
    now: int | None = None,
) -> tuple[RoundRecord, RoundRecord | None, list[dict[str, Any]]]:
    """`read_round`, with the previous round (None for round 1) and the events of both (those
    whose `round` is either): what `reputation_moves` needs to explain the round's moves."""
    task = get_task_checked(client, task_id)
    if not 1 <= number <= task.current_round:
        have = f"rounds 1..{task.current_round}" if task.current_round else "no rounds yet"
        raise UnknownRoundError(f"task {task_id} has no round {number} ({have})")
    head, chain_time = _chain_now(client)
    events = client.events(task_id, from_block, head, chunk_blocks=chunk_blocks)
    at = chain_time if now is None else now
    numbers = [number - 1, number] if number > 1 else [number]
    records = _read_rounds(client, task_id, numbers, at, events)
    wanted = set(numbers)
    own = [ev for ev in events if ev["args"].get("round") in wanted]
    return records[-1], records[0] if number > 1 else None, own


LEDGER_READ_ATTEMPTS = 3
"""How often `rebuild_ledger` reads again when blocks keep landing during its read."""


def rebuild_ledger(
    client: FLChainClient,
    task_id: int,
    *,
    from_block: int = 0,
    chunk_blocks: int | None = None,
    now: int | None = None,
) -> Ledger:
    """Read one task's whole ledger from the chain (views, plus events from `from_block`).

    `now` (chain time, seconds) decides the phase of an open round; by default the later of
    the head block's timestamp and the wall clock. Events before `from_block` are not read:
    vote and alarm weights of those rounds are then None, the rest comes from views.
    """
    # Views read the latest block, whichever it is when each call runs: a block mined in
    # between would mix two states (a round finalized in the events, its task still running).
    # Read again until the head stood still through the whole read.
    for _attempt in range(LEDGER_READ_ATTEMPTS):
        head, chain_time = _chain_now(client)
        task = get_task_checked(client, task_id)
        events = client.events(task_id, from_block, head, chunk_blocks=chunk_blocks)
        at = chain_time if now is None else now
        members = tuple(read_members(client, task))
        numbers = range(1, task.current_round + 1)
        keyed = any(m.has_he_key for m in members)
        rounds = tuple(_read_rounds(client, task_id, numbers, at, events, keyed=keyed))
        if int(client.sender.rpc(lambda: client.w3.eth.block_number, "block number")) == head:
            break
    return Ledger(
        contract=client.address,
        chain_id=client.sender.chain_id,
        head_block=head,
        now=at,
        task=task,
        members=members,
        rounds=rounds,
        events=tuple(events),
    )


# ---------------------------------------------------------------- derived views


# Why a reputation moved. A round's settlement: "accepted" (+20), "rejected" (-50),
# "no-submit" (-50), "bad-vote" (a vote for another result, -50), "no-vote" (a failed round,
# -100), and for the previous round if it finalized: "no-late-vote" (never voted on it, in
# time or late, -50), "bad-late-vote" (a late vote for another result, -50); an alarm:
# "alarm-bond" (-100 when raised), "bond-returned" (+100 when it reverted the round);
# "reverted" (a revert undoing the round's settlement move). "unknown": the rounds that
# explain the move were not read.
LOSS_REASONS = (
    "rejected",
    "no-submit",
    "bad-vote",
    "no-vote",
    "no-late-vote",
    "bad-late-vote",
    "alarm-bond",
    "unknown",
)


@dataclass(frozen=True)
class ReputationMove:
    """One ReputationChanged event, with the reasons the round's record gives for it.

    `undone`: the round was reverted afterwards, which gave the move back (its settlement
    moves and the alarm bonds on it)."""

    round: int
    member: int
    old: int
    new: int
    reasons: tuple[str, ...]
    undone: bool
    block_number: int | None
    tx_hash: str | None
    log_index: int | None = None

    @property
    def delta(self) -> int:
        return self.new - self.old

    @property
    def is_penalty(self) -> bool:
        """Reputation lost for something the member did or failed to do (not the undoing
        of an earlier gain by a revert)."""
        return self.new < self.old and any(r in LOSS_REASONS for r in self.reasons)


@dataclass(frozen=True)
class SlashRecord:
    """A MemberEjected event: the member fell below the floor in `round` (by its settlement
    or by an alarm bond on it, `cause`) and forfeited its stake and rewards to the pool;
    `reinstated` when a revert of that round brought it back."""

    round: int
    member: int
    account: str
    reputation: int
    forfeited: int
    cause: tuple[str, ...]
    reinstated: bool
    block_number: int | None
    tx_hash: str | None


@dataclass(frozen=True)
class TransferRecord:
    """Wei moved into the contract ("reward": escrowed at creation, "fund": a top-up,
    "stake": a member's deposit) or out of it ("withdraw": a member's payout, "refund": the
    pool back to the owner of a task that paid no rewards)."""

    kind: str
    account: str
    amount: int
    member: int | None
    block_number: int | None
    tx_hash: str | None

    @property
    def direction(self) -> str:
        return "out" if self.kind in ("withdraw", "refund") else "in"


@dataclass(frozen=True)
class MemberMoney:
    """A member's money and penalties, from views and events together."""

    member: int
    earned: int
    payout: int
    forfeited: int
    withdrawn: int | None
    penalties: tuple[ReputationMove, ...]
    slashes: tuple[SlashRecord, ...]

    @property
    def reputation_lost(self) -> int:
        """Reputation its penalties cost, less those a revert gave back."""
        return sum(p.old - p.new for p in self.penalties if not p.undone)


def _other_pair(vote: VoteRecord, rnd: RoundRecord) -> bool:
    """A vote for another (digest, accepted) pair than the one the round finalized."""
    return vote.digest != rnd.global_digest or set(vote.accepted) != set(rnd.accepted or ())


def _settlement_reasons(
    rnd: RoundRecord | None, prev: RoundRecord | None, member: int
) -> tuple[str, ...]:
    """Why a round's settlement moved `member`: a finalized (or since reverted) round judges
    its update and its in-time vote, a failed round (if anyone voted in it) whether it
    committed and voted; either settles the votes on the previous round if that one
    finalized (`prev`: never voted, or voted late for another pair)."""
    if rnd is None:
        return ("unknown",)
    reasons = []
    finalized = rnd.accepted is not None
    blame = finalized or bool(rnd.voted)  # a failed round nobody voted in blames nobody
    if blame and member not in rnd.submitted:
        reasons.append("no-submit")
    elif finalized:
        reasons.append("accepted" if member in (rnd.accepted or ()) else "rejected")
    vote = next((v for v in rnd.votes if v.member == member), None)
    if finalized:
        if vote is not None and not vote.late and _other_pair(vote, rnd):
            reasons.append("bad-vote")
    elif blame and member not in rnd.voted:
        reasons.append("no-vote")
    if prev is not None and prev.accepted is not None and member in prev.eligible:
        late = next((v for v in prev.votes if v.member == member), None)
        if member not in prev.voted:
            reasons.append("no-late-vote")
        elif late is not None and late.late and _other_pair(late, prev):
            reasons.append("bad-late-vote")
    return tuple(reasons) or ("unknown",)


def _after(event: dict[str, Any], other: dict[str, Any]) -> bool:
    return int(event.get("log_index", 0)) > int(other.get("log_index", 0))


def reputation_moves(
    rounds: Iterable[RoundRecord], events: Iterable[dict[str, Any]]
) -> list[ReputationMove]:
    """Every ReputationChanged event with its reasons, in chain order.

    A transaction that raised an alarm bonds the raiser first; when the alarm reverts the
    round, the moves after it undo the round's settlement and, last for each raiser, return
    the bonds. Any other move is a round's settlement (finalizing vote or close_round),
    explained by the round's record (its submitters, verdicts and votes) and the previous
    round's (whose votes, late ones included, are settled then): pass both."""
    by_round = {r.round: r for r in rounds}
    by_tx: dict[Any, list[dict[str, Any]]] = {}
    raisers: dict[int, set[int]] = {r.round: set(r.alarmed) for r in by_round.values()}
    for ev in events:
        by_tx.setdefault(ev.get("tx_hash") or id(ev), []).append(ev)
        if ev["event"] == "AlarmRaised":
            raisers.setdefault(int(ev["args"]["round"]), set()).add(int(ev["args"]["member"]))
    moves = []
    for group in by_tx.values():
        alarm = next((e for e in group if e["event"] == "AlarmRaised"), None)
        changes = [e for e in group if e["event"] == "ReputationChanged"]
        returned: set[int] = set()
        if alarm is not None:
            # A revert returns the bonds last: each raiser's last move after the alarm.
            last = {int(e["args"]["member"]): e for e in changes if _after(e, alarm)}
            bonded = raisers.get(int(alarm["args"]["round"]), set())
            returned = {id(e) for m, e in last.items() if m in bonded}
        for e in changes:
            args = e["args"]
            number, member = int(args["round"]), int(args["member"])
            rnd = by_round.get(number)
            if alarm is None:
                reasons = _settlement_reasons(rnd, by_round.get(number - 1), member)
                undoable = True
            elif not _after(e, alarm):
                reasons, undoable = ("alarm-bond",), True
            else:
                reasons = ("bond-returned",) if id(e) in returned else ("reverted",)
                undoable = False
            moves.append(
                ReputationMove(
                    round=number,
                    member=member,
                    old=int(args["old"]),
                    new=int(args["new"]),
                    reasons=reasons,
                    undone=undoable and rnd is not None and rnd.status == "reverted",
                    block_number=e.get("block_number"),
                    tx_hash=e.get("tx_hash"),
                    log_index=e.get("log_index"),
                )
            )
    return moves


def slash_records(
    events: Sequence[dict[str, Any]], moves: Sequence[ReputationMove] = ()
) -> list[SlashRecord]:
    """Every MemberEjected event, with the reasons of the move that took the member below
    the floor (same transaction) and whether a revert reinstated it."""
    reinstated = {
        (int(e["args"]["round"]), int(e["args"]["member"]))
        for e in events
        if e["event"] == "MemberReinstated"
    }
    out = []
    for e in events:
        if e["event"] != "MemberEjected":
            continue
        args = e["args"]
        number, member = int(args["round"]), int(args["member"])
        before = [
            m
            for m in moves
            if m.tx_hash == e.get("tx_hash")
            and m.member == member
            and (m.log_index or 0) < int(e.get("log_index", 0))
        ]
        out.append(
            SlashRecord(
                round=number,
                member=member,
                account=str(args["account"]),
                reputation=int(args["reputation"]),
                forfeited=int(args["forfeited"]),
                cause=before[-1].reasons if before else (),
                reinstated=(number, member) in reinstated,
                block_number=e.get("block_number"),
                tx_hash=e.get("tx_hash"),
            )
        )
    return out


_TRANSFERS = {
    "TaskCreated": ("reward", "owner", "reward"),
    "RewardFunded": ("fund", "funder", "amount"),
    "MemberJoined": ("stake", "account", "stake"),
    "RefundClaimed": ("refund", "owner", "amount"),
}


def transfer_records(events: Iterable[dict[str, Any]]) -> list[TransferRecord]:
    """Every transfer of wei into or out of the task, in chain order (zero amounts left
    out: a task without reward or stake moves nothing)."""
    out = []
    for e in events:
        args = e["args"]
        if e["event"] == "Withdrawn":
            kind, account, amount = "withdraw", args["account"], args["stake"] + args["reward"]
        elif e["event"] in _TRANSFERS:
            kind, who, field_name = _TRANSFERS[e["event"]]
            account, amount = args[who], args[field_name]
        else:
            continue
        if int(amount) == 0:
            continue
        out.append(
            TransferRecord(
                kind=kind,
                account=str(account),
                amount=int(amount),
                member=int(args["member"]) if "member" in args else None,
                block_number=e.get("block_number"),
                tx_hash=e.get("tx_hash"),
            )
        )
    return out


def funded_wei(events: Iterable[dict[str, Any]]) -> int:
    """Reward wei put into the task: escrowed at creation plus every top-up."""
    return sum(t.amount for t in transfer_records(events) if t.kind in ("reward", "fund"))


def member_money(ledger: Ledger) -> dict[int, MemberMoney]:
    """Member index -> its rewards, payout, forfeit, withdrawal and penalties."""
    moves = reputation_moves(ledger.rounds, ledger.events)
    slashes = slash_records(ledger.events, moves)
    withdrawn: dict[int, int] = {}
    for t in transfer_records(ledger.events):
        if t.kind == "withdraw" and t.member is not None:
            withdrawn[t.member] = withdrawn.get(t.member, 0) + t.amount
    return {
        m.index: MemberMoney(
            member=m.index,
            earned=m.earned,
            payout=m.payout,
            forfeited=m.forfeited,
            withdrawn=withdrawn.get(m.index),
            penalties=tuple(p for p in moves if p.member == m.index and p.is_penalty),
            slashes=tuple(s for s in slashes if s.member == m.index),
        )
        for m in ledger.members
    }


def move_row(task_id: int, move: ReputationMove) -> dict[str, Any]:
    """A reputation move (a penalty row of `export`): reasons joined by "+"."""
    return {
        "task_id": task_id,
        "round": move.round,
        "member": move.member,
        "old": move.old,
        "new": move.new,
        "delta": move.delta,
        "reasons": "+".join(move.reasons),
        "undone": move.undone,
        "block_number": move.block_number,
        "tx_hash": move.tx_hash,
    }


def slash_row(task_id: int, slash: SlashRecord) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "round": slash.round,
        "member": slash.member,
        "account": slash.account,
        "reputation": slash.reputation,
        "forfeited_wei": slash.forfeited,
        "cause": "+".join(slash.cause),
        "reinstated": slash.reinstated,
        "block_number": slash.block_number,
        "tx_hash": slash.tx_hash,
    }


def transfer_row(task_id: int, transfer: TransferRecord) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "kind": transfer.kind,
        "direction": transfer.direction,
        "account": transfer.account,
        "member": transfer.member,
        "amount_wei": transfer.amount,
        "block_number": transfer.block_number,
        "tx_hash": transfer.tx_hash,
    }


def penalty_text(move: ReputationMove) -> str:
    """A penalty in a few words: "r2 no-submit+no-vote -150" ("(undone)" after a revert)."""
    text = f"r{move.round} {'+'.join(move.reasons)} {move.delta:+d}"
    return text + " (undone)" if move.undone else text


def reputation_history(ledger: Ledger) -> dict[int, list[int | None]]:
    """Reputation of each member after each round 0..last, None before it joined.

    Walks the ReputationChanged events back from today's on-chain values, so a ledger read
    from a late `from_block` still ends right (earlier moves it did not see are flat).
    """
    last = len(ledger.rounds)
    changes: dict[tuple[int, int], int] = {}
    for ev in ledger.events:
        if ev["event"] == "ReputationChanged":
            args = ev["args"]
            changes[(int(args["member"]), int(args["round"]))] = int(args["old"])
    history: dict[int, list[int | None]] = {}
    for member in ledger.members:
        values: list[int | None] = [None] * (last + 1)
        current = member.reputation
        for r in range(last, -1, -1):
            if r < member.since_round - 1:
                break
            values[r] = current
            current = changes.get((member.index, r), current)
        history[member.index] = values
    return history


def task_row(task: TaskInfo) -> dict[str, Any]:
    """A task as a flat JSON-ready dict (every TaskInfo field)."""
    return plain(task)


def privacy_fields(privacy: TaskPrivacy | None, rounds: int) -> dict[str, Any]:
    """The DP columns of a row after `rounds` committed updates: noise multiplier, delta and
    epsilon (None without DP noise); all None when the task's config is not known."""
    if privacy is None:
        return {"dp_noise": None, "dp_delta": None, "epsilon": None}
    return {
        "dp_noise": privacy.dp_noise,
        "dp_delta": privacy.dp_delta,
        "epsilon": privacy.epsilon(rounds),
    }


def member_row(
    task_id: int,
    member: MemberRecord,
    privacy: TaskPrivacy | None = None,
    dp_rounds: int = 0,
    money: MemberMoney | None = None,
) -> dict[str, Any]:
    """A member (amounts in wei); with its task's privacy settings, also the rounds it
    committed an update in (`dp_rounds`) and the epsilon those releases spent; with its
    `money` (from events), what it withdrew and the penalties it took."""
    row: dict[str, Any] = {
        "task_id": task_id,
        "index": member.index,
        "account": member.account,
        "peer_id": member.peer_id_text,
        "peer_id_hex": hex0x(member.peer_id),
        "x25519": hex0x(member.x25519),
        "status": member.status,
        "reputation": member.reputation,
        "reputation_factor": member.reputation_factor,
        "stake_wei": member.stake_wei,
        "since_round": member.since_round,
        "he_key": hex0x(member.he_key) if member.has_he_key else None,
        "earned_wei": member.earned,
        "payout_wei": member.payout,
        "forfeited_wei": member.forfeited,
    }
    if money is not None:
        row["withdrawn_wei"] = money.withdrawn
        row["reputation_lost"] = money.reputation_lost
        row["penalties"] = [
            {
                "round": p.round,
                "reasons": list(p.reasons),
                "lost": p.old - p.new,
                "undone": p.undone,
            }
            for p in money.penalties
        ]
        row["ejected_round"] = next(
            (x.round for x in reversed(money.slashes) if not x.reinstated), None
        )
    if privacy is not None:
        row["dp_rounds"] = dp_rounds
        row.update(privacy_fields(privacy, dp_rounds))
    return row


def round_row(task_id: int, rnd: RoundRecord, privacy: TaskPrivacy | None = None) -> dict[str, Any]:
    """A round's summary: status, phase times, counts, global digest, tallies, alarms and the
    secure-mode facts; with the task's privacy settings, also the epsilon of a member that
    committed in every round up to this one (the task's worst case after it)."""
    row = {
        "task_id": task_id,
        "round": rnd.round,
        "status": rnd.status,
        "start": rnd.start,
        "submit_deadline": rnd.submit_deadline,
        "vote_deadline": rnd.vote_deadline,
        "finalized_at": rnd.finalized_at,
        "base_round": rnd.base_round,
        "base_digest": hex0x(rnd.base_digest),
        "eligible": len(rnd.eligible),
        "committed": len(rnd.submitted),
        "accepted": rnd.n_accepted,
        "rejected": rnd.n_rejected,
        "accepted_members": None if rnd.accepted is None else list(rnd.accepted),
        "global_digest": None if rnd.global_digest is None else hex0x(rnd.global_digest),
        "votes": len(rnd.voted),
        "final_tally": rnd.final_tally,
        "quorum_weight": rnd.quorum_weight,
        "total_reputation": rnd.total_reputation,
        "alarms": len(rnd.alarmed),
        "alarm_weight": rnd.alarm_weight,
        "fail_reason": rnd.fail_reason,
        "decryptor": rnd.decryptor,
        "remasked": list(rnd.remasked),
        "sum_digest": None if rnd.sum_digest is None else hex0x(rnd.sum_digest),
        "reward_share_wei": rnd.reward_share,
        "paid_members": list(rnd.paid),
        "reward_paid_wei": rnd.reward_paid,
        "clawed_back_wei": rnd.clawed_back,
    }
    if privacy is not None:
        row.update(privacy_fields(privacy, rnd.round))
    return row


def update_row(task_id: int, update: UpdateRecord) -> dict[str, Any]:
    return {"task_id": task_id, **plain(update)}


def vote_row(task_id: int, vote: VoteRecord) -> dict[str, Any]:
    return {"task_id": task_id, **plain(vote)}


def alarm_row(task_id: int, alarm: AlarmRecord) -> dict[str, Any]:
    return {"task_id": task_id, **plain(alarm)}


def event_row(task_id: int, event: dict[str, Any]) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "block_number": event["block_number"],
        "log_index": event["log_index"],
        "tx_hash": event["tx_hash"],
        "event": event["event"],
        "args": plain(event["args"]),
    }


def round_detail(
    task_id: int,
    rnd: RoundRecord,
    privacy: TaskPrivacy | None = None,
    commits: Mapping[int, int] | None = None,
    moves: Sequence[ReputationMove] | None = None,
    slashes: Sequence[SlashRecord] | None = None,
) -> dict[str, Any]:
    """One round in full: summary, each member's commitment, verdict, vote, alarm and
    reward (wei).

    With the task's privacy settings, `commits` (member -> rounds it committed in, up to and
    including this one; see `read_commit_counts`) gives each member's epsilon after it.
    `moves` (see `reputation_moves`) adds each member's reputation moves in the round and
    `slashes` (see `slash_records`) the members it ejected."""
    if privacy is not None and commits is None:
        raise ValueError("round_detail needs the members' commit counts to report epsilon")
    remasks = dict(rnd.remasks)
    updates = {u.member: u for u in rnd.updates}
    votes = {v.member: v for v in rnd.votes}
    alarms = {a.member: a for a in rnd.alarms}
    members = []
    for index in rnd.eligible:
        update, vote, alarm = updates.get(index), votes.get(index), alarms.get(index)
        members.append(
            {
                "member": index,
                "submitted": update is not None,
                "digest": hex0x(update.digest) if update else None,
                "samples": update.samples if update else None,
                "base_round": update.base_round if update else None,
                "loss": update.loss if update else None,
                "verdict": update.verdict if update else None,
                "voted": vote is not None,
                "vote_digest": hex0x(vote.digest) if vote else None,
                "vote_accepted": list(vote.accepted) if vote else None,
                "vote_weight": vote.weight if vote else None,
                "vote_late": vote.late if vote else None,
                "alarmed": alarm is not None,
                "alarm_weight": alarm.weight if alarm else None,
                "remask_digest": hex0x(remasks[index]) if index in remasks else None,
                "reward_wei": rnd.reward_share if index in rnd.paid else 0,
            }
        )
        if moves is not None:
            members[-1]["reputation_moves"] = [
                {
                    "old": m.old,
                    "new": m.new,
                    "delta": m.delta,
                    "reasons": list(m.reasons),
                    "undone": m.undone,
                }
                for m in moves
                if m.member == index and m.round == rnd.round
            ]
        if privacy is not None and commits is not None:
            members[-1]["dp_rounds"] = commits.get(index, 0)
            members[-1]["epsilon"] = privacy.epsilon(commits.get(index, 0))
    return {
        **round_row(task_id, rnd, privacy),
        "members": members,
        "slashes": [slash_row(task_id, x) for x in slashes or () if x.round == rnd.round],
        "tallies": [plain(t) for t in rnd.tallies],
        "alarm_list": [plain(a) for a in rnd.alarms],
    }


TABLES = (
    "tasks",
    "members",
    "rounds",
    "updates",
    "votes",
    "alarms",
    "penalties",
    "slashes",
    "transfers",
    "events",
)


def ledger_tables(
    ledgers: Sequence[Ledger], privacy: Mapping[int, TaskPrivacy] | None = None
) -> dict[str, list[dict[str, Any]]]:
    """The ledgers as flat tables (one row per task, member, round, update, vote, alarm,
    reputation penalty, ejection, transfer of wei and event), each row carrying its task
    id: what `export` writes. Amounts are wei; tasks carry `funded_wei` (reward escrowed at
    creation plus top-ups) and members their rewards, payout and penalties.

    `privacy` (task id -> settings) adds the DP columns to the tasks, members and rounds
    tables; every row then has them, None for a task whose config is not in the map."""
    tables: dict[str, list[dict[str, Any]]] = {name: [] for name in TABLES}
    for ledger in ledgers:
        task_id = ledger.task.task_id
        known = privacy.get(task_id) if privacy is not None else None
        moves = reputation_moves(ledger.rounds, ledger.events)
        task = {**task_row(ledger.task), "funded_wei": funded_wei(ledger.events)}
        members = _member_rows(ledger, privacy is not None, known)
        rounds = [round_row(task_id, r) for r in ledger.rounds]
        if privacy is not None:
            task.update(_task_privacy_fields(known))
            rounds = [{**row, **privacy_fields(known, row["round"])} for row in rounds]
        tables["tasks"].append(task)
        tables["members"] += members
        tables["rounds"] += rounds
        tables["updates"] += [update_row(task_id, u) for u in ledger.updates]
        tables["votes"] += [vote_row(task_id, v) for v in ledger.votes]
        tables["alarms"] += [alarm_row(task_id, a) for a in ledger.alarms]
        tables["penalties"] += [move_row(task_id, m) for m in moves if m.is_penalty]
        tables["slashes"] += [slash_row(task_id, x) for x in slash_records(ledger.events, moves)]
        tables["transfers"] += [transfer_row(task_id, t) for t in transfer_records(ledger.events)]
        tables["events"] += [event_row(task_id, e) for e in ledger.events]
    return tables


def _task_privacy_fields(privacy: TaskPrivacy | None) -> dict[str, Any]:
    return {
        "dp_noise": privacy.dp_noise if privacy else None,
        "dp_clip": privacy.dp_clip if privacy else None,
        "dp_delta": privacy.dp_delta if privacy else None,
        "secure": privacy.secure if privacy else None,
    }


def _member_rows(
    ledger: Ledger, with_privacy: bool, privacy: TaskPrivacy | None
) -> list[dict[str, Any]]:
    """Member rows with their money and, `with_privacy`, the DP columns (all None when the
    task's config is unknown)."""
    money = member_money(ledger)
    commits = count_commits(r.submitted for r in ledger.rounds)
    rows = []
    for member in ledger.members:
        row = member_row(ledger.task.task_id, member, money=money[member.index])
        if with_privacy:
            done = commits.get(member.index, 0)
            row["dp_rounds"] = done if privacy else None
            row.update(privacy_fields(privacy, done))
        rows.append(row)
    return rows


# ---------------------------------------------------------------- blob verification


def ledger_digests(ledger: Ledger) -> list[tuple[str, int, int | None, bytes]]:
    """Every blob digest the chain commits to: (kind, round, member, digest) for the initial
    model, each committed update, each re-masked update and decrypted sum (secure mode; the
    sum's member is the decryptor) and the global model of each finalized (or reverted)
    round."""
    out: list[tuple[str, int, int | None, bytes]] = [
        ("initial", 0, None, ledger.task.initial_digest)
    ]
    for rnd in ledger.rounds:
        out += [("update", rnd.round, u.member, u.digest) for u in rnd.updates]
        out += [("remask", rnd.round, member, digest) for member, digest in rnd.remasks]
        if rnd.sum_digest is not None:
            out.append(("sum", rnd.round, rnd.decryptor, rnd.sum_digest))
        if rnd.global_digest is not None:
            out.append(("global", rnd.round, None, rnd.global_digest))
    return out


def sha256_file(path: Path) -> bytes:
    """sha256 of a file's bytes, read in chunks (model blobs can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.digest()


def verify_blobs(ledger: Ledger, blob_dirs: Sequence[Path]) -> list[BlobCheck]:
    """Check every on-chain digest against `<dir>/<64 hex digest>` files in `blob_dirs`.

    Each copy is re-hashed with sha256 (each file once, however many digests name it).
    """
    for directory in blob_dirs:
        if not Path(directory).is_dir():
            raise LedgerError(f"blob directory {directory} does not exist")
    hashes: dict[Path, bytes] = {}
    checks = []
    for kind, number, member, digest in ledger_digests(ledger):
        paths = [Path(d) / digest.hex() for d in blob_dirs]
        found = [p for p in paths if p.is_file()]
        for path in found:
            if path not in hashes:
                hashes[path] = sha256_file(path)
        bad = [p for p in found if hashes[p] != digest]
        status = "missing" if not found else "mismatch" if bad else "ok"
        checks.append(
            BlobCheck(
                kind=kind,
                round=number,
                member=member,
                digest=digest,
                status=status,
                paths=tuple(str(p) for p in found),
                bad_paths=tuple(str(p) for p in bad),
            )
        )
    return checks
