"""Model zoo, flat-parameter view, deterministic safetensors bytes, and evaluation."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from torch import nn

from flchain.models.evaluation import EvaluationError, evaluate
from flchain.models.params import (
    ParamsError,
    flatten_params,
    load_flat_params,
    model_from_bytes,
    model_to_bytes,
    num_params,
    sha256_hex,
)
from flchain.models.zoo import MODEL_NAMES, ModelError, build_model

IMAGE_SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]


def _seeded(name: str, shape: tuple[int, ...], classes: int = 10, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(name, shape, classes)


# --- zoo ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", IMAGE_SHAPES)
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_maps_images_to_logits(name: str, shape: tuple[int, ...]) -> None:
    model = _seeded(name, shape, classes=7)
    out = model(torch.rand(5, *shape))
    assert out.shape == (5, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["logreg", "mlp"])
def test_flat_models_take_tabular_input(name: str) -> None:
    assert _seeded(name, (60,))(torch.randn(3, 60)).shape == (3, 10)


def test_parameter_counts_by_hand() -> None:
    assert num_params(_seeded("logreg", (1, 8, 8))) == 64 * 10 + 10
    assert num_params(_seeded("mlp", (1, 8, 8))) == (64 * 128 + 128) + (128 * 64 + 64) + (
        64 * 10 + 10
    )
    # The CNN pools to 4x4, so its size does not depend on the image size.
    cnn_sizes = {num_params(_seeded("cnn", (1, side, side))) for side in (8, 28)}
    assert cnn_sizes == {(9 * 32 + 32) + (9 * 32 * 64 + 64) + (1024 * 128 + 128) + 1290}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_models_have_no_running_stat_buffers(name: str) -> None:
    model = _seeded(name, (3, 32, 32))
    assert list(model.buffers()) == []
    assert num_params(model) == sum(p.numel() for p in model.parameters())


def test_initialisation_follows_the_callers_seed() -> None:
    a = model_to_bytes(_seeded("resnet", (1, 8, 8), seed=11))
    b = model_to_bytes(_seeded("resnet", (1, 8, 8), seed=11))
    c = model_to_bytes(_seeded("resnet", (1, 8, 8), seed=12))
    assert a == b
    assert a != c


@pytest.mark.parametrize(
    ("name", "shape", "classes", "message"),
    [
        ("vgg", (1, 8, 8), 10, "unknown model"),
        ("cnn", (60,), 10, "image input"),
        ("resnet", (8, 8), 10, "image input"),
        ("cnn", (1, 1, 8), 10, "at least 2x2"),
        ("mlp", (), 10, "positive ints"),
        ("mlp", (0, 8), 10, "positive ints"),
        ("mlp", (True, 8), 10, "positive ints"),
        ("mlp", "abc", 10, "tuple of ints"),
        ("mlp", (4,), 0, "num_classes"),
    ],
)
def test_build_model_rejects_bad_requests(
    name: str, shape: tuple, classes: int, message: str
) -> None:
    with pytest.raises(ModelError, match=message):
        build_model(name, shape, classes)


# --- flat params -------------------------------------------------------------------------


def _linear_2_to_1(weight: list[float], bias: float) -> nn.Linear:
    layer = nn.Linear(2, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([weight]))
        layer.bias.fill_(bias)
    return layer


def test_flatten_and_load_by_hand() -> None:
    layer = _linear_2_to_1([1.0, 2.0], 3.0)
    flat = flatten_params(layer)
    assert flat.dtype == torch.float32
    assert flat.tolist() == [1.0, 2.0, 3.0]
    load_flat_params(layer, torch.tensor([4.0, 5.0, 6.0], dtype=torch.float64))
    assert layer.weight.tolist() == [[4.0, 5.0]] and layer.bias.tolist() == [6.0]
    flat[0] = 100.0  # a copy, not a view
    assert layer.weight[0, 0].item() == 4.0


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_flat_round_trip(name: str) -> None:
    model = _seeded(name, (1, 8, 8))
    vec = torch.randn(num_params(model))
    load_flat_params(model, vec)
    assert torch.equal(flatten_params(model), vec)


def test_flat_view_covers_float_buffers_only() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    # Linear 12 + 4, BatchNorm weight/bias 4 + 4, running mean/var 4 + 4; the int64
    # num_batches_tracked counter is left out.
    assert num_params(model) == 16 + 8 + 8
    vec = torch.arange(32, dtype=torch.float32)
    load_flat_params(model, vec)
    assert model[1].running_var.tolist() == [28.0, 29.0, 30.0, 31.0]


def test_load_flat_params_rejects_bad_vectors_and_leaves_model_alone() -> None:
    layer = _linear_2_to_1([1.0, 2.0], 3.0)
    bad = {
        "has 2 values": torch.zeros(2),
        "NaN": torch.tensor([0.0, float("nan"), 0.0]),
        "1-D floating": torch.zeros(1, 3),
    }
    for message, vec in bad.items():
        with pytest.raises(ParamsError, match=message):
            load_flat_params(layer, vec)
    with pytest.raises(ParamsError, match="1-D floating"):
        load_flat_params(layer, torch.tensor([1, 2, 3]))
    assert flatten_params(layer).tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(ParamsError, match=r"nn\.Module"):
        flatten_params({"w": torch.zeros(1)})  # type: ignore[arg-type]


# --- bytes -------------------------------------------------------------------------------


def test_bytes_are_deterministic_and_value_sensitive() -> None:
    a, b = _seeded("cnn", (1, 8, 8)), _seeded("cnn", (1, 8, 8))
    assert model_to_bytes(a) == model_to_bytes(b)
    assert model_to_bytes(a) == model_to_bytes(a.state_dict())
    with torch.no_grad():
        b[0].bias[0] += 1e-6
    assert model_to_bytes(a) != model_to_bytes(b)


def test_bytes_are_the_same_in_a_fresh_process() -> None:
    code = (
        "import torch; from flchain.models import build_model, model_to_bytes, sha256_hex;"
        "torch.manual_seed(5); print(sha256_hex(model_to_bytes(build_model('mlp', (60,), 10))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120
    )
    assert out.stdout.strip() == sha256_hex(model_to_bytes(_seeded("mlp", (60,), seed=5)))


def test_bytes_round_trip_into_another_model() -> None:
    source, target = _seeded("resnet", (1, 8, 8), seed=1), _seeded("resnet", (1, 8, 8), seed=2)
    data = model_to_bytes(source)
    assert data[8:9] == b"{"  # safetensors: 8-byte header length, then JSON
    model_from_bytes(data, target)
    assert torch.equal(flatten_params(source), flatten_params(target))
    model_from_bytes(bytearray(data), target)


def test_bytes_of_shared_tensors_are_accepted() -> None:
    shared = torch.ones(3)
    data = model_to_bytes({"a": shared, "b": shared, "c": shared[:2]})
    target = nn.Module()
    for name in ("a", "b"):
        target.register_buffer(name, torch.zeros(3))
    target.register_buffer("c", torch.zeros(2))
    model_from_bytes(data, target)
    assert target.c.tolist() == [1.0, 1.0]


def test_model_from_bytes_validates_and_leaves_model_alone() -> None:
    target = _seeded("logreg", (1, 8, 8))
    before = flatten_params(target)
    nan_model = _seeded("logreg", (1, 8, 8))
    with torch.no_grad():
        nan_model[1].bias[0] = float("nan")
    cases = {
        "not a valid safetensors": b"\x00" * 40,
        "missing": model_to_bytes(_seeded("mlp", (1, 8, 8))),
        r"\(5, 64\)": model_to_bytes(_seeded("logreg", (1, 8, 8), classes=5)),
        "float64": model_to_bytes(_seeded("logreg", (1, 8, 8)).double()),
        "NaN": model_to_bytes(nan_model),
    }
    for message, data in cases.items():
        with pytest.raises(ParamsError, match=message):
            model_from_bytes(data, target)
    with pytest.raises(ParamsError, match="expected bytes"):
        model_from_bytes("not bytes", target)  # type: ignore[arg-type]
    with pytest.raises(ParamsError, match="named tensor"):
        model_to_bytes({"w": [1.0]})  # type: ignore[dict-item]
    assert torch.equal(flatten_params(target), before)


def test_sha256_known_vectors() -> None:
    assert sha256_hex(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert sha256_hex(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    with pytest.raises(ParamsError):
        sha256_hex("abc")  # type: ignore[arg-type]


# --- evaluation --------------------------------------------------------------------------


def _constant_logits(bias: list[float]) -> nn.Linear:
    layer = nn.Linear(1, len(bias))
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.copy_(torch.tensor(bias))
    return layer


def test_evaluate_uniform_prediction_by_hand() -> None:
    model = _constant_logits([0.0, 0.0])
    res = evaluate(model, torch.randn(3, 1), torch.tensor([0, 0, 1]))
    assert res.num_samples == 3
    assert res.entropy == pytest.approx(math.log(2))
    assert res.loss == pytest.approx(math.log(2))
    assert res.accuracy == pytest.approx(2 / 3)  # a tie predicts class 0


def test_evaluate_skewed_prediction_by_hand() -> None:
    model = _constant_logits([math.log(3.0), 0.0])  # p = (0.75, 0.25)
    res = evaluate(model, torch.zeros(2, 1), torch.tensor([0, 1]), batch_size=1)
    assert res.accuracy == 0.5
    assert res.loss == pytest.approx((-math.log(0.75) - math.log(0.25)) / 2, rel=1e-6)
    assert res.entropy == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)), rel=1e-6)


def test_evaluate_does_not_depend_on_batch_size_and_keeps_mode() -> None:
    model = _seeded("cnn", (1, 8, 8))
    model.train()
    x, y = torch.rand(50, 1, 8, 8), torch.randint(0, 10, (50,))
    whole, pieces = evaluate(model, x, y), evaluate(model, x, y, batch_size=7)
    assert model.training
    assert whole.accuracy == pieces.accuracy
    assert whole.loss == pytest.approx(pieces.loss, rel=1e-5)
    assert whole.entropy == pytest.approx(pieces.entropy, rel=1e-5)
    assert 0.0 <= whole.entropy <= math.log(10) + 1e-9


def test_evaluate_in_channels_last_agrees_and_leaves_the_model_as_it_was() -> None:
    """The faster layout gives the same figures to float32 rounding, and the model it ran
    (weights included) is back in its own layout: training after it is bit-identical."""
    from flchain.models.trainer import TrainConfig, local_update

    x, y = torch.rand(300, 1, 8, 8), torch.randint(0, 10, (300,))
    model = _seeded("cnn", (1, 8, 8))
    default, fast = evaluate(model, x, y), evaluate(model, x, y, channels_last=True)
    assert fast.accuracy == default.accuracy
    assert fast.loss == pytest.approx(default.loss, rel=1e-5)
    assert fast.entropy == pytest.approx(default.entropy, rel=1e-5)
    assert all(p.is_contiguous() for p in model.parameters())

    def trained(evaluate_first: bool) -> bytes:
        net = _seeded("cnn", (1, 8, 8))
        if evaluate_first:
            evaluate(net, x, y, channels_last=True)
        config = TrainConfig(epochs=1, batch_size=16, lr=0.1, momentum=0.9)
        base = flatten_params(net)
        update, _, _ = local_update(
            net, base, x, y, config, generator=torch.Generator().manual_seed(0)
        )
        return update.numpy().tobytes()

    assert trained(evaluate_first=True) == trained(evaluate_first=False)


def test_evaluate_rejects_bad_input() -> None:
    model = _constant_logits([0.0, 0.0])
    x = torch.zeros(2, 1)
    cases = {
        "empty": (torch.zeros(0, 1), torch.zeros(0, dtype=torch.int64), {}),
        "x has 2 samples but y has 1 labels": (x, torch.tensor([0]), {}),
        "up to 2": (x, torch.tensor([0, 2]), {}),
        "non-negative": (x, torch.tensor([0, -1]), {}),
        "int64": (x, torch.tensor([0.0, 1.0]), {}),
        "batch_size": (x, torch.tensor([0, 1]), {"batch_size": 0}),
    }
    for message, (xs, ys, kwargs) in cases.items():
        with pytest.raises(EvaluationError, match=message):
            evaluate(model, xs, ys, **kwargs)
