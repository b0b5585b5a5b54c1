"""`casualty`, what `devnet up` checks twice a second: a node that exited before the task
ended stops the devnet with its last log lines, and a running node is not asked anything."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from httpkit import QuietHandler, serving

from flchain.devnet.processes import casualty
from flchain.node.files import RUNTIME_FILE, STATUS_FILE


@pytest.fixture
def status_server() -> Iterator[tuple[str, list[str]]]:
    """A node's /status endpoint that records every request it gets."""
    hits: list[str] = []

    class Handler(QuietHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            hits.append(self.path)
            self.answer(json.dumps({"phase": "training"}).encode())

    with serving(Handler) as url:
        yield url, hits


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _node(tmp_path: Path, name: str, pid: int, status_url: str) -> dict:
    directory = tmp_path / name
    directory.mkdir()
    (directory / RUNTIME_FILE).write_text(json.dumps({"status_url": status_url}))
    (directory / "node.log").write_text(f"{name} starting\n{name}: out of memory\n")
    return {"name": name, "dir": str(directory), "pid": pid}


def test_running_nodes_are_not_asked_and_an_exited_one_stops_the_devnet(
    tmp_path: Path, status_server: tuple[str, list[str]]
) -> None:
    url, hits = status_server
    running = [_node(tmp_path, f"node-{i}", os.getpid(), url) for i in range(3)]
    manifest = {"chain_pid": os.getpid(), "nodes": running}
    assert casualty(manifest, tmp_path) is None
    assert hits == []  # nothing asked of a node whose process runs

    finished = _node(tmp_path, "node-3", _dead_pid(), "http://127.0.0.1:9")
    (Path(finished["dir"]) / STATUS_FILE).write_text(json.dumps({"phase": "done"}))
    manifest["nodes"] = [*running, finished]
    assert casualty(manifest, tmp_path) is None  # it ended its task, then stopped

    crashed = _node(tmp_path, "node-4", _dead_pid(), "http://127.0.0.1:9")
    manifest["nodes"] = [*running, finished, crashed]
    trouble = casualty(manifest, tmp_path)
    assert trouble is not None and trouble.startswith("node-4 (pid")
    assert "node-4: out of memory" in trouble
    assert hits == []
