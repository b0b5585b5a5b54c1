"""Who may say what on a task's gossip topic: the acceptance rules for announcements.

`GossipGate.check` is the one place that decides whether an announcement from the network
is accepted. It is pure (no libp2p), so it is tested directly; `flchain.node.p2p` calls it
for every message before libp2p marks it seen, delivers it or relays it, so a rejected
message goes nowhere. A message is accepted only if it comes from a peer id that the
contract binds to a member of the task, is a valid canonical announcement for that task,
is for a round inside the caller's window, names the sender that peer id is bound to (when
the caller can tell), and was not already accepted. Every rejection carries a short reason
that ends up as a metrics label.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from flchain.node.messages import MAX_MESSAGE_BYTES, Announcement, MessageError, decode

TOPIC_PREFIX: Final = "flchain/"
DEFAULT_DEDUP_SIZE: Final = 8192

log = logging.getLogger(__name__)


class RejectError(Exception):
    """An incoming announcement that must be dropped; `reason` is the metrics label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def topic_for(task: int) -> str:
    """The gossipsub topic of task `task`."""
    if type(task) is not int or task < 0:
        raise ValueError(f"task id must be a non-negative int, got {task!r}")
    return f"{TOPIC_PREFIX}{task}"


def round_window(
    current_round: Callable[[], int], *, behind: int = 1, ahead: int = 1
) -> Callable[[int], bool]:
    """A `round_ok` that accepts rounds current-behind .. current+ahead.

    `behind` keeps late announcements of the previous round useful; `ahead` tolerates a
    peer that saw the next round open a block earlier. Anything else is a replay or junk.
    """
    if behind < 0 or ahead < 0:
        raise ValueError(f"behind and ahead must be >= 0, got {behind}, {ahead}")

    def round_ok(round_: int) -> bool:
        now = current_round()
        return now - behind <= round_ <= now + ahead

    return round_ok


@dataclass(frozen=True)
class TaskPolicy:
    """What the contract says about one task, as fast in-memory callables.

    is_member(peer_id) -> bool: the peer id is bound on chain to a current member.
    round_ok(round) -> bool: the round is the current one or close enough (see
        `round_window`).
    address_of(peer_id) -> address | None: the member address bound to the peer id; when
        given, an announcement whose `sender` differs is rejected.
    The callables run on the event loop for every message: keep them cheap and
    non-blocking (the round engine caches chain state; it never calls web3 here).
    """

    task: int
    is_member: Callable[[str], bool]
    round_ok: Callable[[int], bool]
    address_of: Callable[[str], str | None] | None = None


class GossipGate:
    """Applies `TaskPolicy` rules and de-duplicates accepted announcements."""

    def __init__(self, dedup_size: int = DEFAULT_DEDUP_SIZE) -> None:
        if dedup_size < 1:
            raise ValueError(f"dedup_size must be >= 1, got {dedup_size}")
        self._policies: dict[str, TaskPolicy] = {}
        self._seen: OrderedDict[tuple[str, bytes], None] = OrderedDict()
        self._dedup_size = dedup_size

    @property
    def policies(self) -> list[TaskPolicy]:
        """The policies of the joined tasks."""
        return list(self._policies.values())

    def add(self, policy: TaskPolicy) -> str:
        """Start accepting announcements for `policy.task`; returns its topic."""
        topic = topic_for(policy.task)
        self._policies[topic] = policy
        return topic

    def remove(self, task: int) -> None:
        """Stop accepting announcements for `task`."""
        self._policies.pop(topic_for(task), None)

    def is_member_anywhere(self, peer_id: str) -> bool:
        """Whether `peer_id` is a member of any joined task (who may fetch our blobs)."""
        return any(_call_is_member(policy, peer_id) for policy in self._policies.values())

    def check(self, origin: str, topics: list[str], data: bytes) -> Announcement:
        """Return the announcement if it is acceptable, else raise `RejectError`."""
        if len(topics) != 1 or topics[0] not in self._policies:
            raise RejectError("bad_topic", f"topics {topics!r}")
        policy = self._policies[topics[0]]
        if len(data) > MAX_MESSAGE_BYTES:
            raise RejectError("oversize", f"{len(data)} bytes")
        if not _call_is_member(policy, origin):
            raise RejectError("not_member", origin)
        try:
            message = decode(data)
        except MessageError as exc:
            raise RejectError(exc.reason, str(exc)) from exc
        if message.task != policy.task:
            raise RejectError("wrong_task", f"task {message.task} on topic {topics[0]}")
        if not _call_round_ok(policy, message.round):
            raise RejectError("round_window", f"round {message.round}")
        if policy.address_of is not None:
            bound = _call_address_of(policy, origin)
            if bound is None or bound.lower() != message.sender.lower():
                raise RejectError("wrong_sender", f"{origin} is bound to {bound}")
        key = (origin, bytes(data))
        if key in self._seen:
            raise RejectError("duplicate")
        self._seen[key] = None
        if len(self._seen) > self._dedup_size:
            self._seen.popitem(last=False)
        return message


class Quarantine:
    """Announcements seen before the chain shows their commit, or before their round's
    submit phase closed, held until then.

    Bounded twice: `capacity` entries in all and `per_peer` from one peer id, so a member
    announcing junk fills its own share and nothing else. Keyed by (peer, digest): the same
    announcement twice takes one entry.
    """

    def __init__(self, capacity: int = 64, per_peer: int = 8) -> None:
        if not 0 < per_peer <= capacity:
            raise ValueError(f"need 0 < per_peer <= capacity, got {per_peer}, {capacity}")
        self.capacity = capacity
        self.per_peer = per_peer
        self._entries: OrderedDict[tuple[str, bytes], Announcement] = OrderedDict()
        self._per_peer: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def has_room(self, peer: str) -> bool:
        """Whether an announcement from `peer` would be admitted now."""
        return len(self._entries) < self.capacity and self._per_peer.get(peer, 0) < self.per_peer

    def add(self, peer: str, message: Announcement) -> bool:
        """Hold `message` from `peer`; False (nothing held) when either bound is reached."""
        key = (peer, message.digest)
        if key in self._entries:
            return True
        if not self.has_room(peer):
            return False
        self._entries[key] = message
        self._per_peer[peer] = self._per_peer.get(peer, 0) + 1
        return True

    def drain(self) -> list[tuple[str, Announcement]]:
        """Take every held announcement out (oldest first), e.g. to check them again."""
        out = [(peer, message) for (peer, _), message in self._entries.items()]
        self._entries.clear()
        self._per_peer.clear()
        return out


def _call_is_member(policy: TaskPolicy, peer_id: str) -> bool:
    """Membership lookups come from caller code; a failing lookup means "no"."""
    try:
        return bool(policy.is_member(peer_id))
    except Exception:
        log.exception("is_member(%s) failed for task %d; says no", peer_id, policy.task)
        return False


def _call_round_ok(policy: TaskPolicy, round_: int) -> bool:
    try:
        return bool(policy.round_ok(round_))
    except Exception:
        log.exception("round_ok(%d) failed for task %d; dropping the message", round_, policy.task)
        return False


def _call_address_of(policy: TaskPolicy, peer_id: str) -> str | None:
    assert policy.address_of is not None
    try:
        bound = policy.address_of(peer_id)
    except Exception:
        log.exception("address_of(%s) failed for task %d; says unbound", peer_id, policy.task)
        return None
    return bound if isinstance(bound, str) else None
