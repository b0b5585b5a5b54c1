"""Do the rewards and reputations pay honest members and price the others out? A devnet
incentive experiment: real node processes (py-evm chain, MLP on digits, Multi-Krum with
f = 1) over many rounds, each member one kind: honest, free-rider (`freeride`: never trains
nor commits, votes with the honest aggregate), griefer (`falsealarm`: alarms every
finalized round), blocking (`novote`: trains and commits, never votes) and Byzantine
(`signflip` updates). The task escrows a reward pool and has an alarm window. At the end,
once the task is settled, every member still active withdraws; the chain is then read:
per member, its reputation after every round (ReputationChanged events), rewards earned,
what its ejection forfeited and what it withdrew.

    python benchmarks/bench_incentives.py [--rounds 16] [--honest 4] [--reward-eth 1]

Writes a table and docs/incentives.png into docs/benchmarks.md (section `incentives`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from eth_account import Account
from web3 import Web3

from flchain.contracts import (
    REP_UNIT,
    ContractRevert,
    FLChainClient,
    RoundStatus,
    TaskStatus,
    bitmap_indices,
)
from flchain.devnet.launcher import DevnetPlan, down, node_status, up
from flchain.node.identity import load_node_identity
from flchain.node.protocol_attacks import ACTIONS_METRIC

try:
    from benchmarks._report import DOCS, machine, write_section
except ModuleNotFoundError:  # run as a script
    from _report import DOCS, machine, write_section

# The attack of each non-honest kind, in the order the launcher hands them to the last nodes.
KINDS: dict[str, str] = {
    "freeride": "free-rider",
    "falsealarm": "griefer",
    "novote": "blocking",
    "signflip": "Byzantine",
}
ORDER = ("honest", *KINDS.values())
COLORS = {
    "honest": "#2b7bba",
    "free-rider": "#e6a117",
    "griefer": "#c0392b",
    "blocking": "#8e44ad",
    "Byzantine": "#555555",
}
PLOT = DOCS / "incentives.png"
WEI = 10**18


def eth(wei: int) -> str:
    return f"{wei / WEI:.4f}"


@dataclass
class Member:
    """One member's record, read from the chain at the end."""

    index: int
    node: str
    kind: str
    reputation: list[int]  # after round r (index 0: at join)
    ejected_round: int | None
    commits: int
    accepted: int
    votes: int
    alarms: int
    earned: int
    forfeited: int
    withdrawn: int  # stake + reward actually paid out by withdraw
    actions: dict[str, float] = field(default_factory=dict)  # its protocol_attack_actions


@dataclass
class Outcome:
    members: list[Member]
    rounds: list[dict[str, Any]]
    money: dict[str, int]
    stake: int
    rep_floor: int
    seconds: dict[str, float]


def _wait(predicate: Any, timeout: float, what: str, poll: float = 1.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(poll)
    raise SystemExit(f"timed out waiting for {what}")


def _withdraw(node: dict, w3: Web3, contract: str, task_id: int, timeout: float) -> None:
    """Withdraw as the node's own account once the chain agrees the task is settled; an
    ejected member has nothing to withdraw (the contract refuses)."""
    password = (Path(node["dir"]) / "password").read_text()
    identity = load_node_identity(node["dir"], password)
    client = FLChainClient(w3, contract, identity.eth_account)
    deadline = time.time() + timeout
    while True:
        try:
            client.withdraw(task_id)
            return
        except ContractRevert as exc:
            if "alarm window open" not in str(exc) or time.time() > deadline:
                print(f"{node['name']}: withdraw refused: {exc}", file=sys.stderr)
                return
            time.sleep(1.0)


def run_experiment(args: argparse.Namespace, directory: Path) -> Outcome:
    attacks = tuple(KINDS)
    plan = DevnetPlan(
        directory=directory,
        nodes=args.honest + len(attacks),
        rounds=args.rounds,
        rule="multikrum",
        rule_params={"f": 1},  # one model attacker
        byzantine=len(attacks),
        attacks=attacks,
        model="mlp",
        local_epochs=1,
        submit_window=args.submit_window,
        vote_window=args.vote_window,
        alarm_window=args.alarm_window,
        seed=args.seed,
        reward_wei=int(Decimal(args.reward_eth) * WEI),
    )
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    manifest = up(plan, replace=True)
    try:
        w3 = Web3(Web3.HTTPProvider(manifest["rpc_url"], request_kwargs={"timeout": 60}))
        reader = FLChainClient(w3, manifest["contract"], Account.create())
        task_id = manifest["task_id"]
        per_round = args.submit_window + args.vote_window + 30
        _wait(
            lambda: reader.get_task(task_id).status in (TaskStatus.FINISHED, TaskStatus.CLOSED),
            120 + args.rounds * per_round,
            "the task to end",
            poll=2.0,
        )
        seconds["rounds"] = time.perf_counter() - t0
        _wait(
            lambda: all((node_status(n) or {}).get("phase") == "done" for n in manifest["nodes"]),
            120,
            "every node to stop",
        )
        metrics = {n["name"]: (node_status(n) or {}).get("metrics", {}) for n in manifest["nodes"]}
        t1 = time.perf_counter()
        for node in manifest["nodes"]:
            _withdraw(node, w3, manifest["contract"], task_id, args.alarm_window + 60)
        seconds["settle and withdraw"] = time.perf_counter() - t1
        outcome = read_chain(reader, task_id, manifest, metrics)
    finally:
        down(directory)
    outcome.seconds.update(seconds, total=time.perf_counter() - t0)
    return outcome


def read_chain(
    client: FLChainClient, task_id: int, manifest: dict, metrics: dict[str, dict]
) -> Outcome:
    task = client.get_task(task_id)
    events = client.events(task_id)
    infos = {m.index: m for m in client.members(task_id)}
    by_address = {n["address"].lower(): n for n in manifest["nodes"]}
    count: dict[str, Counter[int]] = defaultdict(Counter)
    rep_moves: dict[int, dict[int, int]] = defaultdict(dict)  # member -> round -> rep after
    ejected: dict[int, int] = {}
    forfeited: Counter[int] = Counter()
    withdrawn: Counter[int] = Counter()
    funded = 0
    for ev in events:
        name, a = ev["event"], ev["args"]
        if name in ("UpdateCommitted", "VoteCast", "AlarmRaised"):
            count[name][a["member"]] += 1
        elif name == "ReputationChanged":
            rep_moves[a["member"]][a["round"]] = a["new"]
        elif name == "MemberEjected":
            ejected[a["member"]] = a["round"]
            forfeited[a["member"]] += a["forfeited"]
        elif name == "MemberReinstated":
            ejected.pop(a["member"], None)
            forfeited[a["member"]] -= a["restored"]
        elif name == "Withdrawn":
            withdrawn[a["member"]] += a["stake"] + a["reward"]
        elif name == "TaskCreated":
            funded += a.get("reward", 0)
        elif name == "RewardFunded":
            funded += a["amount"]
    rounds = []
    accepted: Counter[int] = Counter()
    for r in range(1, task.current_round + 1):
        info = client.get_round(task_id, r)
        if info.status == RoundStatus.FINALIZED:
            for i in bitmap_indices(info.accepted):
                accepted[i] += 1
        rounds.append(
            {
                "round": r,
                "status": info.status.name.lower(),
                "submitted": len(bitmap_indices(info.submitted)),
                "voted": len(bitmap_indices(info.voted)),
                "alarmed": len(bitmap_indices(info.alarmed)),
                "share": info.reward_share,
                "accepted": bitmap_indices(info.accepted),
                "paid": len(bitmap_indices(info.paid)),
            }
        )
    last = max((r["round"] for r in rounds), default=0)
    members = []
    for index, info in sorted(infos.items()):
        node = by_address[info.account.lower()]
        kind = KINDS.get(node.get("attack") or "", "honest")
        rep, history = REP_UNIT, [REP_UNIT]
        for r in range(1, last + 1):
            rep = rep_moves[index].get(r, rep)
            history.append(rep)
        actions = metrics.get(node["name"], {}).get(ACTIONS_METRIC.name, {})
        members.append(
            Member(
                index=index,
                node=node["name"],
                kind=kind,
                reputation=history,
                ejected_round=ejected.get(index),
                commits=count["UpdateCommitted"][index],
                accepted=accepted[index],
                votes=count["VoteCast"][index],
                alarms=count["AlarmRaised"][index],
                earned=info.earned,
                forfeited=forfeited[index],
                withdrawn=withdrawn[index],
                actions=actions if isinstance(actions, dict) else {},
            )
        )
    missing = sum(
        metrics.get(node["name"], {}).get("updates_missing_total", 0) or 0
        for node in manifest["nodes"]
    )
    money = {
        "missing": int(missing),
        "funded": funded,
        "paid": task.rewards_paid,
        "pool left": task.reward_pool,
        "slashed": task.slashed,
        "withdrawn": sum(withdrawn.values()),
        "balance": int(client.w3.eth.get_balance(client.address)),
    }
    return Outcome(members, rounds, money, task.stake, task.rep_floor, {})


def plot(outcome: Outcome, path: Path) -> bool:
    """Reputation per round and net balance per member; False without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), width_ratios=(3, 2))
    shown: set[str] = set()
    for m in sorted(outcome.members, key=lambda m: ORDER.index(m.kind)):
        end = len(m.reputation) if m.ejected_round is None else m.ejected_round + 1
        xs = list(range(end))
        label = None if m.kind in shown else m.kind
        shown.add(m.kind)
        style = "--" if m.kind == "blocking" else "-"  # it often runs along an honest line
        left.plot(xs, m.reputation[:end], style, color=COLORS[m.kind], label=label, linewidth=1.6)
        if m.ejected_round is not None:
            left.plot(xs[-1], m.reputation[end - 1], "x", color=COLORS[m.kind], markersize=9)
    left.axhline(outcome.rep_floor, color="black", linestyle=":", linewidth=0.9)
    left.text(len(outcome.rounds), outcome.rep_floor + 12, "floor", fontsize=8, ha="right")
    left.set_xlabel("round")
    left.set_ylabel("reputation (1000 = 1.0)")
    left.set_title("Reputation after each round (x: ejected)")
    left.legend(fontsize=8, loc="upper left")
    members = sorted(outcome.members, key=lambda m: (ORDER.index(m.kind), m.index))
    xs = list(range(len(members)))
    colors = [COLORS[m.kind] for m in members]
    net = [(m.withdrawn - outcome.stake) / WEI for m in members]
    lost = [-m.forfeited / WEI for m in members]
    right.bar(xs, net, color=colors, edgecolor="black", label="withdrawn - stake")
    right.bar(xs, lost, color="white", edgecolor=colors, hatch="///", label="forfeited at ejection")
    right.axhline(0, color="black", linewidth=0.8)
    right.set_xticks(xs)
    right.set_xticklabels([f"{m.kind}\n#{m.index}" for m in members], fontsize=7, rotation=45)
    right.set_ylabel("ETH")
    right.set_title("What each member came away with")
    right.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


def findings(outcome: Outcome) -> list[str]:
    """What this run shows, one sentence per kind, from its own figures."""
    stake = outcome.stake
    honest = [m for m in outcome.members if m.kind == "honest"]
    stayed = [m for m in honest if m.ejected_round is None]
    out = []
    if stayed:
        nets = [(m.withdrawn - stake) / WEI for m in stayed]
        out.append(
            f"Honest members that stayed came away with {min(nets):+.4f} to {max(nets):+.4f} "
            "ETH each."
        )
    for m in outcome.members:
        if m.kind == "honest":
            continue
        if m.ejected_round is not None:
            out.append(
                f"The {m.kind} member was ejected in round {m.ejected_round} and forfeited "
                f"{eth(m.forfeited)} ETH (its stake and {eth(m.forfeited - stake)} ETH of "
                "rewards)."
            )
        else:
            out.append(
                f"The {m.kind} member stayed to the end with reputation {m.reputation[-1]} "
                f"and came away with {(m.withdrawn - stake) / WEI:+.4f} ETH."
            )
    rejected = sum(m.commits - m.accepted for m in honest)
    ejected = [m for m in honest if m.ejected_round is not None]
    if rejected:
        out.append(
            f"Multi-Krum drops f = 1 update every round, also once no attacker is left to "
            f"drop: honest updates were rejected {rejected} times"
            + (f", and {len(ejected)} honest member(s) fell below the floor" if ejected else "")
            + "."
        )
    return [" ".join(out)]


def render(outcome: Outcome, args: argparse.Namespace, plotted: bool) -> str:
    members = sorted(outcome.members, key=lambda m: (ORDER.index(m.kind), m.index))
    stake = outcome.stake
    rounds = outcome.rounds
    finalized = sum(r["status"] == "finalized" for r in rounds)
    n = len(members)
    lines = [
        "## Incentives: who gets paid",
        "",
        f"`make bench-incentives` (`python benchmarks/bench_incentives.py`): a devnet of {n} "
        f"node processes (py-evm chain, MLP on digits, Multi-Krum with f = 1), {args.rounds} "
        f"rounds, reward pool {args.reward_eth} ETH, stake {eth(stake)} ETH, reputation floor "
        f"{outcome.rep_floor}, submit/vote/alarm windows {args.submit_window}/"
        f"{args.vote_window}/{args.alarm_window} s, all on this one machine ({machine()}). "
        f"{args.honest} members are honest; one of each other kind: *free-rider* (`freeride`: "
        "never trains nor commits, votes with the honest aggregate), *griefer* "
        "(`falsealarm`: a Siren alarm on every finalized round, whatever the model), "
        "*blocking* (`novote`: trains and commits honestly, never votes) and *Byzantine* "
        "(`signflip` updates). Once the task was settled (ended, last alarm window closed) "
        "every member still active withdrew. Figures read from the chain: rewards earned "
        "(credited round by round), forfeited at ejection (stake + earned, back into the "
        "pool), withdrawn (stake + earned + a share of the pool left, in proportion to "
        f"rewards), net = withdrawn - stake. {finalized} of {len(rounds)} rounds finalized; "
        f"wall time {outcome.seconds['total']:.0f} s.",
        "",
        "| member | kind | commits | accepted | votes | alarms | final reputation | ejected "
        "in round | earned (ETH) | forfeited (ETH) | withdrawn (ETH) | net (ETH) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in members:
        lines.append(
            f"| {m.index} | {m.kind} | {m.commits} | {m.accepted} | {m.votes} | {m.alarms} | "
            f"{m.reputation[-1]} | {m.ejected_round or '-'} | {eth(m.earned)} | "
            f"{eth(m.forfeited)} | {eth(m.withdrawn)} | {(m.withdrawn - stake) / WEI:+.4f} |"
        )
    money = outcome.money
    lines += [
        "",
        f"Money: {eth(money['funded'])} ETH funded and {n} x {eth(stake)} ETH staked; "
        f"{eth(money['paid'])} ETH credited round by round to members that stayed, "
        f"{eth(money['slashed'])} ETH forfeited by ejected members (back into the pool), "
        f"{eth(money['pool left'])} ETH in the pool at the end (split at withdrawal in "
        f"proportion to rewards); {eth(money['withdrawn'])} ETH withdrawn, "
        f"{money['balance']:,} wei left in the contract (rounding). Committed updates a "
        f"node could not fetch (`updates_missing_total`, all nodes): {money['missing']}.",
        "",
        *findings(outcome),
        "",
        "Reputation after each round, per kind (honest: mean and range of the honest members "
        "still active; `ejected` once below the floor). An alarm's bond counts in the round "
        "it alarmed; `alarms` counts the alarms raised on that round (griefer and honest "
        "Siren checks alike).",
        "",
        "| round | " + " | ".join(ORDER) + " | status | committed | voted | alarms | reward "
        "share (ETH) |",
        "|---:|" + "---:|" * len(ORDER) + "---|---:|---:|---:|---:|",
    ]
    by_kind: dict[str, list[Member]] = defaultdict(list)
    for m in members:
        by_kind[m.kind].append(m)
    for r in rounds:
        number = r["round"]
        cells = []
        for kind in ORDER:
            alive = [
                m.reputation[number]
                for m in by_kind[kind]
                if m.ejected_round is None or m.ejected_round > number
            ]
            if not by_kind[kind]:
                cells.append("")
            elif not alive:
                cells.append("ejected")
            elif len(by_kind[kind]) == 1:
                cells.append(f"{alive[0]}")
            else:
                gone = len(by_kind[kind]) - len(alive)
                cells.append(
                    f"{statistics.mean(alive):.0f} ({min(alive)}-{max(alive)})"
                    + (f", {gone} ejected" if gone else "")
                )
        lines.append(
            f"| {number} | " + " | ".join(cells) + f" | {r['status']} | {r['submitted']} | "
            f"{r['voted']} | {r['alarmed']} | {r['share'] / WEI:.5f} |"
        )
    actions = [
        f"{m.kind}: " + ", ".join(f"{k} {v:g}" for k, v in sorted(m.actions.items()))
        for m in members
        if m.actions
    ]
    lines += [
        "",
        "What each attacker's own `protocol_attack_actions_total` counted: "
        + ("; ".join(actions) if actions else "nothing")
        + ".",
    ]
    if plotted:
        lines += ["", f"![reputation and net balance per member]({PLOT.name})"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--honest", type=int, default=4, help="honest members")
    parser.add_argument("--reward-eth", default="1", help="the task's reward pool")
    parser.add_argument("--submit-window", type=int, default=12)
    parser.add_argument("--vote-window", type=int, default=30)
    parser.add_argument("--alarm-window", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="print, leave docs alone")
    parser.add_argument(
        "--keep", type=Path, default=None, help="run the devnet in DIR and keep it (logs)"
    )
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.honest < 3 or args.alarm_window < 1:
        parser.error("needs rounds >= 1, honest >= 3 and a nonzero alarm window")
    if args.keep is not None:
        outcome = run_experiment(args, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-incentives-") as tmp:
            outcome = run_experiment(args, Path(tmp))
    plotted = False if args.no_write else plot(outcome, PLOT)
    text = render(outcome, args, plotted)
    print(text)
    for r in outcome.rounds:
        print(f"round {r['round']}: {r['status']}, accepted {r['accepted']}", file=sys.stderr)
    if not args.no_write:
        print(f"wrote {write_section('incentives', text)}", file=sys.stderr)
    print(
        ", ".join(f"{k} {v:.0f} s" for k, v in outcome.seconds.items()),
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
