"""Choosing a torch device, and running a model on one without losing track of where it was.

Peers with a GPU train on it, everyone else on CPU; a peer that asks for a GPU it does not
have gets an error instead of a silent fallback.
"""

from __future__ import annotations

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
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(key)
    except RuntimeError:
        raise DeviceError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
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
