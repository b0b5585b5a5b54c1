"""Gossip announcement schema: one canonical encoding, strict decoding with reasons."""

from __future__ import annotations

import pytest

from flchain.node.messages import (
    MAX_INT,
    MAX_MESSAGE_BYTES,
    Announcement,
    MessageError,
    decode,
    encode,
)

DIGEST = bytes(range(32))
DIGEST_HEX = "0x" + DIGEST.hex()
SENDER = "0x" + "ab" * 20
CANONICAL = (
    '{"digest":"' + DIGEST_HEX + '","kind":"update","round":3,'
    '"sender":"' + SENDER + '","size":1024,"task":7,"v":1}'
).encode()


def _msg(**changes: object) -> Announcement:
    fields: dict[str, object] = {
        "kind": "update",
        "task": 7,
        "round": 3,
        "digest": DIGEST,
        "sender": SENDER,
        "size": 1024,
    }
    fields.update(changes)
    return Announcement(**fields)  # type: ignore[arg-type]


def _body(**changes: str) -> bytes:
    """Canonical-looking JSON with some raw field values swapped in."""
    fields = {
        "digest": f'"{DIGEST_HEX}"',
        "kind": '"update"',
        "round": "3",
        "sender": f'"{SENDER}"',
        "size": "1024",
        "task": "7",
        "v": "1",
    }
    fields.update(changes)
    return ("{" + ",".join(f'"{k}":{v}' for k, v in fields.items()) + "}").encode()


def test_encoding_is_the_hand_written_canonical_form() -> None:
    assert encode(_msg()) == CANONICAL
    assert _body() == CANONICAL


def test_decode_round_trips_and_checksums_the_sender() -> None:
    message = decode(CANONICAL)
    assert message == _msg()
    assert message.sender == "0xABaBaBaBABabABabAbAbABAbABabababaBaBABaB"  # EIP-55
    assert message.digest_hex == DIGEST_HEX
    for kind in ("update", "vote", "alarm", "sum"):
        assert decode(encode(_msg(kind=kind, size=0))).kind == kind


def test_extreme_but_valid_integers() -> None:
    edge = _msg(task=0, round=MAX_INT, size=0)
    assert decode(encode(edge)) == edge


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xff\xfe not utf-8", "malformed"),
        (b"{not json", "malformed"),
        (b"", "malformed"),
        (_body(size="NaN"), "malformed"),
        (_body(size="Infinity"), "malformed"),
        (_body(size="-Infinity"), "malformed"),
        (_body(size="1.5"), "malformed"),
        (_body(size="1e3"), "malformed"),
        (CANONICAL[:-1] + b',"v":1}', "malformed"),  # duplicate key
        (b"[1,2,3]", "schema"),
        (b'"update"', "schema"),
        (_body(kind='"spam"'), "schema"),
        (_body(kind="1"), "schema"),
        (_body(v="2"), "schema"),
        (_body(v="true"), "schema"),
        (_body(task="true"), "schema"),
        (_body(task='"7"'), "schema"),
        (_body(round="-1"), "schema"),
        (_body(round=str(MAX_INT + 1)), "schema"),
        (_body(size="null"), "schema"),
        (_body(digest=f'"{DIGEST_HEX[:-2]}"'), "schema"),
        (_body(digest=f'"{DIGEST_HEX.upper()}"'), "schema"),
        (_body(digest=f'"{DIGEST.hex()}"'), "schema"),
        (_body(sender='"0x1234"'), "schema"),
        (_body(sender='"0xaBAbaBaBABabABAbABABaBABaBAbabABAbABaBaB"'), "schema"),
        (CANONICAL[:-1] + b',"extra":1}', "schema"),
        (CANONICAL.replace(b',"size":1024', b""), "schema"),
        (CANONICAL.replace(b",", b", "), "non_canonical"),
        (CANONICAL.replace(b'"round":3', b'"round":03'), "malformed"),
        (
            b'{"v":1,"task":7,"size":1024,"sender":"'
            + SENDER.encode()
            + b'","round":3,"kind":"update","digest":"'
            + DIGEST_HEX.encode()
            + b'"}',
            "non_canonical",
        ),
        (b" " * (MAX_MESSAGE_BYTES + 1), "oversize"),
    ],
)
def test_decode_rejects_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(MessageError) as info:
        decode(data)
    assert info.value.reason == reason
    assert isinstance(info.value, ValueError)


def test_decode_rejects_non_bytes() -> None:
    with pytest.raises(MessageError, match="expected bytes"):
        decode("{}")  # type: ignore[arg-type]


def test_deep_nesting_is_refused_before_parsing_not_a_crash() -> None:
    nested = b"[" * 3000 + b"]" * 3000
    with pytest.raises(MessageError) as info:
        decode(nested[:MAX_MESSAGE_BYTES])
    assert info.value.reason == "too_deep"


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"kind": "gossip"}, "unknown kind"),
        ({"task": -1}, "outside"),
        ({"round": 1.0}, "integer"),
        ({"size": True}, "integer"),
        ({"digest": b"\x00" * 31}, "32 bytes"),
        ({"digest": DIGEST_HEX}, "32 bytes"),
        ({"sender": "0x12"}, "20-byte"),
        ({"sender": "0xaBAbaBaBABabABAbABABaBABaBAbabABAbABaBaC"}, "checksum"),
    ],
)
def test_constructing_a_bad_announcement_fails(changes: dict[str, object], match: str) -> None:
    with pytest.raises(MessageError, match=match):
        _msg(**changes)
