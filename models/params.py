"""Model state as FL exchanges it: a flat float vector, and deterministic safetensors bytes.

The flat vector is what aggregation rules operate on; the bytes are what peers send and
what the chain records a digest of, so equal tensors must always give equal bytes and
loading must never run code from the network (safetensors, never pickle).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save
from torch import nn


class ParamsError(ValueError):
    """Raised for a vector or blob that does not fit the model it is loaded into."""


def flatten_params(model: nn.Module) -> torch.Tensor:
    """All floating-point state_dict entries, in state_dict order, as one float32 CPU vector.

    The result is a copy: changing it does not change the model.
    """
    parts = [t.detach().reshape(-1).to("cpu", torch.float32) for _, t in _float_entries(model)]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float32)


def load_flat_params(model: nn.Module, vec: torch.Tensor) -> None:
    """Write a vector laid out as by `flatten_params` back into `model`, in place.

    Each slice is cast to its entry's dtype and device. The vector is checked before any
    entry is written, so a bad vector leaves the model untouched.
    """
    entries = _float_entries(model)
    expected = sum(t.numel() for _, t in entries)
    if not isinstance(vec, torch.Tensor) or vec.ndim != 1 or not vec.is_floating_point():
        raise ParamsError("params must be a 1-D floating-point tensor")
    if vec.numel() != expected:
        raise ParamsError(f"params vector has {vec.numel()} values, the model needs {expected}")
    if not bool(torch.isfinite(vec).all()):
        raise ParamsError("params vector contains NaN or infinity")
    offset = 0
    with torch.no_grad():
        for _, t in entries:
            n = t.numel()
            t.copy_(vec[offset : offset + n].reshape(t.shape))
            offset += n


def num_params(model: nn.Module) -> int:
    """Length of the `flatten_params` vector (every float entry, buffers included)."""
    return sum(t.numel() for _, t in _float_entries(model))


def model_to_bytes(model: nn.Module | Mapping[str, torch.Tensor]) -> bytes:
    """Serialize a model's state_dict (or a name -> tensor mapping) to safetensors bytes.

    safetensors orders tensors by dtype and name and we write no metadata, so the same
    names, dtypes, shapes and values always give the same bytes, on every machine.
    """
    state = model.state_dict() if isinstance(model, nn.Module) else model
    if not isinstance(state, Mapping):
        raise ParamsError(f"expected an nn.Module or a mapping of tensors, got {type(model)}")
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            raise ParamsError(f"state entry {name!r} is not a named tensor")
        # A private contiguous copy: safetensors refuses tensors that share storage.
        tensors[name] = tensor.detach().to("cpu").contiguous().clone()
    return _st_save(tensors)


def model_from_bytes(data: bytes, model: nn.Module) -> None:
    """Load safetensors bytes into `model` in place after checking them against its state.

    Names, shapes and dtypes must match the model's state_dict exactly and float values
    must be finite; otherwise `ParamsError` says what differs and the model is untouched.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ParamsError(f"expected bytes, got {type(data)}")
    try:
        loaded = _st_load(bytes(data))
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise ParamsError(f"not a valid safetensors blob: {exc}") from None
    expected = model.state_dict()
    missing = sorted(expected.keys() - loaded.keys())
    unexpected = sorted(loaded.keys() - expected.keys())
    if missing or unexpected:
        raise ParamsError(f"blob does not fit the model: missing {missing}, extra {unexpected}")
    for name, ref in expected.items():
        got = loaded[name]
        if got.shape != ref.shape or got.dtype != ref.dtype:
            raise ParamsError(
                f"{name}: blob has {got.dtype} {tuple(got.shape)}, "
                f"model has {ref.dtype} {tuple(ref.shape)}"
            )
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            raise ParamsError(f"{name}: blob contains NaN or infinity")
    model.load_state_dict(loaded, strict=True)


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of `data`: the digest that goes on chain for a model blob."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ParamsError(f"expected bytes, got {type(data)}")
    return hashlib.sha256(data).hexdigest()


def _float_entries(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    if not isinstance(model, nn.Module):
        raise ParamsError(f"expected an nn.Module, got {type(model)}")
    return [(k, v) for k, v in model.state_dict().items() if v.is_floating_point()]
