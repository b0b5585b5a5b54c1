"""Data set loaders: digits, FedProx synthetic, npz, IDX and torchvision specs."""

from __future__ import annotations

import gzip
import math
import struct
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from flchain.models.datasets import (
    DATASET_SPECS_HELP,
    Dataset,
    DatasetError,
    load_dataset,
    synthetic_federated,
)


def test_digits_shapes_scaling_and_stratified_split() -> None:
    ds = load_dataset("digits", seed=0, test_fraction=0.2)
    assert ds.input_shape == (1, 8, 8)
    assert ds.num_classes == 10
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert len(ds.x_train) + len(ds.x_test) == 1797
    assert len(ds.x_test) == round(1797 * 0.2)
    assert float(ds.x_train.min()) == 0.0 and float(ds.x_train.max()) == 1.0
    all_counts = torch.bincount(torch.cat([ds.y_train, ds.y_test]), minlength=10)
    test_counts = torch.bincount(ds.y_test, minlength=10)
    # Stratified: each class keeps its 20 % share in the test set, to within one sample.
    assert torch.all((test_counts.double() - 0.2 * all_counts.double()).abs() <= 1.0)


def test_digits_are_scikit_learns_without_importing_it(monkeypatch) -> None:
    from sklearn.datasets import load_digits

    from flchain.models import datasets

    images, target = datasets._digits_arrays()
    bunch = load_digits()
    assert np.array_equal(images, bunch.images) and np.array_equal(target, bunch.target)
    # a scikit-learn that keeps the file elsewhere still gives the same digits
    monkeypatch.setattr(datasets, "DIGITS_SHAPE", (1, 1))
    fallback_images, fallback_target = datasets._digits_arrays()
    assert np.array_equal(fallback_images, bunch.images)
    assert np.array_equal(fallback_target, bunch.target)


def test_loading_the_digits_imports_no_scikit_learn(tmp_path: Path) -> None:
    # a node's start (and the devnet's node host) skips scikit-learn's 0.6 s import
    code = (
        "import sys; from flchain.models.datasets import load_dataset; "
        "load_dataset('digits', seed=0); print('sklearn' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_digits_split_depends_only_on_seed() -> None:
    a, b = load_dataset("digits", seed=3), load_dataset("digits", seed=3)
    c = load_dataset("digits", seed=4)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)
    # The same samples, just split differently.
    assert len(a.x_test) == len(c.x_test)
    assert math.isclose(
        float(torch.cat([a.x_train, a.x_test]).sum()), float(torch.cat([c.x_train, c.x_test]).sum())
    )


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_test_fraction_must_be_a_proper_fraction(fraction: float) -> None:
    with pytest.raises(DatasetError, match="test_fraction"):
        load_dataset("digits", test_fraction=fraction)


@pytest.mark.parametrize("spec", ["", "mnist", "digits:extra", "npz:", "idx:", "torchvision:"])
def test_unknown_specs_are_rejected(spec: str) -> None:
    with pytest.raises(DatasetError):
        load_dataset(spec)


def test_help_names_every_spec_kind() -> None:
    for kind in ("digits", "synthetic", "npz:", "idx:", "torchvision:"):
        assert kind in DATASET_SPECS_HELP


def test_synthetic_default_is_pooled_fedprox_data() -> None:
    ds = load_dataset("synthetic", seed=1)
    assert ds.input_shape == (60,)
    assert ds.num_classes == 10
    assert len(ds.x_train) + len(ds.x_test) == 30 * 100
    again = load_dataset("synthetic:1,1", seed=1)
    assert torch.equal(ds.x_train, again.x_train) and torch.equal(ds.y_test, again.y_test)
    other = load_dataset("synthetic:0.5,0.5", seed=1)
    assert not torch.equal(ds.x_train, other.x_train)


@pytest.mark.parametrize(
    "spec", ["synthetic:1", "synthetic:a,b", "synthetic:1,2,3", "synthetic:-1,1"]
)
def test_synthetic_bad_parameters(spec: str) -> None:
    with pytest.raises(DatasetError):
        load_dataset(spec)


def test_synthetic_federated_sizes_and_determinism() -> None:
    clients = synthetic_federated(3, 0.5, 0.5, 7, samples_per_client=[5, 8, 13])
    assert [len(x) for x, _ in clients] == [5, 8, 13]
    for x, y in clients:
        assert x.shape[1] == 60 and x.dtype == torch.float32
        assert y.dtype == torch.int64 and int(y.min()) >= 0 and int(y.max()) < 10
    again = synthetic_federated(3, 0.5, 0.5, 7, samples_per_client=[5, 8, 13])
    for (xa, ya), (xb, yb) in zip(clients, again, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert [len(x) for x, _ in synthetic_federated(4, 0, 0, 0, samples_per_client=9)] == [9] * 4


def test_synthetic_feature_covariance_is_j_to_the_minus_1_2() -> None:
    ((x, _),) = synthetic_federated(1, 1.0, 1.0, 0, samples_per_client=20000)
    var = x.double().var(dim=0)
    expected = torch.arange(1, 61, dtype=torch.float64) ** -1.2
    assert torch.allclose(var, expected, rtol=0.05)


def test_synthetic_beta_spreads_client_feature_means() -> None:
    def spread(beta: float) -> float:
        clients = synthetic_federated(40, 0.0, beta, 2, samples_per_client=50)
        means = torch.stack([x.double().mean(dim=0) for x, _ in clients])
        return float(means.var(dim=0).mean())

    # Client means vary as N(B_k, 1) with B_k ~ N(0, beta): variance about 1 + beta^2.
    assert 0.5 < spread(0.0) < 1.6
    assert spread(5.0) > 10.0


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((0, 1.0, 1.0, 0), {}),
        ((2, -1.0, 1.0, 0), {}),
        ((2, 1.0, float("nan"), 0), {}),
        ((2, 1.0, 1.0, -1), {}),
        ((2, 1.0, 1.0, 0), {"samples_per_client": [3]}),
        ((2, 1.0, 1.0, 0), {"samples_per_client": 0}),
    ],
)
def test_synthetic_federated_rejects_bad_arguments(args: tuple, kwargs: dict) -> None:
    with pytest.raises(DatasetError):
        synthetic_federated(*args, **kwargs)


# --- npz ---------------------------------------------------------------------------------


def test_npz_uint8_grayscale_images_become_nchw_in_unit_range(tmp_path: Path) -> None:
    x_train = np.zeros((4, 5, 6), dtype=np.uint8)
    x_train[0, 1, 2] = 255
    x_train[1, 0, 0] = 51
    path = tmp_path / "d.npz"
    np.savez(
        path,
        x_train=x_train,
        y_train=np.array([0, 1, 2, 1]),
        x_test=np.full((2, 5, 6), 255, dtype=np.uint8),
        y_test=np.array([3, 0]),
    )
    ds = load_dataset(f"npz:{path}")
    assert ds.input_shape == (1, 5, 6)
    assert ds.num_classes == 4
    assert float(ds.x_train[0, 0, 1, 2]) == 1.0
    assert math.isclose(float(ds.x_train[1, 0, 0, 0]), 0.2, rel_tol=1e-6)
    assert float(ds.x_train.sum()) == pytest.approx(1.2)
    assert torch.all(ds.x_test == 1.0)
    assert ds.y_train.tolist() == [0, 1, 2, 1]


def test_npz_channels_last_images_are_transposed(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, size=(3, 5, 6, 3), dtype=np.uint8)
    path = tmp_path / "rgb.npz"
    np.savez(path, x_train=raw, y_train=np.arange(3), x_test=raw[:1], y_test=np.array([0]))
    ds = load_dataset(f"npz:{path}")
    assert ds.input_shape == (3, 5, 6)
    assert float(ds.x_train[2, 1, 4, 5]) == pytest.approx(raw[2, 4, 5, 1] / 255.0)


def test_npz_x_y_is_split_by_test_fraction(tmp_path: Path) -> None:
    x = np.arange(40, dtype=np.float64).reshape(10, 4)
    y = np.array([0, 1] * 5)
    path = tmp_path / "tab.npz"
    np.savez(path, x=x, y=y)
    ds = load_dataset(f"npz:{path}", test_fraction=0.4, seed=1)
    assert ds.input_shape == (4,)
    assert len(ds.x_test) == 4 and len(ds.x_train) == 6
    assert torch.bincount(ds.y_test).tolist() == [2, 2]
    rows = sorted(r[0] for r in torch.cat([ds.x_train, ds.x_test]).tolist())
    assert rows == [4.0 * i for i in range(10)]
    # Rows keep their labels: row i has label i % 2.
    for split_x, split_y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        assert [int(r[0]) // 4 % 2 for r in split_x.tolist()] == split_y.tolist()


def test_npz_with_pickled_objects_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "obj.npz"
    np.savez(path, x=np.array([{"a": 1}, None], dtype=object), y=np.array([0, 1]))
    with pytest.raises(DatasetError, match="pickle"):
        load_dataset(f"npz:{path}")


def test_npz_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(f"npz:{tmp_path / 'absent.npz'}")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a zip archive at all")
    with pytest.raises(DatasetError):
        load_dataset(f"npz:{garbage}")
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(DatasetError, match="single array"):
        load_dataset(f"npz:{single}")
    wrong_keys = tmp_path / "keys.npz"
    np.savez(wrong_keys, images=np.zeros((2, 3)), labels=np.zeros(2, dtype=int))
    with pytest.raises(DatasetError, match="images"):
        load_dataset(f"npz:{wrong_keys}")
    float_labels = tmp_path / "floaty.npz"
    np.savez(float_labels, x=np.zeros((6, 3)), y=np.zeros(6))
    with pytest.raises(DatasetError, match="labels"):
        load_dataset(f"npz:{float_labels}")
    short = tmp_path / "short.npz"
    np.savez(short, x=np.zeros((6, 3)), y=np.zeros(5, dtype=int))
    with pytest.raises(DatasetError, match="5 labels for 6 samples"):
        load_dataset(f"npz:{short}")
    ambiguous = tmp_path / "ambiguous.npz"
    np.savez(ambiguous, x=np.zeros((6, 3, 4, 4), dtype=np.uint8), y=np.zeros(6, dtype=int))
    with pytest.raises(DatasetError, match="channels"):
        load_dataset(f"npz:{ambiguous}")
    nan = tmp_path / "nan.npz"
    np.savez(nan, x=np.full((6, 2), np.nan), y=np.zeros(6, dtype=int))
    with pytest.raises(DatasetError, match="NaN"):
        load_dataset(f"npz:{nan}")


# --- IDX ---------------------------------------------------------------------------------


def _idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    dtype = {0x08: ">u1", 0x0D: ">f4"}[code]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(dtype).tobytes()


def _write_idx_set(folder: Path, *, gz: bool = False, code: int = 0x08) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, size=(6, 4, 5)),
        "train-labels-idx1-ubyte": np.array([0, 1, 2, 0, 1, 2]),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, size=(3, 4, 5)),
        "t10k-labels-idx1-ubyte": np.array([2, 1, 0]),
    }
    for stem, array in arrays.items():
        data = _idx_bytes(array, code if "images" in stem else 0x08)
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / stem).write_bytes(data)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_idx_loads_mnist_style_files(tmp_path: Path, gz: bool) -> None:
    arrays = _write_idx_set(tmp_path, gz=gz)
    ds = load_dataset(f"idx:{tmp_path}")
    assert ds.input_shape == (1, 4, 5)
    assert ds.num_classes == 3
    expected = torch.from_numpy(arrays["train-images-idx3-ubyte"] / 255.0).float().unsqueeze(1)
    assert torch.allclose(ds.x_train, expected)
    assert ds.y_train.tolist() == [0, 1, 2, 0, 1, 2]
    assert ds.y_test.tolist() == [2, 1, 0]
    assert len(ds.x_test) == 3


def test_idx_reads_big_endian_floats(tmp_path: Path) -> None:
    arrays = _write_idx_set(tmp_path, code=0x0D)
    ds = load_dataset(f"idx:{tmp_path}")
    # Float images are taken as they are (no /255 scaling); byte order is converted.
    assert torch.equal(ds.x_test[:, 0], torch.from_numpy(arrays["t10k-images-idx3-ubyte"]).float())


def test_idx_corrupt_files_raise_clear_errors(tmp_path: Path) -> None:
    stem = "train-images-idx3-ubyte"
    good = _idx_bytes(np.zeros((6, 4, 5)))
    cases = {
        "bad magic": b"\x01\x02" + good[2:],
        "unknown type": good[:2] + b"\x07" + good[3:],
        "truncated": good[:-3],
        "trailing": good + b"\x00",
        "short header": good[:6],
    }
    for reason, data in cases.items():
        folder = tmp_path / reason.replace(" ", "_")
        folder.mkdir()
        _write_idx_set(folder)
        (folder / stem).write_bytes(data)
        with pytest.raises(DatasetError, match=stem):
            load_dataset(f"idx:{folder}")


def test_idx_missing_file_bad_gzip_and_count_mismatch(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    missing.mkdir()
    _write_idx_set(missing)
    (missing / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetError, match="missing IDX file t10k-labels-idx1-ubyte"):
        load_dataset(f"idx:{missing}")
    bad_gz = tmp_path / "badgz"
    bad_gz.mkdir()
    _write_idx_set(bad_gz, gz=True)
    (bad_gz / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b" + b"junk" * 10)
    with pytest.raises(DatasetError, match="gzip"):
        load_dataset(f"idx:{bad_gz}")
    mismatch = tmp_path / "mismatch"
    mismatch.mkdir()
    _write_idx_set(mismatch)
    (mismatch / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(np.array([0, 1, 2])))
    with pytest.raises(DatasetError, match="3 labels for 6 samples"):
        load_dataset(f"idx:{mismatch}")
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(f"idx:{tmp_path / 'nowhere'}")


# --- torchvision -------------------------------------------------------------------------


def test_torchvision_missing_gives_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torchvision", None)
    with pytest.raises(DatasetError, match="torchvision is not installed"):
        load_dataset("torchvision:MNIST")


def test_torchvision_datasets_are_converted(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, bool, bool]] = []

    class FakeCIFAR:
        def __init__(self, root: str, train: bool, download: bool) -> None:
            calls.append((root, train, download))
            self.classes = [f"c{i}" for i in range(10)]
            n = 4 if train else 2
            self.data = np.full((n, 32, 32, 3), 255 if train else 0, dtype=np.uint8)
            self.targets = list(range(n))

    fake = types.SimpleNamespace(datasets=types.SimpleNamespace(CIFAR10=FakeCIFAR))
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    ds = load_dataset("torchvision:cifar10:/srv/data")
    assert calls == [("/srv/data", True, False), ("/srv/data", False, False)]
    assert ds.input_shape == (3, 32, 32)
    assert ds.num_classes == 10
    assert torch.all(ds.x_train == 1.0) and torch.all(ds.x_test == 0.0)
    assert ds.y_train.tolist() == [0, 1, 2, 3]


def test_torchvision_absent_data_and_unknown_names(monkeypatch: pytest.MonkeyPatch) -> None:
    class Absent:
        def __init__(self, root: str, train: bool, download: bool) -> None:
            raise RuntimeError("Dataset not found.")

    fake = types.SimpleNamespace(datasets=types.SimpleNamespace(MNIST=Absent))
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    with pytest.raises(DatasetError, match="MNIST not found under 'data'"):
        load_dataset("torchvision:MNIST")
    with pytest.raises(DatasetError, match="unsupported torchvision data set"):
        load_dataset("torchvision:ImageNet")


# --- Dataset -----------------------------------------------------------------------------


def test_dataset_validates_its_tensors() -> None:
    x = torch.zeros(4, 3)
    y = torch.tensor([0, 1, 2, 1])
    ok = Dataset("t", x, y, x[:2], y[:2], 3)
    assert ok.input_shape == (3,)
    with pytest.raises(DatasetError, match="4 samples but 3 labels"):
        Dataset("t", x, y[:3], x, y, 3)
    with pytest.raises(DatasetError, match="outside"):
        Dataset("t", x, y, x, y, 2)
    with pytest.raises(DatasetError, match="int64"):
        Dataset("t", x, y.float(), x, y, 3)
    with pytest.raises(DatasetError, match="differ in shape"):
        Dataset("t", x, y, torch.zeros(4, 2), y, 3)
    with pytest.raises(DatasetError, match="float32"):
        Dataset("t", x.double(), y, x, y, 3)
