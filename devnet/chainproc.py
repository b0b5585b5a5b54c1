"""A devnet's chain process: cleared for, started, and waited on without the launcher.

`devnet up` starts the chain before it imports the launcher (web3, eth-account, torch: about a
second), so the chain's own start-up runs meanwhile instead of after; the launcher then waits
for it to serve (`wait_for_chain`). Only the standard library and the devnet's file modules
load here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from flchain import safe_json
from flchain.devnet.manifest import MAX_MANIFEST_BYTES, DevnetError
from flchain.devnet.plan import DevnetPlan
from flchain.devnet.processes import existing_devnet

CHAIN_READY_FILE = "chain.json"  # the one JSON line `chain serve --json` prints when serving
CHAIN_LOG = "chain.log"
CHAIN_START_TIMEOUT = 60.0


def clear_directory(directory: Path, *, replace: bool) -> None:
    """Make `directory` ready for a new devnet: a stopped one there goes only with `replace`
    (DevnetError otherwise, and always while it runs)."""
    directory.mkdir(parents=True, exist_ok=True)
    earlier = existing_devnet(directory)
    if earlier is None:
        return
    if not replace:
        raise DevnetError(f"{earlier} would be replaced; pass --force")
    # `up` starts a new network, so the stopped one's chain and nodes go.
    for old_dir in [directory / "chain", *directory.glob("node-*")]:
        shutil.rmtree(old_dir, ignore_errors=True)


def flchain_cmd() -> list[str]:
    """The command line of this flchain (the interpreter running it, not whatever is on PATH)."""
    return [sys.executable, "-m", "flchain.cli"]


def spawn_chain(plan: DevnetPlan) -> subprocess.Popen[bytes]:
    """Start `flchain chain serve` in its own session; it writes its ready line to
    `CHAIN_READY_FILE` and its log to `CHAIN_LOG` in the devnet directory."""
    cmd = [
        *flchain_cmd(),
        "chain",
        "serve",
        "--port",
        "0",
        "--json",
        "--accounts",
        "2",
        "--chain",
        plan.chain,
    ]
    if plan.chain == "pyevm":  # -v: chain.log says what it serves and what it refuses
        cmd += ["-v", "--state", str(plan.directory / "chain")]
    ready = plan.directory / CHAIN_READY_FILE
    ready.unlink(missing_ok=True)
    with ready.open("wb") as out, (plan.directory / CHAIN_LOG).open("ab") as log:
        return subprocess.Popen(cmd, stdout=out, stderr=log, start_new_session=True)


def wait_for_chain(
    proc: subprocess.Popen[bytes], directory: Path, timeout: float = CHAIN_START_TIMEOUT
) -> dict:
    """The chain's ready line (its RPC URL and dev accounts), once it serves. Raises
    DevnetError when it exits first or stays silent for `timeout` seconds (then it is killed)."""
    ready, log = directory / CHAIN_READY_FILE, directory / CHAIN_LOG
    deadline = time.time() + timeout
    while time.time() < deadline:
        text = ready.read_text()
        if text.endswith("\n"):
            return safe_json.loads(text.splitlines()[0], max_bytes=MAX_MANIFEST_BYTES)
        if proc.poll() is not None:
            raise DevnetError(f"the chain exited at start-up; see {log}")
        time.sleep(0.05)
    proc.kill()
    raise DevnetError(f"the chain did not start within {timeout:.0f} s; see {log}")


def stop_chain(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """Stop a chain started here (its whole session) and reap it; killed if it lingers.
    One already reaped is left alone: its process group id may belong to another by now."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
