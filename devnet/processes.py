"""The processes of a devnet, for whoever watches or stops them: which are alive, what a node
last said, what a dead one logged, and how to take them all down. Light to import (no web3,
torch or libp2p), so `devnet status | logs | down` answer at once.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flchain import safe_json
from flchain.devnet.manifest import (
    MANIFEST,
    MAX_MANIFEST_BYTES,
    DevnetError,
    process_alive,
    read_manifest,
)
from flchain.node.files import RUNTIME_FILE, STATUS_FILE

_JSON_MAX_BYTES = MAX_MANIFEST_BYTES


def _node_log(node: dict) -> Path:
    return Path(node["dir"]) / "node.log"


def existing_devnet(directory: Path) -> str | None:
    """What `up` would replace in `directory`: a sentence about the devnet there, None when
    there is none. Raises DevnetError when that devnet still runs."""
    if not (directory / MANIFEST).exists():
        return None
    manifest = read_manifest(directory)
    if any(process_alive(p) for p in _pids(manifest)):
        raise DevnetError(
            f"a devnet is already running in {directory}; `flchain devnet down --dir "
            f"{directory}` first"
        )
    return (
        f"{directory} holds a stopped devnet (task {manifest.get('task_id')}, "
        f"{len(manifest.get('nodes', []))} nodes): its chain, node keys and logs"
    )


def node_status(node: dict, timeout: float = 1.0) -> dict | None:
    """The node's live /status; once it has stopped, the last status it wrote on the way out;
    None while it is starting."""
    directory = Path(node["dir"])
    try:
        runtime = safe_json.load_file(directory / RUNTIME_FILE, max_bytes=_JSON_MAX_BYTES)
        with urllib.request.urlopen(runtime["status_url"] + "/status", timeout=timeout) as r:
            return safe_json.loads(r.read(_JSON_MAX_BYTES + 1), max_bytes=_JSON_MAX_BYTES)
    except (OSError, ValueError, KeyError):
        pass
    try:
        return safe_json.load_file(directory / STATUS_FILE, max_bytes=_JSON_MAX_BYTES)
    except (OSError, ValueError):
        return None


LOG_TAIL_LINES = 15
"""How many of its last log lines `devnet up` shows of a process that exited too early."""


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` lines of a log (reads at most its last 64 KiB)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 65536))
            text = handle.read().decode(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:])


_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+ (?P<level>[A-Z]+) (?P<logger>[\w.]+):")


def own_log_line(line: str) -> bool:
    """Whether `devnet logs` shows a log line by default: flchain's own lines (the node's
    round lines among them) and every warning or error, not the libraries' info chatter.
    Lines that are not log records (round lines on stdout, tracebacks) are kept."""
    match = _LOG_LINE.match(line)
    if match is None:
        return bool(line.strip())
    return match["logger"].startswith("flchain") or match["level"] in (
        "WARNING",
        "ERROR",
        "CRITICAL",
    )


def node_exited(node: dict, status: dict | None) -> bool:
    """A node whose process is gone without having finished its task (its last status is
    not "done"): it crashed, was killed or refused to start."""
    if process_alive(node.get("pid")):
        return False
    return (status or {}).get("phase") != "done"


def casualty(manifest: dict, directory: Path) -> str | None:
    """What `devnet up` must stop for: the chain or a node that exited before the task
    ended, with the last lines of its log; None while everything runs."""
    if not process_alive(manifest.get("chain_pid")):
        log = directory / "chain.log"
        return f"the chain (pid {manifest.get('chain_pid')}) exited; last lines of {log}:\n" + (
            log_tail(log)
        )
    for node in manifest["nodes"]:
        if process_alive(node.get("pid")):
            continue  # asked for its status only once gone: `devnet up` looks twice a second
        if node_exited(node, node_status(node, timeout=0.5)):
            log = _node_log(node)
            return f"{node['name']} (pid {node.get('pid')}) exited; last lines of {log}:\n" + (
                log_tail(log)
            )
    return None


def _pids(manifest: dict) -> list[int]:
    pids = [manifest.get("chain_pid")] + [n.get("pid") for n in manifest.get("nodes", [])]
    return [p for p in pids if p]


def down(
    directory: Path,
    timeout: float = 10.0,
    before_chain: Callable[[dict[str, Any]], None] | None = None,
) -> list[int]:
    """Stop every process of the devnet: nodes first, then `before_chain(manifest)` (the
    last moment the chain answers with every node stopped), then the chain."""
    manifest = read_manifest(directory)
    stopped = []
    node_pids = [n.get("pid") for n in manifest["nodes"] if n.get("pid")]
    for group in (node_pids, [manifest.get("chain_pid")]):
        if group is not node_pids and before_chain is not None:
            before_chain(manifest)
        for pid in group:
            if pid and process_alive(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGTERM)
                stopped.append(pid)
        deadline = time.time() + timeout
        while any(process_alive(p) for p in group if p) and time.time() < deadline:
            time.sleep(0.1)
        for pid in group:
            if pid and process_alive(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
    return stopped
