"""Choosing a torch device, and running a model on one without losing track of where it was.

Peers with a GPU train on it, everyone else on CPU; a peer that asks for a GPU it does not
have gets an error instead of a silent fallback.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class DeviceError(ValueError):
    """Raised for a device name that is malformed or not available on this machine."""


def pick_device(name: str = "auto") -> torch.device:
    """Resolve a device name: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda``,
    ``cuda:N`` or ``mps``. Asking for an accelerator that is not present raises."""
    if not isinstance(name, str):
        raise DeviceError(f"device name must be a string, got {type(name)}")
    key = name.strip().lower()
    if key == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        _prepare_cublas()
        return torch.device("cuda")
    try:
        device = torch.device(key)
    except RuntimeError:
        raise DeviceError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        _prepare_cublas()
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {name!r} requested but CUDA is not available on this machine "
                "(no GPU, or a CPU-only torch build); use 'auto' or 'cpu'"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {name!r} requested but only {torch.cuda.device_count()} GPU(s) exist"
            )
        return device
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise DeviceError(f"device {name!r} requested but MPS is not available")
        return device
    raise DeviceError(f"unsupported device {name!r}; use auto, cpu, cuda, cuda:N or mps")


@contextmanager
def on_device(model: nn.Module, device: torch.device | str) -> Iterator[torch.device]:
    """Move `model` (in place) to `device` for the block and back to where it was after.

    The device goes through `pick_device`, so ``"auto"`` works and a missing GPU is an error
    rather than a torch assertion deep inside ``model.to``.
    """
    target = pick_device(device if isinstance(device, str) else str(device))
    original = next(
        (t.device for t in (*model.parameters(), *model.buffers())), torch.device("cpu")
    )
    model.to(target)
    try:
        yield target
    finally:
        model.to(original)


# cuBLAS picks its workspace per stream unless told one fixed size, and then a matrix product
# may split its sum differently from one call to the next. The variable is read when the
# library starts in this process, so it is set when a CUDA device is first chosen; a user's
# own setting wins.
_CUBLAS_WORKSPACE = ":4096:8"


def _prepare_cublas() -> None:
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", _CUBLAS_WORKSPACE)


@contextmanager
def reproducible_kernels(device: torch.device) -> Iterator[None]:
    """Run the block with CUDA kernels that give the same bits for the same inputs.

    By default cuDNN may pick a convolution's backward algorithm by timing candidates, and
    several of them sum with atomics, so the same seed trained the CNN on an H200 to
    different bytes twice in a row. A peer's update is meant to be re-derivable from its
    seed, so training pins cuDNN to deterministic algorithms and asks torch for its
    deterministic kernels; an operation that has none warns instead of failing. Other
    devices are left alone: their kernels are already deterministic. The global settings are
    restored after the block.
    """
    if device.type != "cuda":
        yield
        return
    cudnn = torch.backends.cudnn
    saved = (
        cudnn.deterministic,
        cudnn.benchmark,
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    _prepare_cublas()
    cudnn.deterministic, cudnn.benchmark = True, False
    if not saved[2]:  # a caller who already asked for strict mode keeps it
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        cudnn.deterministic, cudnn.benchmark = saved[0], saved[1]
        torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])
