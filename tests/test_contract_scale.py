"""A task at the 256-member limit: joins up to the cap, the 257th is refused, and a round
with every member eligible finalizes within the client's gas bound."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest

from flchain.contracts import (
    REP_UNIT,
    ContractRevert,
    FLChainClient,
    RoundStatus,
    TaskParams,
    bitmap,
    finalize_gas_bound,
)
from flchain.contracts.testing import LocalChain, open_chain

MAX = 256
STAKE = 10**12
REWARD = 10**15
# Round 2 fails with one vote: every silent member drops below this floor at once.
REP_FLOOR = 900
REP_ACCEPT, REP_NO_SUBMIT, REP_NO_VOTE = 20, 50, 100


def digest(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


@pytest.fixture(scope="module", params=["eth-tester", "anvil"])
def chain(request: pytest.FixtureRequest) -> Iterator[LocalChain]:
    anvil = request.getfixturevalue("anvil_bin") if request.param == "anvil" else None
    with open_chain(request.param, anvil) as local:
        yield local


@pytest.mark.slow
def test_256_members_fill_a_task_and_full_rounds_settle(chain: LocalChain) -> None:
    owner_key, *keys = chain.new_accounts(MAX + 2)
    owner = FLChainClient.deploy(chain.w3, owner_key)
    clients = [FLChainClient(chain.w3, owner.address, key) for key in keys]
    params = TaskParams(
        config_digest=digest("config"),
        initial_digest=digest("initial"),
        min_members=MAX,
        max_members=MAX,
        submit_window=600,
        vote_window=600,
        quorum_bps=5001,
        stake=STAKE,
        rep_floor=REP_FLOOR,
        reward=REWARD,
    )
    task_id = owner.create_task(params)
    for i, client in enumerate(clients[:MAX]):
        assert client.join(task_id, f"peer-{i}".encode(), digest(f"k{i}"), value=STAKE) == i
    with pytest.raises(ContractRevert) as info:  # member 257
        clients[MAX].join(task_id, b"one too many", digest("late"), value=STAKE)
    assert info.value.reason == "task full"

    task = owner.get_task(task_id)
    assert (task.n_members, task.total_reputation) == (MAX, MAX * REP_UNIT)
    assert owner.get_round(task_id, 1).eligible == 2**MAX - 1
    assert owner.get_member(task_id, MAX - 1).account == clients[MAX - 1].account

    accepted = [0, 128, 255]
    for i in accepted:
        clients[i].submit(task_id, 1, digest(f"u{i}"), 10, 0, 0)
    chain.advance(params.submit_window)
    voters = MAX // 2 + 1  # the smallest majority of equal reputations
    results = [
        clients[i].vote(task_id, 1, digest("global"), bitmap(accepted)) for i in range(voters)
    ]
    assert all(r.event("VoteCast") for r in results)
    assert "RoundFinalized" not in [e["event"] for r in results[:-1] for e in r.events]
    final = results[-1]
    assert final.event("RoundFinalized")["accepted"] == bitmap(accepted)
    assert final.gas_used < finalize_gas_bound(MAX)
    assert owner.get_round(task_id, 1).status == RoundStatus.FINALIZED
    each = REWARD // params.max_rounds // len(accepted)
    assert final.event("RoundPaid")["share"] == each
    reps = owner.reputations(task_id)
    # Every member that committed nothing pays for it, the accepted gain.
    assert reps == [
        REP_UNIT + REP_ACCEPT if i in accepted else REP_UNIT - REP_NO_SUBMIT for i in range(MAX)
    ]

    # Round 2: one vote, then the window closes. Everyone else is penalized and all but
    # the voter fall below the floor: 255 ejections in one close, within the same bound.
    chain.advance(params.submit_window)
    clients[0].vote(task_id, 2, digest("global-2"), 0)
    chain.advance(params.vote_window)
    closed = clients[MAX].close_round(task_id, 2)
    assert closed.gas_used < finalize_gas_bound(MAX)
    ejected = [e["args"]["member"] for e in closed.events if e["event"] == "MemberEjected"]
    assert ejected == list(range(1, MAX))
    task = owner.get_task(task_id)
    assert (task.n_active, task.current_round) == (1, 3)
    assert task.total_reputation == REP_UNIT + REP_ACCEPT - REP_NO_SUBMIT
    # Their stakes and the rewards of the two accepted among them fund the pool.
    assert task.slashed == (MAX - 1) * STAKE + 2 * each
    assert task.rewards_paid == each
