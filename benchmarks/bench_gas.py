"""Gas used by every FLChain entry point, measured on eth-tester (py-evm), as markdown.

    python benchmarks/bench_gas.py [--out FILE] [--sizes 4,16,64,256] [--repeats 5]

Figures are gasUsed from mined receipts (refunds included), the median over several
transactions; tasks carry a reward pool, a stake and an alarm window. The calls that settle
a round for every member (the finalizing vote with its rewards, close_round with its
penalties, the alarm that reverts a round) are measured per task size in their worst
cases, with the gas limit each needs (py-evm's binary search), against the client's
`finalize_gas_bound`. Secure mode is measured on tasks whose members all register a
Paillier key: one member drops out, the other three remask, and the round's decryptor
publishes the sum's digest. The runtime code size of both deployed pieces is checked
against EIP-170 with 25% headroom.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import platform
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

from eth.estimators.gas import binary_gas_search_1000_tolerance

from flchain.contracts import (
    FLChainClient,
    TaskParams,
    TxResult,
    bitmap,
    finalize_gas_bound,
    load_artifact,
)
from flchain.contracts.testing import LocalChain, eth_tester_chain

try:
    from benchmarks._report import write_section
except ModuleNotFoundError:  # run as a script
    from _report import write_section

REPO = Path(__file__).resolve().parents[1]
ORDER = [
    "deploy",
    "create_task (with reward pool)",
    "fund_task",
    "set_allowed",
    "join",
    "join (opens round 1)",
    "join (with Paillier key)",
    "join (with Paillier key, opens round 1)",
    "submit",
    "submit (worst-case calldata)",
    "vote (first of its round)",
    "vote (not final)",
    "vote (late)",
    "vote (finalizing, pays 4 members)",
    "raise_alarm (bond only)",
    "raise_alarm (reverts the round, 4 members)",
    "remask (first of its round)",
    "remask",
    "publish_sum",
    "close_round (nobody voted: no penalties)",
    "close_round (penalties, 4 members)",
    "close_task",
    "withdraw (stake and rewards)",
    "claim_refund",
]
TARGETS = {
    "submit": 80_000,
    "submit (worst-case calldata)": 80_000,
    "vote (first of its round)": 120_000,
    "vote (not final)": 120_000,
    "vote (late)": 120_000,
}
EIP170 = 24_576  # the most runtime code a contract may have (EIP-170)
CODE_TARGET = EIP170 * 3 // 4  # 25% headroom
WINDOW = 3_600
STAKE = 10**15
REWARD = 10**18
QUORUM_BPS = 6667
WORST_FLOOR = 999  # any net loss of reputation ejects


def digest(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def finalized(result: TxResult) -> bool:
    return any(e["event"] == "RoundFinalized" for e in result.events)


def reverted(result: TxResult) -> bool:
    return any(e["event"] == "RoundReverted" for e in result.events)


@dataclass
class Net:
    """One eth-tester chain with a deployed FLChain, its owner and member clients."""

    chain: LocalChain
    owner: FLChainClient
    members: list[FLChainClient]
    gas: dict[str, list[int]]

    @classmethod
    def create(cls, n_members: int, gas: dict[str, list[int]]) -> Net:
        """A fresh chain and contract; measurements are appended to `gas`."""
        chain = eth_tester_chain()
        owner_key, *keys = chain.new_accounts(n_members + 1)
        owner = FLChainClient.deploy(chain.w3, owner_key)
        members = [FLChainClient(chain.w3, owner.address, k) for k in keys]
        net = cls(chain, owner, members, gas)
        net.gas["deploy"].append(net.last_gas())
        return net

    def last_gas(self) -> int:
        """gasUsed of the newest transaction (eth-tester mines one per block)."""
        (tx_hash,) = self.chain.w3.eth.get_block("latest")["transactions"]
        return int(self.chain.w3.eth.get_transaction_receipt(tx_hash)["gasUsed"])

    def record(self, name: str, action: Callable[[], object]) -> None:
        action()
        self.gas[name].append(self.last_gas())

    def limit_needed(self, sender: FLChainClient, fn: str, args: list[object]) -> int:
        """The smallest gas limit (within 1,000) with which `fn(*args)` from `sender`
        succeeds now: gasUsed hides the refunds and the 1/64 a delegatecall keeps back,
        so the limit a client must send can be above it. py-evm's binary search."""
        chain = self.chain.w3.provider.ethereum_tester.backend.chain  # type: ignore[attr-defined]
        contract = self.chain.w3.eth.contract(address=self.owner.address, abi=load_artifact().abi)
        call = {"from": sender.account, "to": self.owner.address}
        call["data"] = contract.encode_abi(fn, args)
        fast, chain.gas_estimator = chain.gas_estimator, binary_gas_search_1000_tolerance
        try:
            return int(self.chain.w3.eth.estimate_gas(call))  # type: ignore[arg-type]
        finally:
            chain.gas_estimator = fast

    def task(self, n: int, *, keyed: bool = False, **overrides: object) -> int:
        """A task of `n` members, all joined (the last join opens round 1), with a reward
        pool; `keyed`: each registers a Paillier key digest (secure mode)."""
        values: dict = {
            "config_digest": digest("config"),
            "initial_digest": digest("initial"),
            "min_members": n,
            "max_members": max(n, 8),
            "submit_window": WINDOW,
            "vote_window": WINDOW,
            "alarm_window": WINDOW,
            "quorum_bps": QUORUM_BPS,
            "alarm_bps": QUORUM_BPS,
            "stake": STAKE,
            "max_rounds": 1000,
            "reward": REWARD,
        }
        values.update(overrides)
        result = self.owner.create_task_tx(TaskParams(**values))
        task_id = int(result.event("TaskCreated")["task_id"])
        self.gas["create_task (with reward pool)"].append(result.gas_used)
        for i in range(n):
            notes = ["with Paillier key"] if keyed else []
            if i == n - 1:
                notes.append("opens round 1")
            name = f"join ({', '.join(notes)})" if notes else "join"
            peer = f"12D3KooWpeer{task_id:04d}{i:04d}".encode()
            key = digest(f"paillier-{task_id}-{i}") if keyed else bytes(32)
            # The chain only logs the peer-id proof (nodes verify it), so any 64 bytes cost
            # what a real Ed25519 signature costs.
            proof = digest(f"proof-{task_id}-{i}") + digest(f"sig-{task_id}-{i}")
            self.record(
                name,
                lambda i=i, peer=peer, key=key, proof=proof: self.members[i].join(
                    task_id, peer, digest(f"x25519-{i}"), key, peer_proof=proof, value=STAKE
                ),
            )
        return task_id

    def submit_all(self, task_id: int, rnd: int, n: int) -> None:
        for i in range(n):
            result = self.members[i].submit(
                task_id, rnd, digest(f"u{task_id}-{rnd}-{i}"), 600 + i, rnd - 1, 2_302_585 + i
            )
            self.gas["submit"].append(result.gas_used)

    def vote_until_final(
        self, task_id: int, rnd: int, voters: list[int], pair: tuple[bytes, int]
    ) -> tuple[TxResult, int]:
        """`voters` vote for `pair` in turn until the round finalizes: (that vote, voters)."""
        for k, i in enumerate(voters):
            result = self.members[i].vote(task_id, rnd, *pair)
            if finalized(result):
                return result, k + 1
        raise RuntimeError(f"task {task_id} round {rnd}: no quorum")


def measure_entry_points(repeats: int, gas: dict[str, list[int]]) -> None:
    """Every entry point, on `repeats` tasks of four members."""
    net = Net.create(4, gas)
    n, everyone = 4, bitmap(range(4))
    for rep in range(repeats):
        # A finalized round whose alarm reverts it, then a round nobody votes in, closed;
        # the rewards were clawed back, so the owner takes the pool back.
        task_id = net.task(n)
        net.gas["set_allowed"].append(
            net.owner.set_allowed(task_id, net.members[rep % n].account).gas_used
        )
        net.gas["fund_task"].append(net.members[rep % n].fund_task(task_id, REWARD).gas_used)
        net.submit_all(task_id, 1, n)
        g = digest(f"global-{task_id}")
        for i, name in enumerate(
            ["vote (first of its round)", "vote (not final)", "vote (finalizing, pays 4 members)"]
        ):
            net.gas[name].append(net.members[i].vote(task_id, 1, g, everyone).gas_used)
        for i in range(2):
            net.gas["raise_alarm (bond only)"].append(
                net.members[i].raise_alarm(task_id, 1).gas_used
            )
        result = net.members[2].raise_alarm(task_id, 1)
        assert reverted(result), "the third alarm should reach the threshold"
        net.gas["raise_alarm (reverts the round, 4 members)"].append(result.gas_used)
        net.chain.advance(2 * WINDOW + 1)
        name = "close_round (nobody voted: no penalties)"
        net.gas[name].append(net.owner.close_round(task_id, 3).gas_used)
        net.gas["close_task"].append(net.owner.close_task(task_id).gas_used)
        net.gas["claim_refund"].append(net.owner.claim_refund(task_id).gas_used)

        # A paid round, then a round only member 0 takes part in, closed with penalties;
        # once settled every member withdraws its stake, rewards and pool share.
        paid = net.task(n)
        net.submit_all(paid, 1, n)
        _, voters = net.vote_until_final(paid, 1, list(range(n)), (g, everyone))
        for i in range(voters, n):  # the round finalized without them: they vote late
            net.gas["vote (late)"].append(net.members[i].vote(paid, 1, g, everyone).gas_used)
        net.members[0].submit(paid, 2, digest(f"p{paid}"), 600, 1, 2_302_585)
        net.chain.advance(WINDOW)
        net.members[0].vote(paid, 2, g, bitmap([0]))
        net.chain.advance(WINDOW + 1)
        name = "close_round (penalties, 4 members)"
        net.gas[name].append(net.owner.close_round(paid, 2).gas_used)
        net.owner.close_task(paid)
        for i in range(n):
            net.gas["withdraw (stake and rewards)"].append(net.members[i].withdraw(paid).gas_used)
        measure_secure_round(net, n)
    worst = net.task(n)  # the costliest calldata: negative loss, 8-byte sample count
    net.members[0].submit(worst, 1, digest("w"), 2**64 - 1, 0, -(2**63))  # base: round 0
    net.gas["submit (worst-case calldata)"].append(net.last_gas())


def measure_secure_round(net: Net, n: int) -> None:
    """A secure round with a dropout: the last member does not submit, the others remask
    after the submit window, the decryptor publishes the sum's digest, votes finalize."""
    task_id = net.task(n, keyed=True)
    survivors = list(range(n - 1))
    for i in survivors:
        net.members[i].submit(task_id, 1, digest(f"u{task_id}-{i}"), 600 + i, 0, 2_302_585)
    net.chain.advance(WINDOW)
    for i in survivors:
        name = "remask (first of its round)" if i == 0 else "remask"
        net.gas[name].append(net.members[i].remask(task_id, 1, digest(f"r{task_id}-{i}")).gas_used)
    decryptor = net.owner.decryptor(task_id, 1)
    if decryptor is None:
        raise RuntimeError("a keyed task has no decryptor")
    result = net.members[decryptor].publish_sum(task_id, 1, digest(f"sum-{task_id}"))
    net.gas["publish_sum"].append(result.gas_used)
    for i in survivors:
        net.members[i].vote(task_id, 1, digest(f"global-{task_id}"), bitmap(survivors))


@dataclass
class Scaling:
    """The settlement-heavy calls of one task size: gasUsed and the gas limit each needs."""

    members: int
    voters: int = 0  # voters to quorum, typical round
    typical: int = 0  # finalizing vote, typical round
    worst: dict[str, int] = field(default_factory=dict)  # case -> gasUsed
    needed: dict[str, int] = field(default_factory=dict)  # case -> smallest gas limit

    def measure(self, net: Net, case: str, sender: FLChainClient, fn: str, args: list) -> TxResult:
        """Find the limit `fn(*args)` needs, then send it and record its gasUsed."""
        needed = net.limit_needed(sender, fn, args)
        result = getattr(sender, fn)(*args)
        self.keep_max(case, result.gas_used, needed)
        return result

    def keep_max(self, case: str, used: int, needed: int) -> None:
        """Record a case's figures, keeping the costlier of two measurements."""
        if needed >= self.needed.get(case, 0):
            self.needed[case], self.worst[case] = needed, used


def alarm_reverts(net: Net, task_id: int, rnd: int, index: int, total: int) -> bool:
    """Whether member `index`'s alarm on round `rnd` reaches the threshold, so that its limit
    is measured before it is sent. `total`: the active reputation before the round's first
    alarm, which the contract's total keeps (the bonds and bond-ejected raisers it holds)."""
    task, info = net.owner.get_task(task_id), net.owner.get_round(task_id, rnd)
    weight = net.owner.reputation(task_id, index)
    return (info.alarm_weight + weight) * 10_000 >= task.alarm_bps * total


def alarm_until_revert(net: Net, out: Scaling, task_id: int, rnd: int, raisers: list[int]) -> None:
    """`raisers` alarm round `rnd` in turn; the alarm that reverts it is measured (the
    costlier of this and an earlier measurement is kept)."""
    total = net.owner.get_task(task_id).total_reputation
    for i in raisers:
        sender = net.members[i]
        if alarm_reverts(net, task_id, rnd, i, total):
            needed = net.limit_needed(sender, "raise_alarm", [task_id, rnd])
            result = sender.raise_alarm(task_id, rnd)
            assert reverted(result), "the threshold arithmetic disagrees with the contract"
            out.keep_max("reverting raise_alarm", result.gas_used, needed)
            return
        sender.raise_alarm(task_id, rnd)
    raise RuntimeError("no alarm reached the threshold")


def paid_round_one(net: Net, task_id: int, size: int) -> None:
    """Round 1 of a worst-case task: every member submits and is accepted (paid), the
    smallest majority votes in time, the others vote late (in round 2) for another pair:
    when round 2 ends, each of those late votes is read and costs its voter 50."""
    everyone = bitmap(range(size))
    losers, winners = split(size)
    net.submit_all(task_id, 1, size)
    net.vote_until_final(task_id, 1, winners, (digest("paid"), everyone))
    for i in losers:
        net.members[i].vote(task_id, 1, digest("late and wrong"), everyone)


def split(size: int) -> tuple[list[int], list[int]]:
    """(losers, winners): the smallest majority wins a 50.01% quorum."""
    losers = size - (size // 2 + 1)
    return list(range(losers)), list(range(losers, size))


def measure_scaling(size: int, gas: dict[str, list[int]]) -> Scaling:
    """Finalization, round closing and alarm reverting on tasks of `size` members."""
    out = Scaling(size)
    net = Net.create(size, gas)
    everyone = bitmap(range(size))
    losers, winners = split(size)
    worst = {"quorum_bps": 5001, "alarm_bps": 10_000, "rep_floor": WORST_FLOOR}

    # Typical: every member submits, one in eight is rejected, members vote for the winning
    # pair until quorum; the votes before the last join the non-final vote figures.
    task_id = net.task(size)
    net.submit_all(task_id, 1, size)
    accepted = bitmap(i for i in range(size) if i % 8 != 7)
    for i in range(size):
        result = net.members[i].vote(task_id, 1, digest("global"), accepted)
        if finalized(result):
            out.typical, out.voters = result.gas_used, i + 1
            break
        gas["vote (first of its round)" if i == 0 else "vote (not final)"].append(result.gas_used)

    # Paying, round 1: every update accepted, so every member is paid its first reward (a
    # fresh storage slot each); the losing half voted for another pair first (+20 - 50:
    # ejected, forfeiting what it was just paid), then the smallest majority. The alarm
    # that reverts this round undoes all of it: every reputation move, every reward
    # (clawed back), every ejection (reinstated), and returns every raiser's bond (each
    # raiser was ejected by its bond: reinstated too); it also aborts round 2.
    paying = net.task(size, **worst)
    net.submit_all(paying, 1, size)
    for i in losers:
        net.members[i].vote(paying, 1, digest("losing"), everyone)
    for i in winners[:-1]:
        net.members[i].vote(paying, 1, digest("winning"), everyone)
    args = [paying, 1, digest("winning"), everyone]
    result = out.measure(net, "finalizing vote, paying", net.members[winners[-1]], "vote", args)
    assert finalized(result), "the smallest majority should finalize"
    alarm_until_revert(net, out, paying, 1, winners)

    # Paying, round 2: as above, and the round also settles round 1's votes (the late
    # votes read and penalized): the losing half loses 50 for its late vote too.
    settling = net.task(size, **worst)
    paid_round_one(net, settling, size)
    net.submit_all(settling, 2, size)
    for i in losers:
        net.members[i].vote(settling, 2, digest("losing"), everyone)
    for i in winners[:-1]:
        net.members[i].vote(settling, 2, digest("winning"), everyone)
    args = [settling, 2, digest("winning"), everyone]
    sender = net.members[winners[-1]]
    result = out.measure(net, "finalizing vote, paying, settling late votes", sender, "vote", args)
    assert finalized(result), "the smallest majority should finalize"
    alarm_until_revert(net, out, settling, 2, winners)

    # Rejecting, round 2: after round 1 as above, every update of round 2 is rejected and
    # every member ejected (stake and rewards forfeited), every member voted: the losing
    # half first; round 1's late votes are settled too.
    rejecting = net.task(size, **worst)
    paid_round_one(net, rejecting, size)
    net.submit_all(rejecting, 2, size)
    for i in losers:
        net.members[i].vote(rejecting, 2, digest("losing"), 1)
    for i in winners[:-1]:
        net.members[i].vote(rejecting, 2, digest("winning"), 0)
    args = [rejecting, 2, digest("winning"), 0]
    sender = net.members[winners[-1]]
    result = out.measure(net, "finalizing vote, rejecting", sender, "vote", args)
    assert finalized(result), "the smallest majority should finalize"

    # close_round: after round 1 as above, nobody submits in round 2 and one member votes,
    # so every member is penalized (-50 not submitted, -100 not voted) and ejected,
    # forfeiting stake and rewards; round 1's late votes are settled too.
    closing = net.task(size, **worst)
    paid_round_one(net, closing, size)
    net.chain.advance(WINDOW)
    net.members[winners[0]].vote(closing, 2, digest("nothing"), 0)
    net.chain.advance(WINDOW + 1)
    out.measure(net, "close_round", net.owner, "close_round", [closing, 2])
    return out


def _fit(points: list[tuple[int, int]]) -> tuple[float, float]:
    """Least-squares line gas = a + b * members."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    slope, intercept = statistics.linear_regression(xs, ys)
    return intercept, slope


CASES = (
    "finalizing vote, paying",
    "finalizing vote, paying, settling late votes",
    "finalizing vote, rejecting",
    "close_round",
    "reverting raise_alarm",
)


def suggest_bound(scaling: list[Scaling], margin: float = 1.1) -> tuple[int, int]:
    """(base, per member), rounded up to 10,000 and 1,000, that cover every measured gas
    limit with `margin` to spare."""
    points = [(s.members, margin * max(s.needed.values())) for s in scaling]
    per = 0.0
    if len(points) > 1:
        per = max((b[1] - a[1]) / (b[0] - a[0]) for a, b in itertools.pairwise(points))
    per_member = -(-int(per) // 1000) * 1000
    base = max(need - per_member * n for n, need in points)
    return -(-int(base) // 10_000) * 10_000, per_member


def code_sizes() -> list[tuple[str, int, bool]]:
    """(piece, runtime bytes, within the 25% headroom target) for both deployed pieces."""
    sizes = load_artifact().runtime_sizes
    return [(name, size, size <= CODE_TARGET) for name, size in sorted(sizes.items())]


def render(gas: dict[str, list[int]], scaling: list[Scaling]) -> str:
    art = load_artifact()
    out = [
        "## Gas per FLChain entry point",
        "",
        f"Measured by `benchmarks/bench_gas.py` (`make bench-gas`) on eth-tester "
        f"{version('eth-tester')} (py-evm {version('py-evm')}, its default fork), contract "
        f"compiled with Vyper {art.vyper_version}, Python {platform.python_version()}. Figures "
        "are gasUsed from mined receipts (refunds included): median, min and max over n "
        "transactions. Tasks carry a reward pool (create_task is payable), a stake and an "
        "alarm window. The vote rows include the non-final votes of the scaling runs below "
        f"(up to {scaling[-1].members} members).",
        "",
        "| entry point | median gas | min | max | n | target |",
        "|---|---:|---:|---:|---:|---|",
    ]
    order = [n for n in ORDER if n in gas] + [n for n in gas if n not in ORDER]
    for name in order:
        values = gas[name]
        target = TARGETS.get(name)
        verdict = ""
        if target is not None:
            verdict = f"<= {target:,}: {'met' if max(values) <= target else 'MISSED'}"
        out.append(
            f"| {name} | {int(statistics.median(values)):,} | {min(values):,} | "
            f"{max(values):,} | {len(values)} | {verdict} |"
        )
    out += [
        "",
        "A late vote is a vote on the previous round after it finalized (recorded, no "
        "weight; it spares its voter the 50 a member that never voted loses when the next "
        "round ends). "
        "The finalizing vote (4 members) pays the round's reward share to the accepted "
        "members (RoundPaid), moves reputations and opens the next round. A raise_alarm that "
        "stays below the threshold only takes the raiser's bond (100 reputation); the one "
        "that reaches it also undoes the round (reputations, rewards, ejections, bonds) and "
        "aborts the running round. close_round charges the members that neither submitted "
        "nor voted once anyone voted; when nobody voted it blames nobody. withdraw pays "
        "stake, rewards and the member's share of the pool left, once the task is settled; "
        "claim_refund returns an unpaid pool to the owner (here: after the alarm clawed the "
        "only paid round's rewards back).",
        "",
        "### Code size",
        "",
        f"EIP-170 caps a contract's runtime code at {EIP170:,} bytes; the build keeps 25% "
        f"headroom (at most {CODE_TARGET:,} bytes per piece).",
        "",
        "| piece | runtime bytes | of EIP-170 | <= 75% |",
        "|---|---:|---:|---|",
    ]
    for name, size, ok in code_sizes():
        verdict = "met" if ok else "MISSED"
        out.append(f"| {name} | {size:,} | {100 * size / EIP170:.1f}% | {verdict} |")
    typ_a, typ_b = _fit([(s.members, s.typical) for s in scaling])
    base, per = suggest_bound(scaling)
    now_base = finalize_gas_bound(1) - (finalize_gas_bound(2) - finalize_gas_bound(1))
    now_per = finalize_gas_bound(2) - finalize_gas_bound(1)
    largest = scaling[-1]
    largest_need = max(largest.needed.values())
    out += [
        "",
        "### Round settlement against the client's gas limit",
        "",
        "Three calls settle a round for every eligible member, so their cost grows with the "
        "task: the vote that reaches quorum, close_round and the alarm that reverts a round. "
        "The first two also settle the previous round's votes (a member that never voted on "
        "it, in time or late, loses 50; each late vote is read and a wrong one costs 50). "
        "Typical: every member submits, one in eight is rejected, quorum "
        f"{QUORUM_BPS / 100:.2f}%, members vote for the winning pair until quorum. The worst "
        f"cases use a reputation floor of {WORST_FLOOR} (any net loss ejects; an ejection "
        "writes the member record, the pool and the slashed total and logs an event) and "
        "quorum 50.01%. *Paying (round 1)*: every update accepted so that every member is "
        "paid its first reward (a fresh storage slot each) while the losing half, which voted "
        "for another pair first, is ejected. In the round-2 cases round 1 paid everyone, the "
        "smallest majority voted in time and the others voted late for another pair: "
        "*paying, settling late votes*, round 2 as round 1 above, plus the late votes' "
        "settlement; *rejecting*, every update of round 2 rejected and every member ejected, "
        "every member voted; *close_round*, nobody submits in round 2 and one member votes, "
        "so every member is penalized and ejected. *Reverting raise_alarm*: the costlier of "
        "the alarms (threshold 100%, every raiser ejected by its bond) that revert the two "
        "paying rounds: every reputation move undone, every reward clawed back, every "
        "ejected member and raiser reinstated, the running round aborted. Cells: gasUsed, "
        "and in brackets the smallest gas limit the call succeeds with (py-evm's binary "
        "search, to 1,000; above gasUsed by the refunds and the 1/64 a delegatecall holds "
        "back). The client sends these calls with `finalize_gas_bound(max_members)`.",
        "",
        "| members | voters to quorum | typical finalizing vote | finalizing vote, paying "
        "(round 1) | finalizing vote, paying, settling late votes | finalizing vote, "
        "rejecting | close_round | reverting raise_alarm | client gas limit | covered |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in scaling:
        bound = finalize_gas_bound(s.members)
        cells = " | ".join(f"{s.worst[c]:,} ({s.needed[c]:,})" for c in CASES)
        covered = "yes" if max(s.needed.values()) <= bound else "NO"
        out.append(
            f"| {s.members} | {s.voters} | {s.typical:,} | {cells} | {bound:,} | {covered} |"
        )
    out += [
        "",
        f"Least-squares fit of the typical finalizing vote: ~= {typ_a:,.0f} + {typ_b:,.0f} x "
        f"members. The costliest case needs a limit of {largest_need:,} gas at "
        f"{largest.members} members, {100 * largest_need / 30_000_000:.0f}% of a 30M block. "
        f"The client's bound is {now_base:,} + {now_per:,} x members; {base:,} + {per:,} x "
        "members would cover every measured limit with 10% to spare. Any vote may turn out "
        "to be the one that reaches quorum, so the client sends every vote with that limit "
        "(unused gas is not charged).",
        "",
        "Submit stays under 80k by storing the commitment in two fresh slots (the digest by "
        "round and member; samples, base round and loss packed in one word keyed by task and "
        "digest, whose emptiness is also the `digest taken` check against copies and "
        "replays) and clearing one bit of a per-round word that the round opener set to all "
        "ones. The base round is checked against a copy of the round's base in the task's "
        "state word, which submit reads anyway. Its event carries the digest and the sample "
        "count; base round and loss are read with `get_update`. A vote stores its digest and "
        "bitmap and adds the voter's reputation to the pair's tally; the first vote of a "
        "round for a pair pays for creating that tally slot. Both run in FLChain itself; "
        "whatever settles a round or a task runs in FLChainSettlement by delegatecall, on "
        "the same storage.",
        "",
        "A join stores the member word, account, peer id, X25519 key and reputation and "
        "logs MemberJoined with the 64-byte peer-id proof (a signature only nodes can "
        "check, so it stays in the log). Peer ids are not unique on chain, so join no longer "
        "keeps a peer id -> member slot.",
        "",
        "Secure mode: a join with a Paillier key digest also stores the digest and sets the "
        "member's bit in the task's keyed bitmap (a join without a key writes neither). A "
        "remask stores its digest and sets a bit in the round's remasked bitmap (the first "
        "remask of a round creates that word). publish_sum derives the decryptor (a few "
        "bitmap reads and loops over the candidate bits, so its cost grows with the number "
        "of keyed members; measured here with four) and stores the digest.",
        "",
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--out", type=Path, default=None, help="write here instead of docs/benchmarks.md"
    )
    parser.add_argument("--sizes", default="4,16,64,256", help="task sizes for settlement")
    parser.add_argument("--repeats", type=int, default=5, help="tasks for the entry points")
    args = parser.parse_args(argv)
    sizes = sorted({int(s) for s in args.sizes.split(",") if s})
    if not sizes or any(not 4 <= s <= 256 for s in sizes) or args.repeats < 1:
        parser.error("sizes must be in 4..256 and repeats >= 1")
    started = time.perf_counter()
    gas: dict[str, list[int]] = defaultdict(list)
    measure_entry_points(args.repeats, gas)
    scaling = []
    for size in sizes:
        result = measure_scaling(size, gas)
        scaling.append(result)
        cases = ", ".join(f"{c} {result.worst[c]:,} ({result.needed[c]:,})" for c in CASES)
        print(f"{size} members: typical {result.typical:,}; {cases}", file=sys.stderr)
    text = render(gas, scaling)
    if args.out is None:
        out = write_section("gas", text)
    else:
        out = args.out
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    print(text)
    print(f"wrote {out} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    base, per = suggest_bound(scaling)
    print(
        f"a bound covering every case with 10% margin: {base:,} + {per:,} x members",
        file=sys.stderr,
    )
    missed = [n for n, t in TARGETS.items() if max(gas[n]) > t]
    big = [name for name, _, ok in code_sizes() if not ok]
    unsafe = [s.members for s in scaling if max(s.needed.values()) > finalize_gas_bound(s.members)]
    for name in missed:
        print(f"{name}: above its target", file=sys.stderr)
    for name in big:
        print(f"{name}: runtime code above 75% of EIP-170", file=sys.stderr)
    for size in unsafe:
        print(f"finalize_gas_bound({size}) is below the measured worst case", file=sys.stderr)
    return 1 if missed or big or unsafe else 0


if __name__ == "__main__":
    sys.exit(main())
