"""Split a labelled data set among FL clients (IID and the usual non-IID benchmarks).

Every scheme assigns every index to exactly one client and returns sorted int64 index
arrays, so the caller can slice its tensors directly. All randomness comes from a
`numpy.random.Generator(PCG64(seed))`, so a seed fixes the split on every machine.
"""

from __future__ import annotations

import heapq
import math

import numpy as np
import torch

from flchain.models.catalog import PARTITION_SCHEMES

# Dirichlet draws that leave a client below `min_size` are repeated at most this often.
_MAX_DRAWS = 1000


class PartitionError(ValueError):
    """Raised when a split is impossible or its arguments are invalid."""


def partition(
    labels: torch.Tensor | np.ndarray,
    num_clients: int,
    scheme: str = "iid",
    *,
    alpha: float = 0.5,
    classes_per_client: int = 2,
    seed: int = 0,
    min_size: int = 1,
) -> list[np.ndarray]:
    """Split the indices of `labels` among `num_clients` clients.

    Schemes:
    - ``iid``: a random permutation cut into near-equal parts (sizes differ by at most 1).
    - ``dirichlet``: label skew; each class is spread over the clients with proportions
      drawn from Dirichlet(alpha). Small alpha means few classes per client. The draw is
      repeated until every client holds at least `min_size` samples.
    - ``shards``: McMahan et al.'s pathological split; each class is cut into single-class
      shards, `num_clients * classes_per_client` in all, and each client receives
      `classes_per_client` random shards, so it sees at most that many classes.
    - ``quantity``: quantity skew; client sizes are `min_size` plus a Dirichlet(alpha)
      share of the rest, labels stay IID.

    Returns one sorted int64 array of indices per client; together they cover
    ``range(len(labels))`` exactly once.
    """
    y = _as_labels(labels)
    _check_int("num_clients", num_clients, minimum=1)
    _check_int("min_size", min_size, minimum=0)
    _check_int("seed", seed, minimum=0)
    if num_clients * min_size > len(y):
        raise PartitionError(
            f"{len(y)} samples cannot give {num_clients} clients at least {min_size} each"
        )
    rng = np.random.Generator(np.random.PCG64(seed))
    if scheme == "iid":
        parts = np.array_split(rng.permutation(len(y)), num_clients)
    elif scheme == "dirichlet":
        _check_alpha(alpha)
        parts = _dirichlet(y, num_clients, alpha, min_size, rng)
    elif scheme == "shards":
        _check_int("classes_per_client", classes_per_client, minimum=1)
        parts = _shards(y, num_clients, classes_per_client, min_size, rng)
    elif scheme == "quantity":
        _check_alpha(alpha)
        parts = _quantity(len(y), num_clients, alpha, min_size, rng)
    else:
        raise PartitionError(
            f"unknown partition scheme {scheme!r}; choose one of {', '.join(PARTITION_SCHEMES)}"
        )
    return [np.sort(p).astype(np.int64) for p in parts]


def split_public(
    num_samples: int,
    fraction: float = 0.05,
    *,
    seed: int = 0,
    labels: torch.Tensor | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Set aside a public (server-side or test) subset: returns ``(public, rest)`` indices.

    The public size is ``round(num_samples * fraction)`` clipped to ``[1, num_samples - 1]``
    so neither side is empty. With `labels` the split is stratified: each class contributes
    its share (largest-remainder rounding), which keeps rare classes represented.
    Both arrays are sorted int64.
    """
    _check_int("num_samples", num_samples, minimum=2)
    if not (isinstance(fraction, int | float) and 0.0 < fraction < 1.0):
        raise PartitionError(f"fraction must be in (0, 1), got {fraction!r}")
    _check_int("seed", seed, minimum=0)
    size = min(max(round(num_samples * fraction), 1), num_samples - 1)
    rng = np.random.Generator(np.random.PCG64(seed))
    if labels is None:
        public = rng.permutation(num_samples)[:size]
    else:
        y = _as_labels(labels)
        if len(y) != num_samples:
            raise PartitionError(f"labels has {len(y)} entries but num_samples is {num_samples}")
        classes, counts = np.unique(y, return_counts=True)
        quotas = _largest_remainder(counts.astype(np.float64), size)
        chosen = [
            rng.permutation(np.flatnonzero(y == c))[:q]
            for c, q in zip(classes, quotas, strict=True)
        ]
        public = np.concatenate(chosen)
    mask = np.zeros(num_samples, dtype=bool)
    mask[public] = True
    return np.flatnonzero(mask).astype(np.int64), np.flatnonzero(~mask).astype(np.int64)


def _dirichlet(
    y: np.ndarray, num_clients: int, alpha: float, min_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    by_class = [rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)]
    for _ in range(_MAX_DRAWS):
        chunks: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for idx in by_class:
            p = rng.dirichlet(np.full(num_clients, alpha))
            if not np.all(np.isfinite(p)):
                break
            cuts = (np.cumsum(p)[:-1] * len(idx)).astype(np.int64)
            for client, piece in enumerate(np.split(idx, cuts)):
                chunks[client].append(piece)
        else:
            parts = [np.concatenate(c) for c in chunks]
            if min(len(p) for p in parts) >= min_size:
                return parts
    raise PartitionError(
        f"no Dirichlet(alpha={alpha}) draw in {_MAX_DRAWS} attempts gave all {num_clients} "
        f"clients at least {min_size} samples; use a larger alpha, fewer clients or min_size=0"
    )


def _shards(
    y: np.ndarray,
    num_clients: int,
    per_client: int,
    min_size: int,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    classes, counts = np.unique(y, return_counts=True)
    total = num_clients * per_client
    if total < len(classes):
        raise PartitionError(
            f"shards: {num_clients} clients x {per_client} classes = {total} shards cannot "
            f"cover {len(classes)} classes; raise classes_per_client or num_clients"
        )
    if total > len(y):
        raise PartitionError(f"shards: {total} shards need at least {total} samples, got {len(y)}")
    shards: list[np.ndarray] = []
    for c, n in zip(classes, _shards_per_class(counts, total), strict=True):
        shards.extend(np.array_split(rng.permutation(np.flatnonzero(y == c)), n))
    order = rng.permutation(total)
    parts = [
        np.concatenate([shards[s] for s in order[i * per_client : (i + 1) * per_client]])
        for i in range(num_clients)
    ]
    smallest = min(len(p) for p in parts)
    if smallest < min_size:
        raise PartitionError(f"shards: a client got {smallest} samples, below min_size={min_size}")
    return parts


def _shards_per_class(counts: np.ndarray, total: int) -> list[int]:
    """D'Hondt apportionment: one shard per class, the rest to the class with the largest
    shards, so shards are as equal as single-class shards can be."""
    shards = [1] * len(counts)
    heap = [(-float(n), c) for c, n in enumerate(counts)]
    heapq.heapify(heap)
    for _ in range(total - len(counts)):
        _, c = heapq.heappop(heap)
        shards[c] += 1
        heapq.heappush(heap, (-float(counts[c]) / shards[c], c))
    return shards


def _quantity(
    n: int, num_clients: int, alpha: float, min_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    rest = n - num_clients * min_size
    for _ in range(_MAX_DRAWS):
        p = rng.dirichlet(np.full(num_clients, alpha))
        if np.all(np.isfinite(p)):
            break
    else:
        raise PartitionError(f"Dirichlet(alpha={alpha}) gave no finite draw; use a larger alpha")
    sizes = _largest_remainder(p, rest) + min_size
    return np.split(rng.permutation(n), np.cumsum(sizes)[:-1])


def _largest_remainder(weights: np.ndarray, total: int) -> np.ndarray:
    """Integers proportional to `weights` that sum to exactly `total`."""
    exact = weights / weights.sum() * total
    base = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - base), kind="stable")
    base[order[: total - int(base.sum())]] += 1
    return base


def _as_labels(labels: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    if not isinstance(labels, np.ndarray):
        raise PartitionError(f"labels must be a tensor or numpy array, got {type(labels)}")
    if labels.ndim != 1 or labels.dtype == np.bool_ or not np.issubdtype(labels.dtype, np.integer):
        raise PartitionError(
            f"labels must be a 1-D integer array, got shape {labels.shape} dtype {labels.dtype}"
        )
    if len(labels) == 0:
        raise PartitionError("labels is empty")
    if labels.min() < 0:
        raise PartitionError("labels must be non-negative")
    return labels


def _check_int(name: str, value: int, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise PartitionError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_alpha(alpha: float) -> None:
    if not (isinstance(alpha, int | float) and math.isfinite(alpha) and alpha > 0):
        raise PartitionError(f"alpha must be a finite number > 0, got {alpha!r}")
