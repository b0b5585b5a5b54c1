"""Acceptance rules for gossip announcements, without a network."""

from __future__ import annotations

import pytest

from flchain.node.gossip import GossipGate, RejectError, TaskPolicy, round_window, topic_for
from flchain.node.messages import Announcement, encode

ALICE, BOB, MALLORY = "12D3KooWAlice", "12D3KooWBob", "12D3KooWMallory"
ALICE_ADDR = "0x" + "a1" * 20
BOB_ADDR = "0x" + "b0" * 20
MEMBERS = {ALICE: ALICE_ADDR, BOB: BOB_ADDR}


def _policy(current: int = 10, **extra: object) -> TaskPolicy:
    return TaskPolicy(
        task=3,
        is_member=MEMBERS.__contains__,
        round_ok=round_window(lambda: current),
        **extra,  # type: ignore[arg-type]
    )


def _data(round_: int = 10, sender: str = ALICE_ADDR, task: int = 3, size: int = 5) -> bytes:
    return encode(Announcement("update", task, round_, b"\x11" * 32, sender, size))


def _reason(gate: GossipGate, origin: str, data: bytes, topics: list[str] | None = None) -> str:
    with pytest.raises(RejectError) as info:
        gate.check(origin, topics or ["flchain/3"], data)
    return info.value.reason


def test_a_member_announcement_is_accepted() -> None:
    gate = GossipGate()
    assert gate.add(_policy()) == "flchain/3" == topic_for(3)
    message = gate.check(ALICE, ["flchain/3"], _data())
    assert (message.task, message.round, message.size) == (3, 10, 5)


def test_non_member_is_rejected_before_parsing() -> None:
    gate = GossipGate()
    gate.add(_policy())
    assert _reason(gate, MALLORY, _data()) == "not_member"
    assert _reason(gate, MALLORY, b"garbage") == "not_member"


def test_round_window_drops_replays_of_old_rounds_and_far_future_ones() -> None:
    gate = GossipGate()
    gate.add(_policy(current=10))
    for ok in (9, 10, 11):
        assert gate.check(ALICE, ["flchain/3"], _data(round_=ok)).round == ok
    for stale in (0, 8, 12, 1000):
        assert _reason(gate, ALICE, _data(round_=stale)) == "round_window"


def test_exact_replay_is_a_duplicate_but_another_member_may_say_the_same() -> None:
    gate = GossipGate()
    gate.add(_policy())
    gate.check(ALICE, ["flchain/3"], _data())
    assert _reason(gate, ALICE, _data()) == "duplicate"
    gate.check(BOB, ["flchain/3"], _data())  # same bytes, different signer: accepted


def test_dedup_memory_is_bounded() -> None:
    gate = GossipGate(dedup_size=2)
    gate.add(_policy())
    first = _data(size=1)
    gate.check(ALICE, ["flchain/3"], first)
    gate.check(ALICE, ["flchain/3"], _data(size=2))
    gate.check(ALICE, ["flchain/3"], _data(size=3))
    gate.check(ALICE, ["flchain/3"], first)  # evicted, so no longer a duplicate


def test_schema_reasons_pass_through() -> None:
    gate = GossipGate()
    gate.add(_policy())
    assert _reason(gate, ALICE, b'{"v":1}') == "schema"
    assert _reason(gate, ALICE, b"\x00\x01") == "malformed"
    assert _reason(gate, ALICE, b"x" * 5000) == "oversize"


def test_topic_and_task_must_match() -> None:
    gate = GossipGate()
    gate.add(_policy())
    assert _reason(gate, ALICE, _data(task=4)) == "wrong_task"
    assert _reason(gate, ALICE, _data(), topics=["flchain/9"]) == "bad_topic"
    assert _reason(gate, ALICE, _data(), topics=["flchain/3", "flchain/3"]) == "bad_topic"
    gate.remove(3)
    assert _reason(gate, ALICE, _data()) == "bad_topic"


def test_sender_must_be_the_address_bound_to_the_peer_id() -> None:
    gate = GossipGate()
    gate.add(_policy(address_of=MEMBERS.get))
    gate.check(ALICE, ["flchain/3"], _data(sender=ALICE_ADDR))
    assert _reason(gate, BOB, _data(sender=ALICE_ADDR)) == "wrong_sender"


def test_failing_lookups_mean_no_not_a_crash() -> None:
    def broken(_: object) -> bool:
        raise RuntimeError("chain cache not ready")

    gate = GossipGate()
    gate.add(TaskPolicy(3, is_member=broken, round_ok=lambda r: True))
    assert _reason(gate, ALICE, _data()) == "not_member"
    assert gate.is_member_anywhere(ALICE) is False
    gate.add(TaskPolicy(3, is_member=lambda p: True, round_ok=broken))
    assert _reason(gate, ALICE, _data()) == "round_window"
    gate.add(TaskPolicy(3, lambda p: True, lambda r: True, address_of=broken))
    assert _reason(gate, ALICE, _data()) == "wrong_sender"


def test_membership_anywhere_spans_joined_tasks() -> None:
    gate = GossipGate()
    assert not gate.is_member_anywhere(ALICE)
    gate.add(TaskPolicy(1, is_member={BOB}.__contains__, round_ok=lambda r: True))
    gate.add(TaskPolicy(2, is_member={ALICE}.__contains__, round_ok=lambda r: True))
    assert gate.is_member_anywhere(ALICE) and gate.is_member_anywhere(BOB)
    assert not gate.is_member_anywhere(MALLORY)


def test_helpers_validate_their_arguments() -> None:
    with pytest.raises(ValueError, match="task id"):
        topic_for(-1)
    with pytest.raises(ValueError, match="behind"):
        round_window(lambda: 1, behind=-1)
    with pytest.raises(ValueError, match="dedup_size"):
        GossipGate(dedup_size=0)
    wide = round_window(lambda: 5, behind=0, ahead=2)
    assert [r for r in range(10) if wide(r)] == [5, 6, 7]
