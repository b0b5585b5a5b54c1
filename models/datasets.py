"""Load a data set from a short spec string into train/test tensors.

A spec names where the data come from, so a task config (and its on-chain digest) fixes
the data a node trains on. Everything ends up as float32 features (images NCHW in [0, 1])
and int64 labels; nothing is ever unpickled.
"""

from __future__ import annotations

import gzip
import importlib
import importlib.util
import math
import struct
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from flchain.models.partitioning import PartitionError, split_public

DATASET_SPECS_HELP = (
    "Data set spec: 'digits' (scikit-learn's 1797 8x8 handwritten digits, bundled, the "
    "default); 'synthetic' or 'synthetic:ALPHA,BETA' (FedProx's Synthetic(alpha, beta), "
    "60 features, 10 classes; 'synthetic' is Synthetic(1,1) pooled from 30 virtual devices); "
    "'npz:PATH' (a NumPy .npz with x_train, y_train, x_test, y_test, or x, y split by "
    "the test fraction); 'idx:DIR' (MNIST-style IDX files train-images-idx3-ubyte, "
    "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, optionally "
    ".gz); 'torchvision:NAME[:ROOT]' (MNIST, FashionMNIST, KMNIST, CIFAR10 or CIFAR100 "
    "already downloaded under ROOT, default ./data; needs torchvision)."
)

# FedProx's Synthetic(alpha, beta): 60 features, 10 classes (Li et al. 2020, sec. 5.1).
SYNTHETIC_FEATURES = 60
SYNTHETIC_CLASSES = 10
# The centralized `synthetic` spec pools this many FedProx devices (the paper used 30).
_POOLED_DEVICES = 30
_POOLED_SAMPLES = 100

_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_TORCHVISION_SETS = {
    "mnist": "MNIST",
    "fashionmnist": "FashionMNIST",
    "kmnist": "KMNIST",
    "cifar10": "CIFAR10",
    "cifar100": "CIFAR100",
}
_CHANNEL_SIZES = (1, 3, 4)


class DatasetError(ValueError):
    """Raised for an unknown spec or data that are missing, corrupt or inconsistent."""


@dataclass(frozen=True)
class Dataset:
    """Train and test tensors of one data set; validated on construction."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if not isinstance(x, torch.Tensor) or x.dtype != torch.float32 or x.ndim not in (2, 4):
                raise DatasetError(f"x_{split} must be a float32 tensor [N, F] or [N, C, H, W]")
            if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or y.ndim != 1:
                raise DatasetError(f"y_{split} must be a 1-D int64 tensor")
            if len(x) != len(y) or len(x) == 0:
                raise DatasetError(f"{split}: {len(x)} samples but {len(y)} labels (need > 0)")
            if y.min() < 0 or y.max() >= self.num_classes:
                raise DatasetError(f"y_{split} has labels outside [0, {self.num_classes})")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DatasetError(
                f"train samples {tuple(self.x_train.shape[1:])} and test samples "
                f"{tuple(self.x_test.shape[1:])} differ in shape"
            )

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample, e.g. ``(1, 8, 8)`` for digits or ``(60,)`` for synthetic."""
        return tuple(self.x_train.shape[1:])


def load_dataset(spec: str = "digits", *, seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """Load the data set named by `spec` (see `DATASET_SPECS_HELP`).

    `seed` fixes generated data and any train/test split; `test_fraction` applies only where
    the source has no test split of its own (digits, synthetic, npz with just x and y).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise DatasetError(f"dataset spec must be a non-empty string, got {spec!r}")
    if not (isinstance(test_fraction, int | float) and 0.0 < test_fraction < 1.0):
        raise DatasetError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    spec = spec.strip()
    kind, _, arg = spec.partition(":")
    kind = kind.lower()
    if kind == "digits" and not arg:
        return _digits(seed, test_fraction)
    if kind == "synthetic":
        alpha, beta = _synthetic_params(arg)
        parts = synthetic_federated(
            _POOLED_DEVICES, alpha, beta, seed, samples_per_client=_POOLED_SAMPLES
        )
        x = torch.cat([p[0] for p in parts])
        y = torch.cat([p[1] for p in parts])
        return _split(spec, x, y, SYNTHETIC_CLASSES, seed, test_fraction)
    if kind == "npz" and arg:
        return _npz(spec, Path(arg), seed, test_fraction)
    if kind == "idx" and arg:
        return _idx(spec, Path(arg))
    if kind == "torchvision" and arg:
        name, _, root = arg.partition(":")
        return _torchvision(spec, name, root or "data")
    raise DatasetError(f"unknown dataset spec {spec!r}. {DATASET_SPECS_HELP}")


def synthetic_federated(
    num_clients: int,
    alpha: float,
    beta: float,
    seed: int,
    samples_per_client: int | Sequence[int] = 100,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """FedProx's Synthetic(alpha, beta): one ``(x [n, 60] float32, y [n] int64)`` per client.

    Client k has its own logistic model y = argmax(W_k x + b_k) with W_k, b_k ~ N(u_k, 1),
    u_k ~ N(0, alpha), and features x ~ N(v_k, diag(j^-1.2)) with v_k ~ N(B_k, 1),
    B_k ~ N(0, beta) (alpha and beta are standard deviations, as in the FedProx code):
    alpha sets how much the clients' models differ, beta how much their data differ.
    Use this directly, one list entry per client, for FedProx's heterogeneity. The
    centralized ``synthetic`` spec pools 30 such devices, and a partitioner then re-splits
    the pool, so there the skew comes from the partitioner, not from per-client models.
    `samples_per_client` is one size for all or a size per client (FedProx drew power-law
    sizes; pass them here to reproduce that).
    """
    if isinstance(num_clients, bool) or not isinstance(num_clients, int) or num_clients < 1:
        raise DatasetError(f"num_clients must be an integer >= 1, got {num_clients!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise DatasetError(f"seed must be an integer >= 0, got {seed!r}")
    for label, value in (("alpha", alpha), ("beta", beta)):
        if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
            raise DatasetError(f"{label} must be a finite number >= 0, got {value!r}")
    sizes = (
        [samples_per_client] * num_clients
        if isinstance(samples_per_client, int)
        else list(samples_per_client)
    )
    if len(sizes) != num_clients or any(
        isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes
    ):
        raise DatasetError(
            f"samples_per_client must be an int >= 1 or {num_clients} such ints, "
            f"got {samples_per_client!r}"
        )
    rng = np.random.Generator(np.random.PCG64(seed))
    dim = SYNTHETIC_FEATURES
    u = rng.normal(0.0, alpha, num_clients)
    shift = rng.normal(0.0, beta, num_clients)
    scale = np.arange(1, dim + 1, dtype=np.float64) ** -0.6  # sqrt of j^-1.2
    clients = []
    for k, n in enumerate(sizes):
        mean_x = rng.normal(shift[k], 1.0, dim)
        w = rng.normal(u[k], 1.0, (dim, SYNTHETIC_CLASSES))
        b = rng.normal(u[k], 1.0, SYNTHETIC_CLASSES)
        x = mean_x + scale * rng.standard_normal((n, dim))
        y = np.argmax(x @ w + b, axis=1)
        features = torch.from_numpy(x.astype(np.float32))
        clients.append((features, torch.from_numpy(y.astype(np.int64))))
    return clients


def _synthetic_params(arg: str) -> tuple[float, float]:
    if not arg:
        return 1.0, 1.0
    pieces = arg.split(",")
    try:
        alpha, beta = (float(p) for p in pieces)
    except ValueError:
        raise DatasetError(f"synthetic spec wants 'synthetic:ALPHA,BETA', got {arg!r}") from None
    return alpha, beta


DIGITS_SHAPE = (1797, 65)  # scikit-learn's digits.csv.gz: 64 pixels (0..16) and the label


def _digits(seed: int, test_fraction: float) -> Dataset:
    images, target = _digits_arrays()
    x = torch.from_numpy((images / 16.0).astype(np.float32)).unsqueeze(1)
    y = torch.from_numpy(target.astype(np.int64))
    return _split("digits", x, y, 10, seed, test_fraction)


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The digits as scikit-learn's `load_digits` gives them: images [1797, 8, 8], labels.

    Read from the file scikit-learn ships, without importing scikit-learn: that import is
    0.6 s of every devnet node's start, on the path to the first round, for what
    `load_digits` does in three lines (`np.loadtxt` of `datasets/data/digits.csv.gz`). A
    scikit-learn that keeps the file elsewhere or in another shape gets `load_digits`.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is not None and spec.origin is not None:
        path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
        try:
            with gzip.open(path, "rt") as text:
                data = np.loadtxt(text, delimiter=",")
        except (OSError, ValueError, EOFError):
            data = None
        if data is not None and data.shape == DIGITS_SHAPE:
            return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images, bunch.target


def _split(
    name: str, x: torch.Tensor, y: torch.Tensor, num_classes: int, seed: int, fraction: float
) -> Dataset:
    """Stratified train/test split (every class keeps its share in the test set)."""
    try:
        test, train = split_public(len(y), fraction, seed=seed, labels=y)
    except PartitionError as exc:
        raise DatasetError(f"{name}: cannot split into train and test: {exc}") from None
    test_t, train_t = torch.from_numpy(test), torch.from_numpy(train)
    return Dataset(name, x[train_t], y[train_t], x[test_t], y[test_t], num_classes)


def _npz(name: str, path: Path, seed: int, test_fraction: float) -> Dataset:
    try:
        loaded = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DatasetError(f"npz file not found: {path}") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"cannot read {path} as .npz without pickle: {exc}") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise DatasetError(f"{path} holds a single array, not an .npz archive")
    with loaded:
        try:
            arrays = {key: loaded[key] for key in loaded.files}
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise DatasetError(f"cannot read {path} as .npz without pickle: {exc}") from None
    if {"x_train", "y_train", "x_test", "y_test"} <= arrays.keys():
        x_train = _features(arrays["x_train"], "x_train")
        x_test = _features(arrays["x_test"], "x_test")
        y_train = _labels(arrays["y_train"], "y_train", len(x_train))
        y_test = _labels(arrays["y_test"], "y_test", len(x_test))
        num_classes = int(max(y_train.max(), y_test.max())) + 1
        return Dataset(name, x_train, y_train, x_test, y_test, num_classes)
    if {"x", "y"} <= arrays.keys():
        x = _features(arrays["x"], "x")
        y = _labels(arrays["y"], "y", len(x))
        return _split(name, x, y, int(y.max()) + 1, seed, test_fraction)
    raise DatasetError(
        f"{path} needs arrays x_train, y_train, x_test, y_test (or x, y); found {sorted(arrays)}"
    )


def _idx(name: str, folder: Path) -> Dataset:
    if not folder.is_dir():
        raise DatasetError(f"idx directory not found: {folder}")
    arrays = [_read_idx(_idx_path(folder, f)) for f in _IDX_FILES]
    x_train = _features(arrays[0], _IDX_FILES[0], images=True)
    x_test = _features(arrays[2], _IDX_FILES[2], images=True)
    y_train = _labels(arrays[1], _IDX_FILES[1], len(x_train))
    y_test = _labels(arrays[3], _IDX_FILES[3], len(x_test))
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    return Dataset(name, x_train, y_train, x_test, y_test, num_classes)


def _idx_path(folder: Path, stem: str) -> Path:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DatasetError(f"missing IDX file {stem} (or {stem}.gz) in {folder}")


def _read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file (LeCun's MNIST format): magic, big-endian dims, raw data."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DatasetError(f"{path}: corrupt gzip data ({exc})") from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00":
        raise DatasetError(f"{path}: not an IDX file (bad magic number)")
    dtype = _IDX_DTYPES.get(raw[2])
    ndim = raw[3]
    if dtype is None or ndim == 0:
        raise DatasetError(f"{path}: bad IDX magic (type 0x{raw[2]:02x}, {ndim} dimensions)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    count = math.prod(dims)
    if len(raw) - header != count * dtype.itemsize:
        raise DatasetError(
            f"{path}: header promises {dims} ({count * dtype.itemsize} data bytes) "
            f"but the file has {len(raw) - header}"
        )
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


def _torchvision(name: str, set_name: str, root: str) -> Dataset:
    canonical = _TORCHVISION_SETS.get(set_name.lower())
    if canonical is None:
        raise DatasetError(
            f"unsupported torchvision data set {set_name!r}; choose one of "
            f"{', '.join(_TORCHVISION_SETS.values())}"
        )
    try:
        torchvision = importlib.import_module("torchvision")
    except ImportError:
        raise DatasetError(
            "torchvision is not installed; install it or export the data to an .npz"
        ) from None
    cls = getattr(torchvision.datasets, canonical)
    try:
        train = cls(root=root, train=True, download=False)
        test = cls(root=root, train=False, download=False)
    except (RuntimeError, OSError) as exc:
        raise DatasetError(f"{canonical} not found under {root!r} ({exc})") from None
    x_train = _features(np.asarray(train.data), f"{canonical} train", images=True)
    x_test = _features(np.asarray(test.data), f"{canonical} test", images=True)
    y_train = _labels(np.asarray(train.targets), f"{canonical} train labels", len(x_train))
    y_test = _labels(np.asarray(test.targets), f"{canonical} test labels", len(x_test))
    return Dataset(name, x_train, y_train, x_test, y_test, len(train.classes))


def _features(x: np.ndarray, where: str, *, images: bool = False) -> torch.Tensor:
    """float32 features: [N, F] tabular or [N, C, H, W] images; uint8 is scaled by 1/255."""
    if x.dtype == np.bool_ or not (
        np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)
    ):
        raise DatasetError(f"{where}: features must be numeric, got dtype {x.dtype}")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        x = _to_nchw(x, where)
    elif x.ndim != 2 or images:
        raise DatasetError(f"{where}: expected [N, H, W], [N, H, W, C] or [N, F], got {x.shape}")
    out = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    if not np.all(np.isfinite(out)):
        raise DatasetError(f"{where}: features contain NaN or infinity")
    return torch.from_numpy(np.ascontiguousarray(out))


def _to_nchw(x: np.ndarray, where: str) -> np.ndarray:
    channels_first = x.shape[1] in _CHANNEL_SIZES
    channels_last = x.shape[3] in _CHANNEL_SIZES
    if channels_last and not channels_first:
        return x.transpose(0, 3, 1, 2)
    if channels_first and not channels_last:
        return x
    raise DatasetError(
        f"{where}: cannot tell channels from image sides in shape {x.shape}; "
        "store images as [N, H, W, C] or [N, C, H, W] with H, W > 4"
    )


def _labels(y: np.ndarray, where: str, count: int) -> torch.Tensor:
    if y.ndim != 1 or y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.integer):
        raise DatasetError(f"{where}: labels must be 1-D integers, got {y.shape} {y.dtype}")
    if len(y) != count:
        raise DatasetError(f"{where}: {len(y)} labels for {count} samples")
    if count == 0:
        raise DatasetError(f"{where}: no samples")
    if y.min() < 0:
        raise DatasetError(f"{where}: labels must be non-negative")
    return torch.from_numpy(y.astype(np.int64))
