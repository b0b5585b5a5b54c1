"""`devnet up` supervises what it starts: a node that dies before the task ends stops the
whole devnet at once with its last log lines and a nonzero exit, and SIGTERM (as `timeout`
or a service manager sends it) tears everything down as Ctrl-C does. No orphans either way."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from flchain.devnet.launcher import node_status, own_log_line
from flchain.devnet.manifest import process_alive, read_manifest

pytestmark = pytest.mark.slow

FLCHAIN = [sys.executable, "-m", "flchain.cli"]
# Many short rounds: the task is still running whenever the test acts.
SMALL = ["--nodes", "3", "--rounds", "200", "--rule", "fedavg", "--model", "mlp"]


def _start(directory: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen(
        [*FLCHAIN, "devnet", "up", "--dir", str(directory), "--json", *SMALL],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _running_manifest(directory: Path, proc: subprocess.Popen[str], timeout: float) -> dict:
    """devnet.json once every node says it is in a round: it has joined the task (a node
    writes its runtime file before it joins, and CI once caught node-0 still joining)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        if (directory / "devnet.json").exists():
            manifest = read_manifest(directory)
            if all((node_status(n) or {}).get("round", 0) >= 1 for n in manifest["nodes"]):
                return manifest
        time.sleep(0.3)
    proc.kill()
    raise AssertionError("the devnet did not start")


def _pids(manifest: dict) -> list[int]:
    return [manifest["chain_pid"], *(n["pid"] for n in manifest["nodes"])]


def _all_gone(pids: list[int], timeout: float = 10.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not any(process_alive(p) for p in pids):
            return True
        time.sleep(0.1)
    return False


def test_a_node_that_dies_stops_the_devnet_with_its_last_log_lines(tmp_path: Path) -> None:
    proc = _start(tmp_path)
    manifest = _running_manifest(tmp_path, proc, 120)
    _the_explorer_serves_while_the_devnet_runs(proc, manifest)
    victim = manifest["nodes"][1]
    os.kill(victim["pid"], signal.SIGKILL)
    killed = time.time()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert time.time() - killed < 15  # at once, not after --timeout
    assert f"{victim['name']} (pid {victim['pid']}) exited" in err
    assert "node.log" in err and " flchain.node" in err  # its last log lines
    assert "Traceback" not in err
    assert _all_gone(_pids(manifest))
    status = subprocess.run(
        [*FLCHAIN, "devnet", "status", "--dir", str(tmp_path), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert status.returncode == 0, status.stderr[-2000:]
    report = json.loads(status.stdout)
    assert report["running"] is False
    assert report["processes"][victim["name"]] == "exited"
    _a_stopped_devnet_is_replaced_only_with_force(tmp_path)
    _logs_show_the_nodes_own_lines_and_the_chain_log(tmp_path)


def _the_explorer_serves_while_the_devnet_runs(proc: subprocess.Popen[str], manifest: dict) -> None:
    assert proc.stderr is not None
    line = proc.stderr.readline()  # the first thing `devnet up --json` says once it runs
    assert line.startswith("explorer: http://127.0.0.1:"), line
    url = line.split()[1]
    with urllib.request.urlopen(url + "api/tasks", timeout=30) as answer:
        tasks = json.loads(answer.read())
    assert manifest["task_id"] in [t["task_id"] for t in tasks["tasks"]]


def _a_stopped_devnet_is_replaced_only_with_force(directory: Path) -> None:
    again = subprocess.run(
        [*FLCHAIN, "devnet", "up", "--dir", str(directory), "--nodes", "3"],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,  # no terminal to ask on
    )
    assert again.returncode == 2
    assert "holds a stopped devnet" in again.stderr and "--force" in again.stderr
    assert (directory / "node-1" / "node.log").exists()  # nothing was wiped


def _logs_show_the_nodes_own_lines_and_the_chain_log(directory: Path) -> None:
    def logs(*args: str) -> list[str]:
        result = subprocess.run(
            [*FLCHAIN, "devnet", "logs", "--dir", str(directory), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()

    chain = logs("chain")
    assert any("serving" in line and "WebSocket" in line for line in chain)
    own = logs("0", "--lines", "1000")
    every = logs("0", "--all", "--lines", "1000")
    assert any("joined task" in line for line in own)
    assert len(own) <= len(every)
    for line in own:
        if " INFO " in line[:40]:
            assert " INFO flchain" in line  # the libraries' info lines only with --all


def test_only_flchain_lines_and_warnings_are_shown_by_default() -> None:
    assert own_log_line("2026-11-30 07:39:32,871 INFO flchain.node.engine: joined task 1\n")
    assert not own_log_line("2026-11-30 07:39:32,871 INFO libp2p.host: stream opened\n")
    assert own_log_line("2026-11-30 07:39:32,871 WARNING libp2p.host: peer gone\n")
    assert own_log_line("round 3  committed 0x1a2b  (605 KB)\n")  # not a log record
    assert not own_log_line("\n")


def test_sigterm_tears_the_devnet_down_like_ctrl_c(tmp_path: Path) -> None:
    proc = _start(tmp_path)
    manifest = _running_manifest(tmp_path, proc, 120)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert _all_gone(_pids(manifest))
