"""FLChain economics, played out: scripted members over many rounds, on eth-tester and anvil.

Each scenario drives a task through FLChainClient (submit, vote, late vote, close_round,
raise_alarm, withdraw) with members that follow a role (honest, griefer, blocker, free rider,
Byzantine), and checks after every round that the contract agrees with `Economy`, a
plain-Python statement of the rules (reputation moves, late-vote settlement, round rewards,
ejections, forfeits), and that no wei appears or disappears. Then it checks what a member
relies on: who keeps reputation, who is ejected, whether rounds keep finalizing, and what
`withdraw` actually pays.

One contract per backend (module scope), a fresh task per test; the chain clock is moved
forward, never waited for. Default economics (TaskParams: quorum and alarm 6666 bps,
reputation floor 500) unless a scenario needs otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import pytest
from chainkit import INITIAL, deployed, digest, reverts

from flchain.config import DEFAULT_ALARM_BPS, DEFAULT_QUORUM_BPS, DEFAULT_REP_FLOOR
from flchain.contracts import (
    REP_UNIT,
    FailReason,
    FLChainClient,
    MemberStatus,
    RoundStatus,
    TaskParams,
    TaskStatus,
    TxResult,
    Vote,
    bitmap,
    bitmap_indices,
)
from flchain.contracts.testing import LocalChain

STAKE = 10**17
REWARD = 10**18
WINDOW = 300  # submit, vote and alarm windows (s); the tests move the clock past them
N_ACCOUNTS = 10
BPS = 10_000
REP_MAX = 2 * REP_UNIT
REP_ACCEPT, REP_REJECT, REP_BAD_VOTE = 20, 50, 50
REP_NO_SUBMIT, REP_NO_VOTE, REP_ALARM = 50, 100, 100
REP_NO_LATE_VOTE = 50

Pair = tuple[bytes, int]  # a vote: (global model digest, accepted bitmap)


def names(result: TxResult) -> list[str]:
    return [e["event"] for e in result.events]


@dataclass
class Net:
    """A deployed FLChain with an owner, member clients and an outsider."""

    chain: LocalChain
    owner: FLChainClient
    members: list[FLChainClient]
    outsider: FLChainClient

    def balance(self, address: str) -> int:
        return int(self.chain.w3.eth.get_balance(address))

    def last_fee(self, account: str) -> int:
        """Fee of the latest transaction, sent by `account` (one transaction per block)."""
        w3 = self.chain.w3
        tx_hash = w3.eth.get_block("latest")["transactions"][-1]
        receipt = w3.eth.get_transaction_receipt(tx_hash)
        assert receipt["from"] == account
        return int(receipt["gasUsed"]) * int(receipt.get("effectiveGasPrice", 0))


@pytest.fixture(scope="module", params=["eth-tester", "anvil"])
def net(request: pytest.FixtureRequest) -> Iterator[Net]:
    with deployed(request, N_ACCOUNTS) as (chain, owner, members, outsider):
        yield Net(chain, owner, members, outsider)


# ---------------------------------------------------------------- the rules, in Python


@dataclass
class Economy:
    """The economics of contracts/README.md ("Economics") for one task, as a member would
    compute them.

    Rounds finalize at quorum of the reputation active when they opened; a finalized round
    first pays pool // rounds_left // n to each accepted active member that voted on the
    round before (when that one finalized, or failed with votes), then moves reputations
    (accepted +20, rejected -50, no update -50, vote for another pair -50); a
    failed round in which anybody voted costs -50 for no update and -100 for no vote (one
    nobody voted in costs nothing of its own). A finalized round r stays open to late votes
    while round r+1 runs; when r+1 ends (finalized or failed) round r's votes are settled as
    part of r+1's moves: an active member eligible in r that voted on r neither in time nor
    late loses 50, a late vote for another pair loses 50. The last round is never settled.
    Below the floor a member is ejected: its stake and earned rewards go to the pool. An
    alarm bonds 100 reputation (ejecting a raiser that falls below the floor).
    """

    n: int
    stake: int
    max_rounds: int
    pool: int
    quorum_bps: int = DEFAULT_QUORUM_BPS
    alarm_bps: int = DEFAULT_ALARM_BPS
    floor: int = DEFAULT_REP_FLOOR
    paid: int = 0
    slashed: int = 0
    round: int = 1
    good_round: int = 0
    finished: bool = False
    reps: list[int] = field(default_factory=list)
    earned: list[int] = field(default_factory=list)
    active: set[int] = field(default_factory=set)
    # The round before the current one, while its late votes are open (prev_pair set when
    # it finalized): who voted on it neither in time nor late yet, the late votes, tallies.
    prev_round: int = 0
    prev_pair: Pair | None = None
    prev_eligible: set[int] = field(default_factory=set)
    prev_missing: set[int] = field(default_factory=set)
    prev_late: dict[int, Pair] = field(default_factory=dict)
    prev_tallies: dict[Pair, int] = field(default_factory=dict)
    prev_failed_nonvoters: set[int] = field(default_factory=set)
    # Expected events: (round, member, reputation, forfeited) and (round, paid, share, pool).
    ejections: list[tuple[int, int, int, int]] = field(default_factory=list)
    payments: list[tuple[int, int, int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.reps = [REP_UNIT] * self.n
        self.earned = [0] * self.n
        self.active = set(range(self.n))
        self.alarm_weight: dict[int, int] = {}
        self.alarm_held: dict[int, int] = {}
        self._open()

    @property
    def total(self) -> int:
        return sum(self.reps[i] for i in self.active)

    def _open(self) -> None:
        self.eligible = set(self.active)
        self.round_total = self.total
        self.votes: dict[int, Pair] = {}
        self.tallies: dict[Pair, int] = {}

    def _end(self, pair: Pair | None) -> None:
        """The round ended (finalized with `pair`, or failed): it becomes the previous one,
        open to late votes if it finalized and is not the last; the next round opens."""
        if self.round >= self.max_rounds:
            self.finished = True
            self.prev_pair = None
            return
        self.prev_round, self.prev_pair = self.round, pair
        self.prev_eligible = set(self.eligible)
        self.prev_missing = self.eligible - set(self.votes) if pair else set()
        # Who voted on neither round: no reward in the next (a failed round counts when
        # anyone voted on it; a finalized one after its late votes).
        self.prev_failed_nonvoters = (
            self.eligible - set(self.votes) if pair is None and self.votes else set()
        )
        self.prev_late = {}
        self.prev_tallies = self.tallies
        self.round += 1
        self._open()

    def _settle_previous(self, i: int) -> int:
        """Member i's penalty for its vote on the previous round, due when this one ends."""
        if self.prev_pair is None:
            return 0
        if i in self.prev_missing:
            return REP_NO_LATE_VOTE
        if self.prev_late.get(i, self.prev_pair) != self.prev_pair:
            return REP_BAD_VOTE
        return 0

    def _eject(self, rnd: int, i: int) -> None:
        forfeited = self.stake + self.earned[i]
        self.pool += forfeited
        self.paid -= self.earned[i]
        self.slashed += forfeited
        self.active.discard(i)
        self.ejections.append((rnd, i, self.reps[i], forfeited))

    def _move(self, i: int, up: int, down: int) -> None:
        self.reps[i] = min(max(self.reps[i] + up - down, 0), REP_MAX)
        if self.reps[i] < self.floor:
            self._eject(self.round, i)

    def vote(self, i: int, pair: Pair) -> bool:
        """Record a vote; True when it reaches quorum (the round finalizes)."""
        self.votes[i] = pair
        self.tallies[pair] = self.tallies.get(pair, 0) + self.reps[i]
        return self.tallies[pair] * BPS >= self.quorum_bps * self.round_total

    def late_vote(self, i: int, pair: Pair) -> int:
        """Record a late vote on the previous round; returns that pair's tally there."""
        assert self.prev_pair is not None and i in self.prev_missing & self.active
        self.prev_missing.discard(i)
        self.prev_late[i] = pair
        return self.prev_tallies.get(pair, 0)

    @property
    def prev_voted(self) -> set[int]:
        """Members that voted on the previous round, in time or late."""
        return self.prev_eligible - self.prev_missing

    def finalize(self, pair: Pair, submitted: set[int]) -> None:
        accepted = set(bitmap_indices(pair[1]))
        # Only members that voted on the previous round (in time or late) are paid.
        paid_set = accepted & self.active - self.prev_missing - self.prev_failed_nonvoters
        if paid_set and self.pool:
            share = self.pool // (self.max_rounds + 1 - self.round) // len(paid_set)
            if share:
                for i in paid_set:
                    self.earned[i] += share
                self.pool -= share * len(paid_set)
                self.paid += share * len(paid_set)
                self.payments.append((self.round, bitmap(paid_set), share, self.pool))
        for i in sorted(self.eligible & self.active):
            up = down = 0
            if i not in submitted:
                down = REP_NO_SUBMIT
            elif i in accepted:
                up = REP_ACCEPT
            else:
                down = REP_REJECT
            if i in self.votes and self.votes[i] != pair:
                down += REP_BAD_VOTE
            self._move(i, up, down + self._settle_previous(i))
        self.good_round = self.round
        self._end(pair)

    def fail(self, submitted: set[int]) -> None:
        for i in sorted(self.eligible & self.active):
            down = self._settle_previous(i)
            if self.votes:  # nobody voting blames nobody for this round
                down += REP_NO_SUBMIT if i not in submitted else 0
                down += REP_NO_VOTE if i not in self.votes else 0
            self._move(i, 0, down)
        self._end(None)

    def alarm(self, i: int) -> bool:
        """An alarm on the last good round by member i; True when it reaches the threshold."""
        weight = self.reps[i]
        self.reps[i] -= REP_ALARM
        rnd = self.good_round
        self.alarm_weight[rnd] = self.alarm_weight.get(rnd, 0) + weight
        # The threshold's total is the active reputation plus what the round's alarms took
        # out of it (bonds, and raisers their bonds ejected); a bond ejects its raiser only
        # when the alarm does not revert.
        held = self.alarm_held.get(rnd, 0) + REP_ALARM
        if self.alarm_weight[rnd] * BPS >= self.alarm_bps * (self.total + held):
            return True
        if self.reps[i] < self.floor:
            self._eject(self.good_round, i)
            held += self.reps[i]
        self.alarm_held[rnd] = held
        return False

    def payout(self, i: int) -> int:
        if i not in self.active:
            return 0
        bonus = self.pool * self.earned[i] // self.paid if self.paid else 0
        return self.stake + self.earned[i] + bonus


# ---------------------------------------------------------------- scripted members


class Role(Enum):
    """A member's script. Members that vote cast a late vote (the same pair) on a round that
    finalized before their turn, at the start of the next round."""

    HONEST = "honest"  # submits, votes the honest pair
    GRIEFER = "griefer"  # as honest, then raises an alarm on every finalized round
    BLOCKER = "blocker"  # submits, never votes (neither in time nor late)
    FREE_RIDER = "free rider"  # submits nothing, votes the honest pair
    SILENT = "silent"  # submits nothing, never votes
    BYZANTINE = "byzantine"  # submits a poisoned update, votes for a pair accepting it

    @property
    def votes(self) -> bool:
        return self not in (Role.BLOCKER, Role.SILENT)


@dataclass
class Game:
    """A task played by members 0..n-1 of `net`, each following roles[i]."""

    net: Net
    roles: list[Role]
    task_id: int
    model: Economy
    before_join: dict[int, int]
    contract_before: int
    fees: dict[int, int]
    statuses: dict[int, RoundStatus] = field(default_factory=dict)
    pairs: dict[int, tuple[Pair, Pair]] = field(default_factory=dict)  # (honest, evil) by round
    events: list[dict[str, Any]] = field(default_factory=list)
    rep_history: list[list[int]] = field(default_factory=list)
    payouts: dict[int, int] = field(default_factory=dict)
    rewards: int = 0  # wei funded as rewards: create_task's value and fund_task top-ups

    @classmethod
    def start(cls, net: Net, roles: list[Role], max_rounds: int, reward: int = REWARD) -> Game:
        n = len(roles)
        params = TaskParams(
            config_digest=digest("economics"),
            initial_digest=INITIAL,
            min_members=n,
            max_members=n,
            submit_window=WINDOW,
            vote_window=WINDOW,
            alarm_window=WINDOW,
            stake=STAKE,
            max_rounds=max_rounds,
            reward=reward,
        )
        contract_before = net.balance(net.owner.address)
        task_id = net.owner.create_task(params)
        assert net.balance(net.owner.address) == contract_before + reward
        before, fees = {}, {}
        for i in range(n):
            member = net.members[i]
            before[i] = net.balance(member.account)
            assert member.join(task_id, f"peer-{i}".encode(), digest(f"x25519-{i}")) == i
            fees[i] = net.last_fee(member.account)
            assert net.balance(member.account) == before[i] - STAKE - fees[i]
        info = net.owner.get_task(task_id)
        assert (info.status, info.current_round, info.reward_pool) == (
            TaskStatus.RUNNING,
            1,
            reward,
        )
        model = Economy(n=n, stake=STAKE, max_rounds=max_rounds, pool=reward)
        game = cls(net, list(roles), task_id, model, before, contract_before, fees, rewards=reward)
        game.rep_history.append(list(model.reps))
        return game

    @property
    def n(self) -> int:
        return len(self.roles)

    def who(self, *roles: Role) -> list[int]:
        return [i for i, role in enumerate(self.roles) if role in roles]

    def _tx(self, i: int | None, result: TxResult) -> TxResult:
        if i is not None:
            self.fees[i] += result.fee_wei
        self.events += result.events
        return result

    # ------------------------------------------------------------ one round

    def submit_phase(self) -> set[int]:
        """Active members that submit do; the clock passes the submit window if anybody
        eligible did not (an ejected member or a free rider)."""
        m, r = self.model, self.model.round
        submitters = {i for i in m.active if self.roles[i] not in (Role.FREE_RIDER, Role.SILENT)}
        for i in sorted(submitters):
            update = digest(f"u{r}-{i}")
            self._tx(i, self.net.members[i].submit(self.task_id, r, update, 100, m.good_round, 0))
        if submitters != m.eligible:
            self.net.chain.advance(WINDOW)
        return submitters

    def vote_phase(self, submitters: set[int]) -> RoundStatus:
        """Byzantine members vote first (so their votes count), then the rest until one vote
        finalizes; a round without quorum is closed after its vote deadline."""
        m, r, net = self.model, self.model.round, self.net
        honest = bitmap(i for i in submitters if self.roles[i] is not Role.BYZANTINE)
        good, evil = (digest(f"g{r}"), honest), (digest(f"evil-{r}"), bitmap(submitters))
        self.pairs[r] = (good, evil)
        voting = [i for i in sorted(m.active) if self.roles[i].votes]
        voting.sort(key=lambda i: self.roles[i] is not Role.BYZANTINE)
        for i in voting:
            pair = evil if self.roles[i] is Role.BYZANTINE else good
            expected = m.vote(i, pair)
            result = self._tx(i, net.members[i].vote(self.task_id, r, *pair))
            finalized = "RoundFinalized" in names(result)
            assert finalized == expected, f"round {r}: vote of {i} finalized={finalized}"
            if finalized:
                m.finalize(pair, submitters)
                return RoundStatus.FINALIZED
        wait = net.owner.get_round(self.task_id, r).vote_deadline - net.chain.timestamp()
        if wait > 0:
            net.chain.advance(wait)
        result = self._tx(None, net.outsider.close_round(self.task_id, r))
        assert result.event("RoundFailed")["reason"] == FailReason.STALLED
        m.fail(submitters)
        return RoundStatus.FAILED

    def late_vote(self, i: int, pair: Pair) -> TxResult:
        """Member i votes `pair` on the previous round, after it finalized: recorded with
        weight 0, no tally moves, nothing finalizes."""
        m, r = self.model, self.model.prev_round
        tally = m.late_vote(i, pair)
        result = self._tx(i, self.net.members[i].vote(self.task_id, r, *pair))
        assert names(result) == ["VoteCast"]
        cast = result.event("VoteCast")
        assert (cast["round"], cast["member"], cast["weight"], cast["tally"]) == (r, i, 0, tally)
        assert (cast["digest"], cast["accepted"]) == pair
        assert self.net.owner.get_tally(self.task_id, r, *pair) == tally
        return result

    def late_phase(self) -> None:
        """Voting members that missed the vote on the round just finalized (it reached
        quorum before their turn) vote on it late, as they would have."""
        m = self.model
        if m.prev_pair is None or m.finished:
            return
        for i in sorted(m.prev_missing & m.active):
            if self.roles[i].votes:
                self.late_vote(i, self.pairs[m.prev_round][self.roles[i] is Role.BYZANTINE])

    def alarm_phase(self, rnd: int) -> None:
        """Griefers raise an alarm on the round just finalized (while they can)."""
        m = self.model
        for i in self.who(Role.GRIEFER):
            if i in m.active and m.reps[i] >= REP_ALARM:
                expected = m.alarm(i)
                result = self._tx(i, self.net.members[i].raise_alarm(self.task_id, rnd))
                assert result.event("AlarmRaised")["member"] == i
                assert ("RoundReverted" in names(result)) == expected
                assert not expected, "the scripted scenarios never revert"

    def play_round(self) -> RoundStatus:
        r = self.model.round
        self.late_phase()
        status = self.vote_phase(self.submit_phase())
        self.statuses[r] = status
        if status == RoundStatus.FINALIZED:
            self.alarm_phase(r)
        self.check()
        self.rep_history.append(list(self.model.reps))
        return status

    def play(self) -> None:
        while not self.model.finished:
            self.play_round()
        info = self.net.owner.get_task(self.task_id)
        assert info.status == TaskStatus.FINISHED
        assert info.global_round == self.model.good_round

    # ------------------------------------------------------------ checks

    def check(self) -> None:
        """The contract's views and events agree with the model; no wei is created or lost."""
        m, owner = self.model, self.net.owner
        info = owner.get_task(self.task_id)
        assert (info.reward_pool, info.rewards_paid, info.slashed) == (m.pool, m.paid, m.slashed)
        assert (info.n_active, info.total_reputation) == (len(m.active), m.total)
        members = owner.members(self.task_id)
        assert [x.reputation for x in members] == m.reps
        assert [x.earned for x in members] == m.earned
        statuses = [
            MemberStatus.ACTIVE if i in m.active else MemberStatus.EJECTED for i in range(self.n)
        ]
        assert [x.status for x in members] == statuses
        assert [x.payout for x in members] == [m.payout(i) for i in range(self.n)]
        # Conservation: what came in (stakes and reward) is held as active stakes, credited
        # rewards or pool; forfeits moved from the first two into the pool.
        assert len(m.active) * STAKE + info.rewards_paid + info.reward_pool == self.funded
        assert sum(m.earned[i] for i in m.active) == info.rewards_paid
        ejected = [
            (
                e["args"]["round"],
                e["args"]["member"],
                e["args"]["reputation"],
                e["args"]["forfeited"],
            )
            for e in self.events
            if e["event"] == "MemberEjected"
        ]
        assert ejected == m.ejections
        paid = [
            (e["args"]["round"], e["args"]["paid"], e["args"]["share"], e["args"]["reward_pool"])
            for e in self.events
            if e["event"] == "RoundPaid"
        ]
        assert paid == m.payments
        if m.prev_pair is not None:  # who voted on the round just finalized, so far
            voted = owner.get_round(self.task_id, m.prev_round).voted
            assert bitmap_indices(voted) == sorted(m.prev_voted)

    @property
    def funded(self) -> int:
        """Every wei the task received: the stakes and the rewards."""
        return self.n * STAKE + self.rewards

    def fund(self, amount: int) -> None:
        """The outsider tops up the reward pool."""
        result = self._tx(None, self.net.outsider.fund_task(self.task_id, amount))
        self.model.pool += amount
        self.rewards += amount
        funded = result.event("RewardFunded")
        assert (funded["funder"], funded["amount"]) == (self.net.outsider.account, amount)
        assert funded["reward_pool"] == self.model.pool
        self.check()

    def reps_of(self, i: int) -> list[int]:
        return [reps[i] for reps in self.rep_history]

    # ------------------------------------------------------------ the end

    def settle(self) -> None:
        """Wait out the last alarm window: withdraw opens."""
        if self.model.good_round == 0:  # no global model: nothing an alarm could undo
            assert self.net.owner.get_task(self.task_id).settled
            return
        with reverts("alarm window open"):
            self.net.outsider.withdraw(self.task_id)
        self.net.chain.advance(WINDOW)
        assert self.net.owner.get_task(self.task_id).settled

    def withdraw_all(self) -> None:
        """Every member withdraws: exactly MemberInfo.payout leaves the contract for it;
        ejected members get nothing."""
        net = self.net
        for i in range(self.n):
            member = net.members[i]
            if i not in self.model.active:
                with reverts("ejected"):
                    member.withdraw(self.task_id)
                continue
            payout = net.owner.get_member(self.task_id, i).payout
            assert payout == self.model.payout(i)
            contract, mine = net.balance(net.owner.address), net.balance(member.account)
            result = self._tx(i, member.withdraw(self.task_id))
            withdrawn = result.event("Withdrawn")
            assert (withdrawn["member"], withdrawn["stake"]) == (i, STAKE)
            assert withdrawn["reward"] == payout - STAKE
            assert net.balance(net.owner.address) == contract - payout
            assert net.balance(member.account) == mine + payout - result.fee_wei
            after = net.owner.get_member(self.task_id, i)
            assert (after.status, after.payout) == (MemberStatus.WITHDRAWN, 0)
            self.payouts[i] = payout
            with reverts("withdrawn"):
                member.withdraw(self.task_id)

    def net_gain(self, i: int) -> int:
        """Member i's balance now minus before it joined (all its fees paid)."""
        return self.net.balance(self.net.members[i].account) - self.before_join[i]

    def dust(self) -> int:
        """Wei of this task left in the contract once everyone withdrew."""
        return self.net.balance(self.net.owner.address) - self.contract_before


# ---------------------------------------------------------------- (a) alarm griefers


def test_alarm_griefers_pay_their_bonds_are_ejected_and_the_task_goes_on(net: Net) -> None:
    game = Game.start(net, [Role.HONEST] * 2 + [Role.GRIEFER] * 2, max_rounds=10)
    game.play()
    statuses = list(game.statuses.values())
    finalized = statuses.count(RoundStatus.FINALIZED)
    assert finalized >= 0.8 * len(statuses)
    info = net.owner.get_task(game.task_id)
    assert info.status == TaskStatus.FINISHED
    assert info.global_digest == digest(f"g{info.global_round}") != INITIAL
    for i in game.who(Role.HONEST):
        history = game.reps_of(i)
        assert history == sorted(history), "an honest member lost reputation"
        assert history[-1] == REP_UNIT + REP_ACCEPT * finalized
    # Every alarm cost its bond for good: each AlarmRaised came with a 100-point drop that
    # no revert returned, until the griefer fell below the floor (ejected by its own bond).
    alarms = [e["args"] for e in game.events if e["event"] == "AlarmRaised"]
    assert alarms and not [e for e in game.events if e["event"] == "RoundReverted"]
    for i in game.who(Role.GRIEFER):
        mine = [a for a in alarms if a["member"] == i]
        bonds = [
            e["args"]
            for e in game.events
            if e["event"] == "ReputationChanged"
            and e["args"]["member"] == i
            and e["args"]["old"] - e["args"]["new"] == REP_ALARM
        ]
        assert len(bonds) == len(mine) > 0
        (eject,) = [
            e["args"]
            for e in game.events
            if e["event"] == "MemberEjected" and e["args"]["member"] == i
        ]
        assert eject["round"] == mine[-1]["round"]  # the last alarm's bond ejected it
        assert eject["reputation"] < DEFAULT_REP_FLOOR
        assert eject["forfeited"] == STAKE + game.model.earned[i]
        assert net.owner.get_member(game.task_id, i).status == MemberStatus.EJECTED
    assert info.slashed == sum(STAKE + game.model.earned[i] for i in game.who(Role.GRIEFER))
    game.settle()
    game.withdraw_all()
    for i in game.who(Role.HONEST):
        assert game.net_gain(i) == game.payouts[i] - STAKE - game.fees[i] > 0
        assert game.payouts[i] > STAKE + REWARD // 2  # the reward and the griefers' forfeits
    assert 0 <= game.dust() < game.n
    print(
        f"\n[{net.chain.kind}] (a) griefers: {finalized}/{len(statuses)} rounds finalized, "
        f"griefers ejected in round(s) {[e[0] for e in game.model.ejections]}, "
        f"{len(alarms)} alarms, honest rep {game.model.reps[0]}, "
        f"honest payout {game.payouts[0]}, dust {game.dust()} wei"
    )


# ---------------------------------------------------------------- (b) blocking minority


@pytest.mark.parametrize(
    ("n", "n_blockers", "role", "rounds"),
    [
        (4, 2, Role.BLOCKER, 10),
        (10, 4, Role.SILENT, 10),
        # Submit but never vote: rounds finalize again once the blockers' reputation has
        # shrunk below a third, and from then on each finalized round costs them 50 for the
        # vote they never cast (late or not) against 20 for their accepted update.
        (10, 4, Role.BLOCKER, 14),
    ],
    ids=["2-of-4-never-vote", "4-of-10-silent", "4-of-10-submit-never-vote"],
)
def test_a_blocking_minority_loses_reputation_is_ejected_and_liveness_returns(
    net: Net, n: int, n_blockers: int, role: Role, rounds: int
) -> None:
    roles = [Role.HONEST] * (n - n_blockers) + [role] * n_blockers
    game = Game.start(net, roles, max_rounds=rounds)
    honest, blockers = game.who(Role.HONEST), game.who(role)
    game.play()
    statuses = [game.statuses[r] for r in range(1, rounds + 1)]
    assert statuses[0] == RoundStatus.FAILED  # the honest voters alone are short of quorum
    ejected_in = {member: rnd for rnd, member, _, _ in game.model.ejections}
    assert sorted(ejected_in) == blockers
    last_ejection = max(ejected_in.values())
    assert last_ejection <= rounds - 2
    # Liveness: once the blockers are out (at the latest) every round finalizes.
    live_from = 1 + max(r for r, s in enumerate(statuses, 1) if s == RoundStatus.FAILED)
    assert live_from <= last_ejection + 1
    assert statuses[live_from - 1 :] == [RoundStatus.FINALIZED] * (rounds + 1 - live_from)
    penalty = REP_NO_VOTE + (REP_NO_SUBMIT if role is Role.SILENT else 0)
    for r, status in enumerate(statuses, start=1):
        before, after = game.rep_history[r - 1], game.rep_history[r]
        for i in honest:  # honest members never lose reputation, least of all in failed rounds
            assert after[i] == before[i] if status == RoundStatus.FAILED else after[i] >= before[i]
        # A blocker's move: its own round's, plus the vote it owes the previous round if
        # that one finalized (it votes neither in time nor late).
        if status == RoundStatus.FAILED:
            delta = -penalty
        else:
            delta = REP_ACCEPT if role is Role.BLOCKER else -REP_NO_SUBMIT
        if r > 1 and statuses[r - 2] == RoundStatus.FINALIZED:
            delta -= REP_NO_LATE_VOTE
        for i in blockers:
            if ejected_in[i] >= r:
                assert after[i] == max(before[i] + delta, 0)
    info = net.owner.get_task(game.task_id)
    assert info.global_round == rounds
    assert info.slashed == n_blockers * STAKE + sum(game.model.earned[i] for i in blockers)
    # Round 1 failed with votes, so every later round's reward needs a vote on the round
    # before it: a minority that never votes is never paid, even for accepted updates.
    assert all(game.model.earned[i] == 0 for i in blockers)
    game.settle()
    game.withdraw_all()
    for i in honest:
        assert game.net_gain(i) == game.payouts[i] - STAKE - game.fees[i] > 0
    for i in blockers:
        assert game.net_gain(i) == -STAKE - game.fees[i]
    assert sum(game.payouts.values()) + game.dust() == game.funded
    assert 0 <= game.dust() < n
    trace = "".join("F" if s == RoundStatus.FINALIZED else "x" for s in statuses)
    print(
        f"\n[{net.chain.kind}] (b) {n_blockers} {role.value} of {n}: rounds {trace} "
        f"(x failed), finalizing for good from round {live_from}, blockers ejected in round "
        f"{last_ejection}, blocker reps {game.reps_of(blockers[0])}, "
        f"honest payout {game.payouts[honest[0]]}"
    )


# ---------------------------------------------------------------- (c) free riders


def test_free_riders_earn_nothing_and_withdraw_pays_exactly_the_payout(net: Net) -> None:
    roles = [Role.HONEST] * 3 + [Role.FREE_RIDER] * 2
    game = Game.start(net, roles, max_rounds=6)
    game.play()
    assert set(game.statuses.values()) == {RoundStatus.FINALIZED}
    riders, honest = game.who(Role.FREE_RIDER), game.who(Role.HONEST)
    members = net.owner.members(game.task_id)
    for i in riders:
        assert members[i].earned == 0
        assert members[i].reputation == REP_UNIT - REP_NO_SUBMIT * 6
        assert members[i].status == MemberStatus.ACTIVE
        assert members[i].payout == STAKE  # at best its stake back
    for i in honest:
        assert members[i].earned > 0
        assert members[i].payout >= STAKE + members[i].earned
    with reverts("alarm window open"):
        net.members[0].withdraw(game.task_id)
    game.settle()
    game.withdraw_all()
    withdrawn = {
        e["args"]["member"]: e["args"]["reward"] for e in game.events if e["event"] == "Withdrawn"
    }
    for i in riders:
        assert withdrawn[i] == 0
        assert game.payouts[i] == STAKE
        assert game.net_gain(i) == -game.fees[i]
    for i in honest:
        assert withdrawn[i] > 0
        assert game.net_gain(i) == game.payouts[i] - STAKE - game.fees[i] > 0
    assert sum(game.payouts.values()) + game.dust() == game.funded
    assert 0 <= game.dust() < game.n
    print(
        f"\n[{net.chain.kind}] (c) free riders: rider rep {members[riders[0]].reputation}, "
        f"honest payout {game.payouts[honest[0]]}, dust {game.dust()} wei"
    )


# ---------------------------------------------------------------- (d) Byzantine minority


@pytest.mark.slow
def test_a_byzantine_minority_over_many_rounds_is_ejected_and_the_honest_gain(
    net: Net,
) -> None:
    """Seven honest members, three Byzantine ones whose updates the honest majority rejects
    and who vote for a pair accepting them, over 20 rounds with a top-up of the pool half
    way."""
    rounds = 20
    roles = [Role.HONEST] * 7 + [Role.BYZANTINE] * 3
    game = Game.start(net, roles, max_rounds=rounds)
    for _ in range(rounds // 2):
        game.play_round()
    game.fund(REWARD // 2)  # anyone may top the pool up while the task runs
    game.play()
    with reverts("closed task"):
        net.outsider.fund_task(game.task_id, 1)
    honest, byzantine = game.who(Role.HONEST), game.who(Role.BYZANTINE)
    assert set(game.statuses.values()) == {RoundStatus.FINALIZED}
    info = net.owner.get_task(game.task_id)
    assert info.global_digest == digest(f"g{rounds}")
    # Every poisoned update was rejected: the Byzantine members never earned, every round's
    # accepted set is the honest one.
    for r in range(1, rounds + 1):
        assert bitmap_indices(net.owner.get_round(game.task_id, r).accepted) == honest
    ejected = [e["args"] for e in game.events if e["event"] == "MemberEjected"]
    assert sorted(e["member"] for e in ejected) == byzantine
    assert info.slashed == sum(e["forfeited"] for e in ejected) == len(byzantine) * STAKE
    per_round = REP_REJECT + REP_BAD_VOTE
    eject_round = (REP_UNIT - DEFAULT_REP_FLOOR) // per_round + 1
    assert {e["round"] for e in ejected} == {eject_round}
    for i in honest:
        assert game.model.reps[i] == REP_UNIT + REP_ACCEPT * rounds
    game.settle()
    game.withdraw_all()
    for i in honest:
        assert game.net_gain(i) == game.payouts[i] - STAKE - game.fees[i] > 0
    for i in byzantine:
        assert game.net_gain(i) == -STAKE - game.fees[i]
    # Money is conserved: the payouts and the dust are exactly the stakes and the reward.
    assert sum(game.payouts.values()) + game.dust() == game.funded
    assert 0 <= game.dust() < game.n
    gains = sorted(game.net_gain(i) for i in honest)
    print(
        f"\n[{net.chain.kind}] (d) byzantine: ejected in round {eject_round}, slashed "
        f"{info.slashed}, honest payouts {sorted(set(game.payouts.values()))}, "
        f"honest net gains {gains[0]}..{gains[-1]} wei, "
        f"byzantine net loss {-game.net_gain(byzantine[0])}, dust {game.dust()} wei"
    )


# ---------------------------------------------------------------- late votes


def test_a_late_vote_is_recorded_for_free_and_a_missing_one_costs_50_next_round(
    net: Net,
) -> None:
    """Six members, four votes reach quorum: member 4 votes late on each finalized round,
    member 5 (a blocker) never votes. Round 3 fails with no vote at all: its own penalties
    are skipped, round 2's votes are settled all the same."""
    game = Game.start(net, [Role.HONEST] * 5 + [Role.BLOCKER], max_rounds=4)
    owner, task_id, m = net.owner, game.task_id, game.model
    late, blocker = 4, 5
    assert game.play_round() == RoundStatus.FINALIZED
    assert m.prev_missing == {late, blocker}  # quorum came with member 3's vote
    good1 = game.pairs[1][0]
    assert not owner.get_vote(task_id, 1, late).voted
    assert bitmap_indices(owner.get_round(task_id, 1).voted) == [0, 1, 2, 3]

    # Round 2 runs: member 4 votes on round 1. Recorded with weight 0, for its fee only.
    balance = net.balance(net.members[late].account)
    result = game.late_vote(late, good1)
    assert net.balance(net.members[late].account) == balance - result.fee_wei
    assert owner.get_vote(task_id, 1, late) == Vote(True, *good1)
    round1 = owner.get_round(task_id, 1)
    assert (round1.status, bitmap_indices(round1.voted)) == (RoundStatus.FINALIZED, [0, 1, 2, 3, 4])
    assert owner.get_round(task_id, 2).voted == 0
    game.check()
    with reverts("already voted"):
        net.members[late].vote(task_id, 1, *good1)
    with reverts("already voted"):
        net.members[0].vote(task_id, 1, *good1)
    with reverts("bad digest"):
        net.members[blocker].vote(task_id, 1, bytes(32), good1[1])
    with reverts("not member"):
        net.outsider.vote(task_id, 1, *good1)
    assert game.play_round() == RoundStatus.FINALIZED
    # The late voter moved as the in-time ones; the blocker paid 50 for round 1's vote.
    assert m.reps == [REP_UNIT + 2 * REP_ACCEPT] * 5 + [REP_UNIT + 2 * REP_ACCEPT - 50]
    assert game.reps_of(blocker)[1:] == [REP_UNIT + REP_ACCEPT, REP_UNIT - 10]

    # Round 3: member 4 votes late for another pair; a vote on round 1 is too old now.
    good2 = game.pairs[2][0]
    game.late_vote(late, (digest("another model"), good2[1]))
    with reverts("wrong round"):
        net.members[blocker].vote(task_id, 1, *good1)
    roles = list(game.roles)
    game.roles = [Role.BLOCKER] * game.n  # everybody submits, nobody votes
    assert game.play_round() == RoundStatus.FAILED
    game.roles = roles
    moved = [
        (e["args"]["member"], e["args"]["old"], e["args"]["new"])
        for e in game.events
        if e["event"] == "ReputationChanged" and e["args"]["round"] == 3
    ]
    assert moved == [(late, 1040, 1040 - REP_BAD_VOTE), (blocker, 990, 990 - REP_NO_LATE_VOTE)]

    # Round 4, the last: round 3 failed (no late votes), round 2 is too old.
    with reverts("wrong round"):
        net.members[0].vote(task_id, 3, *good2)
    with reverts("wrong round"):
        net.members[blocker].vote(task_id, 2, *good2)
    assert game.play_round() == RoundStatus.FINALIZED
    assert owner.get_task(task_id).status == TaskStatus.FINISHED
    with reverts("closed task"):
        net.members[late].vote(task_id, 4, *game.pairs[4][0])
    # The last round is never settled: nobody pays for its missing votes.
    assert m.reps[late:] == [990 + REP_ACCEPT, 940 + REP_ACCEPT]
    print(
        f"\n[{net.chain.kind}] late votes: late-vote gas {result.gas_used}, "
        f"reps {game.reps_of(late)} (late voter), {game.reps_of(blocker)} (never votes)"
    )


# ---------------------------------------------------------------- a revert undoes a round


def test_a_reverted_round_gives_back_rewards_reputation_and_the_ejected_member(
    net: Net,
) -> None:
    game = Game.start(net, [Role.HONEST] * 4, max_rounds=10)
    victim = 3
    game.play_round()  # the victim's update is accepted once: it earns a share
    assert game.model.earned[victim] > 0
    game.roles[victim] = Role.BYZANTINE
    per_round = REP_REJECT + REP_BAD_VOTE
    while game.model.reps[victim] - per_round >= DEFAULT_REP_FLOOR:
        game.play_round()
    rnd = game.model.round  # this round will eject the victim
    owner, task_id = net.owner, game.task_id

    def views() -> tuple[Any, ...]:
        info = owner.get_task(task_id)
        members = owner.members(task_id)
        return (
            info.reward_pool,
            info.rewards_paid,
            info.slashed,
            info.total_reputation,
            info.n_active,
            owner.reputations(task_id),
            [(m.status, m.earned, m.payout) for m in members],
        )

    submitters = game.submit_phase()
    before = views()
    assert game.vote_phase(submitters) == RoundStatus.FINALIZED
    game.statuses[rnd] = RoundStatus.FINALIZED
    game.check()
    (share_paid,) = [p for p in game.model.payments if p[0] == rnd]
    assert owner.get_member(task_id, victim).status == MemberStatus.EJECTED
    assert views() != before
    earned_victim = game.model.earned[victim]

    first = net.members[0].raise_alarm(task_id, rnd)
    assert "RoundReverted" not in names(first)
    bond = first.event("ReputationChanged")
    assert bond["old"] - bond["new"] == REP_ALARM
    second = net.members[1].raise_alarm(task_id, rnd)
    reverted = second.event("RoundReverted")
    assert (reverted["restored_digest"], reverted["restored_round"]) == (
        digest(f"g{rnd - 1}"),
        rnd - 1,
    )
    n_paid = len(bitmap_indices(share_paid[1]))
    assert reverted["clawed_back"] == share_paid[2] * n_paid
    reinstated = second.event("MemberReinstated")
    assert (reinstated["round"], reinstated["member"]) == (rnd, victim)
    assert reinstated["restored"] == STAKE + earned_victim
    undone = [e["args"]["member"] for e in second.events if e["event"] == "ReputationChanged"]
    # Member 1's own bond, then the round's moves undone, then both bonds returned.
    assert sorted(undone) == [0, 0, 1, 1, 1, 2, 3]

    # Everything the round moved is back, bonds included.
    assert views() == before
    assert owner.get_round(task_id, rnd).status == RoundStatus.REVERTED
    assert owner.get_round(task_id, rnd + 1).status == RoundStatus.ABORTED
    info = owner.get_task(task_id)
    assert (info.current_round, info.global_round) == (rnd + 2, rnd - 1)
    assert info.global_digest == digest(f"g{rnd - 1}")
    print(
        f"\n[{net.chain.kind}] revert: round {rnd} clawed back {reverted['clawed_back']}, "
        f"restored victim {reinstated['restored']} at rep {reinstated['reputation']}"
    )


# ---------------------------------------------------------------- nobody earned: a refund


def test_a_task_nobody_worked_on_refunds_the_owner_and_returns_every_stake(net: Net) -> None:
    game = Game.start(net, [Role.SILENT] * 4, max_rounds=2)
    game.play()
    assert list(game.statuses.values()) == [RoundStatus.FAILED] * 2
    # Nobody voted: a stalled round blames nobody.
    assert game.rep_history == [[REP_UNIT] * 4] * 3
    info = net.owner.get_task(game.task_id)
    assert (info.global_digest, info.rewards_paid, info.reward_pool) == (INITIAL, 0, REWARD)
    game.settle()
    with reverts("not owner"):
        net.members[0].claim_refund(game.task_id)
    owner_before = net.balance(net.owner.account)
    refund = net.owner.claim_refund(game.task_id)
    assert refund.event("RefundClaimed")["amount"] == REWARD
    assert net.balance(net.owner.account) == owner_before + REWARD - refund.fee_wei
    assert net.owner.get_task(game.task_id).reward_pool == 0
    with reverts("nothing to claim"):
        net.owner.claim_refund(game.task_id)
    game.model.pool = 0
    game.withdraw_all()
    assert game.payouts == dict.fromkeys(range(4), STAKE)
    assert sum(game.payouts.values()) + REWARD == game.funded
    assert game.dust() == 0
