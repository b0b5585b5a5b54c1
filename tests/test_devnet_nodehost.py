"""The devnet's node host: one process imports the node once and forks a `node run` per node."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flchain.devnet.launcher import process_alive
from flchain.devnet.nodehost import MAX_SPEC_BYTES, parse_specs


def _host(specs: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "flchain.devnet.nodehost"],
        input=json.dumps(specs).encode(),
        capture_output=True,
        timeout=120,
    )


def _wait_gone(pids: list[int], seconds: float = 30) -> None:
    deadline = time.time() + seconds
    while any(process_alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(process_alive(p) for p in pids)


def test_each_forked_node_runs_node_run_and_logs_to_its_own_file(tmp_path: Path) -> None:
    logs = [tmp_path / f"node-{i}.log" for i in range(3)]
    # a bad --rpc-less command line: each child's `node run` refuses it in its own log
    specs = [
        {"args": ["--dir", str(tmp_path / f"n{i}")], "log": str(p)} for i, p in enumerate(logs)
    ]
    host = _host(specs)
    assert host.returncode == 0, host.stderr.decode()[-2000:]
    pids = json.loads(host.stdout.decode().strip().splitlines()[-1])["pids"]
    assert len(set(pids)) == 3 and os.getpid() not in pids
    _wait_gone(pids)
    for log in logs:
        text = log.read_text()
        assert "Missing option" in text and "flchain node run" in text
    assert host.stdout.decode().count("{") == 1  # nothing of the children on the host's pipe


def test_the_host_refuses_what_is_not_a_list_of_node_specs() -> None:
    bad = ({"args": []}, [{"args": "x", "log": "y"}], [{"log": "y"}], [{"args": [1], "log": "y"}])
    for specs in bad:
        with pytest.raises(ValueError, match="expected a JSON list"):
            parse_specs(json.dumps(specs).encode())
    for hostile in (b" " * (MAX_SPEC_BYTES + 1), b"[" * 10_000):  # too big, too deep
        with pytest.raises(ValueError):
            parse_specs(hostile)
    host = _host(bad[0])  # and the host says so and starts nothing
    assert host.returncode != 0 and b"expected a JSON list" in host.stderr and not host.stdout


@pytest.mark.parametrize("outcome", ["fails", "returns without the host"])
def test_devnet_up_starts_the_host_first_and_never_leaves_it_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, outcome: str
) -> None:
    """`devnet up` starts the host, then the chain, before the launcher's imports (they
    overlap); when the launcher does not hand the host the nodes, the command kills it, and
    when the launcher fails, the chain too (a running devnet keeps its chain)."""
    from click.testing import CliRunner

    from flchain.cli import cli
    from flchain.devnet import launcher
    from flchain.devnet.manifest import DevnetError

    hosts: list[subprocess.Popen[bytes]] = []
    chains: list[subprocess.Popen[bytes]] = []

    def fake_up(
        plan: object,
        *,
        replace: bool,
        host: subprocess.Popen[bytes],
        chain_proc: subprocess.Popen[bytes],
    ) -> dict:
        hosts.append(host)
        assert host.poll() is None  # running, importing, while the launcher works
        assert chain_proc.poll() is None  # the chain too, started before the launcher's imports
        chains.append(chain_proc)
        if outcome == "fails":  # a launcher that fails without stopping what it was handed
            raise DevnetError("the chain exited at start-up")
        chain_proc.kill()  # this test's stand-in devnet needs no chain
        chain_proc.wait()
        return {"rpc_url": "http://127.0.0.1:9", "contract": "0x0", "task_id": 1, "nodes": []}

    monkeypatch.setattr(launcher, "up", fake_up)
    args = ["devnet", "up", "--dir", str(tmp_path / "dn"), "--nodes", "4", "--detach"]
    result = CliRunner().invoke(cli, [*args, "--model", "logreg"])
    assert result.exit_code == (1 if outcome == "fails" else 0), result.output
    (host,) = hosts
    assert host.poll() is not None  # killed and reaped: no orphan importing torch
    assert not process_alive(host.pid)
    (chain,) = chains
    assert chain.poll() is not None and not process_alive(chain.pid)  # no chain left behind
