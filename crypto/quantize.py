"""Fixed-point quantization with an explicit range and bit width.

Homomorphic sums and masks work on unsigned integers, so each float x in [lo, hi] becomes
round((x - lo) / step) in [0, 2^bits - 1] with step = (hi - lo) / (2^bits - 1). A sum of `count`
quantized values dequantizes as sum * step + count * lo, with an error of at most
count * step / 2. Values outside [lo, hi] are an error unless the caller asked for clipping.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from flchain.crypto.errors import QuantizationError

__all__ = ["MAX_QUANT_BITS", "Quantizer", "as_float64_vector", "ring_add"]

MAX_QUANT_BITS = 52  # float64 has a 53-bit significand: more levels than that are not exact


def as_float64_vector(values: object, name: str = "vector") -> np.ndarray:
    """A 1-D float64 numpy copy of a tensor, array or sequence; rejects other shapes."""
    if isinstance(values, torch.Tensor):
        array = values.detach().to(device="cpu", dtype=torch.float64).numpy()
    else:
        try:
            array = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise QuantizationError(f"{name} is not a numeric vector: {exc}") from exc
    if array.ndim != 1:
        raise QuantizationError(f"{name} must be 1-D, got shape {tuple(array.shape)}")
    return np.array(array, dtype=np.float64, copy=True)


@dataclass(frozen=True)
class Quantizer:
    """Maps floats in [lo, hi] to unsigned ints with `bits` bits, and sums of them back."""

    bits: int
    lo: float
    hi: float
    clip: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, int):
            raise QuantizationError(f"bits must be an int, got {self.bits!r}")
        if not 1 <= self.bits <= MAX_QUANT_BITS:
            raise QuantizationError(f"bits must be in [1, {MAX_QUANT_BITS}], got {self.bits}")
        lo, hi = float(self.lo), float(self.hi)
        if not (math.isfinite(lo) and math.isfinite(hi)) or not lo < hi:
            raise QuantizationError(f"value range must be finite with lo < hi, got ({lo}, {hi})")
        object.__setattr__(self, "lo", lo)
        object.__setattr__(self, "hi", hi)
        object.__setattr__(self, "clip", bool(self.clip))

    @property
    def levels(self) -> int:
        """Largest quantized value, 2^bits - 1."""
        return (1 << self.bits) - 1

    @property
    def step(self) -> float:
        """Width of one quantization level."""
        return (self.hi - self.lo) / self.levels

    def error_bound(self, count: int = 1) -> float:
        """Worst-case absolute error per coordinate of a dequantized sum of `count` values.

        Half a step per value, plus a few float64 ulps of the range for the arithmetic.
        """
        rounding = 8 * np.finfo(np.float64).eps * max(abs(self.lo), abs(self.hi))
        return count * (self.step / 2 + rounding)

    def quantize(self, values: object) -> np.ndarray:
        """Quantize a 1-D float vector to uint64 levels in [0, 2^bits - 1]."""
        x = as_float64_vector(values)
        if not np.isfinite(x).all():
            bad = int(np.flatnonzero(~np.isfinite(x))[0])
            raise QuantizationError(f"value at index {bad} is {x[bad]!r}; cannot quantize")
        outside = (x < self.lo) | (x > self.hi)
        if outside.any():
            if not self.clip:
                i = int(np.flatnonzero(outside)[0])
                raise QuantizationError(
                    f"{int(outside.sum())} value(s) outside the range [{self.lo}, {self.hi}] "
                    f"(first: index {i} = {x[i]!r}); widen the range or pass clip=True"
                )
            np.clip(x, self.lo, self.hi, out=x)
        scaled = np.rint((x - self.lo) / self.step)
        np.clip(scaled, 0, self.levels, out=scaled)  # float rounding at hi can overshoot by 1ulp
        return scaled.astype(np.uint64)

    def dequantize(self, sums: np.ndarray, count: int = 1) -> np.ndarray:
        """Floats of per-coordinate sums of `count` quantized values (subtracts count * lo)."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise QuantizationError(f"count must be an int >= 1, got {count!r}")
        levels = np.asarray(sums, dtype=np.uint64)
        if levels.size and int(levels.max()) > count * self.levels:
            raise QuantizationError(
                f"a sum exceeds count * (2^bits - 1) = {count * self.levels}: not a sum of "
                f"{count} quantized values"
            )
        return levels.astype(np.float64) * self.step + count * self.lo


def ring_add(levels: np.ndarray, noise: np.ndarray, ring_bits: int) -> np.ndarray:
    """(levels + noise) mod 2^ring_bits as uint64: signed integer noise added in the masking
    ring, where it stays exact (the decrypted sum reduces mod 2^k; distributed DP)."""
    if not 1 <= ring_bits <= 63:
        raise QuantizationError(f"ring_bits must be in [1, 63], got {ring_bits}")
    q, z = np.asarray(levels), np.asarray(noise)
    if q.shape != z.shape or q.ndim != 1 or z.dtype.kind != "i" or q.dtype.kind not in "ui":
        raise QuantizationError(f"levels {q.shape} and integer noise {z.shape} must be 1-D alike")
    modulus = np.int64(1) << np.int64(ring_bits)
    return np.mod(q.astype(np.int64) + z, modulus).astype(np.uint64)
