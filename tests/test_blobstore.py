"""Content-addressed blob store: digests, limits, atomic writes, corruption, restarts."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from flchain.node.blobstore import (
    BlobStore,
    BlobStoreError,
    BlobTooLargeError,
    as_digest,
    sha256,
)
from flchain.node.metrics import Metrics

# sha256(b"abc"), the FIPS 180-2 test vector
ABC = bytes.fromhex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")


def test_put_returns_the_sha256_and_get_returns_the_bytes(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    digest = store.put(b"abc")
    assert digest == ABC == sha256(b"abc")
    assert store.get(digest) == b"abc"
    assert store.has(digest) and store.has("0x" + ABC.hex()) and store.has(ABC.hex())
    assert (tmp_path / "blobs" / ABC.hex()).read_bytes() == b"abc"
    assert list(store.digests()) == [ABC]


def test_a_blob_verified_by_its_fetcher_is_not_hashed_again_and_a_wrong_name_is_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flchain.node import blobstore

    hashed: list[int] = []
    monkeypatch.setattr(blobstore, "sha256", lambda data: hashed.append(len(data)) or ABC)
    store = BlobStore(tmp_path, cache_bytes=0)  # reads come from disk, re-hashed
    assert store.put(b"abc", from_peer=True, verified=ABC) == ABC
    assert hashed == []
    monkeypatch.undo()
    assert store.get(ABC) == b"abc"
    # a caller that names the bytes wrongly stores them under that name; the first read
    # finds the mismatch and removes them instead of handing them out
    wrong = bytes(32)
    store.put(b"not zeros", from_peer=True, verified=wrong)
    assert store.get(wrong) is None
    assert not store.has(wrong)


def test_missing_blob_is_none(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    assert store.get(b"\x00" * 32) is None
    assert not store.has(b"\x00" * 32)
    assert store.delete(b"\x00" * 32) is False


def test_put_is_idempotent_and_delete_removes(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    assert store.put(b"same") == store.put(bytearray(b"same"))
    assert len(list(store.digests())) == 1
    assert store.delete(sha256(b"same")) is True
    assert store.get(sha256(b"same")) is None


def test_size_limit_refuses_and_writes_nothing(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, max_blob_bytes=10)
    store.put(b"x" * 10)
    with pytest.raises(BlobTooLargeError, match="11 bytes"):
        store.put(b"x" * 11)
    assert list(store.digests()) == [sha256(b"x" * 10)]
    assert isinstance(BlobTooLargeError("x"), ValueError)


def test_oversize_file_on_disk_is_not_returned(tmp_path: Path) -> None:
    BlobStore(tmp_path).put(b"y" * 100)
    small = BlobStore(tmp_path, max_blob_bytes=50)
    assert small.get(sha256(b"y" * 100)) is None


def test_corrupted_blob_is_reported_removed_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics()
    store = BlobStore(tmp_path, metrics=metrics)
    digest = store.put(b"model bytes")
    store.path(digest).write_bytes(b"model bytez")  # bit rot / tampering
    assert store.has(digest)  # has() only looks at the name
    assert store.get(digest) is None
    assert not store.path(digest).exists()
    assert metrics.get("blob_failures_total", reason="corrupt_store") == 1
    assert "corrupted blob" in caplog.text


def test_write_is_atomic_when_the_rename_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = BlobStore(tmp_path)

    def crash(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        store.put(b"half written")
    assert list((tmp_path / "blobs").iterdir()) == []  # neither the blob nor a temp file


def test_stale_temp_files_are_cleaned_and_blobs_survive_a_restart(tmp_path: Path) -> None:
    digest = BlobStore(tmp_path).put(b"persisted")
    stale = tmp_path / "blobs" / ".tmp-deadbeef-0000"
    stale.write_bytes(b"partial")
    reopened = BlobStore(tmp_path)
    assert not stale.exists()
    assert reopened.get(digest) == b"persisted"
    assert list(reopened.digests()) == [digest]


def test_a_blob_that_hashes_right_is_rewritten_over_a_corrupt_one(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    digest = store.put(b"good")
    store.path(digest).write_bytes(b"bad!")
    assert store.put(b"good") == digest
    assert store.get(digest) == b"good"


def test_digest_forms() -> None:
    assert as_digest(ABC) == ABC
    assert as_digest("0x" + ABC.hex()) == ABC
    assert as_digest(ABC.hex().upper()) == ABC
    assert hashlib.sha256(b"").digest() == sha256(b"")
    for bad in (b"\x00" * 31, "0x1234", "zz" * 32, 42):
        with pytest.raises(BlobStoreError):
            as_digest(bad)  # type: ignore[arg-type]


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(BlobStoreError, match="positive"):
        BlobStore(tmp_path, max_blob_bytes=0)
    with pytest.raises(BlobStoreError, match="bytes"):
        BlobStore(tmp_path).put("text")  # type: ignore[arg-type]
    with pytest.raises(BlobStoreError, match="cache_bytes"):
        BlobStore(tmp_path, cache_bytes=-1)


def test_recent_blobs_are_served_from_memory_within_the_budget(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, cache_bytes=250)
    first, second = store.put(b"a" * 100), store.put(b"b" * 100, from_peer=True)
    assert store.recent(first) == b"a" * 100 and store.recent(second) == b"b" * 100
    store.path(first).unlink()  # memory does not look at the disk
    assert store.recent(first) == b"a" * 100
    third = store.put(b"c" * 100)  # over 250 bytes: the least recently used goes
    assert store.recent(second) is None and store.recent(first) is not None
    assert store.recent(third) == b"c" * 100
    assert store.get(second) == b"b" * 100 and store.recent(second) == b"b" * 100  # read back
    assert store.put(b"d" * 300) and store.recent(sha256(b"d" * 300)) is None  # over the budget
    store.delete(third)
    assert store.recent(third) is None
    reopened = BlobStore(tmp_path)
    assert reopened.recent(second) is None  # memory starts empty


def test_a_corrupt_file_is_still_caught_by_get_while_its_bytes_are_in_memory(
    tmp_path: Path,
) -> None:
    store = BlobStore(tmp_path)
    digest = store.put(b"model bytes")
    store.path(digest).write_bytes(b"model bytez")
    assert store.get(digest) is None  # get re-reads and re-hashes the file
    assert store.recent(digest) is None  # and forgets the blob


def test_own_blobs_are_fsynced_and_peer_blobs_are_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = BlobStore(tmp_path, cache_bytes=0)  # no memory to hold peer blobs: to disk
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    store.put(b"a peer's update", from_peer=True)
    assert synced == []
    store.put(b"our own update")
    assert len(synced) == 2  # the file, then its directory


def test_peer_blobs_reach_the_index_with_its_next_write(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, cache_bytes=0)  # peer blobs as files
    store.set_round(3)
    peer = store.put(b"a peer's update", from_peer=True)
    index = tmp_path / "blobs-index.json"
    assert peer.hex() not in index.read_text()  # no index write per peer blob
    own = store.put(b"our own update")
    text = index.read_text()
    assert peer.hex() in text and own.hex() in text
    store.put(b"another peer's update", from_peer=True)
    store.set_round(4)
    assert sha256(b"another peer's update").hex() in index.read_text()
    assert BlobStore(tmp_path).round_of(peer) == 3


def test_a_peer_blob_that_fits_in_memory_is_held_there_and_served(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    store.set_round(3)
    digest = store.put(b"a peer's update", from_peer=True)
    assert not store.path(digest).exists()  # no file: the round's churn stays off the disk
    assert store.has(digest) and store.get(digest) == b"a peer's update"
    assert store.recent(digest) == b"a peer's update"
    assert digest in set(store.digests()) and store.round_of(digest) == 3
    assert store.total_bytes == len(b"a peer's update")  # counted against the budget
    assert store.put(b"a peer's update", from_peer=True) == digest  # again: a no-op
    assert BlobStore(tmp_path).get(digest) is None  # a restart loses it; peers have it


def test_a_held_blob_the_memory_lets_go_of_is_written_to_disk(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, cache_bytes=100)
    first = store.put(b"a" * 60, from_peer=True)
    assert not store.path(first).exists()
    second = store.put(b"b" * 60, from_peer=True)  # 120 bytes: the first leaves memory
    assert store.recent(first) is None and store.path(first).read_bytes() == b"a" * 60
    assert not store.path(second).exists()
    assert store.get(first) == b"a" * 60  # read back into memory: now the second leaves it
    assert store.get(second) == b"b" * 60 and store.path(second).read_bytes() == b"b" * 60
    assert BlobStore(tmp_path).get(first) == b"a" * 60  # on disk now: it outlives a restart


def test_held_blobs_are_pruned_deleted_and_pinned_like_files(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, keep_rounds=1)
    store.set_round(1)
    old = store.put(b"round one", from_peer=True)
    kept = store.put(b"a finalized model", from_peer=True)
    store.pin(kept)  # pinned: written to disk, since it must outlive its round
    assert store.path(kept).read_bytes() == b"a finalized model"
    store.set_round(2)
    gone = store.put(b"round two", from_peer=True)
    assert store.prune(2) == 1  # round one's unpinned blob
    assert not store.has(old) and store.get(old) is None and store.recent(old) is None
    assert store.get(kept) == b"a finalized model" and store.has(gone)
    assert store.delete(gone) is True and not store.has(gone)
    assert store.total_bytes == len(b"a finalized model")


def test_pinning_a_held_blob_on_a_full_disk_is_counted_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    metrics = Metrics()
    store = BlobStore(tmp_path, metrics=metrics)
    digest = store.put(b"a finalized model", from_peer=True)

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store, "_write", full)
    store.pin(digest)  # the engine pins from a worker thread: it must not die of this
    assert metrics.get("store_errors_total", reason="disk_full") == 1
    assert store.is_pinned(digest) and store.get(digest) == b"a finalized model"
