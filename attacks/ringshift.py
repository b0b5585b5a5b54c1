"""`ringshift`: a Byzantine member of a secure round encrypts any value of the masking ring.

Secure aggregation sums each member's quantized, share-scaled update in Z_{2^k}; the pairwise
masks make every masked value uniform, so nobody can see, let alone check, what one member put
in. A Byzantine member therefore replaces its levels by whatever moves the decrypted mean where
it wants, up to the edges of the quantization range (a sum past an edge no longer decodes and
the round fails instead):

- `target=t` (default 0.9, in [-1, 1]): aim the decrypted mean at mid + t * (hi - lo) / 2 on
  every coordinate, (lo, hi) the task's agreed per-coordinate range. The attacker cannot see
  the others' levels, so it assumes each sends what it would send honestly (its own levels):
  the mean lands at the target within the honest updates' spread around the attacker's own.
  The default keeps a tenth of the half-range as margin, so that spread does not push a
  coordinate past the edge (where the round would fail instead of taking the attacker's mean).
- `shift=s` (in [-2, 2]): add s * (hi - lo) / 2 to the decrypted mean exactly, whatever the
  others sent (its own levels plus a constant, mod 2^k): "a chosen shift of the quantized
  vector". Coordinates pushed past an edge wrap or fail to decode, as on the network.
- `oppose=N` (> 0): aim the mean at the vector of L2 norm N opposite the attacker's own
  update (estimated, like `target`, from its own levels). With N below the clip C this mean
  passes `flchain.crypto.aggregate_bound`: the worst a member can do within the bound.

It runs only in secure mode (simulation and node alike, `flchain.crypto.secure_sum`'s
`ring_attack` hook); the catalogue lists it as a `secure` attack.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from flchain.attacks.context import AttackError, check_params, float_param
from flchain.crypto.packing import PackingSpec, normalize_range

__all__ = ["RINGSHIFT_TARGET", "RingShift"]

RINGSHIFT_TARGET = 0.9
"""Default `target`: nine tenths of the way from the range's middle to its upper edge."""


@dataclass(frozen=True)
class RingShift:
    """The ring attack of one Byzantine member: call it on its quantized levels."""

    value_range: tuple[float, float]
    target: float | None = RINGSHIFT_TARGET
    shift: float | None = None
    oppose: float | None = None

    @classmethod
    def of(
        cls, params: Mapping[str, object], value_range: tuple[float, float] | float
    ) -> RingShift:
        """From the attack's knobs (`target`, `shift` or `oppose`) and the task's range."""
        check_params("ringshift", params, ("target", "shift", "oppose"))
        if len(set(params)) > 1:
            raise AttackError("attack 'ringshift': give one of target, shift or oppose")
        lo, hi = normalize_range(value_range)
        if "oppose" in params:
            oppose = float_param("ringshift", params, "oppose", 0.0)
            if oppose <= 0:
                raise AttackError(f"attack 'ringshift': oppose must be > 0, got {oppose}")
            return cls((lo, hi), target=None, oppose=oppose)
        if "shift" in params:
            shift = float_param("ringshift", params, "shift", 0.0)
            if not -2.0 <= shift <= 2.0:
                raise AttackError(f"attack 'ringshift': shift must be in [-2, 2], got {shift}")
            return cls((lo, hi), target=None, shift=shift)
        target = float_param("ringshift", params, "target", RINGSHIFT_TARGET)
        if not -1.0 <= target <= 1.0:
            raise AttackError(f"attack 'ringshift': target must be in [-1, 1], got {target}")
        return cls((lo, hi), target=target, shift=None)

    def __call__(self, levels: np.ndarray, spec: PackingSpec, count: int) -> np.ndarray:
        """The values to mask and encrypt instead of `levels` (uint64 in [0, 2^k)), for a sum
        of `count` members quantized with `spec`. The decrypted mean of that sum is
        sum(levels) * step + count * lo_spec (`Quantizer.dequantize`)."""
        q = spec.quantizer
        mask = np.uint64((1 << spec.ring_bits) - 1)
        own = np.asarray(levels, dtype=np.uint64)
        lo, hi = self.value_range
        if self.shift is not None:
            delta = round(self.shift * (hi - lo) / 2 / q.step) % (1 << spec.ring_bits)
            return (own + np.uint64(delta)) & mask
        if self.oppose is not None:
            mine = own.astype(np.float64) * q.step + q.lo  # share * own update
            norm = float(np.linalg.norm(mine))
            aim = -self.oppose * mine / norm if norm > 0 else np.zeros_like(mine)
        else:
            assert self.target is not None
            aim = np.full(own.shape, (lo + hi) / 2 + self.target * (hi - lo) / 2)
        total = np.rint((aim - count * q.lo) / q.step)
        total = np.clip(total, 0, count * q.levels).astype(np.uint64)  # decodable sums
        others = own * np.uint64(count - 1)  # wraps mod 2^64, a multiple of 2^k
        return (total - others) & mask
