"""Content-addressed blob store on disk: `<root>/blobs/<sha256 hex>`.

Model updates and global models are stored under the sha256 of exactly their bytes, the
same digest that goes on chain, so "do I have it" and "is it intact" are one question.
Writes are atomic (temporary file, rename): a crash leaves either the whole blob or nothing.
The node's own blobs (its committed updates, global models, keys) are also fsynced with their
directory, since it must still serve them after a crash; a peer's blob is not, since it can
be fetched again, and a torn one fails its hash. Reads re-hash, so a blob damaged on disk is
reported, removed and treated as missing rather than served to peers or fed to aggregation.

The last blobs put or read are also kept in memory (`recent`, at most `cache_bytes`): a node
serves its own update to every member of the round, and reading and hashing it again from
disk for each, in a worker thread, was work for nothing.

A peer's unpinned blob that fits that memory is kept only there: it is written to disk only
if the memory cache drops it before the round it belongs to is pruned, or when it is pinned.
Each member fetches every other member's update every round, and writing each as a file kept
ext4 creating and deleting a few hundred files a second at N = 16 (its inode allocator scans
past recently deleted inodes): about 4% of the devnet's CPU, up to a tenth of its round time.
A crash loses these blobs; they can be fetched again, as a torn one would be.

Retention: every blob belongs to a round (the store's `round` when it was put, unless the
caller says otherwise), recorded in a small index file next to the blobs (`blobs-index.json`,
written atomically; a peer's blob is recorded there with the next write, not one write
per blob). `prune` keeps the last `keep_rounds` rounds and every pinned blob (the
finalized global models, the initial model, the node's own Paillier key) and deletes the rest.
The index is advisory: a blob it does not name (the index was lost or damaged) joins the
first round set after start, so it is kept at least `keep_rounds` more rounds (its pin, if it
had one, is lost with the index; peers keep their own pins of the global models). A byte
budget (`max_store_bytes`) bounds what peers can make the store hold: their blobs are refused
beyond it, the node's own are not. A full disk is a counted, logged, non-fatal error: the
blob is simply not kept.

Methods block on disk I/O; from trio call them through `trio.to_thread.run_sync`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import trio

from flchain import safe_json
from flchain.node.metrics import Metrics

DEFAULT_MAX_BLOB_BYTES: Final = 64 * 1024 * 1024
DEFAULT_KEEP_ROUNDS: Final = 5
DEFAULT_MAX_STORE_BYTES: Final = 8 * 1024 * 1024 * 1024  # 8 GiB
DEFAULT_CACHE_BYTES: Final = 64 * 1024 * 1024  # a round's updates at N = 16 are ~10 MB (CNN)
INDEX_FILE: Final = "blobs-index.json"
_INDEX_VERSION: Final = 1
_MAX_INDEX_ENTRIES: Final = 1_000_000  # ~100 bytes each: the index file stays under ~100 MB
_MAX_INDEX_BYTES: Final = 128 * 1024 * 1024
_HEX_RE: Final = re.compile(r"[0-9a-f]{64}")
_TMP_PREFIX: Final = ".tmp-"
_DISK_FULL: Final = frozenset({errno.ENOSPC, errno.EDQUOT})

log = logging.getLogger(__name__)


class BlobStoreError(ValueError):
    """A bad digest or a blob the store refuses."""


class BlobTooLargeError(BlobStoreError):
    """The blob is over the store's size limit."""


def sha256(data: bytes) -> bytes:
    """The 32-byte digest a blob is stored and announced under."""
    return hashlib.sha256(data).digest()


def as_digest(value: bytes | str) -> bytes:
    """Normalise a digest given as 32 bytes or as hex (with or without 0x) to 32 bytes."""
    if isinstance(value, bytes | bytearray):
        if len(value) != 32:
            raise BlobStoreError(f"a digest is 32 bytes, got {len(value)}")
        return bytes(value)
    if isinstance(value, str):
        text = value[2:] if value.startswith(("0x", "0X")) else value
        if not _HEX_RE.fullmatch(text.lower()):
            raise BlobStoreError(f"{value!r} is not a 32-byte hex digest")
        return bytes.fromhex(text)
    raise BlobStoreError(f"a digest is bytes or hex str, got {type(value).__name__}")


class BlobStore:
    """Blobs by sha256 under `root/blobs`; at most `max_blob_bytes` each."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES,
        metrics: Metrics | None = None,
        keep_rounds: int = DEFAULT_KEEP_ROUNDS,
        max_store_bytes: int = DEFAULT_MAX_STORE_BYTES,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        if max_blob_bytes <= 0:
            raise BlobStoreError(f"max_blob_bytes must be positive, got {max_blob_bytes}")
        if keep_rounds < 1:
            raise BlobStoreError(f"keep_rounds must be at least 1, got {keep_rounds}")
        if max_store_bytes <= 0:
            raise BlobStoreError(f"max_store_bytes must be positive, got {max_store_bytes}")
        if cache_bytes < 0:
            raise BlobStoreError(f"cache_bytes must be 0 or more, got {cache_bytes}")
        self.dir = Path(root) / "blobs"
        self.index_path = Path(root) / INDEX_FILE
        self.max_blob_bytes = max_blob_bytes
        self.keep_rounds = keep_rounds
        self.max_store_bytes = max_store_bytes
        self.last_error: str | None = None  # the latest disk-full or budget refusal, for /status
        self._metrics = metrics
        self._lock = threading.Lock()  # index, byte count, cache; called from several threads
        self.cache_bytes = cache_bytes
        self._recent: OrderedDict[bytes, bytes] = OrderedDict()  # digest -> verified bytes
        self._recent_bytes = 0
        self._index_dirty = False  # peer blobs recorded since the index was last written
        # peer blobs held only in memory (hex keys); `_spilling` holds those the cache has let
        # go while they are written to disk, so they stay readable meanwhile
        self._unsaved: set[str] = set()
        self._spilling: dict[bytes, bytes] = {}
        self.dir.mkdir(parents=True, exist_ok=True)
        for stale in self.dir.glob(_TMP_PREFIX + "*"):  # left by a crash mid-write
            stale.unlink(missing_ok=True)
        self.round, self._index = self._load_index()
        self._sizes: dict[str, int] = {}
        for digest in self.digests():
            with contextlib.suppress(FileNotFoundError):
                self._sizes[digest.hex()] = (self.dir / digest.hex()).stat().st_size
        self._index = {key: value for key, value in self._index.items() if key in self._sizes}
        # blobs the index does not name (a lost or damaged index): they join the first round
        # set after start, the node's real current round
        self._untagged = set(self._sizes) - set(self._index)

    @property
    def total_bytes(self) -> int:
        """Bytes of all blobs in the store."""
        with self._lock:
            return sum(self._sizes.values())

    def set_round(self, round_: int) -> None:
        """Blobs put from now on (without an explicit round) belong to `round_`."""
        with self._lock:
            if round_ > self.round or self._untagged:
                self.round = max(self.round, round_)
                for key in self._untagged:
                    if key in self._sizes and key not in self._index:
                        self._index[key] = (self.round, False)
                self._untagged.clear()
                self._save_index()

    def round_of(self, digest: bytes | str) -> int | None:
        """The round a stored blob belongs to (None if the index does not name it)."""
        entry = self._index.get(as_digest(digest).hex())
        return None if entry is None else entry[0]

    def is_pinned(self, digest: bytes | str) -> bool:
        entry = self._index.get(as_digest(digest).hex())
        return entry is not None and entry[1]

    def pin(self, digest: bytes | str) -> None:
        """Keep this blob whatever its round (a finalized global model, a key); a blob held
        only in memory is written to disk first."""
        key = as_digest(digest).hex()
        self._save_held(key)
        with self._lock:
            round_ = self._index.get(key, (self.round, False))[0]
            self._index[key] = (round_, True)
            self._save_index()

    def prune(self, current_round: int | None = None) -> int:
        """Delete unpinned blobs of rounds before the last `keep_rounds`; returns how many.

        With `current_round` r the kept rounds are r - keep_rounds + 1 .. r (and later ones).
        """
        with self._lock:
            now = self.round if current_round is None else current_round
            cutoff = now - self.keep_rounds + 1
            doomed = []
            for key in self._sizes:
                round_, pinned = self._index.get(key, (now, False))
                if not pinned and round_ < cutoff:
                    doomed.append(key)
            for key in doomed:
                if key in self._unsaved:
                    self._unsaved.discard(key)
                else:
                    (self.dir / key).unlink(missing_ok=True)
                self._sizes.pop(key, None)
                self._index.pop(key, None)
                self._drop_recent(bytes.fromhex(key))
            if doomed or self._index_dirty:
                self._save_index()
        if doomed:
            log.info("blob store: pruned %d blobs of rounds before %d", len(doomed), cutoff)
            if self._metrics is not None:
                self._metrics.inc("blobs_pruned_total", len(doomed))
        return len(doomed)

    def path(self, digest: bytes | str) -> Path:
        """Where the blob with `digest` lives (whether or not it exists)."""
        return self.dir / as_digest(digest).hex()

    def recent(self, digest: bytes | str) -> bytes | None:
        """The blob's bytes if they are in memory (put or read lately), else None. Never
        touches the disk, so the event loop may call it."""
        key = as_digest(digest)
        with self._lock:
            data = self._recent.get(key)
            if data is not None:
                self._recent.move_to_end(key)
                return data
            return self._spilling.get(key)

    def _remember(self, key: bytes, data: bytes) -> None:
        if len(data) > self.cache_bytes:
            return
        dropped = []
        with self._lock:
            if key in self._recent:
                self._recent.move_to_end(key)
                return
            self._recent[key] = data
            self._recent_bytes += len(data)
            while self._recent_bytes > self.cache_bytes:
                old_key, old = self._recent.popitem(last=False)
                self._recent_bytes -= len(old)
                if old_key.hex() in self._unsaved:  # its only copy: to disk
                    self._spilling[old_key] = old
                    dropped.append(old_key)
        for old_key in dropped:
            self._spill(old_key)

    def _spill(self, key: bytes) -> None:
        """Write a blob the memory cache let go of, if it is still held only in memory."""
        hex_key = key.hex()
        with self._lock:
            data = self._spilling.get(key)
        try:
            if data is not None and hex_key in self._unsaved:
                self._write(self.dir / hex_key, hex_key, data, durable=False)
        except OSError as exc:  # a peer's blob: it can be fetched again
            reason = "disk_full" if exc.errno in _DISK_FULL else "io_error"
            self._refuse(reason, f"blob 0x{hex_key[:16]} left memory and was not stored: {exc}")
        finally:
            with self._lock:
                self._spilling.pop(key, None)
                if hex_key in self._unsaved:
                    self._unsaved.discard(hex_key)
                    if not (self.dir / hex_key).is_file():  # not written: gone
                        self._sizes.pop(hex_key, None)
                        self._index.pop(hex_key, None)
                elif hex_key not in self._sizes:  # pruned or deleted while being written
                    (self.dir / hex_key).unlink(missing_ok=True)

    def _save_held(self, key: str) -> None:
        """Write a blob held only in memory to disk (one about to be pinned). A failed write
        is counted, not raised, as `put` counts it: the blob stays in memory meanwhile."""
        data = self._held(bytes.fromhex(key))
        if data is None:
            return
        try:
            self._write(self.dir / key, key, data, durable=False)
        except OSError as exc:
            reason = "disk_full" if exc.errno in _DISK_FULL else "io_error"
            self._refuse(reason, f"pinned blob 0x{key[:16]} kept in memory only: {exc}")
            return
        with self._lock:
            self._unsaved.discard(key)

    def _held(self, key: bytes) -> bytes | None:
        """A blob held only in memory (none on disk), or None."""
        with self._lock:
            if key.hex() not in self._unsaved:
                return None
            data = self._recent.get(key)
            return data if data is not None else self._spilling.get(key)

    def _forget(self, key: bytes) -> None:
        with self._lock:
            self._drop_recent(key)

    def _drop_recent(self, key: bytes) -> None:
        """Take a blob out of memory (the caller holds the lock)."""
        old = self._recent.pop(key, None)
        if old is not None:
            self._recent_bytes -= len(old)

    def put(
        self,
        data: bytes,
        *,
        round_: int | None = None,
        pin: bool = False,
        from_peer: bool = False,
        verified: bytes | None = None,
    ) -> bytes:
        """Store `data` and return its digest; storing the same bytes again is a no-op.

        `round_` is the round the blob belongs to (default: the store's `round`); `pin` keeps
        it through pruning. A blob `from_peer` is refused once the store holds
        `max_store_bytes`; unpinned, it is held in memory if it fits there, else written without
        fsync (see the module docstring).
        `verified` is the sha256 of `data` when the caller has just checked it (a fetch
        does, before it keeps a blob): hashing a model update again cost as much as that
        check. A wrong one stores the blob under that name: a file is removed as damaged on
        its first read, but a blob held in memory is not read back, so `verified` must come
        from a hash of these very bytes (the fetch's own check).
        Refusals and a full disk are not raised: they are logged, counted
        (`store_errors_total`) and kept in `last_error`, and the blob is not stored, so the
        node keeps running with what it has in memory.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise BlobStoreError(f"a blob is bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) > self.max_blob_bytes:
            limit = self.max_blob_bytes
            raise BlobTooLargeError(f"blob of {len(data)} bytes is over the {limit}-byte limit")
        digest = sha256(data) if verified is None else as_digest(verified)
        key = digest.hex()
        target = self.dir / key
        held = self._held(digest) is not None
        if held or (target.exists() and self.get(digest) is not None):
            if pin and held:
                self._save_held(key)
            if pin or round_ is not None:
                self._record(key, len(data), round_, pin)
            return digest
        if from_peer and self.total_bytes + len(data) > self.max_store_bytes:
            self._refuse(
                "store_full",
                f"not keeping peer blob 0x{key[:16]}: the store holds {self.total_bytes} "
                f"of its {self.max_store_bytes}-byte budget",
            )
            return digest
        if from_peer and not pin and len(data) <= self.cache_bytes:
            with self._lock:
                self._unsaved.add(key)
            self._record(key, len(data), round_, pin, save=False)
            self._remember(digest, data)
            return digest
        durable = not from_peer
        try:
            self._write(target, key, data, durable=durable)
        except OSError as exc:
            if exc.errno not in _DISK_FULL:
                raise
            self._refuse("disk_full", f"disk full, blob 0x{key[:16]} not stored: {exc}")
            return digest
        self._record(key, len(data), round_, pin, save=durable or pin)
        self._remember(digest, data)
        return digest

    def _write(self, target: Path, key: str, data: bytes, *, durable: bool) -> None:
        """Write `data` to `target` atomically (a temporary file, then a rename); fsynced with
        its directory if `durable`. Raises OSError; leaves no temporary file behind."""
        tmp = self.dir / f"{_TMP_PREFIX}{key[:16]}-{secrets.token_hex(4)}"
        try:
            with open(tmp, "xb") as out:
                out.write(data)
                if durable:
                    out.flush()
                    os.fsync(out.fileno())
            os.replace(tmp, target)
            if durable:
                _fsync_dir(self.dir)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def get(self, digest: bytes | str) -> bytes | None:
        """The blob's bytes, or None if absent; a blob that fails its hash is removed."""
        key = as_digest(digest)
        held = self._held(key)
        if held is not None:
            return held
        file = self.dir / key.hex()
        try:
            size = file.stat().st_size
            if size > self.max_blob_bytes:
                self._discard(file, f"{size} bytes, over the {self.max_blob_bytes} limit")
                return None
            data = file.read_bytes()
        except FileNotFoundError:
            return None
        if sha256(data) != key:
            self._discard(file, "content does not match its digest")
            return None
        self._remember(key, data)
        return data

    def has(self, digest: bytes | str) -> bool:
        """Whether the blob is held in memory or a file for it exists (cheap; `get` is what
        verifies a file's content)."""
        key = as_digest(digest).hex()
        with self._lock:
            if key in self._unsaved:
                return True
        return (self.dir / key).is_file()

    def delete(self, digest: bytes | str) -> bool:
        """Remove a blob; True if there was one."""
        raw = as_digest(digest)
        key = raw.hex()
        file = self.dir / key
        self._forget(raw)
        with self._lock:
            held = key in self._unsaved
            self._unsaved.discard(key)
            self._sizes.pop(key, None)
            if self._index.pop(key, None) is not None:
                self._save_index()
        if held:
            return True
        try:
            file.unlink()
        except FileNotFoundError:
            return False
        return True

    def digests(self) -> Iterator[bytes]:
        """Digests of the stored blobs: files by name (content is checked by `get`) and
        blobs held in memory."""
        with self._lock:
            names = set(self._unsaved)
        names.update(e.name for e in self.dir.iterdir() if _HEX_RE.fullmatch(e.name))
        for name in sorted(names):
            yield bytes.fromhex(name)

    def _record(
        self, key: str, size: int, round_: int | None, pin: bool, *, save: bool = True
    ) -> None:
        """Note a stored blob in the index; written now if `save`, else with the next write
        (a peer's blob: if a crash loses the entry, the blob joins the next round set)."""
        with self._lock:
            self._sizes[key] = size
            old_round, old_pin = self._index.get(key, (self.round, False))
            entry = (old_round if round_ is None else round_, old_pin or pin)
            if self._index.get(key) != entry:
                self._index[key] = entry
                if save:
                    self._save_index()
                else:
                    self._index_dirty = True

    def _refuse(self, reason: str, message: str) -> None:
        log.error("blob store: %s", message)
        self.last_error = f"blob store: {message}"
        if self._metrics is not None:
            self._metrics.inc("store_errors_total", reason=reason)

    def _load_index(self) -> tuple[int, dict[str, tuple[int, bool]]]:
        """(round, digest hex -> (round, pinned)) from the index file; empty if unusable."""
        try:
            doc = safe_json.load_file(self.index_path, max_bytes=_MAX_INDEX_BYTES, max_depth=3)
            if not isinstance(doc, dict) or doc.get("version") != _INDEX_VERSION:
                raise ValueError("not a version-1 index")
            round_, blobs = doc["round"], doc["blobs"]
            if type(round_) is not int or not isinstance(blobs, dict):
                raise ValueError("bad round or blobs")
            index: dict[str, tuple[int, bool]] = {}
            for key, entry in list(blobs.items())[:_MAX_INDEX_ENTRIES]:
                if (
                    _HEX_RE.fullmatch(key)
                    and isinstance(entry, list)
                    and len(entry) == 2
                    and type(entry[0]) is int
                    and type(entry[1]) is bool
                ):
                    index[key] = (entry[0], entry[1])
            return round_, index
        except FileNotFoundError:
            return 0, {}
        except (OSError, ValueError, KeyError) as exc:
            log.warning("blob store: ignoring unreadable %s (%s)", self.index_path, exc)
            return 0, {}

    def _save_index(self) -> None:
        """Write the index atomically (caller holds the lock); a failure only delays pruning."""
        doc = {
            "version": _INDEX_VERSION,
            "round": self.round,
            "blobs": {key: list(entry) for key, entry in self._index.items()},
        }
        tmp = self.index_path.with_name(f"{_TMP_PREFIX}{INDEX_FILE}")
        try:
            tmp.write_text(json.dumps(doc, separators=(",", ":")))
            os.replace(tmp, self.index_path)
            self._index_dirty = False
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            log.warning("blob store: cannot write %s (%s)", self.index_path, exc)

    def _discard(self, file: Path, why: str) -> None:
        log.warning("blob store: removing corrupted blob %s (%s)", file.name, why)
        file.unlink(missing_ok=True)
        if _HEX_RE.fullmatch(file.name):
            self._forget(bytes.fromhex(file.name))
        with self._lock:
            self._sizes.pop(file.name, None)
        if self._metrics is not None:
            self._metrics.inc("blob_failures_total", reason="corrupt_store")


async def read_local(store: BlobStore, digest: bytes) -> bytes | None:
    """A blob from `store` for trio code: from memory when it is there, else from disk in a
    worker thread, and a thread only when a file exists (a fetch looks here first, and the
    blob it fetches is nearly never here yet)."""
    data = store.recent(digest)
    if data is not None or not store.has(digest):
        return data
    return await trio.to_thread.run_sync(store.get, digest)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
