"""FLChain contract behaviour, through the typed client, on eth-tester and on anvil.

Each test creates its own task on a contract deployed once per backend, so tests do not
share state; time moves forward per test without disturbing the others.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest
from chainkit import INITIAL, deployed, digest, reverts
from eth_abi import encode as abi_encode
from web3 import Web3

from flchain.contracts import (
    REP_UNIT,
    ContractRevert,
    FailReason,
    FLChainClient,
    MemberStatus,
    RoundStatus,
    TaskParams,
    TaskStatus,
    TxResult,
    bitmap,
    bitmap_indices,
    encode_loss,
    load_artifact,
)
from flchain.contracts.artifact import CODE_BUDGET
from flchain.contracts.testing import LocalChain

SUBMIT_WINDOW = 1_000
VOTE_WINDOW = 1_000
ALARM_WINDOW = 1_000
STAKE = 10**15
N_MEMBERS = 8
REWARD = 10**16 + 7  # a reward pool that does not split evenly: shares round down
REP_ACCEPT, REP_REJECT, REP_BAD_VOTE = 20, 50, 50
REP_NO_SUBMIT, REP_NO_VOTE, REP_NO_LATE_VOTE, REP_ALARM = 50, 100, 50, 100


@dataclass
class Net:
    """A deployed FLChain with an owner, member clients and an outsider."""

    chain: LocalChain
    owner: FLChainClient
    members: list[FLChainClient]
    outsider: FLChainClient

    def params(self, **overrides: object) -> TaskParams:
        base = TaskParams(
            config_digest=digest("config"),
            initial_digest=INITIAL,
            min_members=4,
            max_members=N_MEMBERS,
            submit_window=SUBMIT_WINDOW,
            vote_window=VOTE_WINDOW,
            alarm_window=ALARM_WINDOW,
            quorum_bps=6000,
            alarm_bps=6000,
            stake=STAKE,
            max_rounds=10,
            rep_floor=0,
        )
        return replace(base, **overrides)

    def task(self, n_join: int = 4, **overrides: object) -> int:
        """Create a task and have the first `n_join` members join it."""
        task_id = self.owner.create_task(self.params(**overrides))
        for i in range(n_join):
            self.members[i].join(task_id, f"peer-{i}".encode(), digest(f"x25519-{i}"))
        return task_id

    def submit_all(self, task_id: int, rnd: int, who: list[int]) -> None:
        for i in who:
            self.members[i].submit(task_id, rnd, digest(f"u{rnd}-{i}"), 100 * (i + 1), rnd - 1, i)

    def balance(self, address: str) -> int:
        return int(self.chain.w3.eth.get_balance(address))


@pytest.fixture(scope="module", params=["eth-tester", "anvil"])
def net(request: pytest.FixtureRequest) -> Iterator[Net]:
    with deployed(request, N_MEMBERS) as (chain, owner, members, outsider):
        yield Net(chain, owner, members, outsider)


# ---------------------------------------------------------------- tasks and registration


def share(pool: int, max_rounds: int, rnd: int, n_paid: int) -> int:
    """The reward each accepted, active member of finalized round `rnd` is credited."""
    return pool // (max_rounds + 1 - rnd) // n_paid


def test_create_task_stores_parameters_and_logs_them(net: Net) -> None:
    before = net.owner.task_count()
    held = net.balance(net.owner.address)
    params = net.params(
        allowlist=True, rep_floor=700, max_rounds=3, max_samples=2**64 - 1, reward=REWARD
    )
    task_id = net.owner.create_task(params)
    assert task_id == before + 1 == net.owner.task_count()
    info = net.owner.get_task(task_id)
    assert info.owner == net.owner.account
    assert info.status == TaskStatus.REGISTERING
    assert info.config_digest == digest("config")
    assert info.initial_digest == info.global_digest == INITIAL
    assert (info.min_members, info.max_members) == (4, N_MEMBERS)
    assert (info.submit_window, info.vote_window, info.alarm_window) == (1000, 1000, 1000)
    assert (info.quorum_bps, info.alarm_bps, info.stake) == (6000, 6000, STAKE)
    assert (info.max_rounds, info.rep_floor, info.allowlist) == (3, 700, True)
    assert info.max_samples == 2**64 - 1
    assert (info.current_round, info.n_members, info.total_reputation) == (0, 0, 0)
    # The value sent is the task's reward pool, held by the contract.
    assert (info.reward_pool, info.rewards_paid, info.slashed, info.settled) == (
        REWARD,
        0,
        0,
        False,
    )
    assert net.balance(net.owner.address) == held + REWARD
    (created,) = [e for e in net.owner.events(task_id) if e["event"] == "TaskCreated"]
    assert created["args"]["owner"] == net.owner.account
    assert created["args"]["initial_digest"] == INITIAL
    assert created["args"]["rep_floor"] == 700
    assert created["args"]["max_samples"] == 2**64 - 1
    assert created["args"]["reward"] == REWARD
    plain = net.owner.get_task(net.owner.create_task(net.params()))
    assert (plain.max_samples, plain.reward_pool) == (10_000, 0)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"config_digest": bytes(32)}, "bad digest"),
        ({"initial_digest": bytes(32)}, "bad digest"),
        ({"min_members": 0}, "bad members"),
        ({"min_members": 5, "max_members": 4}, "bad members"),
        ({"max_members": 257}, "bad members"),  # more than 256 members
        ({"submit_window": 0}, "bad window"),
        ({"vote_window": 2**32}, "bad window"),
        ({"quorum_bps": 5000}, "bad quorum"),  # half is not a quorum: ties could finalize
        ({"quorum_bps": 10001}, "bad quorum"),
        ({"alarm_bps": 0}, "bad alarm threshold"),
        # fewer members than agreed on a round may not undo it (quorum_bps is 6000)
        ({"alarm_bps": 5999}, "bad alarm threshold"),
        ({"alarm_bps": 10001}, "bad alarm threshold"),
        ({"stake": 2**96}, "bad stake"),
        ({"max_rounds": 0}, "bad max rounds"),
        ({"max_rounds": 2**32 - 1}, "bad max rounds"),
        ({"rep_floor": REP_UNIT}, "bad floor"),
        ({"max_samples": 2**64}, "bad max samples"),
    ],
)
def test_create_task_rejects_bad_parameters(net: Net, overrides: dict, reason: str) -> None:
    before = net.owner.task_count()
    with reverts(reason):
        net.owner.create_task(net.params(**overrides))
    assert net.owner.task_count() == before


def test_fund_task_tops_up_the_reward_pool_until_the_task_ends(net: Net) -> None:
    task_id = net.owner.create_task(net.params(reward=REWARD))
    held = net.balance(net.owner.address)
    result = net.outsider.fund_task(task_id, 5)  # anyone may, while registering
    assert result.event("RewardFunded") == {
        "task_id": task_id,
        "funder": net.outsider.account,
        "amount": 5,
        "reward_pool": REWARD + 5,
    }
    for i in range(4):
        net.members[i].join(task_id, f"peer-{i}".encode(), digest(f"x25519-{i}"))
    assert net.owner.get_task(task_id).status == TaskStatus.RUNNING
    assert net.members[0].fund_task(task_id, 7).event("RewardFunded")["reward_pool"] == REWARD + 12
    assert net.owner.get_task(task_id).reward_pool == REWARD + 12
    assert net.balance(net.owner.address) == held + 12 + 4 * STAKE
    # The client refuses a zero amount; other callers meet the contract's own check.
    data = net.chain.w3.eth.contract(abi=load_artifact().abi).encode_abi("fund_task", [task_id])
    with reverts("no value"):
        net.outsider.sender.send(net.owner.address, data)
    with reverts("no task"):
        net.outsider.fund_task(10**6, 1)
    net.owner.close_task(task_id)
    with reverts("closed task"):
        net.outsider.fund_task(task_id, 1)
    assert net.owner.get_task(task_id).reward_pool == REWARD + 12


def test_join_binds_peer_id_and_key_and_takes_the_stake(net: Net) -> None:
    task_id = net.owner.create_task(net.params())
    contract_before = net.balance(net.owner.address)
    proof = digest("proof-a") + digest("proof-b")
    index = net.members[0].join(task_id, b"peer-zero", digest("key-zero"), peer_proof=proof)
    assert index == 0
    assert net.members[1].join(task_id, b"peer-one", digest("key-one")) == 1
    assert net.balance(net.owner.address) == contract_before + 2 * STAKE
    member = net.owner.get_member(task_id, 1)
    assert member.account == net.members[1].account
    assert (member.peer_id, member.x25519) == (b"peer-one", digest("key-one"))
    assert member.status == MemberStatus.ACTIVE
    assert (member.since_round, member.reputation, member.reputation_factor) == (1, REP_UNIT, 1.0)
    assert member.he_key == bytes(32)  # no Paillier key: this member never decrypts
    assert net.owner.member_index(task_id, net.members[1].account) == 1
    info = net.owner.get_task(task_id)
    assert (info.n_members, info.n_active, info.total_reputation) == (2, 2, 2 * REP_UNIT)
    joined = [e["args"] for e in net.owner.events(task_id) if e["event"] == "MemberJoined"]
    assert [(j["member"], j["peer_id"], j["stake"], j["he_key"]) for j in joined] == [
        (0, b"peer-zero", STAKE, bytes(32)),
        (1, b"peer-one", STAKE, bytes(32)),
    ]
    # The proof lives in the log only, where every node reads it.
    assert net.owner.member_proofs(task_id) == {0: proof, 1: b""}


def test_join_reverts_with_a_reason(net: Net) -> None:
    task_id = net.owner.create_task(net.params(min_members=2, max_members=2))
    alice, bob, carol = net.members[:3]
    with reverts("wrong stake"):  # missing stake
        alice.join(task_id, b"a", digest("a"), value=0)
    with reverts("wrong stake"):
        alice.join(task_id, b"a", digest("a"), value=STAKE + 1)
    with reverts("bad peer id"):
        alice.join(task_id, b"", digest("a"))
    with reverts("bad key"):
        alice.join(task_id, b"a", bytes(32))
    with reverts("no task"):
        alice.join(10**6, b"a", digest("a"))
    alice.join(task_id, b"a", digest("a"))
    with reverts("already member"):
        alice.join(task_id, b"a2", digest("a"))
    # Peer ids are not unique on chain: a second claim of "a" does not lock anyone out;
    # nodes keep only the member whose peer-id proof verifies (test_contract_peer_proof.py).
    assert bob.join(task_id, b"a", digest("b")) == 1
    with reverts("task full"):
        carol.join(task_id, b"c", digest("c"))


def test_allowlist_restricts_joining_to_the_owners_choice(net: Net) -> None:
    task_id = net.owner.create_task(net.params(allowlist=True))
    alice = net.members[0]
    with reverts("not allowed"):
        alice.join(task_id, b"a", digest("a"))
    with reverts("not owner"):
        alice.set_allowed(task_id, alice.account)
    result = net.owner.set_allowed(task_id, alice.account)
    assert result.event("AllowlistChanged")["allowed"] is True
    assert net.owner.is_allowed(task_id, alice.account)
    alice.join(task_id, b"a", digest("a"))
    net.owner.set_allowed(task_id, net.members[1].account)
    net.owner.set_allowed(task_id, net.members[1].account, False)
    assert not net.owner.is_allowed(task_id, net.members[1].account)
    with reverts("not allowed"):
        net.members[1].join(task_id, b"b", digest("b"))


def test_first_round_opens_when_min_members_joined(net: Net) -> None:
    task_id = net.task(n_join=3)
    assert net.owner.get_task(task_id).status == TaskStatus.REGISTERING
    with reverts("not started"):
        net.members[0].submit(task_id, 1, digest("u"), 1, 0, 0)
    with reverts("not started"):
        net.members[0].vote(task_id, 1, digest("g"), 0)
    with reverts("not started"):
        net.outsider.close_round(task_id, 1)
    with reverts("not started"):
        net.members[0].raise_alarm(task_id, 1)
    with reverts("wrong round"):
        net.owner.get_round(task_id, 1)
    net.members[3].join(task_id, b"peer-3", digest("k3"))
    info = net.owner.get_task(task_id)
    assert (info.status, info.current_round) == (TaskStatus.RUNNING, 1)
    rnd = net.owner.get_round(task_id, 1)
    assert rnd.status == RoundStatus.OPEN
    assert rnd.eligible == 0b1111
    assert (rnd.base_digest, rnd.base_round) == (INITIAL, 0)
    assert rnd.total_reputation == 4 * REP_UNIT
    assert rnd.submit_deadline == rnd.start + SUBMIT_WINDOW
    assert rnd.vote_deadline == rnd.start + SUBMIT_WINDOW + VOTE_WINDOW
    assert (rnd.remasked, rnd.sum_digest) == (0, bytes(32))


def test_late_joiner_takes_part_from_the_next_round(net: Net) -> None:
    task_id = net.task(n_join=4)
    late = net.members[4]
    assert late.join(task_id, b"late", digest("late")) == 4
    assert net.owner.get_member(task_id, 4).since_round == 2
    with reverts("not eligible"):
        late.submit(task_id, 1, digest("x"), 1, 0, 0)
    net.submit_all(task_id, 1, [0, 1, 2, 3])
    with reverts("not eligible"):
        late.vote(task_id, 1, digest("g"), 0)
    for i in range(3):
        net.members[i].vote(task_id, 1, digest("g1"), 0b1111)
    assert net.owner.get_round(task_id, 2).eligible == 0b11111
    late.submit(task_id, 2, digest("late-2"), 5, 1, 0)


# ---------------------------------------------------------------- submit and vote


def test_submit_records_the_commitment(net: Net) -> None:
    task_id = net.task()
    result = net.members[2].submit(task_id, 1, digest("upd"), 640, 0, -1234)
    logged = result.event("UpdateCommitted")
    assert (logged["member"], logged["digest"], logged["samples"]) == (2, digest("upd"), 640)
    update = net.owner.get_update(task_id, 1, 2)
    assert (update.submitted, update.digest, update.samples) == (True, digest("upd"), 640)
    assert (update.base_round, update.loss) == (0, -1234)
    assert not net.owner.get_update(task_id, 1, 1).submitted
    assert net.owner.get_round(task_id, 1).submitted == 0b100
    assert net.owner.consensus_weights(task_id, 1) == [0, 0, 640 * REP_UNIT, 0]


def test_submit_reverts_with_a_reason(net: Net) -> None:
    task_id = net.task()
    alice = net.members[0]
    with reverts("not member"):
        net.outsider.submit(task_id, 1, digest("u"), 1, 0, 0)
    with reverts("wrong round"):
        alice.submit(task_id, 2, digest("u"), 1, 0, 0)
    with reverts("wrong round"):
        alice.submit(task_id, 0, digest("u"), 1, 0, 0)
    with reverts("bad digest"):
        alice.submit(task_id, 1, bytes(32), 1, 0, 0)
    with reverts("bad samples"):
        alice.submit(task_id, 1, digest("u"), 0, 0, 0)
    with reverts("bad base round"):
        alice.submit(task_id, 1, digest("u"), 1, 2, 0)
    with reverts("bad base round"):  # round 1 starts from round 0's model, nothing else
        alice.submit(task_id, 1, digest("u"), 1, 1, 0)
    alice.submit(task_id, 1, digest("u"), 1, 0, 0)
    with reverts("already submitted"):  # double submit
        alice.submit(task_id, 1, digest("u2"), 1, 0, 0)
    net.chain.advance(SUBMIT_WINDOW)
    with reverts("wrong phase"):
        net.members[1].submit(task_id, 1, digest("u"), 1, 0, 0)
    net.owner.close_task(task_id)
    with reverts("closed task"):
        net.members[1].submit(task_id, 1, digest("u"), 1, 0, 0)


def test_a_digest_is_committed_once_per_task_so_copies_and_replays_revert(net: Net) -> None:
    task_id = net.task()
    copied = digest("u1-0")
    net.members[0].submit(task_id, 1, copied, 100, 0, 0)
    with reverts("digest taken"):  # a free rider commits member 0's update as its own
        net.members[1].submit(task_id, 1, copied, 100, 0, 0)
    net.submit_all(task_id, 1, [1, 2, 3])
    for i in range(3):
        net.members[i].vote(task_id, 1, digest("g1"), 0b1111)
    assert net.owner.get_task(task_id).current_round == 2
    with reverts("digest taken"):  # its own old update, replayed
        net.members[0].submit(task_id, 2, copied, 100, 1, 0)
    with reverts("digest taken"):  # another member's old update, replayed
        net.members[3].submit(task_id, 2, copied, 100, 1, 0)
    assert net.owner.get_round(task_id, 2).submitted == 0
    net.members[0].submit(task_id, 2, digest("u2-0"), 100, 1, 0)
    # The first commitment stands as it was; another task may hold the same digest.
    first = net.owner.get_update(task_id, 1, 0)
    assert (first.digest, first.samples, first.base_round) == (copied, 100, 0)
    other = net.task()
    net.members[1].submit(other, 1, copied, 7, 0, 0)
    assert net.owner.get_update(other, 1, 1).samples == 7


def test_the_base_round_is_the_rounds_base_even_after_a_failed_round(net: Net) -> None:
    task_id = net.task()
    net.chain.advance(SUBMIT_WINDOW + VOTE_WINDOW)
    net.outsider.close_round(task_id, 1)  # round 1 failed: round 2 restarts from round 0
    assert net.owner.get_round(task_id, 2).base_round == 0
    with reverts("bad base round"):  # a self-reported "fresh" base is refused
        net.members[0].submit(task_id, 2, digest("u"), 1, 1, 0)
    for i in range(4):
        net.members[i].submit(task_id, 2, digest(f"u2-{i}"), 1, 0, 0)
    for i in range(3):
        net.members[i].vote(task_id, 2, digest("g2"), 0b1111)
    assert net.owner.get_round(task_id, 3).base_round == 2
    for stale in (0, 1, 3):
        with reverts("bad base round"):
            net.members[0].submit(task_id, 3, digest("u3"), 1, stale, 0)
    net.members[0].submit(task_id, 3, digest("u3"), 1, 2, 0)
    assert net.owner.get_update(task_id, 3, 0).base_round == 2


def test_consensus_weights_cap_claimed_samples(net: Net) -> None:
    task_id = net.task(max_samples=1_000)
    liar, honest = net.members[0], net.members[1]
    liar.submit(task_id, 1, digest("lie"), 2**64 - 1, 0, 0)
    honest.submit(task_id, 1, digest("honest"), 1_000, 0, 0)
    net.members[2].submit(task_id, 1, digest("small"), 300, 0, 0)
    # The ledger keeps the claim; the weight is capped, so the liar weighs as the honest one.
    assert net.owner.get_update(task_id, 1, 0).samples == 2**64 - 1
    assert net.owner.consensus_weights(task_id, 1) == [1_000 * REP_UNIT] * 2 + [300 * REP_UNIT, 0]
    net.members[3].submit(task_id, 1, digest("tiny"), 10, 0, 0)
    for i in range(3):
        net.members[i].vote(task_id, 1, digest("g"), 0b1110)  # the liar's update rejected
    liar.submit(task_id, 2, digest("lie-2"), 2**64 - 1, 1, 0)
    honest.submit(task_id, 2, digest("honest-2"), 5_000, 1, 0)
    rep_liar, rep_honest = net.owner.reputations(task_id)[:2]
    assert rep_liar < rep_honest
    assert net.owner.consensus_weights(task_id, 2)[:2] == [1_000 * rep_liar, 1_000 * rep_honest]


def test_max_samples_zero_weighs_reputation_alone(net: Net) -> None:
    task_id = net.task(max_samples=0)
    net.members[0].submit(task_id, 1, digest("a"), 2**64 - 1, 0, 0)
    net.members[2].submit(task_id, 1, digest("b"), 1, 0, 0)
    assert net.owner.consensus_weights(task_id, 1) == [REP_UNIT, 0, REP_UNIT, 0]


def test_a_peer_id_squatter_keeps_nobody_out_and_its_proof_fails(net: Net) -> None:
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.id import ID

    from flchain.node import peer_proof

    task_id = net.owner.create_task(net.params())
    chain_id = int(net.chain.w3.eth.chain_id)
    owner_key, squatter_key = create_new_key_pair(), create_new_key_pair()
    peer = ID.from_pubkey(owner_key.public_key).to_base58()
    squatter, owner = net.members[0], net.members[1]
    # The squatter registers the owner's peer id first, with a proof made by its own key
    # (it cannot sign with the owner's) ...
    fake = peer_proof.sign(squatter_key, chain_id, net.owner.address, task_id, squatter.account)
    assert squatter.join(task_id, peer.encode(), digest("s"), peer_proof=fake) == 0
    # ... and the owner still joins with the same peer id.
    real = peer_proof.sign(owner_key, chain_id, net.owner.address, task_id, owner.account)
    assert owner.join(task_id, peer.encode(), digest("o"), peer_proof=real) == 1
    proofs = net.owner.member_proofs(task_id)
    members = net.owner.members(task_id)
    verdicts = [
        peer_proof.verify(
            m.peer_id.decode(), proofs[m.index], chain_id, net.owner.address, task_id, m.account
        )
        for m in members
    ]
    assert verdicts == [False, True]
    # Copying the owner's proof does not help either: it names the owner's address.
    assert not peer_proof.verify(peer, real, chain_id, net.owner.address, task_id, squatter.account)


def test_the_contract_itself_rejects_a_loss_outside_int64(net: Net) -> None:
    """The client refuses such a loss; other callers meet the contract's own check."""
    task_id = net.task()
    abi = load_artifact().abi
    data = net.chain.w3.eth.contract(abi=abi).encode_abi(
        "submit", [task_id, 1, digest("u"), 1, 0, 2**63]
    )
    with reverts("bad loss"):
        net.members[0].sender.send(net.owner.address, data)
    assert net.owner.get_update(task_id, 1, 0).loss_value == 0.0
    net.members[0].submit(task_id, 1, digest("u"), 1, 0, encode_loss(-0.25))
    assert net.owner.get_update(task_id, 1, 0).loss_value == -0.25


def test_vote_waits_for_all_submissions_or_the_submit_window(net: Net) -> None:
    task_id = net.task()
    net.submit_all(task_id, 1, [0, 1, 2])
    with reverts("wrong phase"):
        net.members[0].vote(task_id, 1, digest("g"), 0b111)
    net.submit_all(task_id, 1, [3])  # submitters committed: the vote opens at once
    net.members[0].vote(task_id, 1, digest("g"), 0b1111)
    assert net.chain.timestamp() < net.owner.get_round(task_id, 1).submit_deadline

    other = net.task()
    net.submit_all(other, 1, [0, 1])
    net.chain.advance(SUBMIT_WINDOW)  # the window ends the submit phase
    net.members[3].vote(other, 1, digest("g"), 0b11)
    net.chain.advance(VOTE_WINDOW)
    with reverts("wrong phase"):
        net.members[0].vote(other, 1, digest("g"), 0b11)


def test_vote_reverts_with_a_reason(net: Net) -> None:
    task_id = net.task()
    net.submit_all(task_id, 1, [0, 1, 3])
    net.chain.advance(SUBMIT_WINDOW)
    alice = net.members[0]
    with reverts("not member"):
        net.outsider.vote(task_id, 1, digest("g"), 0b1)
    with reverts("wrong round"):
        alice.vote(task_id, 2, digest("g"), 0b1)
    with reverts("bad bitmap"):  # member 2 did not submit
        alice.vote(task_id, 1, digest("g"), 0b111)
    with reverts("bad bitmap"):  # index 5 is no member at all
        alice.vote(task_id, 1, digest("g"), bitmap([0, 5]))
    with reverts("bad digest"):
        alice.vote(task_id, 1, bytes(32), 0b11)
    result = alice.vote(task_id, 1, digest("g"), 0b1011)
    cast = result.event("VoteCast")
    assert (cast["member"], cast["weight"], cast["tally"]) == (0, REP_UNIT, REP_UNIT)
    assert net.owner.get_tally(task_id, 1, digest("g"), 0b1011) == REP_UNIT
    vote = net.owner.get_vote(task_id, 1, 0)
    assert (vote.voted, vote.digest, vote.accepted) == (True, digest("g"), 0b1011)
    assert not net.owner.get_vote(task_id, 1, 1).voted
    with reverts("already voted"):  # double vote
        alice.vote(task_id, 1, digest("g2"), 0b1)


# ---------------------------------------------------------------- finalization and reputation


def test_quorum_finalizes_pays_and_moves_reputations_despite_a_wrong_minority(net: Net) -> None:
    task_id = net.task(reward=REWARD)
    net.submit_all(task_id, 1, [0, 1, 2, 3])
    good, bad = digest("global-1"), digest("poisoned")
    honest = bitmap([0, 1, 2])
    net.members[3].vote(task_id, 1, bad, bitmap([0, 1, 2, 3]))  # the minority's wrong vote
    net.members[0].vote(task_id, 1, good, honest)
    second = net.members[1].vote(task_id, 1, good, honest)
    assert [e["event"] for e in second.events] == ["VoteCast"]  # 2000 of 4000 < 60%
    final = net.members[2].vote(task_id, 1, good, honest)
    finalized = final.event("RoundFinalized")
    assert (finalized["global_digest"], finalized["accepted"]) == (good, honest)
    assert finalized["tally"] == 3 * REP_UNIT
    # The round's reward: the pool spread over the rounds left, in equal shares to the
    # accepted members.
    each = share(REWARD, 10, 1, 3)
    assert final.event("RoundPaid") == {
        "task_id": task_id,
        "round": 1,
        "paid": honest,
        "share": each,
        "reward_pool": REWARD - 3 * each,
    }

    rnd = net.owner.get_round(task_id, 1)
    assert (rnd.status, rnd.global_digest, rnd.accepted) == (RoundStatus.FINALIZED, good, honest)
    assert rnd.voted == 0b1111 and rnd.finalized_at > 0
    assert (rnd.reward_share, rnd.paid) == (each, honest)
    assert [m.earned for m in net.owner.members(task_id)] == [each] * 3 + [0]
    expected = [REP_UNIT + REP_ACCEPT] * 3 + [REP_UNIT - REP_REJECT - REP_BAD_VOTE]
    assert net.owner.reputations(task_id) == expected
    moves = {
        e["args"]["member"]: e["args"]["new"]
        for e in final.events
        if e["event"] == "ReputationChanged"
    }
    assert moves == dict(enumerate(expected))
    info = net.owner.get_task(task_id)
    assert (info.global_digest, info.global_round, info.current_round) == (good, 1, 2)
    assert info.total_reputation == sum(expected)
    assert (info.reward_pool, info.rewards_paid) == (REWARD - 3 * each, 3 * each)
    nxt = net.owner.get_round(task_id, 2)
    assert (nxt.status, nxt.base_digest, nxt.base_round) == (RoundStatus.OPEN, good, 1)
    with reverts("already voted"):  # a vote on round 1 now would be a late vote
        net.members[3].vote(task_id, 1, bad, 0)
    # consensus weights: samples x reputation, so the rejected member counts less
    net.submit_all(task_id, 2, [0, 3])
    weights = net.owner.consensus_weights(task_id, 2)
    assert weights == [100 * expected[0], 0, 0, 400 * expected[3]]


def test_a_late_vote_is_recorded_and_settled_when_the_next_round_ends(net: Net) -> None:
    task_id = net.task(n_join=7, min_members=7, quorum_bps=5001)
    net.members[7].join(task_id, b"late", digest("late"))  # eligible from round 2
    submitters = bitmap(range(6))
    net.submit_all(task_id, 1, range(6))  # member 6 commits nothing
    net.chain.advance(SUBMIT_WINDOW)
    for i in range(4):  # 4000 of 7000 finalize: members 4-6 have not voted yet
        net.members[i].vote(task_id, 1, digest("g1"), submitters)
    assert net.owner.get_round(task_id, 1).status == RoundStatus.FINALIZED
    # At once, only the missing update costs; a missing vote is settled with round 2.
    assert net.owner.reputations(task_id) == [REP_UNIT + REP_ACCEPT] * 6 + [
        REP_UNIT - REP_NO_SUBMIT,
        REP_UNIT,
    ]
    # Late votes on round 1 while round 2 runs: recorded, weightless, finalizing nothing.
    agree = net.members[4].vote(task_id, 1, digest("g1"), submitters)
    assert [e["event"] for e in agree.events] == ["VoteCast"]
    cast = agree.event("VoteCast")
    assert (cast["round"], cast["member"], cast["weight"], cast["tally"]) == (1, 4, 0, 4 * REP_UNIT)
    other = net.members[5].vote(task_id, 1, digest("other"), 0b1).event("VoteCast")
    assert (other["weight"], other["tally"]) == (0, 0)
    assert net.owner.get_tally(task_id, 1, digest("g1"), submitters) == 4 * REP_UNIT
    vote = net.owner.get_vote(task_id, 1, 5)
    assert (vote.voted, vote.digest, vote.accepted) == (True, digest("other"), 0b1)
    rnd1 = net.owner.get_round(task_id, 1)
    assert (rnd1.status, rnd1.voted) == (RoundStatus.FINALIZED, submitters)
    assert net.owner.get_task(task_id).current_round == 2
    with reverts("already voted"):
        net.members[4].vote(task_id, 1, digest("g1"), submitters)
    with reverts("already voted"):  # voted in time
        net.members[0].vote(task_id, 1, digest("g1"), submitters)
    with reverts("bad bitmap"):  # member 6 committed nothing in round 1
        net.members[6].vote(task_id, 1, digest("g1"), bitmap(range(7)))
    with reverts("bad digest"):
        net.members[6].vote(task_id, 1, bytes(32), submitters)
    with reverts("not eligible"):
        net.members[7].vote(task_id, 1, digest("g1"), submitters)
    with reverts("not member"):
        net.outsider.vote(task_id, 1, digest("g1"), submitters)
    # Round 2 fails unvoted: no penalties of its own, but round 1's votes are settled.
    net.chain.advance(SUBMIT_WINDOW + VOTE_WINDOW)
    closed = net.outsider.close_round(task_id, 2)
    moved = {
        e["args"]["member"]: (e["args"]["round"], e["args"]["new"])
        for e in closed.events
        if e["event"] == "ReputationChanged"
    }
    assert moved == {
        5: (2, REP_UNIT + REP_ACCEPT - REP_BAD_VOTE),  # its late vote was for another pair
        6: (2, REP_UNIT - REP_NO_SUBMIT - REP_NO_LATE_VOTE),  # it never voted on round 1
    }
    with reverts("wrong round"):  # round 1 is two rounds back now
        net.members[6].vote(task_id, 1, digest("g1"), submitters)
    with reverts("wrong round"):  # round 2 failed: there is nothing to vote on late
        net.members[0].vote(task_id, 2, digest("g2"), 0)


def test_a_tie_does_not_finalize_and_the_round_closes_once_everyone_voted(net: Net) -> None:
    task_id = net.task()
    net.submit_all(task_id, 1, [0, 1, 2, 3])
    for i, label in enumerate(["a", "a", "b", "b"]):
        net.members[i].vote(task_id, 1, digest(label), 0b1111)
    assert net.owner.get_tally(task_id, 1, digest("a"), 0b1111) == 2 * REP_UNIT
    assert net.owner.get_round(task_id, 1).status == RoundStatus.OPEN
    result = net.outsider.close_round(task_id, 1)  # every vote is in: no need to wait
    assert result.event("RoundFailed") == {
        "task_id": task_id,
        "round": 1,
        "reason": FailReason.STALLED,
    }
    assert net.owner.get_round(task_id, 1).status == RoundStatus.FAILED
    nxt = net.owner.get_round(task_id, 2)
    assert (nxt.status, nxt.base_digest, nxt.base_round) == (RoundStatus.OPEN, INITIAL, 0)
    assert net.owner.reputations(task_id) == [REP_UNIT] * 4
    assert net.owner.get_task(task_id).global_digest == INITIAL


def test_liveness_close_of_a_stalled_round(net: Net) -> None:
    floor = REP_UNIT - REP_NO_VOTE  # inclusive: a member exactly at the floor stays
    task_id = net.task(rep_floor=floor)
    net.submit_all(task_id, 1, [0, 1])
    net.chain.advance(SUBMIT_WINDOW)
    net.members[0].vote(task_id, 1, digest("g"), 0b11)
    with reverts("too early"):
        net.outsider.close_round(task_id, 1)
    with reverts("wrong round"):
        net.outsider.close_round(task_id, 2)
    net.chain.advance(VOTE_WINDOW)
    result = net.outsider.close_round(task_id, 1)
    assert net.owner.get_round(task_id, 1).status == RoundStatus.FAILED
    # Someone voted, so the silent are to blame: no update and no vote both cost.
    expected = [
        REP_UNIT,
        REP_UNIT - REP_NO_VOTE,
        REP_UNIT - REP_NO_SUBMIT - REP_NO_VOTE,
        REP_UNIT - REP_NO_SUBMIT - REP_NO_VOTE,
    ]
    assert net.owner.reputations(task_id) == expected
    ejected = [e["args"] for e in result.events if e["event"] == "MemberEjected"]
    assert [(e["member"], e["reputation"], e["forfeited"]) for e in ejected] == [
        (2, expected[2], STAKE),
        (3, expected[3], STAKE),
    ]
    info = net.owner.get_task(task_id)
    assert (info.n_active, info.total_reputation) == (2, expected[0] + expected[1])
    assert (info.slashed, info.reward_pool) == (2 * STAKE, 2 * STAKE)  # forfeits fund rewards
    assert net.owner.get_round(task_id, 2).eligible == 0b0011
    with reverts("wrong round"):
        net.members[1].submit(task_id, 1, digest("late"), 1, 0, 0)
    net.members[1].submit(task_id, 2, digest("fresh"), 1, 0, 0)
    assert net.owner.get_task(task_id).current_round == 2
    # Nobody voted in round 2 (a stalled chain, say): closing it blames nobody.
    net.chain.advance(SUBMIT_WINDOW + VOTE_WINDOW)
    quiet = net.outsider.close_round(task_id, 2)
    assert "ReputationChanged" not in [e["event"] for e in quiet.events]
    assert net.owner.reputations(task_id) == expected


def test_members_below_the_floor_are_ejected_and_forfeit_to_the_pool(net: Net) -> None:
    held = net.balance(net.owner.address)
    task_id = net.task(rep_floor=950, reward=REWARD)
    net.submit_all(task_id, 1, [0, 1, 2, 3])
    for i in range(3):  # all accepted: member 3 earns its share too
        net.members[i].vote(task_id, 1, digest("g1"), 0b1111)
    first = share(REWARD, 10, 1, 4)
    net.submit_all(task_id, 2, [0, 1, 2, 3])
    final = None
    for i in range(3):  # member 3's update rejected, and it never voted on round 1
        final = net.members[i].vote(task_id, 2, digest("g2"), 0b0111)
    assert final is not None
    second = share(REWARD - 4 * first, 10, 2, 3)
    assert final.event("RoundPaid")["share"] == second
    ejected = final.event("MemberEjected")
    # Its stake and everything it earned go to the reward pool.
    assert (ejected["member"], ejected["account"]) == (3, net.members[3].account)
    assert ejected["reputation"] == REP_UNIT + REP_ACCEPT - REP_REJECT - REP_NO_LATE_VOTE < 950
    assert ejected["forfeited"] == STAKE + first
    member = net.owner.get_member(task_id, 3)
    assert (member.status, member.earned, member.payout) == (MemberStatus.EJECTED, first, 0)
    info = net.owner.get_task(task_id)
    assert (info.n_active, info.slashed) == (3, STAKE + first)
    assert info.rewards_paid == 3 * (first + second)
    assert info.reward_pool == REWARD - 3 * (first + second) + STAKE
    assert info.total_reputation == 3 * (REP_UNIT + 2 * REP_ACCEPT)
    assert net.owner.get_round(task_id, 3).eligible == 0b0111
    with reverts("ejected"):
        net.members[3].submit(task_id, 3, digest("u"), 1, 2, 0)
    with reverts("ejected"):
        net.members[3].raise_alarm(task_id, 2)

    net.owner.close_task(task_id)
    with reverts("alarm window open"):  # round 2 may still be reverted
        net.members[0].withdraw(task_id)
    net.chain.advance(ALARM_WINDOW)
    assert net.owner.get_task(task_id).settled
    with reverts("ejected"):
        net.members[3].withdraw(task_id)
    with reverts("not owner"):
        net.members[0].claim_refund(task_id)
    with reverts("nothing to claim"):  # rewards were paid: the owner gets none of it back
        net.owner.claim_refund(task_id)
    # The honest members take their stakes, their rewards and the pool left (forfeit
    # included) in proportion to their rewards: all that came in, but rounding dust.
    pool, paid = info.reward_pool, info.rewards_paid
    for i in range(3):
        earned = first + second
        payout = STAKE + earned + pool * earned // paid
        assert net.owner.get_member(task_id, i).payout == payout
        before = net.balance(net.members[i].account)
        result = net.members[i].withdraw(task_id)
        assert result.event("Withdrawn") == {
            "task_id": task_id,
            "account": net.members[i].account,
            "member": i,
            "stake": STAKE,
            "reward": payout - STAKE,
        }
        assert net.balance(net.members[i].account) == before + payout - result.fee_wei
    assert 0 <= net.balance(net.owner.address) - held < 3


# ---------------------------------------------------------------- alarms


def _finalize_round_one(net: Net, task_id: int, label: str = "global-1") -> None:
    net.submit_all(task_id, 1, [0, 1, 2, 3])
    for i in range(3):
        net.members[i].vote(task_id, 1, digest(label), 0b1111)


def reverted(result: TxResult) -> bool:
    return "RoundReverted" in [e["event"] for e in result.events]


def test_alarms_revert_a_round_to_the_last_good_model(net: Net) -> None:
    task_id = net.task(reward=REWARD)
    _finalize_round_one(net, task_id)
    each = share(REWARD, 10, 1, 4)
    net.members[0].submit(task_id, 2, digest("u2"), 1, 1, 0)
    with reverts("wrong round"):  # round 2 is not finalized
        net.members[0].raise_alarm(task_id, 2)
    with reverts("not member"):
        net.outsider.raise_alarm(task_id, 1)
    weight = REP_UNIT + REP_ACCEPT
    total = 4 * weight
    first = net.members[0].raise_alarm(task_id, 1)
    # The raiser bonds REP_ALARM at once; its weight is its reputation before the bond.
    assert [e["event"] for e in first.events] == ["ReputationChanged", "AlarmRaised"]
    bond = first.event("ReputationChanged")
    assert (bond["round"], bond["member"], bond["old"], bond["new"]) == (
        1,
        0,
        weight,
        weight - REP_ALARM,
    )
    raised = first.event("AlarmRaised")
    assert (raised["weight"], raised["alarm_weight"]) == (weight, weight)
    assert net.owner.get_task(task_id).total_reputation == total - REP_ALARM
    with reverts("already alarmed"):
        net.members[0].raise_alarm(task_id, 1)
    # The threshold: alarm weight >= 60% of the active reputation left after the bonds.
    assert not reverted(net.members[1].raise_alarm(task_id, 1))  # 2040 < 60% of 3880
    third = net.members[2].raise_alarm(task_id, 1)  # 3060 >= 60% of 3780
    undo = third.event("RoundReverted")
    assert (undo["restored_digest"], undo["restored_round"]) == (INITIAL, 0)
    assert (undo["alarm_weight"], undo["clawed_back"]) == (3 * weight, 4 * each)

    rnd1 = net.owner.get_round(task_id, 1)
    assert (rnd1.status, rnd1.alarmed, rnd1.alarm_weight) == (
        RoundStatus.REVERTED,
        0b111,
        3 * weight,
    )
    assert rnd1.global_digest == digest("global-1")  # the record of what was reverted stays
    # Undone: round 1's reputation moves and rewards; the raisers get their bonds back.
    assert net.owner.reputations(task_id) == [REP_UNIT] * 4
    assert {e["args"]["round"] for e in third.events if e["event"] == "ReputationChanged"} == {1}
    assert [m.earned for m in net.owner.members(task_id)] == [0] * 4
    info = net.owner.get_task(task_id)
    assert (info.global_digest, info.global_round, info.current_round) == (INITIAL, 0, 3)
    assert (info.reward_pool, info.rewards_paid, info.total_reputation) == (
        REWARD,
        0,
        4 * REP_UNIT,
    )
    assert third.event("RoundFailed") == {
        "task_id": task_id,
        "round": 2,
        "reason": FailReason.ABORTED_BY_ALARM,
    }
    assert net.owner.get_round(task_id, 2).status == RoundStatus.ABORTED
    rnd3 = net.owner.get_round(task_id, 3)
    assert (rnd3.status, rnd3.base_digest, rnd3.base_round) == (RoundStatus.OPEN, INITIAL, 0)
    with reverts("wrong round"):  # already reverted
        net.members[3].raise_alarm(task_id, 1)


def test_a_raiser_its_bond_takes_below_the_floor_is_ejected_until_a_revert(net: Net) -> None:
    task_id = net.task(n_join=5, min_members=5, rep_floor=950, reward=REWARD)
    net.submit_all(task_id, 1, range(5))
    for i in range(3):  # 3000 of 5000: member 4's update rejected, down to the floor
        net.members[i].vote(task_id, 1, digest("g1"), 0b01111)
    each = share(REWARD, 10, 1, 4)
    low = REP_UNIT - REP_REJECT
    assert net.owner.reputation(task_id, 4) == low == net.owner.get_task(task_id).rep_floor
    first = net.members[4].raise_alarm(task_id, 1)  # its bond takes it below the floor
    ejected = first.event("MemberEjected")
    assert (ejected["member"], ejected["reputation"], ejected["forfeited"]) == (
        4,
        low - REP_ALARM,
        STAKE,
    )
    assert first.event("AlarmRaised")["weight"] == low
    assert net.owner.get_member(task_id, 4).status == MemberStatus.EJECTED
    assert net.owner.get_round(task_id, 1).status == RoundStatus.FINALIZED
    info = net.owner.get_task(task_id)
    assert (info.n_active, info.total_reputation) == (4, 4 * (REP_UNIT + REP_ACCEPT))
    assert (info.reward_pool, info.slashed) == (REWARD - 4 * each + STAKE, STAKE)
    # Member 0's bond takes it below the floor too (1020 - 100 < 950): ejected as well.
    second = net.members[0].raise_alarm(task_id, 1)
    assert not reverted(second)
    assert second.event("MemberEjected")["member"] == 0
    # Member 1's alarm brings 2990 of the 5030 there were before the alarms: short of 60%
    # (the ejected raisers and the bonds still count in the total), and ejects member 1 too.
    third = net.members[1].raise_alarm(task_id, 1)
    assert not reverted(third) and third.event("MemberEjected")["member"] == 1
    fourth = net.members[2].raise_alarm(task_id, 1)
    assert fourth.event("RoundReverted")["alarm_weight"] == low + 3 * (REP_UNIT + REP_ACCEPT)
    reinstated = [e["args"] for e in fourth.events if e["event"] == "MemberReinstated"]
    # Round 1's share was clawed back first, so each gets back its stake alone.
    assert sorted((e["member"], e["restored"]) for e in reinstated) == [
        (0, STAKE),
        (1, STAKE),
        (4, STAKE),
    ]
    # Back to the state before round 1's settlement: stakes, pool and reputations.
    assert [(m.status, m.reputation, m.earned) for m in net.owner.members(task_id)] == [
        (MemberStatus.ACTIVE, REP_UNIT, 0)
    ] * 5
    info = net.owner.get_task(task_id)
    assert (info.n_active, info.total_reputation) == (5, 5 * REP_UNIT)
    assert (info.reward_pool, info.rewards_paid, info.slashed) == (REWARD, 0, 0)


def test_raisers_their_bonds_eject_cannot_shrink_the_bar_for_later_alarms(net: Net) -> None:
    """Siren's attackers alarm every round, and their bonds eject them. Their alarms still
    count (a revert reinstates them), so what the alarms took out of the active reputation
    (bonds, ejected raisers) stays in the total the round's later alarms are measured
    against. (Fails while an ejected raiser leaves only the total: then 2990 of 2960 active
    reverts, where 2990 is 59% of the 5030 there were.)"""
    task_id = net.task(n_join=5, min_members=5, rep_floor=950, alarm_bps=6666, quorum_bps=6000)
    net.submit_all(task_id, 1, range(5))
    for i in range(3):  # member 4's update rejected: 950, at the floor
        net.members[i].vote(task_id, 1, digest("g1"), 0b01111)
    for raiser in (4, 0, 1):  # each bond takes its raiser below the floor: ejected
        result = net.members[raiser].raise_alarm(task_id, 1)
        assert not reverted(result) and result.event("MemberEjected")["member"] == raiser
    assert net.owner.get_round(task_id, 1).status == RoundStatus.FINALIZED
    # 2990 + 1020 of the 5030 there were before the alarms reaches 66.66%: the fourth alarm
    # reverts and reinstates all three.
    fourth = net.members[2].raise_alarm(task_id, 1)
    assert fourth.event("RoundReverted")["alarm_weight"] == 950 + 3 * (REP_UNIT + REP_ACCEPT)
    reinstated = sorted(
        e["args"]["member"] for e in fourth.events if e["event"] == "MemberReinstated"
    )
    assert reinstated == [0, 1, 4]


def test_a_raiser_its_bond_ejects_still_counts_in_the_alarm_threshold(net: Net) -> None:
    """Plan: alarm_bps >= quorum_bps so that fewer members than agreed on a round cannot
    undo it. Both members of this task had to vote to finalize round 1 (quorum 60%); one
    alarm must not revert it, even when the raiser's bond ejects it: the threshold counts
    the active reputation after the bond, the raiser's bonded reputation included.
    (Fails while the contract drops an ejected raiser from the threshold's total: then it
    reverts alone, is reinstated and gets its bond back, at no cost.)"""
    task_id = net.task(n_join=2, min_members=2, rep_floor=950)
    net.submit_all(task_id, 1, [0, 1])
    net.members[0].vote(task_id, 1, digest("g1"), 0b11)
    net.members[1].vote(task_id, 1, digest("g1"), 0b11)
    result = net.members[0].raise_alarm(task_id, 1)  # 1020 - 100 is below the floor
    assert result.event("MemberEjected")["member"] == 0
    assert not reverted(result)  # 1020 < 60% of 2040 (its 920 and 100 bond, and 1020)
    assert net.owner.get_round(task_id, 1).status == RoundStatus.FINALIZED


def test_an_alarm_needs_the_reputation_to_bond(net: Net) -> None:
    task_id = net.task(submit_window=10, vote_window=10, alarm_window=10**6)
    late = net.members[4]
    late.join(task_id, b"late", digest("late"))  # eligible from round 2: at REP_UNIT then
    net.submit_all(task_id, 1, [0, 1, 2])
    net.chain.advance(10)
    for i in range(3):
        net.members[i].vote(task_id, 1, digest("g1"), 0b0111)
    # Rounds 2-7 fail with member 0's vote alone: the silent lose 150 per round.
    for rnd in range(2, 8):
        net.chain.advance(10)
        net.members[0].vote(task_id, rnd, digest(f"g{rnd}"), 0)
        net.chain.advance(10)
        net.outsider.close_round(task_id, rnd)
    reps = net.owner.reputations(task_id)
    # Member 3 also never voted on round 1: settled when round 2 ended.
    silent = REP_NO_SUBMIT + REP_NO_LATE_VOTE + 6 * (REP_NO_SUBMIT + REP_NO_VOTE)
    assert reps[3] == max(REP_UNIT - silent, 0) < REP_ALARM
    assert reps[4] == REP_UNIT - 6 * (REP_NO_SUBMIT + REP_NO_VOTE) == REP_ALARM
    with reverts("reputation too low"):
        net.members[3].raise_alarm(task_id, 1)
    total = net.owner.get_task(task_id).total_reputation
    result = late.raise_alarm(task_id, 1)  # exactly the bond: allowed, down to zero
    assert result.event("AlarmRaised")["weight"] == REP_ALARM
    assert net.owner.reputation(task_id, 4) == 0
    assert net.owner.get_task(task_id).total_reputation == total - REP_ALARM
    assert net.owner.get_round(task_id, 1).alarmed == 0b10000


def test_alarm_window_closes_and_a_failed_alarm_keeps_its_bond(net: Net) -> None:
    task_id = net.task()
    _finalize_round_one(net, task_id)
    net.members[0].raise_alarm(task_id, 1)
    net.chain.advance(ALARM_WINDOW)
    with reverts("alarm closed"):
        net.members[1].raise_alarm(task_id, 1)
    assert net.owner.get_round(task_id, 1).status == RoundStatus.FINALIZED
    reps = net.owner.reputations(task_id)
    assert reps == [REP_UNIT + REP_ACCEPT - REP_ALARM] + [REP_UNIT + REP_ACCEPT] * 3


# ---------------------------------------------------------------- ending a task


def test_max_rounds_finishes_the_task_and_members_withdraw_once_settled(net: Net) -> None:
    held = net.balance(net.owner.address)
    task_id = net.task(max_rounds=2, alarm_window=3 * ALARM_WINDOW, reward=REWARD)
    with reverts("task running"):
        net.members[0].withdraw(task_id)
    with reverts("task running"):
        net.owner.claim_refund(task_id)
    net.submit_all(task_id, 1, [0, 1, 2, 3])
    for i in range(3):
        net.members[i].vote(task_id, 1, digest("last"), 0b0111)
    each = share(REWARD, 2, 1, 3)
    net.chain.advance(SUBMIT_WINDOW + VOTE_WINDOW)
    final = net.outsider.close_round(task_id, 2)  # the last round fails: nobody voted
    ended = final.event("TaskEnded")
    assert (ended["status"], ended["global_digest"], ended["global_round"]) == (
        TaskStatus.FINISHED,
        digest("last"),
        1,
    )
    info = net.owner.get_task(task_id)
    assert (info.status, info.current_round, info.settled) == (TaskStatus.FINISHED, 2, False)
    with reverts("wrong round"):
        net.owner.get_round(task_id, 3)
    with reverts("closed task"):
        net.members[0].submit(task_id, 2, digest("u"), 1, 1, 0)
    # Round 1 may still be reverted: its alarm window must close before anyone is paid.
    with reverts("alarm window open"):
        net.members[0].withdraw(task_id)
    with reverts("alarm window open"):
        net.owner.claim_refund(task_id)
    window_end = net.owner.get_round(task_id, 1).finalized_at + info.alarm_window
    net.chain.advance(window_end - net.chain.timestamp())
    info = net.owner.get_task(task_id)
    assert info.settled
    # The pool left at the end (round 2 paid nothing) goes to those who earned, pro rata.
    assert (info.reward_pool, info.rewards_paid) == (REWARD - 3 * each, 3 * each)
    payouts = [STAKE + each + info.reward_pool * each // (3 * each)] * 3 + [STAKE]
    assert [m.payout for m in net.owner.members(task_id)] == payouts
    for i, payout in enumerate(payouts):
        member = net.members[i]
        before = net.balance(member.account)
        result = member.withdraw(task_id)
        withdrawn = result.event("Withdrawn")
        assert (withdrawn["account"], withdrawn["member"]) == (member.account, i)
        assert (withdrawn["stake"], withdrawn["reward"]) == (STAKE, payout - STAKE)
        assert net.balance(member.account) == before + payout - result.fee_wei
        assert net.owner.get_member(task_id, i).status == MemberStatus.WITHDRAWN
    assert 0 <= net.balance(net.owner.address) - held < 3  # rounding dust only
    with reverts("withdrawn"):
        net.members[0].withdraw(task_id)
    with reverts("not member"):
        net.outsider.withdraw(task_id)
    with reverts("nothing to claim"):
        net.owner.claim_refund(task_id)


def test_owner_closes_a_task_and_takes_back_a_pool_nobody_earned(net: Net) -> None:
    task_id = net.task(reward=REWARD)
    with reverts("not owner"):
        net.members[0].close_task(task_id)
    result = net.owner.close_task(task_id)
    assert result.event("RoundFailed")["reason"] == FailReason.TASK_CLOSED
    assert result.event("TaskEnded")["status"] == TaskStatus.CLOSED
    info = net.owner.get_task(task_id)
    assert (info.status, info.settled) == (TaskStatus.CLOSED, True)  # no round to revert
    assert net.owner.get_round(task_id, 1).status == RoundStatus.ABORTED
    with reverts("closed task"):
        net.owner.close_task(task_id)
    with reverts("closed task"):
        net.members[4].join(task_id, b"late", digest("late"))
    with reverts("closed task"):
        net.members[0].vote(task_id, 1, digest("g"), 0)
    with reverts("closed task"):
        net.members[0].raise_alarm(task_id, 1)
    with reverts("closed task"):
        net.outsider.close_round(task_id, 1)
    with reverts("closed task"):
        net.owner.set_allowed(task_id, net.outsider.account)
    assert net.owner.get_member(task_id, 0).payout == STAKE
    assert net.members[0].withdraw(task_id).event("Withdrawn")["reward"] == 0
    with reverts("not owner"):
        net.members[0].claim_refund(task_id)
    before = net.balance(net.owner.account)
    refund = net.owner.claim_refund(task_id)
    assert refund.event("RefundClaimed") == {
        "task_id": task_id,
        "owner": net.owner.account,
        "amount": REWARD,
    }
    assert net.balance(net.owner.account) == before + REWARD - refund.fee_wei
    assert net.owner.get_task(task_id).reward_pool == 0
    with reverts("nothing to claim"):
        net.owner.claim_refund(task_id)


def test_round_settlement_runs_only_through_flchain(net: Net) -> None:
    """FLChain runs its settlement code by delegatecall; neither piece lets a caller in
    through the back door, and both fit EIP-170's limit with the build's headroom."""
    task_id = net.task()
    abi = load_artifact().abi
    settlement = net.chain.w3.eth.contract(net.owner.address, abi=abi).functions.SETTLEMENT()
    settlement = settlement.call()
    # The settlement's entry points that FLChain.vote alone may reach.
    inner = {
        "finalize_round(uint256,uint256,bytes32,uint256,uint256)": [
            task_id, 1, digest("forged"), 0b1111, 10**6,
        ],
        "late_vote(uint256,uint256,bytes32,uint256)": [task_id, 1, digest("forged"), 0],
    }  # fmt: skip
    for signature, args in inner.items():
        types = signature[signature.index("(") + 1 : -1].split(",")
        data = "0x" + (Web3.keccak(text=signature)[:4] + abi_encode(types, args)).hex()
        with pytest.raises(ContractRevert):  # FLChain has no such entry point
            net.outsider.sender.send(net.owner.address, data)
        with reverts("call FLChain"):  # the settlement refuses to run on its own storage
            net.outsider.sender.send(settlement, data)
    data = net.chain.w3.eth.contract(abi=abi).encode_abi("withdraw", [task_id])
    with reverts("call FLChain"):
        net.members[0].sender.send(settlement, data)
    assert net.owner.get_round(task_id, 1).status == RoundStatus.OPEN
    for address in (net.owner.address, settlement):
        assert 0 < len(net.chain.w3.eth.get_code(address)) <= CODE_BUDGET


# ---------------------------------------------------------------- views and the ledger


def test_views_reject_what_does_not_exist(net: Net) -> None:
    task_id = net.task()
    with reverts("no task"):
        net.owner.get_task(10**6)
    with reverts("wrong round"):  # round out of range
        net.owner.get_round(task_id, 2)
    with reverts("wrong round"):
        net.owner.get_round(task_id, 0)
    with reverts("no member"):
        net.owner.get_member(task_id, 4)
    with reverts("no member"):
        net.owner.get_update(task_id, 1, 4)
    with reverts("not member"):
        net.owner.member_index(task_id, net.outsider.account)
    assert [m.index for m in net.owner.members(task_id)] == [0, 1, 2, 3]


def test_the_ledger_rebuilds_from_events_alone(net: Net) -> None:
    """Replaying the task's events reproduces the views: rounds, globals, reputations, the
    reward pool and each member's rewards."""
    first_block = net.chain.w3.eth.block_number
    task_id = net.task(rep_floor=930, reward=REWARD)
    _finalize_round_one(net, task_id, "g1")
    net.outsider.fund_task(task_id, 10**15)
    net.submit_all(task_id, 2, [0, 1, 2])
    net.chain.advance(SUBMIT_WINDOW)
    net.members[3].vote(task_id, 2, digest("other"), 0b1)
    for i in range(3):  # members 2 (rejected) and 3 (no update, bad vote) fall to 920
        net.members[i].vote(task_id, 2, digest("g2"), 0b011)
    for i in range(2):  # the second alarm reverts round 2; round 3 aborted, round 4 opens
        net.members[i].raise_alarm(task_id, 2)

    status: dict[int, RoundStatus] = {}
    globals_: dict[int, bytes] = {}
    reps: dict[int, int] = {}
    earned: dict[int, int] = {}
    paid: dict[int, tuple[int, int]] = {}
    commits: dict[tuple[int, int], bytes] = {}
    current_global = None
    pool = 0
    for ev in net.owner.events(task_id, from_block=first_block):
        args = ev["args"]
        match ev["event"]:
            case "TaskCreated":
                current_global = args["initial_digest"]
                pool = args["reward"]
            case "RewardFunded":
                pool += args["amount"]
                assert pool == args["reward_pool"]
            case "RoundPaid":
                paid[args["round"]] = (args["paid"], args["share"])
                for i in bitmap_indices(args["paid"]):
                    earned[i] += args["share"]
                pool -= args["share"] * len(bitmap_indices(args["paid"]))
                assert pool == args["reward_pool"]
            case "MemberEjected":
                pool += args["forfeited"]
            case "MemberReinstated":
                pool -= args["restored"]
            case "MemberJoined":
                reps[args["member"]] = REP_UNIT
                earned[args["member"]] = 0
            case "RoundOpened":
                status[args["round"]] = RoundStatus.OPEN
                assert args["base_digest"] == current_global
            case "UpdateCommitted":
                commits[(args["round"], args["member"])] = args["digest"]
            case "ReputationChanged":
                assert reps[args["member"]] == args["old"]
                reps[args["member"]] = args["new"]
            case "RoundFinalized":
                status[args["round"]] = RoundStatus.FINALIZED
                globals_[args["round"]] = current_global = args["global_digest"]
            case "RoundReverted":
                status[args["round"]] = RoundStatus.REVERTED
                current_global = args["restored_digest"]
                pool += args["clawed_back"]
                bits, each = paid.pop(args["round"], (0, 0))
                for i in bitmap_indices(bits):
                    earned[i] -= each
            case "RoundFailed":
                reason = FailReason(args["reason"])
                failed = RoundStatus.ABORTED if reason != FailReason.STALLED else RoundStatus.FAILED
                status[args["round"]] = failed
    assert status == {
        1: RoundStatus.FINALIZED,
        2: RoundStatus.REVERTED,
        3: RoundStatus.ABORTED,
        4: RoundStatus.OPEN,
    }
    for rnd, st in status.items():
        view = net.owner.get_round(task_id, rnd)
        assert view.status == st
        if rnd in globals_:
            assert view.global_digest == globals_[rnd]
        for i in bitmap_indices(view.submitted):
            assert net.owner.get_update(task_id, rnd, i).digest == commits[(rnd, i)]
    assert [reps[i] for i in sorted(reps)] == net.owner.reputations(task_id)
    info = net.owner.get_task(task_id)
    assert info.global_digest == current_global == digest("g1")
    # All of round 2's moves are undone, member 3's missing vote on round 1 included.
    assert net.owner.reputations(task_id) == [REP_UNIT + REP_ACCEPT] * 4
    assert info.reward_pool == pool
    assert [earned[i] for i in sorted(earned)] == [m.earned for m in net.owner.members(task_id)]
    assert info.rewards_paid == sum(earned.values())
    # The revert undid round 2's ejections: members 2 and 3 are back with their stakes.
    assert {m.status for m in net.owner.members(task_id)} == {MemberStatus.ACTIVE}
