"""Blob store retention and budgets: rounds, pins, pruning, the byte budget, a full disk."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from flchain.node.blobstore import INDEX_FILE, BlobStore, BlobStoreError, sha256
from flchain.node.metrics import Metrics


def _fill(store: BlobStore, rounds: range) -> dict[int, bytes]:
    """One blob per round, put while the store is at that round."""
    out = {}
    for r in rounds:
        store.set_round(r)
        out[r] = store.put(f"update of round {r}".encode())
    return out


def test_prune_keeps_the_last_k_rounds_and_pinned_models(tmp_path: Path) -> None:
    metrics = Metrics()
    store = BlobStore(tmp_path, keep_rounds=3, metrics=metrics)
    initial = store.put(b"initial model", pin=True)
    per_round = _fill(store, range(1, 9))
    model_2 = store.put(b"global model of round 2", round_=2, pin=True)
    assert store.round_of(per_round[4]) == 4 and store.is_pinned(model_2)
    assert store.prune(8) == 5  # rounds 1..5 go, 6..8 stay
    assert metrics.get("blobs_pruned_total") == 5
    kept = set(store.digests())
    assert kept == {initial, model_2, per_round[6], per_round[7], per_round[8]}
    assert store.get(per_round[6]) == b"update of round 6"
    assert store.get(per_round[1]) is None
    assert store.prune(8) == 0  # nothing more to do
    assert store.total_bytes == sum(len(store.get(d) or b"") for d in kept)


def test_pin_after_put_keeps_a_blob_and_a_later_plain_put_does_not_unpin(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, keep_rounds=1)
    store.set_round(1)
    model = store.put(b"model")
    store.pin(model)
    store.put(b"model")  # stored again by another code path, without pin
    store.set_round(10)
    store.prune()
    assert store.get(model) == b"model"


def test_the_index_survives_a_restart_and_untracked_blobs_are_kept(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, keep_rounds=2)
    per_round = _fill(store, range(1, 5))
    pinned = store.put(b"pinned", round_=1, pin=True)
    (tmp_path / "blobs" / sha256(b"stray").hex()).write_bytes(b"stray")  # not in the index
    reopened = BlobStore(tmp_path, keep_rounds=2)
    assert reopened.round == 4
    assert reopened.round_of(per_round[2]) == 2 and reopened.is_pinned(pinned)
    reopened.set_round(4)
    assert reopened.round_of(sha256(b"stray")) == 4  # joins the round set after start
    assert reopened.prune() == 2  # rounds 1 and 2
    assert set(reopened.digests()) == {per_round[3], per_round[4], pinned, sha256(b"stray")}
    doc = json.loads((tmp_path / INDEX_FILE).read_text())
    kept = {per_round[3], per_round[4], pinned, sha256(b"stray")}
    assert doc["round"] == 4 and set(doc["blobs"]) == {d.hex() for d in kept}


@pytest.mark.parametrize(
    "content",
    [b"not json", b"[" * 100_000 + b"]" * 100_000, b'{"version": 1, "round": "x", "blobs": {}}'],
)
def test_a_damaged_index_is_ignored_and_nothing_is_deleted_early(
    tmp_path: Path, content: bytes
) -> None:
    store = BlobStore(tmp_path, keep_rounds=1)
    per_round = _fill(store, range(1, 4))
    (tmp_path / INDEX_FILE).write_bytes(content)
    reopened = BlobStore(tmp_path, keep_rounds=2)
    assert reopened.round == 0
    reopened.set_round(30)  # the engine learns the real round: the blobs join it
    assert reopened.prune(30) == 0 and reopened.prune(31) == 0
    assert set(reopened.digests()) == set(per_round.values())
    assert reopened.prune(32) == 3  # kept keep_rounds rounds, then pruned like the rest


def test_peer_blobs_over_the_byte_budget_are_refused_and_counted(tmp_path: Path) -> None:
    metrics = Metrics()
    store = BlobStore(tmp_path, max_store_bytes=100, metrics=metrics)
    first = store.put(b"a" * 60, from_peer=True)
    refused = store.put(b"b" * 60, from_peer=True)
    assert store.get(first) == b"a" * 60
    assert store.get(refused) is None
    assert metrics.get("store_errors_total", reason="store_full") == 1
    assert store.last_error is not None and "budget" in store.last_error
    own = store.put(b"c" * 60)  # the node's own blobs are always kept
    assert store.get(own) == b"c" * 60
    assert store.total_bytes == 120


def test_a_full_disk_is_a_counted_non_fatal_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics()
    store = BlobStore(tmp_path, metrics=metrics)
    real_fsync = os.fsync

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    digest = store.put(b"an update")  # returns: the node keeps running
    assert digest == sha256(b"an update")
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert store.get(digest) is None  # not stored, and no partial file or temp file left
    assert [p.name for p in (tmp_path / "blobs").iterdir()] == []
    assert metrics.get("store_errors_total", reason="disk_full") == 1
    assert store.last_error is not None and "disk full" in store.last_error
    assert "disk full" in caplog.text
    assert store.put(b"an update") == digest  # space again: stored normally
    assert store.get(digest) == b"an update"


def test_other_os_errors_still_raise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = BlobStore(tmp_path)

    def broken(fd: int) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError, match="I/O error"):
        store.put(b"x")


def test_bad_retention_settings(tmp_path: Path) -> None:
    with pytest.raises(BlobStoreError, match="keep_rounds"):
        BlobStore(tmp_path, keep_rounds=0)
    with pytest.raises(BlobStoreError, match="max_store_bytes"):
        BlobStore(tmp_path, max_store_bytes=0)
