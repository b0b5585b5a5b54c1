"""Content-addressed blob store on disk: `<root>/blobs/<sha256 hex>`.

Model updates and global models are stored under the sha256 of exactly their bytes, the
same digest that goes on chain, so "do I have it" and "is it intact" are one question.
Writes are atomic (temporary file, fsync, rename, fsync of the directory): a crash leaves
either the whole blob or nothing. Reads re-hash, so a blob damaged on disk is reported,
removed and treated as missing rather than served to peers or fed to aggregation.

Methods block on disk I/O; from trio call them through `trio.to_thread.run_sync`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from flchain.node.metrics import Metrics

DEFAULT_MAX_BLOB_BYTES: Final = 64 * 1024 * 1024
_HEX_RE: Final = re.compile(r"[0-9a-f]{64}")
_TMP_PREFIX: Final = ".tmp-"

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
    ) -> None:
        if max_blob_bytes <= 0:
            raise BlobStoreError(f"max_blob_bytes must be positive, got {max_blob_bytes}")
        self.dir = Path(root) / "blobs"
        self.max_blob_bytes = max_blob_bytes
        self._metrics = metrics
        self.dir.mkdir(parents=True, exist_ok=True)
        for stale in self.dir.glob(_TMP_PREFIX + "*"):  # left by a crash mid-write
            stale.unlink(missing_ok=True)

    def path(self, digest: bytes | str) -> Path:
        """Where the blob with `digest` lives (whether or not it exists)."""
        return self.dir / as_digest(digest).hex()

    def put(self, data: bytes) -> bytes:
        """Store `data` and return its digest; storing the same bytes again is a no-op."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise BlobStoreError(f"a blob is bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) > self.max_blob_bytes:
            limit = self.max_blob_bytes
            raise BlobTooLargeError(f"blob of {len(data)} bytes is over the {limit}-byte limit")
        digest = sha256(data)
        target = self.dir / digest.hex()
        if target.exists() and self.get(digest) is not None:
            return digest
        tmp = self.dir / f"{_TMP_PREFIX}{digest.hex()[:16]}-{secrets.token_hex(4)}"
        try:
            with open(tmp, "xb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(self.dir)
        return digest

    def get(self, digest: bytes | str) -> bytes | None:
        """The blob's bytes, or None if absent; a blob that fails its hash is removed."""
        key = as_digest(digest)
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
        return data

    def has(self, digest: bytes | str) -> bool:
        """Whether a file for `digest` exists (cheap; `get` is what verifies content)."""
        return (self.dir / as_digest(digest).hex()).is_file()

    def delete(self, digest: bytes | str) -> bool:
        """Remove a blob; True if there was one."""
        file = self.dir / as_digest(digest).hex()
        try:
            file.unlink()
        except FileNotFoundError:
            return False
        return True

    def digests(self) -> Iterator[bytes]:
        """Digests of the stored blobs (by file name; content is checked by `get`)."""
        for entry in sorted(self.dir.iterdir()):
            if _HEX_RE.fullmatch(entry.name):
                yield bytes.fromhex(entry.name)

    def _discard(self, file: Path, why: str) -> None:
        log.warning("blob store: removing corrupted blob %s (%s)", file.name, why)
        file.unlink(missing_ok=True)
        if self._metrics is not None:
            self._metrics.inc("blob_failures_total", reason="corrupt_store")


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
