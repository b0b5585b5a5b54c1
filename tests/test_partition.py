"""Partitioners: every index exactly once, the promised skew, determinism per seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flchain.models.partitioning import PARTITION_SCHEMES, PartitionError, partition, split_public

LABELS = np.repeat(np.arange(10), 100)  # 1000 samples, 100 per class


def _assert_exact_cover(parts: list[np.ndarray], n: int) -> None:
    for p in parts:
        assert p.dtype == np.int64
        assert np.all(np.diff(p) > 0), "indices must be sorted and unique"
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(n))


def _max_class_share(labels: np.ndarray, part: np.ndarray) -> float:
    return float(np.bincount(labels[part]).max() / len(part))


@pytest.mark.parametrize("scheme", PARTITION_SCHEMES)
def test_every_index_assigned_exactly_once_and_deterministic(scheme: str) -> None:
    parts = partition(LABELS, 10, scheme, seed=4)
    assert len(parts) == 10
    _assert_exact_cover(parts, len(LABELS))
    again = partition(LABELS, 10, scheme, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    other = partition(LABELS, 10, scheme, seed=5)
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other, strict=True))


@pytest.mark.parametrize("scheme", PARTITION_SCHEMES)
def test_torch_labels_give_the_same_split(scheme: str) -> None:
    from_numpy = partition(LABELS, 7, scheme, seed=1)
    from_torch = partition(torch.from_numpy(LABELS), 7, scheme, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(from_numpy, from_torch, strict=True))


def test_iid_sizes_differ_by_at_most_one() -> None:
    parts = partition(np.zeros(103, dtype=np.int64), 10, "iid")
    assert sorted(len(p) for p in parts) == [10] * 7 + [11] * 3


def test_dirichlet_small_alpha_is_skewed_large_alpha_is_not() -> None:
    skewed = partition(LABELS, 10, "dirichlet", alpha=0.05, seed=0)
    balanced = partition(LABELS, 10, "dirichlet", alpha=1000.0, seed=0)
    assert np.mean([_max_class_share(LABELS, p) for p in skewed]) > 0.7
    assert np.mean([_max_class_share(LABELS, p) for p in balanced]) < 0.2
    # Class proportions near 1/10 each means client sizes near 100.
    assert all(80 <= len(p) <= 120 for p in balanced)


def test_dirichlet_respects_min_size() -> None:
    parts = partition(LABELS, 20, "dirichlet", alpha=0.3, min_size=15, seed=2)
    _assert_exact_cover(parts, len(LABELS))
    assert min(len(p) for p in parts) >= 15


def test_dirichlet_gives_up_with_a_clear_error() -> None:
    # 20 clients need one sample each from 20 samples: a near one-hot draw never does that.
    with pytest.raises(PartitionError, match="attempts"):
        partition(np.zeros(20, dtype=np.int64), 20, "dirichlet", alpha=0.001)


def test_shards_give_at_most_k_classes_per_client() -> None:
    for clients, k in ((10, 2), (7, 3), (25, 1)):
        parts = partition(LABELS, clients, "shards", classes_per_client=k, seed=3)
        _assert_exact_cover(parts, len(LABELS))
        assert all(len(np.unique(LABELS[p])) <= k for p in parts)


def test_shards_equal_classes_give_equal_clients() -> None:
    # 10 classes x 100 samples into 20 shards: 2 shards of 50 per class, 100 per client.
    parts = partition(LABELS, 10, "shards", classes_per_client=2)
    assert [len(p) for p in parts] == [100] * 10


def test_shards_unbalanced_classes_still_cover_everything() -> None:
    labels = np.concatenate([np.zeros(500), np.ones(30), np.full(7, 2)]).astype(np.int64)
    parts = partition(labels, 6, "shards", classes_per_client=2, seed=9)
    _assert_exact_cover(parts, len(labels))
    assert all(len(np.unique(labels[p])) <= 2 for p in parts)


def test_shards_impossible_layouts_are_rejected() -> None:
    with pytest.raises(PartitionError, match="cannot cover 10 classes"):
        partition(LABELS, 4, "shards", classes_per_client=2)
    with pytest.raises(PartitionError, match="shards need at least"):
        partition(np.arange(5) % 2, 3, "shards", classes_per_client=2)


def test_quantity_skew_sizes_vary_but_labels_stay_iid() -> None:
    parts = partition(LABELS, 10, "quantity", alpha=0.5, seed=0)
    sizes = sorted(len(p) for p in parts)
    assert sizes[-1] > 3 * sizes[0]
    biggest = max(parts, key=len)
    shares = np.bincount(LABELS[biggest], minlength=10) / len(biggest)
    assert np.all(np.abs(shares - 0.1) < 0.06)


def test_quantity_min_size_filling_everything_gives_equal_sizes() -> None:
    parts = partition(LABELS, 10, "quantity", alpha=0.1, min_size=100)
    assert [len(p) for p in parts] == [100] * 10


@pytest.mark.parametrize(
    ("labels", "clients", "kwargs", "message"),
    [
        (LABELS, 3, {"scheme": "bogus"}, "unknown partition scheme"),
        (LABELS, 0, {}, "num_clients"),
        (LABELS, 3, {"scheme": "dirichlet", "alpha": 0.0}, "alpha"),
        (LABELS, 3, {"scheme": "quantity", "alpha": float("nan")}, "alpha"),
        (LABELS, 3, {"scheme": "shards", "classes_per_client": 0}, "classes_per_client"),
        (LABELS, 3, {"min_size": -1}, "min_size"),
        (LABELS, 3, {"seed": -1}, "seed"),
        (LABELS, 11, {"min_size": 100}, "cannot give 11 clients"),
        (LABELS.reshape(10, 100), 3, {}, "1-D integer"),
        (LABELS.astype(np.float32), 3, {}, "1-D integer"),
        (np.array([0, -1, 2]), 1, {}, "non-negative"),
        (np.array([], dtype=np.int64), 1, {}, "empty"),
        ([0, 1, 2], 1, {}, "numpy array"),
    ],
)
def test_bad_arguments_raise_partition_error(
    labels: np.ndarray, clients: int, kwargs: dict, message: str
) -> None:
    with pytest.raises(PartitionError, match=message):
        partition(labels, clients, **kwargs)


def test_min_size_zero_allows_empty_clients() -> None:
    parts = partition(np.zeros(3, dtype=np.int64), 5, "iid", min_size=0)
    assert sorted(len(p) for p in parts) == [0, 0, 1, 1, 1]
    _assert_exact_cover(parts, 3)


def test_split_public_sizes_and_cover() -> None:
    public, rest = split_public(100, 0.05, seed=1)
    assert len(public) == 5 and len(rest) == 95
    _assert_exact_cover([public, rest], 100)
    again = split_public(100, 0.05, seed=1)
    assert np.array_equal(public, again[0])


def test_split_public_stratified_keeps_class_shares() -> None:
    labels = np.repeat(np.arange(4), 25)
    public, rest = split_public(100, 0.2, seed=0, labels=labels)
    assert np.bincount(labels[public]).tolist() == [5, 5, 5, 5]
    _assert_exact_cover([public, rest], 100)


def test_split_public_never_leaves_a_side_empty() -> None:
    public, rest = split_public(10, 0.01)
    assert len(public) == 1 and len(rest) == 9
    public, rest = split_public(10, 0.99)
    assert len(public) == 9 and len(rest) == 1


def test_split_public_bad_arguments() -> None:
    with pytest.raises(PartitionError, match="fraction"):
        split_public(100, 0.0)
    with pytest.raises(PartitionError, match="fraction"):
        split_public(100, 1.0)
    with pytest.raises(PartitionError, match="num_samples"):
        split_public(1, 0.5)
    with pytest.raises(PartitionError, match="labels has 3 entries"):
        split_public(4, 0.5, labels=np.array([0, 1, 0]))
