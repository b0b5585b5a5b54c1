"""The README's CLI tour, run as written: its commands are read from the README (not copied
here) and run in order in a fresh directory, each as a user types it (`flchain ...` in a
shell whose working directory holds `.flchain-devnet`).

The tour's first line, an attached 8-node devnet under the ALIE attack, is the one command not
run here: it trains eight CNNs for ten rounds (minutes on two cores). Its arguments are checked
by test_docs_commands.py, and tests/test_devnet_attacks.py runs attacks on a devnet.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shlex
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from docskit import readme_blocks, run_documented

TOUR = next(block for block in readme_blocks() if "flchain ledger serve" in " ".join(block))
NOT_RUN = TOUR[0]  # the attached 8-node ALIE devnet (see the module docstring)


def _flchain(cwd: Path, line: str) -> subprocess.CompletedProcess[str]:
    return run_documented(line, cwd, timeout=240)


def _serve(cwd: Path, line: str) -> None:
    """`ledger serve` runs until Ctrl-C: start it, read its URL, load the page and the API
    as a browser would, then stop it as a user does."""
    args = shlex.split(line)
    proc = subprocess.Popen(
        [sys.executable, "-m", "flchain.cli", *args[1:]],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "http://127.0.0.1:8600/" in first, first
        with urllib.request.urlopen("http://127.0.0.1:8600/", timeout=30) as page:
            assert page.status == 200 and b"<html" in page.read().lower()
        with urllib.request.urlopen("http://127.0.0.1:8600/api/tasks", timeout=30) as api:
            tasks = json.load(api)
        assert [t["task_id"] for t in tasks["tasks"]] == [1]
    finally:
        proc.send_signal(2)  # Ctrl-C
        _, err = proc.communicate(timeout=30)
    assert "Traceback" not in err, err


def _wait_for_round(cwd: Path, number: int, timeout: float = 300) -> None:
    """What a reader of `devnet status` waits for before `ledger round 2`: round 2 finalized."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        shown = _flchain(cwd, "flchain ledger rounds --devnet .flchain-devnet --json")
        rounds = json.loads(shown.stdout)
        if any(r["round"] == number and r["status"] == "finalized" for r in rounds):
            return
        time.sleep(2)
    pytest.fail(f"round {number} did not finalize within {timeout} s")


@pytest.mark.slow
def test_the_readme_cli_tour_runs_as_written(tmp_path: Path) -> None:
    assert NOT_RUN.startswith("flchain devnet up --nodes 8") and "--detach" not in NOT_RUN
    seen: list[str] = []
    try:
        for line in TOUR[1:]:
            seen.append(line)
            if line.startswith("flchain ledger serve"):
                _serve(tmp_path, line)
                continue
            if line.startswith("flchain ledger round 2"):
                _wait_for_round(tmp_path, 2)
            result = _flchain(tmp_path, line)
            _check(tmp_path, line, result.stdout)
    finally:
        if (tmp_path / ".flchain-devnet").exists():
            subprocess.run(
                [sys.executable, "-m", "flchain.cli", "devnet", "down"],
                cwd=tmp_path,
                capture_output=True,
                timeout=60,
                check=False,
            )
    assert seen == TOUR[1:]


def _check(cwd: Path, line: str, out: str) -> None:
    """What each tour command shows, as far as the README says."""
    words = " ".join(out.split())
    if line.startswith("flchain devnet up"):
        assert "devnet running in .flchain-devnet" in words
    elif line == "flchain devnet status":
        assert ("is stopped" in words) == _stopped(cwd)
        assert "node-1" in words
    elif line.startswith("flchain devnet logs node-1"):
        assert out.strip()
    elif line.startswith("flchain ledger rounds"):
        assert "round" in words.lower()
    elif line.startswith("flchain ledger round 2"):
        assert json.loads(out)["round"] == 2
    elif line.startswith("flchain ledger members") and "--csv" in line:
        rows = list(csv.DictReader(io.StringIO(out)))
        assert sorted(r["node"] for r in rows) == [f"node-{i}" for i in range(4)]
    elif line.startswith("flchain ledger members"):
        assert all(f"node-{i}" in words for i in range(4))
    elif line.startswith("flchain ledger verify"):
        ok = re.search(r"(\d+) ok, 0 mismatch", words)
        assert ok is not None and int(ok.group(1)) > 0, words
    elif line.startswith("flchain ledger export"):
        exported = json.loads((cwd / "ledger.json").read_text())
        assert [r["round"] for r in exported["rounds"]][:2] == [1, 2]
    elif line == "flchain devnet down":
        assert "stopped" in words
    else:
        pytest.fail(f"the README's tour has a command this test does not know: {line!r}")


def _stopped(cwd: Path) -> bool:
    from flchain.devnet.manifest import chain_stopped, read_manifest

    return chain_stopped(read_manifest(cwd / ".flchain-devnet"))
