"""End to end: real node processes over libp2p, agreeing on the py-evm devnet chain.

These are the product's acceptance tests: they start `flchain devnet up` as a user
would and check what the ledger and the nodes report.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from eth_account import Account
from web3 import Web3

from flchain.contracts import FLChainClient, RoundStatus, TaskStatus, bitmap_indices
from flchain.devnet.launcher import down, node_status, read_manifest, start_node, write_manifest

pytestmark = pytest.mark.slow
FLCHAIN = [sys.executable, "-m", "flchain.cli"]


def _devnet_up(directory: Path, *args: str, timeout: int = 420) -> dict:
    result = subprocess.run(
        [*FLCHAIN, "devnet", "up", "--dir", str(directory), "--json", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def _honest(summary: dict) -> list[dict]:
    return [n for n in summary["nodes"] if not n["attack"]]


def _simulate(*args: str) -> dict:
    """`flchain simulate --json` on one torch thread, as devnet nodes train."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    result = subprocess.run(
        [*FLCHAIN, "simulate", "--device", "cpu", "--json", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def test_five_nodes_reject_a_signflip_peer_and_agree_every_round(tmp_path: Path) -> None:
    # Multi-Krum's guarantee needs n > 2f + 2: five nodes are the fewest that tolerate one.
    # `devnet up` and `simulate` take the same settings; see the end of the test.
    common = ["--nodes", "5", "--rounds", "3", "--byzantine", "1", "--attack", "signflip"]
    common += ["--rule", "multikrum", "--f", "1", "--model", "cnn", "--seed", "3"]
    summary = _devnet_up(tmp_path, *common)
    assert summary["status"] == "finished"
    assert [r["status"] for r in summary["rounds"]] == ["finalized"] * 3
    (byzantine,) = summary["byzantine_members"]
    for r in summary["rounds"]:
        assert byzantine in r["submitted"]
        assert byzantine not in r["accepted"]
        assert len(r["accepted"]) == 4
    honest = _honest(summary)
    assert len(honest) == 4
    assert all(n["global_digest"] == summary["final_digest"] for n in honest)
    assert all(n["holds_final_model"] for n in honest)  # the blob, not just the digest
    for node in honest:
        history = {int(k): v for k, v in node["accuracy_history"].items()}
        assert sorted(history) == [1, 2, 3]
        assert history[3] > history[1]
        assert history[3] > 0.8
    # Rejected every round, the attacker's reputation fell below every honest member's.
    reputations = summary["reputations"]
    assert all(reputations[byzantine] < reputations[i] for i in range(5) if i != byzantine)
    # Every node's log tells each round in one line per step (flchain/commands/node_console.py), as
    # `flchain devnet logs node-I` shows it.
    for i in range(5):
        log = (tmp_path / f"node-{i}" / "node.log").read_text()
        for r in (1, 2, 3):
            assert f"round {r}  committed 0x" in log and f"round {r}  finalized 0x" in log
    # The simulation with the same settings and seed is the same run, bit for bit: the same
    # peer attacks, every peer holds the same data and trains from the same streams, and the
    # rule aggregates alike, so each round's global model has the digest finalized on chain.
    simulated = _simulate(*common)
    attacker = next(n for n in summary["nodes"] if n["attack"])
    assert simulated["byzantine_ids"] == [int(attacker["name"].split("-")[1])]
    assert [r["global_digest"] for r in simulated["rounds"]] == [
        r["global_digest"] for r in summary["rounds"]
    ]


def test_garbage_oversize_nan_wrong_digest_withheld_and_bad_votes_crash_nobody(
    tmp_path: Path,
) -> None:
    attacks = ("spam", "equivocate", "withhold", "badvote")
    args = ["--nodes", "6", "--rounds", "2", "--byzantine", "4", "--rule", "median"]
    for attack in attacks:
        args += ["--attack", attack]
    summary = _devnet_up(tmp_path, *args, "--model", "mlp")
    assert [r["status"] for r in summary["rounds"]] == ["finalized"] * 2
    honest = _honest(summary)
    assert len(honest) == 2
    assert all(n["global_digest"] == summary["final_digest"] for n in honest)
    index = {n["attack"]: n["member_index"] for n in summary["nodes"] if n["attack"]}
    for r in summary["rounds"]:
        assert index["spam"] not in r["accepted"]  # its NaN update
        assert index["withhold"] not in r["accepted"]  # nobody could fetch it
        assert index["equivocate"] in r["accepted"]  # lying about bytes costs retries only
    for node in honest:
        m = node["metrics"]
        assert sum(m["messages_rejected_total"].values()) > 0  # malformed, oversize, replayed
        assert m["updates_invalid_total"] >= 1  # the NaN blob matched its digest, not the rules
        assert m["updates_missing_total"] >= 1  # the withheld one
    every = [n["metrics"] for n in summary["nodes"]]
    assert sum(m["blob_failures_total"].get("digest_mismatch", 0) for m in every) >= 1
    # The random vote never wins, and losing votes cost reputation.
    reputations = summary["reputations"]
    honest_index = [n["member_index"] for n in honest]
    assert all(reputations[index["badvote"]] < reputations[i] for i in honest_index)


def _client(manifest: dict) -> FLChainClient:
    w3 = Web3(Web3.HTTPProvider(manifest["rpc_url"]))
    return FLChainClient(w3, manifest["contract"], Account.create())


def _wait(predicate, timeout: float, what: str, every: float = 0.5) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_node_killed_mid_round_restarts_and_takes_part_again(tmp_path: Path) -> None:
    args = ["--nodes", "4", "--rounds", "8", "--rule", "fedavg", "--model", "mlp"]
    args += ["--submit-window", "10", "--vote-window", "10", "--detach", "--json"]
    # An MLP round takes a second or two, so 8 rounds leave room to kill one mid-task, but
    # not `run`: on a loaded machine the launcher's exit (interpreter teardown with torch
    # loaded) can take as long as the whole task (CI once saw all 8 rounds end first).
    launcher = subprocess.Popen(
        [*FLCHAIN, "devnet", "up", "--dir", str(tmp_path), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait(lambda: (tmp_path / "devnet.json").exists() or launcher.poll() is not None, 180, "up")
    assert (tmp_path / "devnet.json").exists(), launcher.communicate()[1][-3000:]
    try:
        manifest = read_manifest(tmp_path)
        client, task_id = _client(manifest), manifest["task_id"]
        victim = manifest["nodes"][1]
        _wait(lambda: (node_status(victim) or {}).get("round", 0) >= 2, 180, "victim in round 2")
        killed_round = client.get_task(task_id).current_round
        os.killpg(victim["pid"], signal.SIGKILL)
        assert client.get_task(task_id).status == TaskStatus.RUNNING
        _wait(
            lambda: client.get_task(task_id).current_round > killed_round,
            120,
            "the round to end without the killed node",
        )
        victim["pid"] = start_node(manifest, victim).pid
        write_manifest(tmp_path, manifest)
        _wait(lambda: client.get_task(task_id).status == TaskStatus.FINISHED, 300, "task end")
        index = client.member_index(task_id, victim["address"])
        # The round it died in ended: finalized, or failed when it had committed and some
        # members fetched its update before it died while others could not.
        missed = client.get_round(task_id, killed_round)
        assert missed.status in (RoundStatus.FINALIZED, RoundStatus.FAILED)
        assert client.get_round(task_id, killed_round + 1).status == RoundStatus.FINALIZED
        later = [
            r
            for r in range(killed_round + 1, 9)
            if index in bitmap_indices(client.get_round(task_id, r).submitted)
        ]
        assert later, "the restarted node never committed again"
        final = client.get_task(task_id).global_digest
        _wait(lambda: (node_status(victim) or {}).get("phase") == "done", 60, "victim done")
        assert node_status(victim)["global_digest"] == "0x" + final.hex()
    finally:
        launcher.communicate(timeout=120)
        down(tmp_path)
    assert launcher.returncode == 0
