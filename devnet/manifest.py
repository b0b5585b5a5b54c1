"""`devnet.json`: the one reader and writer of the file `flchain devnet up` leaves in its
directory, and what it says about the devnet (running or stopped, where its chain journal is).

`devnet status|logs|down`, the launcher and `flchain ledger --devnet DIR` all read it here, so
a missing or damaged file is reported the same way everywhere: one `DevnetError` line naming
the file, never a traceback. Cheap to import (no py-evm, no web3): the ledger CLI uses it.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from flchain import safe_json

MANIFEST = "devnet.json"
CHAIN_STATE = "chain"  # DIR/chain: the py-evm chain's journal (`chain serve --state`)
JOURNAL_FILE = "journal.jsonl"  # as flchain.devnet.journal names it (not imported: py-evm free)
# DIR/summary.json: the final summary, saved when the devnet stops (see `save_summary`).
SUMMARY_FILE = "summary.json"
PEERS_FILE = "peers.json"  # DIR/peers.json: every node's address (`node run --peers-file`)
# devnet.json lists a few dozen nodes at most; node /status answers share the bound.
MAX_MANIFEST_BYTES = 4 << 20
_MAX_DEPTH = 16


class DevnetError(RuntimeError):
    """The devnet cannot start, or a command needs a devnet that is not there."""


def read_manifest(directory: Path) -> dict[str, Any]:
    """DIR/devnet.json, checked for what every reader relies on (rpc_url, contract, task_id,
    nodes with a dir); extra keys pass through. DevnetError, one line, when it is missing,
    not JSON within limits or of the wrong shape."""
    path = Path(directory) / MANIFEST
    try:
        data = safe_json.load_file(path, max_bytes=MAX_MANIFEST_BYTES, max_depth=_MAX_DEPTH)
    except FileNotFoundError:
        raise DevnetError(
            f"no devnet in {directory}: {path} not found (`flchain devnet up --dir DIR` writes it)"
        ) from None
    except (OSError, ValueError, RecursionError) as exc:
        raise DevnetError(f"{path} is not valid JSON within limits: {exc}") from None
    if not isinstance(data, dict):
        raise DevnetError(f"{path} must hold a JSON object")
    rpc_url, address, task_id = data.get("rpc_url"), data.get("contract"), data.get("task_id")
    if not isinstance(rpc_url, str) or not isinstance(address, str):
        raise DevnetError(f"{path}: rpc_url and contract must be strings")
    if isinstance(task_id, bool) or not isinstance(task_id, int) or task_id < 1:
        raise DevnetError(f"{path}: task_id must be a positive integer")
    nodes = data.setdefault("nodes", [])
    if not isinstance(nodes, list) or not all(
        isinstance(n, dict) and isinstance(n.get("dir"), str) for n in nodes
    ):
        raise DevnetError(f"{path}: nodes must be a list of objects with a 'dir'")
    for i, node in enumerate(nodes):
        if not isinstance(node.get("name"), str):
            node["name"] = f"node-{i}"
        for key in ("address", "attack"):
            if not isinstance(node.get(key), str | None):
                raise DevnetError(f"{path}: node {node['name']}'s {key} must be a string")
    return data


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    """Replace DIR/devnet.json atomically: a reader never sees half a file."""
    tmp = Path(directory) / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, Path(directory) / MANIFEST)


def _stopped_key(directory: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """What a saved summary was computed from: this devnet (its contract, task and chain
    process) and its journal as the stopped chain left it (size and mtime; none for anvil)."""
    journal = Path(directory) / CHAIN_STATE / JOURNAL_FILE
    try:
        stat = journal.stat()
        state = [stat.st_size, stat.st_mtime_ns]
    except OSError:
        state = None
    keys = ("contract", "task_id", "chain_pid", "rpc_url")
    return {**{k: manifest.get(k) for k in keys}, "journal": state}


def save_summary(directory: Path, manifest: dict[str, Any], summary: dict[str, Any]) -> None:
    """Keep a stopped devnet's final summary in DIR/summary.json, so `devnet status` shows it
    without replaying the chain journal (seconds of py-evm per command, growing with the
    rounds). Written atomically; a directory that cannot take it only loses the shortcut."""
    path = Path(directory) / SUMMARY_FILE
    data = {"key": _stopped_key(directory, manifest), "summary": summary}
    with contextlib.suppress(OSError):
        tmp = path.with_name(SUMMARY_FILE + ".tmp")
        tmp.write_text(json.dumps(data) + "\n")
        os.replace(tmp, path)


def saved_summary(directory: Path, manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The summary `save_summary` kept for this stopped devnet, None when there is none or it
    was computed from another chain or another state of the journal."""
    try:
        data = safe_json.load_file(
            Path(directory) / SUMMARY_FILE, max_bytes=MAX_MANIFEST_BYTES, max_depth=_MAX_DEPTH
        )
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or data.get("key") != _stopped_key(directory, manifest):
        return None
    summary = data.get("summary")
    return summary if isinstance(summary, dict) else None


def node_dir(directory: Path, raw: str) -> Path:
    """A node dir from devnet.json: absolute, relative to DIR, or else (as the launcher may
    record it) relative to the working directory it was started from."""
    path = Path(raw)
    if path.is_absolute():
        return path
    inside = Path(directory) / path
    return path if not inside.exists() and path.exists() else inside


def process_alive(pid: int | None) -> bool:
    """Whether `pid` runs (a zombie, exited but not reaped, does not)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.split(")")[-1].split()[0] == "Z":
            return False
    return True


def chain_stopped(manifest: dict[str, Any]) -> bool:
    """Whether the devnet's chain process is known to have stopped. A devnet.json without a
    chain pid (written by hand, or for a chain started elsewhere) counts as running: its RPC
    is the only way to it."""
    pid = manifest.get("chain_pid")
    return isinstance(pid, int) and not isinstance(pid, bool) and not process_alive(pid)


def journal_dir(directory: Path, manifest: dict[str, Any]) -> Path | None:
    """DIR/chain when it holds the py-evm chain's journal; None for an anvil chain (which
    keeps no state) or a journal that is gone."""
    if manifest.get("chain", "pyevm") != "pyevm":
        return None
    state = Path(directory) / CHAIN_STATE
    return state if (state / JOURNAL_FILE).is_file() else None


def stopped_journal(directory: Path, manifest: dict[str, Any]) -> Path:
    """The journal a stopped devnet's chain left (see `journal_dir`); DevnetError saying why
    there is none."""
    found = journal_dir(directory, manifest)
    if found is not None:
        return found
    if manifest.get("chain", "pyevm") != "pyevm":
        why = f"its {manifest.get('chain')} chain keeps no state"
    else:
        why = f"{Path(directory) / CHAIN_STATE / JOURNAL_FILE} is missing"
    raise DevnetError(
        f"the devnet in {directory} is stopped and left no chain journal ({why}): "
        "nothing to read its ledger from"
    )
