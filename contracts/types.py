"""Typed values exchanged with the FLChain contract: task parameters, views and bitmaps.

The view dataclasses list their fields in the order of the contract's structs (a test
checks this against the ABI), so a returned tuple maps onto them positionally.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from enum import IntEnum
from typing import Any, ClassVar, Self

from flchain.config import (
    DEFAULT_ALARM_BPS,
    DEFAULT_MAX_SAMPLES,
    DEFAULT_QUORUM_BPS,
    DEFAULT_REP_FLOOR,
)
from flchain.contracts.errors import ArtifactError, InvalidArgumentError

MAX_MEMBERS = 256
MAX_PEER_ID = 64
MAX_PEER_PROOF = 64  # an Ed25519 signature (flchain.node.peer_proof)
REP_UNIT = 1000
UINT256_MAX = 2**256 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# The training loss goes on chain as an int64 in millionths, so that every node and the
# ledger read the same figure.
LOSS_SCALE = 1_000_000
LOSS_WITHHELD = INT64_MIN
"""The loss a node posts instead of its training loss while DP is on: the loss is an unnoised
statistic of its data (docs/security.md, "Privacy"). The ledger shows it as no loss."""


class TaskStatus(IntEnum):
    REGISTERING = 1
    RUNNING = 2
    FINISHED = 3
    CLOSED = 4


class RoundStatus(IntEnum):
    NONE = 0
    OPEN = 1
    FINALIZED = 2
    FAILED = 3
    REVERTED = 4
    ABORTED = 5


class MemberStatus(IntEnum):
    NONE = 0
    ACTIVE = 1
    EJECTED = 2
    WITHDRAWN = 3


class FailReason(IntEnum):
    """Why a round ended without a global model (the RoundFailed event's reason)."""

    STALLED = 1
    ABORTED_BY_ALARM = 2
    TASK_CLOSED = 3


def bitmap(indices: Iterable[int]) -> int:
    """Member bitmap with the given member indices set."""
    out = 0
    for i in indices:
        if not 0 <= int(i) < MAX_MEMBERS:
            raise InvalidArgumentError(f"member index {i} outside 0..{MAX_MEMBERS - 1}")
        out |= 1 << int(i)
    return out


def bitmap_indices(value: int) -> list[int]:
    """Member indices set in a bitmap, ascending."""
    return [i for i in range(MAX_MEMBERS) if value >> i & 1]


def in_bitmap(value: int, index: int) -> bool:
    """Whether member `index` is set in a bitmap."""
    return 0 <= index < MAX_MEMBERS and bool(value >> index & 1)


def encode_loss(loss: float) -> int:
    """A training loss as the on-chain fixed-point integer (millionths, rounded)."""
    if not math.isfinite(loss):
        raise InvalidArgumentError(f"loss must be finite, got {loss!r}")
    fixed = round(loss * LOSS_SCALE)
    if not INT64_MIN <= fixed <= INT64_MAX:
        raise InvalidArgumentError(f"loss {loss!r} does not fit the on-chain int64")
    return fixed


def decode_loss(fixed: int) -> float:
    return fixed / LOSS_SCALE


def check_bytes32(name: str, value: bytes) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != 32:
        raise InvalidArgumentError(f"{name} must be 32 bytes, got {value!r:.80}")
    return bytes(value)


def check_uint(name: str, value: int, upper: int = UINT256_MAX) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= upper:
        raise InvalidArgumentError(f"{name} must be an integer in 0..{upper}, got {value!r}")
    return value


@dataclass(frozen=True)
class TaskParams:
    """Parameters of `create_task`; the contract checks their ranges and names a bad one.

    Windows are seconds; quorum_bps and alarm_bps are basis points (10000 = 100%) of the
    active reputation (alarm_bps may not be below quorum_bps); stake and reward are in wei
    (reward: the reward pool escrowed with the task, paid to accepted members round by
    round); rep_floor is in REP_UNIT fixed point. max_samples caps the sample count an
    update weighs with in `consensus_weights` (0: weights are reputations alone), at most
    flchain.config.MAX_SAMPLES_LIMIT (2**64 - 1). Defaults: flchain.config.
    """

    config_digest: bytes
    initial_digest: bytes
    min_members: int
    max_members: int
    submit_window: int
    vote_window: int
    alarm_window: int = 0
    quorum_bps: int = DEFAULT_QUORUM_BPS
    alarm_bps: int = DEFAULT_ALARM_BPS
    stake: int = 0
    max_rounds: int = 100
    rep_floor: int = DEFAULT_REP_FLOOR
    allowlist: bool = False
    max_samples: int = DEFAULT_MAX_SAMPLES
    reward: int = 0  # sent as the call's value, not an argument

    def as_args(self) -> list[Any]:
        """Arguments for the contract call, in order, after type and encoding checks."""
        check_uint("reward", self.reward)
        args: list[Any] = []
        for f in fields(self):
            if f.name == "reward":
                continue
            value = getattr(self, f.name)
            if f.name.endswith("digest"):
                args.append(check_bytes32(f.name, value))
            elif f.name == "allowlist":
                args.append(bool(value))
            else:
                args.append(check_uint(f.name, value))
        return args


class _FromTuple:
    """Positional construction from a contract struct, converting enums and bytes."""

    _enums: ClassVar[dict[str, type[IntEnum]]] = {}

    @classmethod
    def from_tuple(cls, values: Sequence[Any]) -> Self:
        names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        if len(values) != len(names):
            raise ArtifactError(
                f"{cls.__name__} has {len(names)} fields, the contract returned {len(values)}"
            )
        kwargs: dict[str, Any] = {}
        for name, value in zip(names, values, strict=True):
            if name in cls._enums:
                value = cls._enums[name](value)
            elif isinstance(value, bytes | bytearray):
                value = bytes(value)
            kwargs[name] = value
        return cls(**kwargs)


@dataclass(frozen=True)
class TaskInfo(_FromTuple):
    task_id: int
    owner: str
    status: TaskStatus
    config_digest: bytes
    initial_digest: bytes
    global_digest: bytes
    global_round: int
    min_members: int
    max_members: int
    submit_window: int
    vote_window: int
    alarm_window: int
    quorum_bps: int
    alarm_bps: int
    stake: int
    max_rounds: int
    rep_floor: int
    allowlist: bool
    max_samples: int
    current_round: int
    round_start: int
    n_members: int
    n_active: int
    total_reputation: int
    reward_pool: int
    rewards_paid: int
    slashed: int
    settled: bool

    _enums: ClassVar[dict[str, type[IntEnum]]] = {"status": TaskStatus}


@dataclass(frozen=True)
class RoundInfo(_FromTuple):
    """One round; bitmaps name member indices (see `bitmap_indices`).

    Secure mode: `remasked` names the members that re-committed a re-masked update,
    `sum_digest` is the decryptor's published proof digest (zero until published). Both
    default to empty so that hand-built records of plain rounds stay short.
    """

    task_id: int
    round: int
    status: RoundStatus
    start: int
    submit_deadline: int
    vote_deadline: int
    finalized_at: int
    base_digest: bytes
    base_round: int
    global_digest: bytes
    accepted: int
    eligible: int
    submitted: int
    voted: int
    alarmed: int
    alarm_weight: int
    total_reputation: int
    quorum_bps: int
    remasked: int = 0
    sum_digest: bytes = bytes(32)
    reward_share: int = 0
    paid: int = 0

    _enums: ClassVar[dict[str, type[IntEnum]]] = {"status": RoundStatus}


@dataclass(frozen=True)
class MemberInfo(_FromTuple):
    """A member; `he_key` is the sha256 of its Paillier public key blob, zero when the
    member never decrypts (secure mode)."""

    index: int
    account: str
    peer_id: bytes
    x25519: bytes
    status: MemberStatus
    since_round: int
    reputation: int
    he_key: bytes = bytes(32)
    earned: int = 0
    payout: int = 0

    _enums: ClassVar[dict[str, type[IntEnum]]] = {"status": MemberStatus}

    @property
    def reputation_factor(self) -> float:
        """Reputation as a factor (1.0 at joining), for consensus-weighted aggregation."""
        return self.reputation / REP_UNIT


@dataclass(frozen=True)
class UpdateCommit(_FromTuple):
    """A member's committed update in one round (all zero when it did not submit)."""

    submitted: bool
    digest: bytes
    samples: int
    base_round: int
    loss: int

    @property
    def loss_value(self) -> float:
        """The training loss as a float (`loss` is fixed point, see LOSS_SCALE)."""
        return decode_loss(self.loss)


@dataclass(frozen=True)
class Vote(_FromTuple):
    voted: bool
    digest: bytes
    accepted: int
