"""FLChain's secure-aggregation support: Paillier key digests at join, the round's decryptor,
re-mask commitments after a dropout and the decryptor's published proof digest.

Like tests/test_contract.py: one contract per backend (eth-tester and anvil), a fresh task
per test, time moved forward per test.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import pytest
from chainkit import deployed, digest, reverts
from test_contract import REP_ACCEPT, REP_NO_SUBMIT

from flchain.contracts import (
    REP_UNIT,
    FLChainClient,
    RoundStatus,
    TaskParams,
    bitmap,
)
from flchain.contracts.testing import LocalChain

SUBMIT_WINDOW = 1_000
VOTE_WINDOW = 1_000
STAKE = 10**15
N_MEMBERS = 6
NO_KEY = bytes(32)


def he_key(i: int) -> bytes:
    """Stand-in for sha256 of member i's Paillier public key blob."""
    return digest(f"paillier-public-{i}")


@dataclass
class Net:
    chain: LocalChain
    owner: FLChainClient
    members: list[FLChainClient]
    outsider: FLChainClient

    def task(self, keyed: Iterable[int] = range(4), n_join: int = 4) -> int:
        """A task of four (min) members, running round 1; `keyed` registered Paillier keys."""
        params = TaskParams(
            config_digest=digest("secure config"),
            initial_digest=digest("initial"),
            min_members=4,
            max_members=N_MEMBERS,
            submit_window=SUBMIT_WINDOW,
            vote_window=VOTE_WINDOW,
            quorum_bps=6000,
            stake=STAKE,
            max_rounds=10,
        )
        task_id = self.owner.create_task(params)
        keys = set(keyed)
        for i in range(n_join):
            key = he_key(i) if i in keys else NO_KEY
            self.members[i].join(task_id, f"peer-{i}".encode(), digest(f"x25519-{i}"), key)
        return task_id

    def submit(self, task_id: int, rnd: int, who: Iterable[int]) -> None:
        for i in who:
            self.members[i].submit(task_id, rnd, digest(f"u{rnd}-{i}"), 100, rnd - 1, 0)

    def finalize(self, task_id: int, rnd: int, submitted: Iterable[int]) -> None:
        """Finalize `rnd` with the votes of the first three members (3 of 4 >= 60%)."""
        who = list(submitted)
        self.submit(task_id, rnd, who)
        if len(who) < 4:
            self.chain.advance(SUBMIT_WINDOW)
        for i in range(3):
            self.members[i].vote(task_id, rnd, digest(f"g{rnd}"), bitmap(who))
        assert self.owner.get_round(task_id, rnd).status == RoundStatus.FINALIZED


@pytest.fixture(scope="module", params=["eth-tester", "anvil"])
def net(request: pytest.FixtureRequest) -> Iterator[Net]:
    with deployed(request, N_MEMBERS) as (chain, owner, members, outsider):
        yield Net(chain, owner, members, outsider)


# ---------------------------------------------------------------- keys and the decryptor


def test_join_stores_the_paillier_key_digest_and_logs_it(net: Net) -> None:
    first_block = net.chain.w3.eth.block_number
    task_id = net.task(keyed=[0, 2])
    members = net.owner.members(task_id)
    assert [m.he_key for m in members] == [he_key(0), NO_KEY, he_key(2), NO_KEY]
    assert net.owner.get_member(task_id, 2).he_key == he_key(2)
    joined = [
        (e["args"]["member"], e["args"]["he_key"])
        for e in net.owner.events(task_id, from_block=first_block)
        if e["event"] == "MemberJoined"
    ]
    assert joined == [(0, he_key(0)), (1, NO_KEY), (2, he_key(2)), (3, NO_KEY)]


def test_decryptor_rotates_over_rounds_and_skips_members_without_a_key(net: Net) -> None:
    task_id = net.task(keyed=[0, 1, 3])  # candidates 0, 1, 3; member 2 never decrypts
    chosen = []
    for rnd in range(1, 5):
        chosen.append(net.owner.decryptor(task_id, rnd))
        net.finalize(task_id, rnd, range(4))
    # round r picks candidate (r - 1) mod 3 in index order
    assert chosen == [0, 1, 3, 0]
    assert [net.owner.decryptor(task_id, r) for r in range(1, 5)] == chosen  # fixed for good


def test_decryptor_skips_a_member_silent_in_the_previous_round(net: Net) -> None:
    task_id = net.task()  # all four keyed
    assert net.owner.decryptor(task_id, 1) == 0
    net.finalize(task_id, 1, [0, 2, 3])  # member 1 did not submit
    # candidates {0, 2, 3}: (2 - 1) mod 3 = 1 -> member 2 (member 1 without the skip)
    assert net.owner.decryptor(task_id, 2) == 2

    lone = net.task(keyed=[1])  # the only key holder goes silent: it is still the choice
    net.finalize(lone, 1, [0, 2, 3])
    assert net.owner.decryptor(lone, 2) == 1


def test_no_decryptor_when_nobody_registered_a_key(net: Net) -> None:
    task_id = net.task(keyed=[])
    assert net.owner.decryptor(task_id, 1) is None
    net.submit(task_id, 1, range(4))
    with reverts("no decryptor"):
        net.members[0].publish_sum(task_id, 1, digest("sum"))
    with reverts("wrong round"):
        net.owner.decryptor(task_id, 2)
    with reverts("no task"):
        net.owner.decryptor(10**6, 1)


def test_a_late_joiners_key_does_not_change_the_running_rounds_decryptor(net: Net) -> None:
    task_id = net.task(keyed=[3])
    assert net.owner.decryptor(task_id, 1) == 3
    net.members[4].join(task_id, b"late", digest("x25519-late"), he_key(4))
    assert net.owner.get_member(task_id, 4).he_key == he_key(4)
    assert net.owner.decryptor(task_id, 1) == 3
    net.finalize(task_id, 1, range(4))
    # round 2: candidates {3, 4}; of them only 3 submitted in round 1 (4 was not eligible)
    assert net.owner.decryptor(task_id, 2) == 3


# ---------------------------------------------------------------- remask


def test_remask_reverts_with_a_reason(net: Net) -> None:
    task_id = net.task()
    net.members[4].join(task_id, b"late", digest("x25519-late"), NO_KEY)
    net.submit(task_id, 1, [0, 1, 2])  # member 3 drops out
    alice = net.members[0]
    with reverts("wrong phase"):  # the submit window is still open
        alice.remask(task_id, 1, digest("r0"))
    net.chain.advance(SUBMIT_WINDOW)
    with reverts("not member"):
        net.outsider.remask(task_id, 1, digest("r"))
    with reverts("not eligible"):
        net.members[4].remask(task_id, 1, digest("r"))
    with reverts("wrong round"):
        alice.remask(task_id, 2, digest("r0"))
    with reverts("not submitted"):
        net.members[3].remask(task_id, 1, digest("r3"))
    with reverts("bad digest"):
        alice.remask(task_id, 1, bytes(32))
    alice.remask(task_id, 1, digest("r0"))
    with reverts("already remasked"):
        alice.remask(task_id, 1, digest("r0-again"))
    net.chain.advance(VOTE_WINDOW)
    with reverts("wrong phase"):  # the vote window is over
        net.members[1].remask(task_id, 1, digest("r1"))


def test_remask_needs_a_missing_submission(net: Net) -> None:
    task_id = net.task()
    net.submit(task_id, 1, range(4))
    net.chain.advance(SUBMIT_WINDOW)
    with reverts("nothing to remask"):
        net.members[0].remask(task_id, 1, digest("r0"))


def test_remask_records_the_digest_and_the_bitmap(net: Net) -> None:
    task_id = net.task()
    net.submit(task_id, 1, [0, 2, 3])
    net.chain.advance(SUBMIT_WINDOW)
    result = net.members[2].remask(task_id, 1, digest("r2"))
    assert result.event("UpdateRemasked") == {
        "task_id": task_id,
        "round": 1,
        "member": 2,
        "digest": digest("r2"),
    }
    net.members[0].remask(task_id, 1, digest("r0"))
    assert net.owner.get_round(task_id, 1).remasked == bitmap([0, 2])
    assert net.owner.get_remask(task_id, 1, 2) == digest("r2")
    assert net.owner.get_remask(task_id, 1, 0) == digest("r0")
    assert net.owner.get_remask(task_id, 1, 3) is None
    assert net.owner.get_update(task_id, 1, 2).digest == digest("u1-2")  # the commit stays
    with reverts("no member"):
        net.owner.get_remask(task_id, 1, 4)


# ---------------------------------------------------------------- publish_sum


def test_publish_sum_reverts_with_a_reason(net: Net) -> None:
    task_id = net.task()  # decryptor of round 1: member 0
    dec = net.members[0]
    net.submit(task_id, 1, [0, 1, 2])
    with reverts("wrong phase"):  # submit phase: member 3 may still commit
        dec.publish_sum(task_id, 1, digest("sum"))
    with reverts("not decryptor"):
        net.members[1].publish_sum(task_id, 1, digest("sum"))
    with reverts("not decryptor"):
        net.outsider.publish_sum(task_id, 1, digest("sum"))
    with reverts("wrong round"):
        dec.publish_sum(task_id, 2, digest("sum"))
    net.submit(task_id, 1, [3])  # everyone committed: the vote phase opens at once
    with reverts("bad digest"):
        dec.publish_sum(task_id, 1, bytes(32))
    dec.publish_sum(task_id, 1, digest("sum"))
    with reverts("already published"):
        dec.publish_sum(task_id, 1, digest("other sum"))

    late = net.task()
    net.chain.advance(SUBMIT_WINDOW + VOTE_WINDOW)
    with reverts("wrong phase"):  # the vote window is over
        net.members[0].publish_sum(late, 1, digest("sum"))


def test_publish_sum_records_the_digest(net: Net) -> None:
    task_id = net.task(keyed=[1, 2])
    net.finalize(task_id, 1, range(4))
    assert net.owner.decryptor(task_id, 2) == 2  # (2 - 1) mod 2 = 1: the second candidate
    net.submit(task_id, 2, range(4))
    assert net.owner.get_round(task_id, 2).sum_digest == bytes(32)
    result = net.members[2].publish_sum(task_id, 2, digest("sum-2"))
    assert result.event("SumPublished") == {
        "task_id": task_id,
        "round": 2,
        "member": 2,
        "digest": digest("sum-2"),
    }
    assert net.owner.get_round(task_id, 2).sum_digest == digest("sum-2")
    assert net.owner.get_round(task_id, 1).sum_digest == bytes(32)


# ---------------------------------------------------------------- a whole secure round


def test_a_secure_round_with_a_dropout_finalizes(net: Net) -> None:
    """submit -> member 1 drops -> survivors remask -> decryptor publishes -> votes."""
    first_block = net.chain.w3.eth.block_number
    task_id = net.task()
    survivors = [0, 2, 3]
    net.submit(task_id, 1, survivors)
    net.chain.advance(SUBMIT_WINDOW)
    for i in survivors:
        net.members[i].remask(task_id, 1, digest(f"remasked-{i}"))
    decryptor = net.owner.decryptor(task_id, 1)
    assert decryptor == 0
    net.members[decryptor].publish_sum(task_id, 1, digest("sum-1"))
    final = None
    for i in survivors:
        final = net.members[i].vote(task_id, 1, digest("global-1"), bitmap(survivors))
    assert final is not None
    assert final.event("RoundFinalized")["global_digest"] == digest("global-1")

    rnd = net.owner.get_round(task_id, 1)
    assert rnd.status == RoundStatus.FINALIZED
    assert (rnd.submitted, rnd.remasked, rnd.accepted) == (0b1101, 0b1101, 0b1101)
    assert rnd.sum_digest == digest("sum-1")
    # The dropout's missing update costs it, as in a plain round; the survivors gain.
    reps = net.owner.reputations(task_id)
    assert reps == [REP_UNIT + REP_ACCEPT, REP_UNIT - REP_NO_SUBMIT] + [REP_UNIT + REP_ACCEPT] * 2
    assert [net.owner.get_remask(task_id, 1, i) for i in range(4)] == [
        digest("remasked-0"),
        None,
        digest("remasked-2"),
        digest("remasked-3"),
    ]
    # round 2: the silent member 1 is skipped; (2 - 1) mod 3 = 1 -> member 2
    assert net.owner.get_task(task_id).current_round == 2
    assert net.owner.decryptor(task_id, 2) == 2
    names = [
        e["event"]
        for e in net.owner.events(task_id, from_block=first_block)
        if e["event"] in {"UpdateRemasked", "SumPublished", "RoundFinalized"}
    ]
    assert names == ["UpdateRemasked"] * 3 + ["SumPublished", "RoundFinalized"]
