"""Gas used by every FLChain entry point, measured on eth-tester (py-evm), as markdown.

    python benchmarks/bench_gas.py [--out FILE] [--sizes 4,16,64,256]

Figures are gasUsed from mined receipts (refunds included), the median over several
transactions. The finalizing vote is measured per task size: every member submits, one in
eight is rejected, and members vote for the winning pair until the 2/3 quorum is reached.
Secure mode is measured on tasks whose members all register a Paillier key: one member
drops out, the other three remask, and the round's decryptor publishes the sum's digest.
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from flchain.contracts import FLChainClient, TaskParams, bitmap, finalize_gas_bound, load_artifact
from flchain.contracts.testing import LocalChain, eth_tester_chain

try:
    from benchmarks._report import write_section
except ModuleNotFoundError:  # run as a script
    from _report import write_section

REPO = Path(__file__).resolve().parents[1]
ORDER = [
    "deploy",
    "create_task",
    "set_allowed",
    "join",
    "join (opens round 1)",
    "join (with Paillier key)",
    "join (with Paillier key, opens round 1)",
    "submit",
    "submit (worst-case calldata)",
    "vote (first of its round)",
    "vote (not final)",
    "vote (finalizing, 4 members)",
    "raise_alarm (not final)",
    "raise_alarm (reverts the round)",
    "remask (first of its round)",
    "remask",
    "publish_sum",
    "close_round",
    "close_task",
    "withdraw",
    "claim_slashed",
]
TARGETS = {
    "submit": 80_000,
    "submit (worst-case calldata)": 80_000,
    "vote (first of its round)": 120_000,
    "vote (not final)": 120_000,
}
WINDOW = 3_600
STAKE = 10**15
QUORUM_BPS = 6667


def digest(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


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

    def task(self, n: int, *, keyed: bool = False, **overrides: object) -> int:
        """A task of `n` members, all joined (the last join opens round 1); `keyed`: each
        registers a Paillier key digest (secure mode)."""
        values: dict = {
            "config_digest": digest("config"),
            "initial_digest": digest("initial"),
            "min_members": n,
            "max_members": max(n, 8),
            "submit_window": WINDOW,
            "vote_window": WINDOW,
            "alarm_window": WINDOW,
            "quorum_bps": QUORUM_BPS,
            "alarm_bps": 5000,
            "stake": STAKE,
            "max_rounds": 1000,
        }
        values.update(overrides)
        task_id = self.owner.create_task(TaskParams(**values))
        self.gas["create_task"].append(self.last_gas())
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


def measure_entry_points(repeats: int, gas: dict[str, list[int]]) -> None:
    """Every entry point, on `repeats` tasks of four members."""
    net = Net.create(4, gas)
    n, everyone = 4, bitmap(range(4))
    for rep in range(repeats):
        task_id = net.task(n)
        net.gas["set_allowed"].append(
            net.owner.set_allowed(task_id, net.members[rep % n].account).gas_used
        )
        net.submit_all(task_id, 1, n)
        g = digest(f"global-{task_id}")
        for i, name in enumerate(
            ["vote (first of its round)", "vote (not final)", "vote (finalizing, 4 members)"]
        ):
            net.gas[name].append(net.members[i].vote(task_id, 1, g, everyone).gas_used)
        net.gas["raise_alarm (not final)"].append(net.members[0].raise_alarm(task_id, 1).gas_used)
        net.gas["raise_alarm (reverts the round)"].append(
            net.members[1].raise_alarm(task_id, 1).gas_used
        )
        net.chain.advance(2 * WINDOW + 1)
        net.gas["close_round"].append(net.owner.close_round(task_id, 3).gas_used)
        net.gas["close_task"].append(net.owner.close_task(task_id).gas_used)
        net.gas["withdraw"].append(net.members[0].withdraw(task_id).gas_used)

        slashing = net.task(n, rep_floor=950)  # one rejection (-100) ejects
        net.submit_all(slashing, 1, n)
        for i in range(3):
            net.members[i].vote(slashing, 1, g, bitmap([0, 1, 2]))
        net.owner.close_task(slashing)
        net.gas["claim_slashed"].append(net.owner.claim_slashed(slashing).gas_used)
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


def measure_finalization(size: int, gas: dict[str, list[int]]) -> tuple[int, int]:
    """(finalizing vote gas, voters needed) for a round with `size` eligible members; the
    votes before it join the non-final vote figures."""
    net = Net.create(size, gas)
    task_id = net.task(size)
    net.submit_all(task_id, 1, size)
    accepted = bitmap(i for i in range(size) if i % 8 != 7)
    g = digest("global")
    for i in range(size):
        result = net.members[i].vote(task_id, 1, g, accepted)
        if any(e["event"] == "RoundFinalized" for e in result.events):
            return result.gas_used, i + 1
        gas["vote (first of its round)" if i == 0 else "vote (not final)"].append(result.gas_used)
    raise RuntimeError(f"no quorum with {size} members")


def measure_worst_finalization(size: int, gas: dict[str, list[int]]) -> int:
    """The costliest finalization: every update rejected and every member ejected (floor
    999), and all members voted: the losing half first, then the smallest majority."""
    net = Net.create(size, gas)
    task_id = net.task(size, quorum_bps=5001, rep_floor=999)
    net.submit_all(task_id, 1, size)
    losers = size - (size // 2 + 1)
    for i in range(losers):
        net.members[i].vote(task_id, 1, digest("losing"), 1)
    for i in range(losers, size):
        result = net.members[i].vote(task_id, 1, digest("winning"), 0)
        if any(e["event"] == "RoundFinalized" for e in result.events):
            return result.gas_used
    raise RuntimeError(f"no quorum with {size} members")


def _fit(points: list[tuple[int, int]]) -> tuple[float, float]:
    """Least-squares line gas = a + b * members."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    slope, intercept = statistics.linear_regression(xs, ys)
    return intercept, slope


def render(gas: dict[str, list[int]], scaling: list[tuple[int, int, int, int]]) -> str:
    art = load_artifact()
    out = [
        "## Gas per FLChain entry point",
        "",
        f"Measured by `benchmarks/bench_gas.py` on eth-tester {version('eth-tester')} (py-evm "
        f"{version('py-evm')}, its default fork), contract compiled with Vyper "
        f"{art.vyper_version}, Python {platform.python_version()}. Figures are gasUsed from "
        "mined receipts (refunds included): median, min and max over n transactions. The "
        "vote rows include the non-final votes of the scaling runs below (up to 256 members).",
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
    intercept, slope = _fit([(n, g) for n, g, _, _ in scaling])
    worst_intercept, worst_slope = _fit([(n, w) for n, _, _, w in scaling])
    largest, largest_gas, _, largest_worst = scaling[-1]
    out += [
        "",
        "### How the finalizing vote scales with the members",
        "",
        "The vote that reaches quorum also moves every eligible member's reputation (one "
        "storage word per eight members, one event per changed member, and for each voter a "
        "read of its vote to penalize wrong ones), records the round and opens the next one. "
        "Typical: every member submits, one in eight is rejected, quorum "
        f"{QUORUM_BPS / 100:.2f}%, members vote for the winning pair until quorum. Worst: "
        "every update rejected and every member ejected (each ejection also writes the "
        "member record and logs an event), every member voted, the losing half first.",
        "",
        "| members | voters to quorum | typical finalizing vote | worst case | client gas limit |",
        "|---:|---:|---:|---:|---:|",
    ]
    for n, g, voters, worst in scaling:
        out.append(f"| {n} | {voters} | {g:,} | {worst:,} | {finalize_gas_bound(n):,} |")
    out += [
        "",
        f"Least-squares fits: typical ~= {intercept:,.0f} + {slope:,.0f} x members, worst ~= "
        f"{worst_intercept:,.0f} + {worst_slope:,.0f} x members: linear in the members. At "
        f"{largest} members a finalizing vote costs {largest_gas:,} gas ({largest_worst:,} at "
        f"worst), {100 * largest_worst / 30_000_000:.0f}% of a 30M block. Any vote may turn "
        "out to be the one that reaches quorum, so the client sends every vote with the gas "
        "limit `finalize_gas_bound(max_members)` (unused gas is not charged).",
        "",
        "Submit stays under 80k by storing the commitment in two fresh slots (the digest by "
        "round and member; samples, base round and loss packed in one word keyed by task and "
        "digest, whose emptiness is also the `digest taken` check against copies and "
        "replays) and clearing one bit of a per-round word that the round opener set to all "
        "ones. The base round is checked against a copy of the round's base in the task's "
        "state word, which submit reads anyway. Its event carries the digest and the sample "
        "count; base round and loss are read with `get_update`. A vote stores its digest and "
        "bitmap and adds the voter's reputation to the pair's tally; the first vote of a "
        "round for a pair pays for creating that tally slot.",
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
    parser.add_argument("--sizes", default="4,16,64,256", help="task sizes for finalization")
    parser.add_argument("--repeats", type=int, default=5, help="tasks for the entry points")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if any(not 1 <= s <= 256 for s in sizes) or args.repeats < 1:
        parser.error("sizes must be in 1..256 and repeats >= 1")
    started = time.perf_counter()
    gas: dict[str, list[int]] = defaultdict(list)
    measure_entry_points(args.repeats, gas)
    scaling = []
    for size in sizes:
        g, voters = measure_finalization(size, gas)
        worst = measure_worst_finalization(size, gas)
        scaling.append((size, g, voters, worst))
        print(f"finalizing vote, {size} members: {g:,} gas ({worst:,} worst)", file=sys.stderr)
    text = render(gas, scaling)
    if args.out is None:
        out = write_section("gas", text)
    else:
        out = args.out
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    print(text)
    print(f"wrote {out} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    missed = [n for n, t in TARGETS.items() if max(gas[n]) > t]
    unsafe = [n for n, _, _, worst in scaling if worst > finalize_gas_bound(n)]
    for size in unsafe:
        print(f"finalize_gas_bound({size}) is below the measured worst case", file=sys.stderr)
    return 1 if missed or unsafe else 0


if __name__ == "__main__":
    sys.exit(main())
