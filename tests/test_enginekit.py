"""The engine tests' fake chain (tests/enginekit.py) against the real contract: one scripted
task, run on FakeChain and on FLChain in eth-tester side by side, must give the same views
(rounds, task, members, weights, votes, decryptors) and the same revert reasons at every
step. The engine tests are only as good as this fake, so it is checked here, in about a
second, rather than trusted."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
from enginekit import FakeChain

from flchain.contracts import ContractRevert, FLChainClient, TaskParams, bitmap
from flchain.contracts.testing import LocalChain, eth_tester_chain

WINDOW = 1000  # seconds; eth-tester moves its clock a second per block, so windows are long
N = 4


def _d(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


class Clock:
    """FakeChain's clock, moved by hand in step with eth-tester's `advance`."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclasses.dataclass
class Twins:
    """The same accounts' clients on both chains: owner, then members 0..N-1."""

    real_chain: LocalChain
    real: list[Any]
    fake: list[Any]
    clock: Clock
    task: int = 1

    def both(self, who: int, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call `method` as client `who` (-1: the owner) on both chains: both succeed, or
        both revert with the same reason. Returns the fake's result."""
        out = []
        for clients in (self.real, self.fake):
            try:
                out.append(("ok", getattr(clients[who + 1], method)(*args, **kwargs)))
            except ContractRevert as exc:
                out.append(("revert", exc.reason))
        (real_kind, real_value), (fake_kind, fake_value) = out
        assert (real_kind, fake_kind) == ("ok", "ok") or out[0] == out[1], (method, args, out)
        if method in ("join", "create_task"):
            assert real_value == fake_value
        return fake_value

    def reverts(self, reason: str, who: int, method: str, *args: Any) -> None:
        assert self.both(who, method, *args) == reason

    def advance(self, seconds: int) -> None:
        self.real_chain.advance(seconds)
        self.clock.now += seconds

    def compare(self) -> None:
        """Every view the engines read, on both chains."""
        real, fake = self.real[0], self.fake[0]
        rt, ft = real.get_task(self.task), fake.get_task(self.task)
        skip = {"owner", "round_start"}
        for f in dataclasses.fields(rt):
            if f.name not in skip:
                assert getattr(rt, f.name) == getattr(ft, f.name), f.name
        for r in range(1, rt.current_round + 1):
            rr, fr = real.get_round(self.task, r), fake.get_round(self.task, r)
            for f in dataclasses.fields(rr):
                name = f.name
                if name in ("start", "submit_deadline", "vote_deadline", "finalized_at"):
                    continue
                assert getattr(rr, name) == getattr(fr, name), (r, name)
            assert rr.vote_deadline - rr.submit_deadline == fr.vote_deadline - fr.submit_deadline
            assert (rr.finalized_at == 0) == (fr.finalized_at == 0)
            assert real.consensus_weights(self.task, r) == fake.consensus_weights(self.task, r)
            assert real.decryptor(self.task, r) == fake.decryptor(self.task, r)
            for i in range(N):
                assert real.get_update(self.task, r, i) == fake.get_update(self.task, r, i)
                assert real.get_vote(self.task, r, i) == fake.get_vote(self.task, r, i)
                assert real.get_remask(self.task, r, i) == fake.get_remask(self.task, r, i)
        for rm, fm in zip(real.members(self.task), fake.members(self.task), strict=True):
            assert dataclasses.replace(rm, account="") == dataclasses.replace(fm, account="")
        assert real.member_proofs(self.task) == fake.member_proofs(self.task)


@pytest.fixture
def twins() -> Iterator[Twins]:
    clock = Clock()
    fake_chain = FakeChain(clock=clock)
    with eth_tester_chain() as chain:
        owner_key, *keys = chain.new_accounts(N + 1)
        owner = FLChainClient.deploy(chain.w3, owner_key)
        real = [owner] + [FLChainClient(chain.w3, owner.address, k) for k in keys]
        fake = [fake_chain.client() for _ in range(N + 1)]
        yield Twins(chain, real, fake, clock)


def test_the_fake_chain_answers_as_the_contract_does(twins: Twins) -> None:
    t, T = twins, 1
    params = TaskParams(
        config_digest=_d("config"),
        initial_digest=_d("initial"),
        min_members=N,
        max_members=N,
        submit_window=WINDOW,
        vote_window=WINDOW,
        max_rounds=4,
        max_samples=100,
    )
    assert t.both(-1, "create_task", params) == T
    for i in range(N):
        he_key = _d(f"he {i}") if i != 1 else bytes(32)  # member 1 never decrypts
        t.reverts("not started", i, "submit", T, 1, _d("early"), 1, 0, 0)
        assert t.both(i, "join", T, b"peer%d" % i, _d(f"x {i}"), he_key, peer_proof=b"p%d" % i) == i
    t.reverts("already member", 0, "join", T, b"again", _d("x"), bytes(32))
    t.compare()

    # Round 1: everyone submits; one member votes for another pair; quorum without member 2.
    samples = (50, 150, 100, 7)  # 150 weighs as the cap, 100
    for i in range(3):
        t.both(i, "submit", T, 1, _d(f"u1 {i}"), samples[i], 0, -5 * i)
    t.reverts("wrong phase", 0, "vote", T, 1, _d("g1"), bitmap(range(4)))  # 3 is still out
    t.reverts("digest taken", 3, "submit", T, 1, _d("u1 0"), 1, 0, 0)
    t.reverts("bad base round", 3, "submit", T, 1, _d("u1 3"), 1, 7, 0)
    t.both(3, "submit", T, 1, _d("u1 3"), samples[3], 0, 0)
    t.reverts("already submitted", 3, "submit", T, 1, _d("u1 again"), 1, 0, 0)
    t.compare()
    t.both(0, "vote", T, 1, _d("g1"), bitmap([0, 1, 3]))
    t.reverts("already voted", 0, "vote", T, 1, _d("g1"), bitmap([0, 1, 3]))
    t.both(1, "vote", T, 1, _d("g1"), bitmap([0, 1, 3]))
    t.compare()
    t.both(3, "vote", T, 1, _d("g1"), bitmap([0, 1, 3]))  # quorum: round 1 finalized
    t.compare()

    # Round 2: member 3 stays out. Member 2 votes late on round 1, for another pair.
    t.both(2, "vote", T, 1, _d("other"), bitmap([2]))
    for i in range(3):
        t.both(i, "submit", T, 2, _d(f"u2 {i}"), 60, 1, 0)
    t.reverts("too early", 0, "close_round", T, 2)
    t.reverts("wrong phase", 0, "vote", T, 2, _d("g2"), bitmap([0, 1, 2]))
    t.reverts("wrong phase", 0, "remask", T, 2, _d("r2 0"))
    t.compare()
    t.advance(WINDOW)  # the submit window is over
    t.reverts("wrong phase", 3, "submit", T, 2, _d("u2 3"), 1, 1, 0)
    t.both(0, "remask", T, 2, _d("r2 0"))
    t.reverts("already remasked", 0, "remask", T, 2, _d("r2 0 again"))
    t.reverts("not submitted", 3, "remask", T, 2, _d("r2 3"))
    decryptor = t.fake[1].decryptor(T, 2)
    other = next(i for i in range(N) if i != decryptor)
    t.reverts("not decryptor", other, "publish_sum", T, 2, _d("s2"))
    t.both(decryptor, "publish_sum", T, 2, _d("s2"))
    t.reverts("already published", decryptor, "publish_sum", T, 2, _d("s2 again"))
    t.reverts("bad bitmap", 0, "vote", T, 2, _d("g2"), bitmap([0, 1, 2, 3]))
    for i in range(3):
        t.both(i, "vote", T, 2, _d("g2"), bitmap([0, 1, 2]))
    t.compare()

    # Round 3: nobody submits nor votes; closed after the windows, blaming nobody for it.
    t.reverts("too early", 1, "close_round", T, 3)
    t.advance(2 * WINDOW)
    t.reverts("wrong phase", 1, "vote", T, 3, _d("g3"), 0)
    t.both(1, "close_round", T, 3)
    t.compare()

    # Round 4: two votes are short of quorum; closed as failed, the task finishes.
    for i in range(N):
        t.both(i, "submit", T, 4, _d(f"u4 {i}"), 10, 2, 0)
    t.both(0, "vote", T, 4, _d("g4"), bitmap([0, 1]))
    t.both(1, "vote", T, 4, _d("g4"), bitmap([0, 1]))
    t.advance(2 * WINDOW)
    t.both(2, "close_round", T, 4)
    t.reverts("closed task", 0, "submit", T, 4, _d("late"), 1, 2, 0)
    t.compare()
    assert t.fake[0].get_task(T).status.name == "FINISHED"
