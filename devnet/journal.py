"""Append-only, fsynced JSON-lines journal that makes the devnet chain survive kill -9.

Each line is one JSON object describing a state change (see `flchain.devnet.chain` for the
record kinds). A record is acknowledged to the RPC client only after its line is on disk, so a
crash loses at most a request that never got an answer. A crash in the middle of a write leaves
a torn last line without its newline; it is dropped on the next open and the file is cut back to
the last whole line so later appends stay well-formed. Damage anywhere else is refused loudly.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

from flchain import safe_json

JOURNAL_FILE = "journal.jsonl"
LOCK_FILE = "journal.lock"
# One record: a raw transaction (at most one request body, as hex) plus a little framing.
# Records are flat; the genesis record nests its config one level deeper.
MAX_RECORD_BYTES = 64 << 20
MAX_RECORD_DEPTH = 8

_log = logging.getLogger(__name__)


class JournalError(ValueError):
    """The state directory is unusable: corrupt, from another chain, or locked."""


class Journal:
    """An open journal in a state directory; holds an exclusive lock until closed."""

    def __init__(self, path: Path, handle: BinaryIO, lock_fd: int) -> None:
        self.path = path
        self._handle = handle
        self._lock_fd = lock_fd

    @classmethod
    def open(cls, state_dir: Path) -> tuple[Journal, list[dict[str, Any]]]:
        """Open (or create) the journal in `state_dir`; return it with the records it holds."""
        state_dir = Path(state_dir)
        if state_dir.exists() and not state_dir.is_dir():
            raise JournalError(f"state path {state_dir} exists and is not a directory")
        state_dir.mkdir(parents=True, exist_ok=True)
        lock_fd = _acquire_lock(state_dir / LOCK_FILE)
        try:
            path = state_dir / JOURNAL_FILE
            created = not path.exists()
            records, good_length = _read_records(path) if not created else ([], 0)
            handle = _open_for_append(path, good_length)
            if created:
                _fsync_dir(state_dir)
        except BaseException:
            os.close(lock_fd)
            raise
        return cls(path, handle, lock_fd), records

    def append(self, records: Sequence[dict[str, Any]]) -> None:
        """Write records as lines and fsync once: all of them are durable when this returns."""
        if not records:
            return
        payload = b"".join(
            json.dumps(record, separators=(",", ":"), sort_keys=True).encode() + b"\n"
            for record in records
        )
        self._handle.write(payload)
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        """Close the file and release the directory lock; safe to call twice."""
        if self._handle.closed:
            return
        self._handle.close()
        os.close(self._lock_fd)


def read_journal(state_dir: Path) -> list[dict[str, Any]]:
    """The records of a journal without opening it for writing (for inspection and tests)."""
    records, _ = _read_records(Path(state_dir) / JOURNAL_FILE)
    return records


def _read_records(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Parse whole lines; return the records and the byte length they span."""
    data = path.read_bytes()
    lines = data.split(b"\n")
    # Everything after the final newline is a torn write (or empty when the file ends cleanly).
    complete = lines[:-1]
    records: list[dict[str, Any]] = []
    length = 0
    for number, line in enumerate(complete, start=1):
        record = _parse_line(line)
        if record is None:
            if number == len(complete) and not lines[-1]:
                # The last line is garbage even though it has its newline: treat as torn.
                break
            raise JournalError(f"{path}: line {number} is corrupt; refusing to guess the state")
        records.append(record)
        length += len(line) + 1
    return records, length


def _parse_line(line: bytes) -> dict[str, Any] | None:
    try:
        record = safe_json.loads(line, max_bytes=MAX_RECORD_BYTES, max_depth=MAX_RECORD_DEPTH)
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("op"), str):
        return None
    return record


def _open_for_append(path: Path, good_length: int) -> BinaryIO:
    """Open for appending after cutting off anything past the last whole record."""
    handle = open(path, "ab")  # noqa: SIM115 - returned to the caller, who owns it
    try:
        if handle.tell() != good_length:
            _log.warning("dropping a torn last journal line in %s", path)
            handle.truncate(good_length)
            handle.seek(good_length)
            os.fsync(handle.fileno())
    except BaseException:
        handle.close()
        raise
    return handle


def _acquire_lock(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise JournalError(f"state directory {path.parent} is in use by another chain") from None
    return fd


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
