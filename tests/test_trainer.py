"""Local training: bit-for-bit reproducibility, learning, FedProx term, devices, errors."""

from __future__ import annotations

import os

import pytest
import torch

from flchain.models import (
    DeviceError,
    TrainConfig,
    TrainingError,
    build_model,
    evaluate,
    flatten_params,
    load_dataset,
    model_to_bytes,
    pick_device,
    train_local,
)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


def _cnn(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("cnn", (1, 8, 8), 10)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_seeded_training_is_reproducible_bit_for_bit(digits) -> None:
    x, y = digits.x_train[:160], digits.y_train[:160]
    config = TrainConfig(epochs=2, batch_size=16)
    runs = []
    for _ in range(2):
        model = _cnn(seed=7)
        result = train_local(model, x, y, config, generator=_gen(3))
        runs.append((model_to_bytes(model), result))
    assert runs[0][0] == runs[1][0]
    assert runs[0][1] == runs[1][1]
    other = _cnn(seed=7)
    train_local(other, x, y, config, generator=_gen(4))
    assert model_to_bytes(other) != runs[0][0]


@pytest.mark.parametrize("momentum, weight_decay", [(0.9, 0.0), (0.5, 1e-3), (0.0, 0.0)])
def test_training_steps_exactly_as_torch_optim_sgd(digits, momentum, weight_decay) -> None:
    """train_local steps through torch's functional SGD (no torch._dynamo import); the
    parameters are bit for bit what torch.optim.SGD gives on the same batches."""
    x, y = digits.x_train[:100], digits.y_train[:100]
    config = TrainConfig(
        epochs=2, batch_size=16, lr=0.1, momentum=momentum, weight_decay=weight_decay
    )
    ours = _cnn(seed=5)
    train_local(ours, x, y, config, generator=_gen(9))

    reference = _cnn(seed=5)
    optimizer = torch.optim.SGD(
        reference.parameters(), lr=0.1, momentum=momentum, weight_decay=weight_decay
    )
    generator = _gen(9)
    reference.train()
    for _ in range(config.epochs):
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y), config.batch_size):
            idx = order[start : start + config.batch_size]
            loss = torch.nn.functional.cross_entropy(reference(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    assert model_to_bytes(ours) == model_to_bytes(reference)
    assert model_to_bytes(ours) != model_to_bytes(_cnn(seed=5))  # it did train


def test_cnn_learns_digits(digits) -> None:
    model = _cnn()
    result = train_local(
        model, digits.x_train, digits.y_train, TrainConfig(epochs=4), generator=_gen(0)
    )
    assert result.num_samples == len(digits.y_train)
    acc = evaluate(model, digits.x_test, digits.y_test).accuracy
    assert acc > 0.9


def test_steps_count_partial_batches() -> None:
    torch.manual_seed(0)
    model = build_model("logreg", (5,), 3)
    x, y = torch.randn(100, 5), torch.randint(0, 3, (100,))
    result = train_local(model, x, y, TrainConfig(epochs=3, batch_size=32), generator=_gen(0))
    assert result.steps == 3 * 4  # 32 + 32 + 32 + 4 per epoch
    assert result.num_samples == 100


def test_reported_loss_is_the_per_sample_mean_of_the_last_epoch() -> None:
    torch.manual_seed(0)
    model = build_model("mlp", (5,), 3)
    x, y = torch.randn(100, 5), torch.randint(0, 3, (100,))
    before = evaluate(model, x, y).loss
    # A vanishing step leaves the model as it was, so the training loss (with an uneven
    # last batch of 4) must equal the loss over all samples.
    config = TrainConfig(epochs=1, batch_size=32, lr=1e-12, momentum=0.0)
    result = train_local(model, x, y, config, generator=_gen(0))
    assert result.loss == pytest.approx(before, rel=1e-6)


def _drift(config: TrainConfig, digits) -> tuple[float, bytes]:
    model = _cnn(seed=1)
    start = flatten_params(model)
    train_local(
        model,
        digits.x_train[:160],
        digits.y_train[:160],
        config,
        generator=_gen(0),
        global_params=start,
    )
    return float((flatten_params(model) - start).norm()), model_to_bytes(model)


def test_prox_term_pulls_towards_the_global_model(digits) -> None:
    plain_drift, plain_bytes = _drift(TrainConfig(epochs=2, prox_mu=0.0), digits)
    prox_drift, prox_bytes = _drift(TrainConfig(epochs=2, prox_mu=5.0), digits)
    assert prox_bytes != plain_bytes
    assert prox_drift < 0.9 * plain_drift


def test_prox_needs_a_matching_global_vector() -> None:
    torch.manual_seed(0)
    model = build_model("logreg", (4,), 2)
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    config = TrainConfig(prox_mu=0.1)
    with pytest.raises(TrainingError, match="needs global_params"):
        train_local(model, x, y, config, generator=_gen(0))
    with pytest.raises(TrainingError, match="1-D tensor of 10 values"):
        train_local(model, x, y, config, generator=_gen(0), global_params=torch.zeros(9))
    with pytest.raises(TrainingError, match="NaN"):
        train_local(
            model, x, y, config, generator=_gen(0), global_params=torch.full((10,), float("nan"))
        )


def test_training_keeps_mode_and_device() -> None:
    torch.manual_seed(0)
    model = build_model("mlp", (4,), 2).eval()
    train_local(
        model, torch.randn(8, 4), torch.randint(0, 2, (8,)), TrainConfig(), generator=_gen(0)
    )
    assert not model.training
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_divergence_is_reported() -> None:
    torch.manual_seed(0)
    model = build_model("logreg", (4,), 2)
    x, y = torch.randn(64, 4) * 1e30, torch.randint(0, 2, (64,))
    with pytest.raises(TrainingError, match="diverged"):
        train_local(model, x, y, TrainConfig(lr=1e10, epochs=3), generator=_gen(0))


def test_bad_training_input_raises() -> None:
    torch.manual_seed(0)
    model = build_model("logreg", (4,), 3)
    x, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    cases = {
        "empty": (torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), {}),
        "6 samples but y has 5": (x, y[:5], {}),
        "int64": (x, y.float(), {}),
        "floating-point": (x.long(), y, {}),
        "non-negative": (x, y - 1, {}),
        "labels go up to 3": (x, y + 1, {}),
        "CPU torch.Generator": (x, y, {"generator": 3}),
    }
    for message, (xs, ys, kwargs) in cases.items():
        kwargs = {"generator": _gen(0), **kwargs}
        with pytest.raises(TrainingError, match=message):
            train_local(model, xs, ys, TrainConfig(), **kwargs)
    with pytest.raises(TrainingError, match="TrainConfig"):
        train_local(model, x, y, {"epochs": 1}, generator=_gen(0))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"lr": float("inf")}, "lr"),
        ({"momentum": 1.0}, "momentum"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"prox_mu": float("nan")}, "prox_mu"),
    ],
)
def test_train_config_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(TrainingError, match=message):
        TrainConfig(**kwargs)


def test_weight_decay_shrinks_weights() -> None:
    x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
    norms = []
    for wd in (0.0, 0.5):
        torch.manual_seed(0)
        model = build_model("logreg", (4,), 2)
        train_local(model, x, y, TrainConfig(epochs=5, weight_decay=wd), generator=_gen(0))
        norms.append(float(flatten_params(model).norm()))
    assert norms[1] < norms[0]


# --- devices -----------------------------------------------------------------------------


def test_pick_device_cpu_and_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device(" CPU ") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto") == torch.device("cuda")


def test_pick_device_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="CUDA is not available"):
        pick_device("cuda")
    with pytest.raises(DeviceError, match="CUDA is not available"):
        train_local(
            build_model("logreg", (2,), 2),
            torch.zeros(2, 2),
            torch.tensor([0, 1]),
            TrainConfig(),
            generator=_gen(0),
            device="cuda",
        )
    with pytest.raises(DeviceError, match="CUDA is not available"):
        evaluate(
            build_model("logreg", (2,), 2),
            torch.zeros(2, 2),
            torch.tensor([0, 1]),
            device=torch.device("cuda"),
        )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert pick_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(DeviceError, match="only 1 GPU"):
        pick_device("cuda:3")
    with pytest.raises(DeviceError, match="unknown device"):
        pick_device("gpu0")
    with pytest.raises(DeviceError, match="must be a string"):
        pick_device(0)  # type: ignore[arg-type]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_training_returns_model_to_cpu(digits) -> None:
    model = _cnn()
    result = train_local(
        model,
        digits.x_train,
        digits.y_train,
        TrainConfig(epochs=3),
        generator=_gen(0),
        device="cuda",
    )
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert result.steps == 3 * ((len(digits.y_train) + 31) // 32)
    assert evaluate(model, digits.x_test, digits.y_test, device="cuda").accuracy > 0.9


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_training_is_reproducible_bit_for_bit(digits) -> None:
    x, y = digits.x_train, digits.y_train
    config = TrainConfig(epochs=2, batch_size=16, momentum=0.9)
    runs = []
    for _ in range(2):
        model = _cnn(seed=7)
        train_local(model, x, y, config, generator=_gen(3), device="cuda")
        runs.append(model_to_bytes(model))
    assert runs[0] == runs[1]


def test_training_on_cuda_pins_deterministic_kernels_and_restores_the_settings(
    monkeypatch,
) -> None:
    # The settings are process-wide flags, so this runs without a GPU too.
    from flchain.models.device import reproducible_kernels

    cudnn = torch.backends.cudnn
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(cudnn, "benchmark", True)
    monkeypatch.setattr(cudnn, "deterministic", False)
    assert not torch.are_deterministic_algorithms_enabled()
    with reproducible_kernels(torch.device("cpu")):
        assert cudnn.benchmark and not torch.are_deterministic_algorithms_enabled()
    with reproducible_kernels(torch.device("cuda")):
        assert cudnn.deterministic and not cudnn.benchmark
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert cudnn.benchmark and not cudnn.deterministic
    assert not torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        with reproducible_kernels(torch.device("cuda:0")):
            assert not torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
