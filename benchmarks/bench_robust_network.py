"""The robustness matrix on the network: every update and data attack against FedAvg,
Multi-Krum, median, Bulyan, SageFlow and Siren on a devnet of 10 node processes, 3 of them
Byzantine, side by side with `flchain simulate` on the same settings and seed.

Each cell runs `flchain devnet up --json` (py-evm chain, one process per node) and the
simulation with the same nodes, Byzantine count, rounds, model, partition, seed and rule
parameters, and compares the final test accuracy and each round's global model digest. The
two are meant to be the same run: the same peers attack and every peer holds the same data
(`flchain.peer_data`), trains from the same seeded streams and goes through the same pipeline
(`flchain.pipeline`), and the rules aggregate alike in float64 (the simulations run on one
torch thread, as devnet nodes do). A cell whose digests match round for round is marked
identical; one that does not says where the network did something the simulation does not
model (a member that missed a window, say). Two checks: every cell agrees within AGREE_POINTS;
every attack that bites FedAvg in simulation (costs it more than BITE_POINTS against the clean
run) bites it on the network too. Protocol attacks (the catalogue's third kind) are not
accuracy attacks and are left out. Two devnets go at a time (--jobs; a devnet waits on its
chain much of the time), and the simulations one at a time beside them; finished runs are
cached in .bench-cache/ so an interrupted matrix resumes, and a failed run is reported and
retried next time, not cached. `--jobs 0` only reports.

    python benchmarks/bench_robust_network.py [--quick] [--rules R ...] [--attacks A ...]
        [--rounds 5] [--jobs 2] [--json PATH] [--out PATH] [--fresh]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from flchain.aggregation import NETWORK_RULES, rule_spec
from flchain.attacks import DATA_ATTACKS, UPDATE_ATTACKS
from flchain.attacks.channel import COLLUDING_ATTACKS
from flchain.devnet.launcher import MANIFEST, auto_f, down

try:
    from benchmarks._report import load_cells, machine, write_section
except ModuleNotFoundError:  # run as a script
    from _report import load_cells, machine, write_section

NODES = 10
BYZANTINE = 3
RULES = ("fedavg", "multikrum", "median", "bulyan", "sageflow", "siren")
ATTACKS = (*UPDATE_ATTACKS, *DATA_ATTACKS)
CLEAN = "none"  # the attack column of the runs without Byzantine nodes
NEWEST = ("sageflow", "siren")  # run last: their server side is the newest on the network
QUICK_RULES = ("fedavg", "median")
QUICK_ATTACKS = (CLEAN, "signflip", "ipm", "labelflip")
MODEL, PARTITION, SEED = "cnn", "iid", 0
ROUNDS = 5
AGREE_POINTS = 3.0  # network and simulation agree when their accuracies differ by at most this
BITE_POINTS = 10.0  # an attack bites a rule when it costs more than this against the clean run
# Siren's clients raise their alarms on chain within this many seconds of a finalization.
SIREN_ALARM_WINDOW = 20
# The share of reputation whose alarms revert a finalized round on chain, for the Siren cells:
# all of it. That revert is the contract's defence on top of the paper's Siren; the simulation
# models it per head (`--alarm-bps`), which is the chain's decision only at 100% (below that,
# reputations weigh the alarms).
SIREN_ALARM_BPS = 10_000
JOBS = 2  # devnets at a time; the simulations run one at a time beside them
# Bumped when a change makes earlier cached runs incomparable (2: the simulation and the devnet
# hold the same peers' data and Byzantine set, `flchain.peer_data`; 3: both aggregate in
# content order and score on the public set alike).
CACHE_VERSION = 3
CACHE = Path(__file__).resolve().parents[1] / ".bench-cache" / "robust_network.jsonl"


def time_limit(rounds: int) -> int:
    """Seconds a run may take before it counts as failed: a devnet of 10 nodes takes about
    2 min to start and 10-40 s a round on 2 shared cores; a stuck one must not hold the matrix."""
    return 300 + 90 * rounds


def defender_f(rule: str) -> int | None:
    """The f the defender assumes: the Byzantine count, capped at what the rule's guarantee
    tolerates among NODES (the devnet launcher's own choice; Bulyan's n >= 4f + 3 gives f = 1
    for 10 nodes). None for rules without an f. Clean runs keep the same f."""
    return auto_f(rule, NODES, BYZANTINE) if rule_spec(rule).takes_f else None


# The defender's other settings, as bench_robust.py's: SageFlow's paper threshold filters
# every barely trained model in the first rounds, where the reference stalls; the loss
# weighting alone decides such a round (aggregation/sageflow.py).
RULE_PARAMS: dict[str, tuple[str, ...]] = {"sageflow": ("entropy_fallback=true",)}


def rule_param_args(rule: str) -> list[str]:
    return [arg for p in RULE_PARAMS.get(rule, ()) for arg in ("--rule-param", p)]


def _key(kind: str, rule: str, attack: str, rounds: int, omniscient: bool) -> str:
    colluding = attack in COLLUDING_ATTACKS
    return json.dumps(
        {
            "kind": kind,
            "rule": rule,
            "attack": attack,
            "rounds": rounds,
            "nodes": NODES,
            "byzantine": 0 if attack == CLEAN else BYZANTINE,
            "model": MODEL,
            "partition": PARTITION,
            "seed": SEED,
            "version": CACHE_VERSION,
            "omniscient": omniscient and colluding and kind == "net",
        }
        | ({"rule_params": list(RULE_PARAMS[rule])} if rule in RULE_PARAMS else {})
        # 3: update attackers alarm every round (attacks.always_alarms), nodes use C_l = 0.04,
        # the simulation reverts as the chain does
        | ({"siren": 3, "alarm_bps": SIREN_ALARM_BPS} if rule == "siren" else {}),
        sort_keys=True,
    )


FLCHAIN = [sys.executable, "-m", "flchain.cli"]


# ----------------------------------------------------------------------------- simulation
def cell_args(rule: str, attack: str, rounds: int) -> list[str]:
    """The options a cell's simulation and devnet share: nodes, rounds, rule and its f and
    parameters, model, partition, seed, and the attack."""
    cmd = ["--nodes", str(NODES), "--rounds", str(rounds), "--rule", rule, "--model", MODEL]
    cmd += ["--partition", PARTITION, "--seed", str(SEED)]
    f = defender_f(rule)
    if f is not None:
        cmd += ["--f", str(f)]
    cmd += rule_param_args(rule)
    if rule == "siren":
        cmd += ["--alarm-bps", str(SIREN_ALARM_BPS)]
    if attack != CLEAN:
        cmd += ["--byzantine", str(BYZANTINE), "--attack", attack]
    return cmd


def simulate_command(rule: str, attack: str, rounds: int) -> list[str]:
    """`flchain simulate` with the devnet cell's settings (the CLI's defaults for local
    epochs, batch size and learning rate are the task config's)."""
    return [
        *FLCHAIN,
        "simulate",
        *cell_args(rule, attack, rounds),
        *("--device", "cpu", "--json"),
    ]


def run_simulation(rule: str, attack: str, rounds: int) -> dict[str, Any]:
    started = time.perf_counter()
    result = subprocess.run(
        simulate_command(rule, attack, rounds),
        capture_output=True,
        text=True,
        timeout=time_limit(rounds),
        env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    )
    if result.returncode != 0 or not result.stdout.strip():
        return {"error": _last_line(result)}
    out = json.loads(result.stdout)
    return {
        "accuracy": out["final_accuracy"],
        "history": [r["accuracy"] for r in out["rounds"]],
        "digests": [r["global_digest"] for r in out["rounds"]],
        "diverged_round": out["diverged_round"],
        "seconds": round(time.perf_counter() - started, 1),
    }


def _last_line(result: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in result.stderr.strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else f"exit {result.returncode}")[:300]


# ----------------------------------------------------------------------------- network
def devnet_command(rule: str, attack: str, rounds: int, workdir: Path, omniscient: bool) -> list:
    cmd = [*FLCHAIN, "devnet", "up", "--dir", str(workdir), "--force"]
    cmd += cell_args(rule, attack, rounds)
    cmd += ["--timeout", str(time_limit(rounds)), "--json"]
    if omniscient and attack in COLLUDING_ATTACKS:
        cmd.append("--omniscient")
    if rule == "siren":
        cmd += ["--alarm-window", str(SIREN_ALARM_WINDOW)]
    return cmd


def _digest(value: str | None) -> str:
    """A round's global digest as the simulation writes it: "" for a round without one (an
    aborted round's is all zeros on chain)."""
    return value if value and int(value, 16) else ""


def run_network(rule: str, attack: str, rounds: int, omniscient: bool) -> dict[str, Any]:
    """One devnet; the final accuracy is the honest nodes' (they hold one global model)."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"bench-robnet-{rule}-{attack}-") as tmp:
        workdir = Path(tmp) / "devnet"
        cmd = devnet_command(rule, attack, rounds, workdir, omniscient)
        try:
            result = subprocess.run(
                cmd, capture_output=True, text=True, timeout=time_limit(rounds) + 60
            )
        except subprocess.TimeoutExpired:
            return {"error": f"devnet did not finish within {time_limit(rounds) + 60} s"}
        finally:  # a killed or timed-out `devnet up` leaves its node processes behind
            if (workdir / MANIFEST).exists():
                down(workdir)
    seconds = round(time.perf_counter() - started, 1)
    if result.returncode != 0 or not result.stdout.strip():
        return {"error": _last_line(result), "seconds": seconds}
    summary = json.loads(result.stdout)
    honest = [n for n in summary["nodes"] if not n.get("attack")]
    accuracies = sorted({n["accuracy"] for n in honest if n.get("accuracy") is not None})
    digests = {n["global_digest"] for n in honest}
    byzantine = set(summary.get("byzantine_members", []))
    finalized = sum(1 for r in summary["rounds"] if r["status"] == "finalized")
    if not accuracies:
        return {"error": "no honest node reported an accuracy", "seconds": seconds}
    history = honest[0].get("accuracy_history", {})
    return {
        "accuracy": accuracies[len(accuracies) // 2],
        "history": [history[k] for k in sorted(history, key=int)],
        # The global model each round finalized ("" for a round that did not).
        "digests": [_digest(r["global_digest"]) for r in summary["rounds"]],
        "honest_agree": len(digests) == 1 and len(accuracies) == 1,
        "finalized": finalized,
        # Byzantine updates that reached the chain, and those the rule accepted, over all rounds
        # (identical updates share a digest, and the contract takes each digest once a round).
        "byzantine_submitted": sum(len(byzantine & set(r["submitted"])) for r in summary["rounds"]),
        "byzantine_accepted": sum(len(r.get("byzantine_accepted", [])) for r in summary["rounds"]),
        "status": summary["status"],
        "seconds": seconds,
    }


# ----------------------------------------------------------------------------- matrix
def load_cache(fresh: bool) -> dict[str, dict]:
    return {key: row["result"] for key, row in load_cells(CACHE, fresh).items()}


def _order(rules: list[str], attacks: list[str]) -> list[tuple[str, str]]:
    """Clean runs first (every other cell is judged against them), then FedAvg (the bite
    check), then the other rules; SageFlow and Siren, the newest on the network, come last."""
    cells = [(r, a) for r in rules for a in attacks]
    return sorted(cells, key=lambda c: (c[0] in NEWEST, c[1] != CLEAN, c[0] != "fedavg"))


def _run_cell(job: tuple[str, str, str, int, bool]) -> dict[str, Any]:
    kind, rule, attack, rounds, omniscient = job
    try:
        if kind == "sim":
            return run_simulation(rule, attack, rounds)
        return run_network(rule, attack, rounds, omniscient)
    except Exception as exc:  # one failed cell must not lose the others
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}


def run_matrix(
    rules: list[str], attacks: list[str], rounds: int, omniscient: bool, fresh: bool, jobs: int
) -> dict[str, dict]:
    """Run every cell not cached, `jobs` subprocesses at a time (simulations and devnets
    interleaved: a devnet waits on its chain much of the time); jobs 0 runs nothing."""
    done = load_cache(fresh)
    if jobs == 0:
        return done
    todo = []
    for rule, attack in _order(rules, attacks):
        for kind in ("sim", "net"):
            key = _key(kind, rule, attack, rounds, omniscient)
            if key in done:
                continue
            if kind == "net" and rule not in NETWORK_RULES:
                done[key] = {"error": f"{rule} does not run on the network (yet)"}
                continue
            todo.append((kind, rule, attack, rounds, omniscient))
    print(f"{len(todo)} runs to do, {jobs} at a time", flush=True)
    CACHE.parent.mkdir(exist_ok=True)
    started = time.perf_counter()
    with (
        CACHE.open("a") as sink,
        ThreadPoolExecutor(jobs) as nets,
        ThreadPoolExecutor(1) as sims,
    ):
        futures = {(sims if job[0] == "sim" else nets).submit(_run_cell, job): job for job in todo}
        for i, future in enumerate(as_completed(futures), 1):
            kind, rule, attack, *_ = job = futures[future]
            result = {**future.result(), "jobs": jobs}
            key = _key(*job)
            done[key] = result
            if "error" not in result:  # failures are retried by the next run
                sink.write(json.dumps({"key": key, "result": result}) + "\n")
                sink.flush()
            elapsed = time.perf_counter() - started
            shown = result.get("error") or f"acc {result['accuracy']:.3f} ({result['seconds']}s)"
            print(f"[{i}/{len(todo)}] {elapsed:5.0f}s {kind} {rule} {attack}: {shown}", flush=True)
    return done


def collect(
    rules: list[str], attacks: list[str], rounds: int, omniscient: bool, done: dict
) -> list[dict]:
    rows = []
    for rule in rules:
        for attack in attacks:
            sim = done.get(_key("sim", rule, attack, rounds, omniscient), {"error": "not run"})
            net = done.get(_key("net", rule, attack, rounds, omniscient), {"error": "not run"})
            both = "accuracy" in sim and "accuracy" in net
            same = both and bool(sim.get("digests")) and sim.get("digests") == net.get("digests")
            rows.append(
                {
                    "rule": rule,
                    "attack": attack,
                    "f": defender_f(rule),
                    "sim": sim,
                    "net": net,
                    "gap_points": round(100 * (net["accuracy"] - sim["accuracy"]), 2)
                    if both
                    else None,
                    # every round finalized the simulation's global model, bit for bit (or
                    # was reverted or aborted where the simulation's was)
                    "identical": same,
                }
            )
    return rows


def checks(rows: list[dict]) -> dict[str, Any]:
    """The two checks, on whatever cells ran; `complete` says whether every cell did."""
    by = {(r["rule"], r["attack"]): r for r in rows}
    gaps = [r for r in rows if r["gap_points"] is not None]
    disagree = [r for r in gaps if abs(r["gap_points"]) > AGREE_POINTS]

    def drop(kind: str, attack: str) -> float | None:
        clean, hit = by.get(("fedavg", CLEAN)), by.get(("fedavg", attack))
        if not clean or not hit or "accuracy" not in clean[kind] or "accuracy" not in hit[kind]:
            return None
        return 100 * (clean[kind]["accuracy"] - hit[kind]["accuracy"])

    bites = []
    for attack in sorted({r["attack"] for r in rows} - {CLEAN}):
        sim_drop, net_drop = drop("sim", attack), drop("net", attack)
        if sim_drop is None:
            continue
        bites.append(
            {
                "attack": attack,
                "sim_drop_points": round(sim_drop, 1),
                "net_drop_points": None if net_drop is None else round(net_drop, 1),
                "bites_in_sim": sim_drop > BITE_POINTS,
                "bites_on_net": None if net_drop is None else net_drop > BITE_POINTS,
            }
        )
    missed = [b for b in bites if b["bites_in_sim"] and b["bites_on_net"] is False]
    return {
        "cells": len(rows),
        "compared": len(gaps),
        "identical": [(r["rule"], r["attack"]) for r in rows if r["identical"]],
        "complete": len(gaps) == len(rows),
        "agree_points": AGREE_POINTS,
        "disagree": [(r["rule"], r["attack"], r["gap_points"]) for r in disagree],
        "agree_holds": not disagree,
        "bite_points": BITE_POINTS,
        "bites": bites,
        "bite_holds": not missed and all(b["bites_on_net"] is not None for b in bites),
    }


def _cell(row: dict) -> str:
    net, sim = row["net"], row["sim"]
    shown = [f"{100 * x['accuracy']:.1f}" if "accuracy" in x else "—" for x in (net, sim)]
    off = row["gap_points"] is not None and abs(row["gap_points"]) > AGREE_POINTS
    flag = " **!**" if off else " ≡" if row["identical"] else ""
    return f"{shown[0]} / {shown[1]}{flag}"


def _first_difference(row: dict) -> int:
    """The first round whose network digest is not the simulation's (1-based)."""
    sim, net = row["sim"].get("digests") or [], row["net"].get("digests") or []
    for i, (a, b) in enumerate(zip(sim, net, strict=False), 1):
        if a != b:
            return i
    return min(len(sim), len(net)) + 1


def report(rows: list[dict], verdict: dict, rounds: int, omniscient: bool) -> str:
    rules = list(dict.fromkeys(r["rule"] for r in rows))
    attacks = list(dict.fromkeys(r["attack"] for r in rows))
    by = {(r["rule"], r["attack"]): r for r in rows}
    fs = ", ".join(f"{r} f = {defender_f(r)}" for r in rules if defender_f(r) is not None)
    assumes = (
        f"The defender assumes {fs} (the devnet's own choice: the Byzantine count capped at "
        f"the rule's bound for {NODES} nodes"
        + ("; Bulyan's n >= 4f + 3 allows f = 1" if "bulyan" in rules else "")
        + "), the same in clean runs. "
        if fs
        else ""
    )
    net_s, sim_s = ([r[k]["seconds"] for r in rows if "accuracy" in r[k]] for k in ("net", "sim"))
    jobs = sorted(
        {r[k].get("jobs", JOBS) for r in rows for k in ("net", "sim") if "accuracy" in r[k]}
    )
    timing = (
        f"A devnet cell took a median of {statistics.median(net_s):.0f} s, a simulation "
        f"{statistics.median(sim_s):.0f} s, {'/'.join(map(str, jobs))} runs at a time; "
        f"{sum(net_s + sim_s) / 60:.0f} min of runs in all."
        if net_s and sim_s
        else ""
    )
    partial = "" if verdict["complete"] else " **Partial:** cells marked — did not run (below)."
    lines = [
        "## Robustness matrix on the network (devnet vs simulation)",
        "",
        f"`make bench-robust-network` (`python benchmarks/bench_robust_network.py --rounds "
        f"{rounds}`): `flchain devnet up` with {NODES} node processes, {BYZANTINE} of them "
        f"Byzantine, against `flchain simulate` with the same settings: digits, "
        f"{MODEL.upper()}, {PARTITION}, {rounds} rounds, seed {SEED}, attack defaults. "
        + assumes
        + "ALIE and IPM colluders on the network "
        + (
            "run in the omniscient test mode (`--omniscient`: the honest updates reach them "
            "before they commit, as the simulation models)"
            if omniscient
            else "estimate the honest statistics from their own honestly trained updates"
        )
        + f"; Siren runs with a {SIREN_ALARM_WINDOW} s alarm window and `--alarm-bps "
        f"{SIREN_ALARM_BPS}` in both: alarms revert the round they judge (and abort the next) "
        f"only when every member raises one (the contract's defence on top of the paper's; the "
        f"simulation counts alarms per head, the chain by reputation, the same thing at "
        f"100%). Each cell: final test "
        f"accuracy in percent, **network / simulation**; ≡ marks a cell whose devnet finalized "
        f"the simulation's global model bit for bit in every round (the same peers attack, "
        f"hold the same data and train from the same seeds: `flchain.peer_data`, "
        f"`flchain.pipeline`); **!** marks a gap over {AGREE_POINTS:g} points. {machine()}. "
        f"{timing}" + partial,
        "",
        "| rule | " + " | ".join("clean" if a == CLEAN else a for a in attacks) + " |",
        "|---|" + "---:|" * len(attacks),
    ]
    for rule in rules:
        lines.append(f"| {rule} | " + " | ".join(_cell(by[(rule, a)]) for a in attacks) + " |")
    lines += ["", "### Checks, evaluated on these figures", ""]
    lines.append(
        f"- Bit-identical to the simulation (every round's global digest): "
        f"{len(verdict['identical'])} of {verdict['compared']} cells compared."
    )
    n_dis = len(verdict["disagree"])
    listed = ", ".join(f"{r}/{a} ({g:+.1f})" for r, a, g in verdict["disagree"])
    lines.append(
        f"- Agreement within {AGREE_POINTS:g} points: {verdict['compared']} of "
        f"{verdict['cells']} cells compared, {n_dis} disagree"
        + (f": {listed}" if n_dis else "")
        + f": {'holds' if verdict['agree_holds'] and verdict['compared'] else 'FAILS'}"
        + ("" if verdict["complete"] else " (on the cells that ran)")
        + "."
    )
    for b in verdict["bites"]:
        net = "—" if b["net_drop_points"] is None else f"{b['net_drop_points']:.1f}"
        if not b["bites_in_sim"]:
            verdict_text = "does not bite in simulation"
        elif b["bites_on_net"] is None:
            verdict_text = "network cell did not run"
        else:
            verdict_text = "bites on the network too" if b["bites_on_net"] else "FAILS to bite"
        lines.append(
            f"- FedAvg under {b['attack']}: loses {b['sim_drop_points']:.1f} points in "
            f"simulation, {net} on the network (bites: > {BITE_POINTS:g}): {verdict_text}."
        )
    short = [
        r
        for r in rows
        if r["attack"] != CLEAN
        and r["net"].get("byzantine_submitted", rounds * BYZANTINE) < rounds * BYZANTINE
    ]
    if short:
        lines += [
            "",
            "Network cells where fewer Byzantine updates reached the chain (a node that misses "
            "the submit window sends nothing that round, and the contract ejects a member whose "
            "reputation falls below the floor; Siren's attackers pay an alarm bond every round):",
            "",
        ]
        for r in short:
            lines.append(
                f"- {r['rule']} / {r['attack']}: {r['net']['byzantine_submitted']} of "
                f"{rounds * BYZANTINE}."
            )
    odd = [
        f"{r['rule']}/{r['attack']}"
        + (
            f" ({r['net']['finalized']} of {rounds} rounds finalized)"
            if r["net"]["finalized"] < rounds
            else ""
        )
        + ("" if r["net"]["honest_agree"] else " (honest nodes ended on different models)")
        for r in rows
        if "accuracy" in r["net"]
        # a round that Siren's alarms reverted or aborted is clean when the simulation's
        # were the same rounds (the digests say so)
        and (
            (r["net"]["finalized"] < rounds and not r["identical"]) or not r["net"]["honest_agree"]
        )
    ]
    if odd:
        lines += ["", f"Network cells that did not run cleanly: {', '.join(odd)}."]
    different = [
        f"{r['rule']}/{r['attack']} (from round {_first_difference(r)})"
        for r in rows
        if r["gap_points"] is not None and not r["identical"]
    ]
    if different:
        lines += [
            "",
            "Cells whose devnet finalized a different model than the simulation: "
            + ", ".join(different)
            + ".",
        ]
    failed: dict[str, list[str]] = {}  # why -> the cells
    for r in rows:
        why = r["net"].get("error") or r["sim"].get("error")
        if why:
            failed.setdefault(why, []).append(f"{r['rule']}/{r['attack']}")
    if failed:
        lines += ["", "Cells without both figures:", ""]
        lines += [f"- {why}: {', '.join(cells)}" for why, cells in failed.items()]
    return "\n".join(lines)


def _pick(given: list[str] | None, default: tuple[str, ...], known: tuple, what: str) -> list:
    chosen = list(given or default)
    bad = [x for x in chosen if x not in known]
    if bad:
        raise SystemExit(f"unknown {what} {bad}; choose from {', '.join(known)}")
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"rules {', '.join(QUICK_RULES)} x attacks {', '.join(QUICK_ATTACKS)}",
    )
    parser.add_argument("--rules", nargs="+", help=f"default: {' '.join(RULES)}")
    parser.add_argument(
        "--attacks", nargs="+", help=f"default: {CLEAN} (clean) {' '.join(ATTACKS)}"
    )
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument(
        "--colluders-own",
        action="store_true",
        help="ALIE/IPM colluders estimate from their own updates (default: --omniscient, "
        "the simulation's model)",
    )
    parser.add_argument("--json", type=Path, help="write every cell and the checks here")
    parser.add_argument(
        "--out", type=Path, help="write the markdown here instead of docs/benchmarks.md"
    )
    parser.add_argument("--fresh", action="store_true", help="ignore cached cells")
    parser.add_argument(
        "--jobs",
        type=int,
        default=JOBS,
        help="runs at a time (simulations and devnets); 0: report the cached cells only",
    )
    args = parser.parse_args()
    rules = _pick(args.rules, QUICK_RULES if args.quick else RULES, RULES, "rules")
    every = (CLEAN, *ATTACKS)
    attacks = _pick(args.attacks, QUICK_ATTACKS if args.quick else every, every, "attacks")
    if CLEAN not in attacks:
        attacks.insert(0, CLEAN)  # the bite check needs the clean run
    if "fedavg" not in rules:
        rules.insert(0, "fedavg")  # the bite check is on FedAvg
    omniscient = not args.colluders_own
    started = time.perf_counter()
    done = run_matrix(rules, attacks, args.rounds, omniscient, args.fresh, args.jobs)
    wall = time.perf_counter() - started
    rows = collect(rules, attacks, args.rounds, omniscient, done)
    verdict = checks(rows)
    markdown = report(rows, verdict, args.rounds, omniscient)
    print(markdown)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "nodes": NODES,
                    "byzantine": BYZANTINE,
                    "rounds": args.rounds,
                    "model": MODEL,
                    "partition": PARTITION,
                    "seed": SEED,
                    "omniscient": omniscient,
                    "seconds": round(wall, 1),
                    "cells": rows,
                    "checks": verdict,
                },
                indent=2,
            )
        )
        print(f"wrote {args.json}")
    if args.out:
        args.out.write_text(markdown + "\n")
        print(f"wrote {args.out}")
    else:
        print(f"wrote {write_section('robust-network', markdown)}")


if __name__ == "__main__":
    main()
