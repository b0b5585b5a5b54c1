"""Local training of one FL client: SGD with momentum, optional FedProx proximal term.

A client's update must be reproducible bit for bit from its seed (so a result can be
re-derived and audited), hence shuffling draws only from the caller's CPU generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torch.optim.sgd import sgd

from flchain.models.device import DeviceError, on_device, pick_device, reproducible_kernels
from flchain.models.params import flatten_params, load_flat_params, num_params

__all__ = [
    "DeviceError",
    "TrainConfig",
    "TrainResult",
    "TrainingError",
    "local_update",
    "pick_device",
    "train_local",
]


class TrainingError(ValueError):
    """Raised for unusable training data or settings, or a run whose loss diverged."""


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one round of local training.

    `prox_mu` > 0 adds FedProx's proximal term mu/2 * ||w - w_global||^2 (Li et al. 2020),
    which keeps heterogeneous clients from drifting far from the global model.
    """

    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    prox_mu: float = 0.0

    @classmethod
    def of(cls, settings: object) -> TrainConfig:
        """From any settings object with `local_epochs`, `batch_size`, `lr`, `momentum`,
        `weight_decay` and `prox_mu` (the simulation's and the task's configs)."""
        return cls(
            epochs=settings.local_epochs,  # type: ignore[attr-defined]
            batch_size=settings.batch_size,  # type: ignore[attr-defined]
            lr=settings.lr,  # type: ignore[attr-defined]
            momentum=settings.momentum,  # type: ignore[attr-defined]
            weight_decay=settings.weight_decay,  # type: ignore[attr-defined]
            prox_mu=settings.prox_mu,  # type: ignore[attr-defined]
        )

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TrainingError(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("lr", "momentum", "weight_decay", "prox_mu"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise TrainingError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.lr == 0:
            raise TrainingError("lr must be > 0")
        if self.momentum >= 1:
            raise TrainingError(f"momentum must be < 1, got {self.momentum}")


@dataclass(frozen=True)
class TrainResult:
    """Mean cross-entropy over the last epoch (without the proximal term), the number of
    samples trained on and the number of optimizer steps taken."""

    loss: float
    num_samples: int
    steps: int


class _SgdStep:
    """torch.optim.SGD's step, through torch's functional form of it (`torch.optim.sgd.sgd`,
    the same computation the class runs, momentum buffers kept here).

    Why not the class: constructing any `torch.optim.Optimizer` imports torch._dynamo (0.9-1.4 s
    of CPU), which every node process and simulation paid before its first step (a devnet's
    node host preloaded it, on the path to the first round). The functional form does not;
    `tests/test_trainer.py` checks that both give bit-identical parameters."""

    def __init__(self, params: list[torch.Tensor], config: TrainConfig) -> None:
        self.params = params
        self.config = config
        self.momentum_buffers: list[torch.Tensor | None] = [None] * len(params)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def __call__(self) -> None:
        with_grad = [i for i, p in enumerate(self.params) if p.grad is not None]
        buffers = [self.momentum_buffers[i] for i in with_grad]
        sgd(
            [self.params[i] for i in with_grad],
            [self.params[i].grad for i in with_grad],  # type: ignore[misc]
            buffers,
            weight_decay=self.config.weight_decay,
            momentum=self.config.momentum,
            lr=self.config.lr,
            dampening=0.0,
            nesterov=False,
            maximize=False,
        )
        for i, buffer in zip(with_grad, buffers, strict=True):
            self.momentum_buffers[i] = buffer


def train_local(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    config: TrainConfig,
    *,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
    global_params: torch.Tensor | None = None,
) -> TrainResult:
    """Train `model` in place on ``(x, y)`` and return the training statistics.

    The model is moved to `device` for training and back to its original device after,
    and keeps its train/eval mode. The optimizer (and its momentum) is fresh per call, as
    in FedAvg. Each epoch visits the samples in an order drawn from `generator` (a CPU
    generator), the last batch may be smaller. `global_params` is the flat vector
    (`flatten_params`) of the global model the round started from; it is required when
    ``config.prox_mu > 0`` and ignored otherwise.
    """
    n = _check_data(x, y)
    if not isinstance(config, TrainConfig):
        raise TrainingError(f"config must be a TrainConfig, got {type(config)}")
    if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        raise TrainingError("generator must be a CPU torch.Generator")
    if config.prox_mu > 0 and global_params is None:
        raise TrainingError("prox_mu > 0 needs global_params (the flat global model)")
    was_training = model.training
    with on_device(model, device) as dev, reproducible_kernels(dev):
        params = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        anchors = _prox_anchors(model, params, global_params, dev) if config.prox_mu > 0 else []
        step = _SgdStep([p for _, p in params], config)
        model.train()
        steps = 0
        try:
            for _ in range(config.epochs):
                order = torch.randperm(n, generator=generator)
                total = torch.zeros((), dtype=torch.float64, device=dev)
                for start in range(0, n, config.batch_size):
                    idx = order[start : start + config.batch_size]
                    xb, yb = x[idx].to(dev), y[idx].to(dev)
                    logits = model(xb)
                    if steps == 0:
                        _check_label_range(y, logits)
                    loss = F.cross_entropy(logits, yb)
                    objective = loss
                    if anchors:
                        objective = loss + 0.5 * config.prox_mu * _sq_distance(params, anchors)
                    step.zero_grad()
                    objective.backward()
                    step()
                    steps += 1
                    total += loss.detach().to(torch.float64) * len(idx)
                mean_loss = total.item() / n
                if not math.isfinite(mean_loss):
                    raise TrainingError(f"training diverged (loss {mean_loss}); lower lr")
        finally:
            model.train(was_training)
    return TrainResult(loss=mean_loss, num_samples=n, steps=steps)


def local_update(
    model: nn.Module,
    base: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    config: TrainConfig,
    *,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor, TrainResult]:
    """One peer's round: start from the flat `base` model, train, and return (update, local
    params, result) with update = local - base. The simulation and the network node both call
    this, so an experiment trains exactly as a node does. `model` is overwritten."""
    load_flat_params(model, base)
    result = train_local(
        model,
        x,
        y,
        config,
        generator=generator,
        device=device,
        global_params=base if config.prox_mu > 0 else None,
    )
    local = flatten_params(model)
    return local - base, local, result


def _check_data(x: torch.Tensor, y: torch.Tensor) -> int:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TrainingError("x must be a floating-point tensor")
    if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or y.ndim != 1:
        raise TrainingError("y must be a 1-D int64 tensor of class indices")
    if len(x) != len(y):
        raise TrainingError(f"x has {len(x)} samples but y has {len(y)} labels")
    if len(y) == 0:
        raise TrainingError("no training data: x and y are empty")
    if int(y.min()) < 0:
        raise TrainingError("labels must be non-negative")
    return len(y)


def _check_label_range(y: torch.Tensor, logits: torch.Tensor) -> None:
    if logits.ndim != 2 or int(y.max()) >= logits.shape[1]:
        raise TrainingError(
            f"labels go up to {int(y.max())} but the model outputs {tuple(logits.shape[1:])}"
        )


def _sq_distance(
    params: list[tuple[str, nn.Parameter]], anchors: list[torch.Tensor]
) -> torch.Tensor:
    """||w - w_global||^2 over the trainable parameters, differentiable in w."""
    return torch.stack(
        [((p - a) ** 2).sum() for (_, p), a in zip(params, anchors, strict=True)]
    ).sum()


def _prox_anchors(
    model: nn.Module,
    params: list[tuple[str, nn.Parameter]],
    global_params: torch.Tensor | None,
    device: torch.device,
) -> list[torch.Tensor]:
    """Slices of the flat global vector that line up with the trainable parameters."""
    expected = num_params(model)
    if (
        not isinstance(global_params, torch.Tensor)
        or global_params.ndim != 1
        or global_params.numel() != expected
    ):
        raise TrainingError(f"global_params must be a 1-D tensor of {expected} values")
    if not bool(torch.isfinite(global_params).all()):
        raise TrainingError("global_params contains NaN or infinity")
    offsets: dict[str, tuple[int, int]] = {}
    offset = 0
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point():
            offsets[name] = (offset, offset + tensor.numel())
            offset += tensor.numel()
    anchors = []
    for name, p in params:
        start, end = offsets[name]
        anchors.append(global_params[start:end].reshape(p.shape).to(device, p.dtype))
    return anchors
