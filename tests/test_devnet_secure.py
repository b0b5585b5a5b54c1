"""End to end, secure mode: real node processes, masked Paillier bundles on libp2p, the
decryptor chosen on chain, dropouts re-masked, Siren alarms on the decrypted models."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from test_devnet_e2e import FLCHAIN, _client, _devnet_up, _wait

from flchain.contracts import RoundStatus, TaskStatus, bitmap_indices
from flchain.devnet.launcher import down, read_manifest

pytestmark = pytest.mark.slow


def test_secure_rounds_finalize_with_a_rotating_decryptor(tmp_path: Path) -> None:
    summary = _devnet_up(
        tmp_path,
        "--secure",
        "--nodes",
        "4",
        "--rounds",
        "3",
        "--model",
        "mlp",
        "--submit-window",
        "30",
        "--vote-window",
        "30",
    )
    assert summary["status"] == "finished"
    rounds = summary["rounds"]
    assert [r["status"] for r in rounds] == ["finalized"] * 3
    for r in rounds:
        assert r["accepted"] == r["submitted"] == [0, 1, 2, 3]
        assert r["sum_digest"] is not None and r["remasked"] == []
    assert len({r["sum_digest"] for r in rounds}) == 3
    assert len({r["decryptor"] for r in rounds}) >= 2  # the role rotates
    nodes = summary["nodes"]
    assert all(n["global_digest"] == summary["final_digest"] for n in nodes)
    for node in nodes:
        history = {int(k): v for k, v in node["accuracy_history"].items()}
        assert sorted(history) == [1, 2, 3]
        assert history[3] > history[1] and history[3] > 0.8
        assert node["metrics"]["sums_rejected_total"] == 0
        assert node["metrics"]["updates_invalid_total"] == 0


def test_a_dead_member_is_remasked_out_and_never_chosen_to_decrypt_again(tmp_path: Path) -> None:
    # 1024-bit Paillier keys: this test is about who re-masks and who decrypts, not key
    # strength, and smaller keys encrypt and decrypt several times faster on a loaded machine.
    args = ["--secure", "--secure-key-bits", "1024", "--nodes", "4", "--rounds", "3"]
    # The dead member holds each round it misses for the whole submit window; the live ones
    # commit about a second after a round opens (an MLP), so 6 s leaves a loaded machine room.
    args += ["--model", "mlp", "--submit-window", "6", "--vote-window", "40", "--detach", "--json"]
    # Not `run`: the launcher's exit (interpreter teardown with torch loaded) can take seconds
    # on a loaded machine, while the nodes already run rounds; the victim must die before it
    # has committed more than a round, so act as soon as the manifest is written.
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
        _wait(lambda: client.get_task(task_id).status == TaskStatus.RUNNING, 120, "all joined")
        # Not round 1's decryptor: a dead decryptor fails its round by design (nobody else
        # holds its key); this test is about a dead member that only contributes.
        first_decryptor = client.decryptor(task_id, 1)
        victim = next(
            n
            for n in reversed(manifest["nodes"])
            if client.member_index(task_id, n["address"]) != first_decryptor
        )
        os.killpg(victim["pid"], signal.SIGKILL)
        index = client.member_index(task_id, victim["address"])
        _wait(lambda: client.get_task(task_id).status == TaskStatus.FINISHED, 400, "task end")
        rounds = {r: client.get_round(task_id, r) for r in range(1, 4)}
        # The victim may have committed round 1 before it died; from then on it is silent.
        silent = [r for r, info in rounds.items() if index not in bitmap_indices(info.submitted)]
        assert silent, "the killed node kept submitting"
        if client.decryptor(task_id, silent[0]) == index:
            # It committed round 1 and so was not silent when round 2 chose it to decrypt:
            # a dead decryptor fails its round by design (nobody else holds its key).
            assert rounds[silent[0]].status == RoundStatus.FAILED
            silent = silent[1:]
        assert silent, "no round ran without the killed node and with a live decryptor"
        first = silent[0]
        dropped = rounds[first]
        others = sorted(set(range(4)) - {index})
        assert dropped.status == RoundStatus.FINALIZED
        assert bitmap_indices(dropped.submitted) == others
        assert bitmap_indices(dropped.remasked) == others  # every survivor re-committed
        assert bitmap_indices(dropped.accepted) == others
        assert dropped.sum_digest != bytes(32)
        for r in silent[1:]:  # a member silent last round is skipped as decryptor
            assert client.decryptor(task_id, r) != index
            assert rounds[r].status == RoundStatus.FINALIZED
    finally:
        launcher.communicate(timeout=120)
        down(tmp_path)
    assert launcher.returncode == 0


def test_siren_alarms_still_work_on_secure_models(tmp_path: Path) -> None:
    summary = _devnet_up(
        tmp_path,
        "--secure",
        "--nodes",
        "4",
        "--rounds",
        "2",
        "--model",
        "mlp",
        "--byzantine",
        "1",
        "--attack",
        "signflip",
        "--alarm-window",
        "20",
        "--submit-window",
        "30",
        "--vote-window",
        "30",
    )
    assert summary["status"] == "finished"
    (byzantine,) = summary["byzantine_members"]
    alarmed = {a["round"] for a in summary["alarms"]}
    assert alarmed, "no node raised an alarm against the poisoned mean"
    assert {a["member"] for a in summary["alarms"]} - {byzantine}, "no honest alarm"
    statuses = {r["round"]: r["status"] for r in summary["rounds"]}
    assert any(statuses[r] == "reverted" for r in alarmed)  # the alarm undid a poisoned model
    assert sum(n["metrics"]["alarms_raised_total"] for n in summary["nodes"]) == len(
        summary["alarms"]
    )
