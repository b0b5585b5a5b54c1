"""The announcements that ride on gossip, and their one canonical byte encoding.

An announcement is a hint that points at the chain and at a blob: "member `sender`
committed update `digest` for round `round` of task `task`, fetch it from me". It is a
small JSON object with a fixed set of fields. Encoding is canonical (sorted keys, no
whitespace, lowercase hex) and decoding accepts only canonical bytes, so one announcement
has exactly one encoding and a peer cannot smuggle variants (extra fields, floats, NaN,
duplicate keys, padded hex) past the validator or the de-duplication.

Gossipsub signs each message with the sender's libp2p key (strict signing), which proves
which peer id sent it; the gossip validator then checks that peer id against the contract.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Final, NoReturn

from eth_utils import is_checksum_address, to_checksum_address

from flchain import safe_json

VERSION: Final = 1
KINDS: Final = ("update", "vote", "alarm", "sum")
MAX_MESSAGE_BYTES: Final = 4096
MAX_INT: Final = 2**53 - 1  # the largest integer every JSON reader keeps exact
MAX_DEPTH: Final = 2  # an announcement is one flat object; anything deeper is hostile

_FIELDS: Final = frozenset({"v", "kind", "task", "round", "digest", "sender", "size"})
_DIGEST_RE: Final = re.compile(r"0x[0-9a-f]{64}")
_ADDRESS_RE: Final = re.compile(r"0x[0-9a-fA-F]{40}")


class MessageError(ValueError):
    """Bytes that are not a valid announcement. `reason` is a short metrics label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class Announcement:
    """One gossip announcement.

    kind:   "update" (an update was committed on chain), "vote" (an aggregate was voted;
            digest is the global model this member derived; still parsed, no longer sent,
            since the chain's Voted event says it, see docs/architecture.md), "alarm" (a
            Siren alarm about the global model `digest`), "sum" (secure mode: the round's
            decryptor published the decrypted sum with its proof; digest is that proof
            blob's, as on chain).
    digest: sha256 of the blob the announcement refers to (32 bytes).
    sender: the member's Ethereum address (checksummed here, lowercase on the wire).
    size:   byte length of that blob, so a fetcher can refuse oversize ones up front;
            0 when the sender offers no blob.
    """

    kind: str
    task: int
    round: int
    digest: bytes
    sender: str
    size: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            _fail("schema", f"unknown kind {self.kind!r}; expected one of {KINDS}")
        for name in ("task", "round", "size"):
            _check_int(name, getattr(self, name))
        if not isinstance(self.digest, bytes) or len(self.digest) != 32:
            _fail("schema", "digest must be exactly 32 bytes")
        sender = self.sender
        if not isinstance(sender, str) or not _ADDRESS_RE.fullmatch(sender):
            _fail("schema", f"sender {sender!r} is not a 0x-prefixed 20-byte hex address")
        if sender != sender.lower() and not is_checksum_address(sender):
            _fail("schema", f"sender {sender!r} has a wrong EIP-55 checksum")
        object.__setattr__(self, "sender", to_checksum_address(sender))

    @property
    def digest_hex(self) -> str:
        """The digest as 0x-prefixed lowercase hex (the form used on chain and in logs)."""
        return "0x" + self.digest.hex()


def encode(message: Announcement) -> bytes:
    """Canonical bytes of `message`: sorted keys, no whitespace, lowercase hex."""
    body = {
        "v": VERSION,
        "kind": message.kind,
        "task": message.task,
        "round": message.round,
        "digest": message.digest_hex,
        "sender": message.sender.lower(),
        "size": message.size,
    }
    data = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    if len(data) > MAX_MESSAGE_BYTES:  # cannot happen with bounded fields; kept as a guard
        _fail("oversize", f"{len(data)} bytes > {MAX_MESSAGE_BYTES}")
    return data


def decode(data: bytes) -> Announcement:
    """Parse and strictly validate announcement bytes; raises `MessageError` otherwise."""
    if not isinstance(data, bytes | bytearray | memoryview):
        _fail("malformed", f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > MAX_MESSAGE_BYTES:
        _fail("oversize", f"{len(data)} bytes > {MAX_MESSAGE_BYTES}")
    try:
        body = safe_json.loads(
            data,
            max_bytes=MAX_MESSAGE_BYTES,
            max_depth=MAX_DEPTH,
            object_pairs_hook=_no_duplicate_keys,
            parse_float=_reject_float,
        )
    except MessageError:
        raise
    except safe_json.JsonLimitError as exc:  # "oversize" or "too_deep", before any parsing
        _fail(exc.reason, str(exc))
    except ValueError as exc:  # JsonFormatError: not UTF-8, not JSON, NaN/Infinity
        _fail("malformed", f"not UTF-8 JSON: {exc}")
    if not isinstance(body, dict):
        _fail("schema", f"top level must be an object, got {type(body).__name__}")
    if set(body) != _FIELDS:
        missing, extra = sorted(_FIELDS - set(body)), sorted(set(body) - _FIELDS)
        _fail("schema", f"fields differ from the schema (missing {missing}, unknown {extra})")
    if type(body["v"]) is not int or body["v"] != VERSION:
        _fail("schema", f"unsupported version {body['v']!r}; this node speaks v{VERSION}")
    digest = body["digest"]
    if not isinstance(digest, str) or not _DIGEST_RE.fullmatch(digest):
        _fail("schema", "digest must be 0x followed by 64 lowercase hex digits")
    sender = body["sender"]
    if not isinstance(sender, str) or sender != sender.lower():
        _fail("schema", "sender must be a lowercase 0x-prefixed address")
    if not isinstance(body["kind"], str):
        _fail("schema", "kind must be a string")
    message = Announcement(
        kind=body["kind"],
        task=body["task"],
        round=body["round"],
        digest=bytes.fromhex(digest[2:]),
        sender=sender,
        size=body["size"],
    )
    if encode(message) != data:
        _fail("non_canonical", "bytes are not the canonical encoding (key order, spacing)")
    return message


def _check_int(name: str, value: Any) -> None:
    if type(value) is not int:
        _fail("schema", f"{name} must be an integer, got {type(value).__name__}")
    if not 0 <= value <= MAX_INT:
        _fail("schema", f"{name}={value} is outside [0, {MAX_INT}]")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(keys) != len(set(keys)):
        _fail("malformed", "duplicate keys")
    return dict(pairs)


def _reject_float(token: str) -> NoReturn:
    _fail("malformed", f"non-integer number {token} is not allowed")


def _fail(reason: str, detail: str) -> NoReturn:
    raise MessageError(reason, detail)
