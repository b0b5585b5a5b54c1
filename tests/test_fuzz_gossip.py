"""Property-based fuzzing of gossip announcements: `messages.decode` and the gossip gate.

Generated inputs: arbitrary bytes, JSON values of random shape (deep ones included),
announcement-shaped objects with random field values, key order and spacing, valid
announcements with random byte edits, and valid announcements. Each input ends accepted or
rejected with a reason (`MessageError.reason` / `RejectError.reason`, the metrics labels);
any other exception is a crash. The suite runs a few hundred inputs; `make fuzz` runs
FLCHAIN_FUZZ_EXAMPLES=10000.
"""

from __future__ import annotations

import json
from typing import Any

import eth_account  # noqa: F401  (py_ecc raises the recursion limit: the hostile setting)
from fuzzkit import Tally, examples_for, fuzz_settings, json_values
from hypothesis import given
from hypothesis import strategies as st

from flchain.node.gossip import GossipGate, RejectError, TaskPolicy, round_window, topic_for
from flchain.node.messages import KINDS, Announcement, MessageError, decode, encode

TASK = 3
ROUND = 10
SENDER = "0x" + "ab" * 20
ORIGIN = "12D3KooWmember"
SHARES = {"bytes": 0.2, "json": 0.2, "shaped": 0.3, "mutated": 0.2, "valid": 0.1}

decoded = Tally("gossip")
gated = Tally("gossip_gate")


def examples(kind: str) -> int:
    return examples_for(SHARES, kind)


def _gate() -> GossipGate:
    gate = GossipGate(dedup_size=64)
    gate.add(
        TaskPolicy(
            TASK,
            is_member=lambda peer: peer == ORIGIN,
            round_ok=round_window(lambda: ROUND),
            address_of=lambda peer: SENDER,
        )
    )
    return gate


GATE = _gate()


def check(data: bytes, origin: str = ORIGIN, topics: list[str] | None = None) -> None:
    """Run one input through decode and through the gate; tally how each ended."""
    try:
        message = decode(data)
    except MessageError as exc:
        decoded.reject(exc.reason)
    except Exception as exc:
        decoded.crash(f"decode {type(exc).__name__}: {exc} <- {data[:100]!r}")
    else:
        assert encode(message) == data  # accepted means canonical
        decoded.accept()
    try:
        GATE.check(origin, topics if topics is not None else [topic_for(TASK)], data)
    except RejectError as exc:
        gated.reject(exc.reason)
    except Exception as exc:
        gated.crash(f"gate {type(exc).__name__}: {exc} <- {data[:100]!r}")
    else:
        gated.accept()


# --------------------------------------------------------------------------- strategies

hex64 = st.text("0123456789abcdef", min_size=64, max_size=64)
field_values: dict[str, st.SearchStrategy[Any]] = {
    "v": st.sampled_from([1, 1, 0, 2, "1", True, 1.0]),
    "kind": st.sampled_from([*KINDS, "UPDATE", "", 7]),
    "task": st.sampled_from([TASK, TASK, TASK + 1, -1, 2**53, 2**64, "3"]),
    "round": st.integers(min_value=ROUND - 4, max_value=ROUND + 4) | st.sampled_from([-1, 2**60]),
    "digest": hex64.map(lambda h: "0x" + h)
    | hex64.map(lambda h: "0x" + h.upper())
    | hex64.map(str)
    | st.text(max_size=70),
    "sender": st.sampled_from([SENDER, SENDER.upper(), "0x" + "cd" * 20, "0x12", ""]),
    "size": st.integers(min_value=-2, max_value=2**54) | json_values,
}


@st.composite
def shaped(draw: st.DrawFn) -> bytes:
    """An announcement-like object: some fields dropped or extra, values off, any layout."""
    body = {}
    for name, values in field_values.items():
        if draw(st.integers(0, 9)) > 0:
            body[name] = draw(values)
    if draw(st.booleans()):
        body.update(draw(st.dictionaries(st.text(max_size=6), json_values, max_size=2)))
    if draw(st.integers(0, 9)) == 0:  # nest the whole thing
        body = {"v": 1, "wrapped": [body]}
    text = json.dumps(
        body,
        sort_keys=draw(st.booleans()),
        separators=draw(st.sampled_from([(",", ":"), (", ", ": ")])),
        ensure_ascii=draw(st.booleans()),
    )
    return text.encode()


valid = st.builds(
    Announcement,
    kind=st.sampled_from(KINDS),
    task=st.just(TASK),
    round=st.integers(ROUND - 1, ROUND + 1),
    digest=st.binary(min_size=32, max_size=32),
    sender=st.just(SENDER),
    size=st.integers(0, 2**40),
).map(encode)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid announcement with a few byte edits: flips, inserts, deletes, bracket bombs."""
    data = bytearray(draw(valid))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        edit = draw(st.sampled_from(["flip", "insert", "delete", "brackets"]))
        if edit == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif edit == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif edit == "delete":
            del data[at : at + draw(st.integers(1, 4))]
        else:
            depth = draw(st.integers(1, 3000))
            data[at:at] = b"[" * depth + b"]" * depth
    return bytes(data)


# --------------------------------------------------------------------------- properties


@fuzz_settings(examples("bytes"))
@given(data=st.binary(max_size=5000))
def test_arbitrary_bytes(data: bytes) -> None:
    check(data)


@fuzz_settings(examples("json"))
@given(value=json_values, deep=st.integers(0, 2500))
def test_arbitrary_json(value: Any, deep: int) -> None:
    text = json.dumps(value).encode()
    check(b"[" * deep + text + b"]" * deep)


@fuzz_settings(examples("shaped"))
@given(data=shaped(), origin=st.sampled_from([ORIGIN, ORIGIN, "12D3KooWoutsider"]))
def test_announcement_shaped_objects(data: bytes, origin: str) -> None:
    check(data, origin)


@fuzz_settings(examples("mutated"))
@given(data=mutated(), topics=st.sampled_from([None, None, [], [topic_for(TASK + 1)], ["x"]]))
def test_mutated_valid_announcements(data: bytes, topics: list[str] | None) -> None:
    check(data, topics=topics)


@fuzz_settings(examples("valid"))
@given(data=valid)
def test_valid_announcements(data: bytes) -> None:
    check(data)


def test_every_input_is_counted_and_nothing_crashed() -> None:
    for tally in (decoded, gated):
        tally.check(SHARES)
    assert decoded.accepted > 0 and gated.accepted > 0  # valid inputs do get through
    assert decoded.rejected["too_deep"] > 0 and decoded.rejected["schema"] > 0
    assert gated.rejected["not_member"] > 0 and gated.rejected["bad_topic"] > 0
