"""Packing many fixed-width unsigned ints into each Paillier plaintext, with headroom for sums.

One Paillier encryption costs the same whether the plaintext holds one value or a hundred, so
values are laid side by side in `slot_bits`-wide slots of one big integer (slot 0 in the lowest
bits). Each slot reserves ceil(log2 N) headroom bits above the value, so the sum of N members'
plaintexts never carries from one slot into the next. The packed integer stays below
2^(key_bits - 2) < n, so it is never reduced mod n.

With pairwise masking (`masked=True`) the members' slot values are uniform in the ring
Z_{2^k}, k = bits + ceil(log2 N) (wide enough for the true sum of N quantized values); the
slots then carry k + ceil(log2 N) bits and each decrypted slot sum is reduced mod 2^k.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from flchain.crypto.errors import PaillierError, QuantizationError
from flchain.crypto.quantize import Quantizer

__all__ = [
    "MAX_MEMBERS",
    "MAX_SLOT_BITS",
    "PackingSpec",
    "normalize_range",
    "pack_slots",
    "unpack_slots",
]

MAX_SLOT_BITS = 64  # slots are handled as uint64 words
MAX_MEMBERS = 1 << 16


def _ceil_log2(n: int) -> int:
    return (n - 1).bit_length()


def normalize_range(value_range: tuple[float, float] | float) -> tuple[float, float]:
    """(lo, hi) from a pair, or (-c, c) from a single clip bound c > 0."""
    if isinstance(value_range, int | float) and not isinstance(value_range, bool):
        c = float(value_range)
        if not math.isfinite(c) or c <= 0:
            raise QuantizationError(f"a single value_range must be a bound c > 0, got {c!r}")
        return -c, c
    try:
        lo, hi = (float(v) for v in value_range)
    except (TypeError, ValueError) as exc:
        msg = f"value_range must be (lo, hi) or a bound c > 0, got {value_range!r}"
        raise QuantizationError(msg) from exc
    return lo, hi


@dataclass(frozen=True)
class PackingSpec:
    """How a float vector becomes packed plaintexts, for sums of up to `max_members` members.

    `value_range` is (lo, hi), or a single positive c meaning (-c, c). Values outside it raise
    `QuantizationError` unless `clip=True`. `key_bits` is the Paillier modulus size.
    """

    bits: int
    value_range: tuple[float, float]
    max_members: int
    key_bits: int
    clip: bool = False
    masked: bool = False

    def __post_init__(self) -> None:
        lo, hi = normalize_range(self.value_range)
        object.__setattr__(self, "value_range", (lo, hi))
        object.__setattr__(self, "clip", bool(self.clip))
        object.__setattr__(self, "masked", bool(self.masked))
        Quantizer(self.bits, lo, hi, self.clip)  # validates bits and the range up front
        n = self.max_members
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_MEMBERS:
            raise PaillierError(f"max_members must be an int in [1, {MAX_MEMBERS}], got {n!r}")
        kb = self.key_bits
        if isinstance(kb, bool) or not isinstance(kb, int) or kb < 256:
            raise PaillierError(f"key_bits must be an int >= 256, got {kb!r}")
        if self.slot_bits > MAX_SLOT_BITS:
            raise PaillierError(
                f"slot width {self.slot_bits} bits exceeds {MAX_SLOT_BITS}: lower bits "
                f"({self.bits}) or max_members ({n})"
            )
        if self.slots_per_plaintext < 1:
            raise PaillierError(f"a {kb}-bit key cannot hold one {self.slot_bits}-bit slot")

    @property
    def quantizer(self) -> Quantizer:
        """The float <-> level mapping every member shares."""
        lo, hi = self.value_range
        return Quantizer(self.bits, lo, hi, self.clip)

    @property
    def headroom_bits(self) -> int:
        """ceil(log2 N): bits reserved so that N values add without carrying out of a slot."""
        return _ceil_log2(self.max_members)

    @property
    def ring_bits(self) -> int:
        """k = bits + ceil(log2 N): the masking ring Z_{2^k} holds the true sum of N values."""
        return self.bits + self.headroom_bits

    @property
    def value_bits(self) -> int:
        """Width of one member's slot value: `bits`, or `ring_bits` for masked values."""
        return self.ring_bits if self.masked else self.bits

    @property
    def slot_bits(self) -> int:
        """Slot width: one member's value plus headroom for the sum of N of them."""
        return self.value_bits + self.headroom_bits

    @property
    def slots_per_plaintext(self) -> int:
        """floor((key_bits - 2) / slot_bits): the packed integer stays below 2^(key_bits-2)."""
        return (self.key_bits - 2) // self.slot_bits

    def plaintexts_for(self, length: int) -> int:
        """Number of plaintexts (and ciphertexts) a vector of `length` values needs."""
        return -(-length // self.slots_per_plaintext)

    def max_slot_sum(self, count: int) -> int:
        """Largest legal slot value in a sum of `count` members' plaintexts."""
        return count * ((1 << self.value_bits) - 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (floats survive json round trips exactly)."""
        return {
            "bits": self.bits,
            "value_range": list(self.value_range),
            "max_members": self.max_members,
            "key_bits": self.key_bits,
            "clip": self.clip,
            "masked": self.masked,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PackingSpec:
        """Inverse of `to_dict`; raises `PaillierError` on missing or extra fields."""
        expected = {"bits", "value_range", "max_members", "key_bits", "clip", "masked"}
        if not isinstance(data, dict) or set(data) != expected:
            raise PaillierError(f"packing spec needs exactly the fields {sorted(expected)}")
        return cls(
            bits=data["bits"],
            value_range=tuple(data["value_range"]),
            max_members=data["max_members"],
            key_bits=data["key_bits"],
            clip=data["clip"],
            masked=data["masked"],
        )


def pack_slots(values: np.ndarray, slot_bits: int, slots: int) -> list[int]:
    """Pack unsigned ints (each < 2^slot_bits) into ceil(len / slots) integers, slot 0 lowest."""
    words = np.ascontiguousarray(values, dtype=np.uint64)
    if words.ndim != 1:
        raise PaillierError(f"values to pack must be 1-D, got shape {words.shape}")
    if slot_bits < MAX_SLOT_BITS and words.size and int(words.max()) >> slot_bits:
        raise PaillierError(f"a value does not fit in a {slot_bits}-bit slot")
    count = -(-words.size // slots)
    padded = np.zeros(count * slots, dtype=np.uint64)
    padded[: words.size] = words
    # Bit matrix (values x slot_bits), little-endian within each value, then one row per
    # plaintext: packbits turns each row into the little-endian bytes of the packed integer.
    shifts = np.arange(slot_bits, dtype=np.uint64)
    bits = ((padded[:, None] >> shifts) & np.uint64(1)).astype(np.uint8)
    rows = np.packbits(bits.reshape(count, slots * slot_bits), axis=1, bitorder="little")
    return [int.from_bytes(row.tobytes(), "little") for row in rows]


def unpack_slots(plaintexts: list[int], slot_bits: int, slots: int) -> np.ndarray:
    """Inverse of `pack_slots`: all slots of every plaintext as uint64 (length len * slots).

    Raises `PaillierError` when a plaintext has bits above its last slot: that never happens
    to a correctly packed sum, so it means a wrong key or a tampered ciphertext.
    """
    width = slots * slot_bits
    nbytes = -(-width // 8)
    for i, m in enumerate(plaintexts):
        if m < 0 or m.bit_length() > width:
            raise PaillierError(
                f"plaintext {i} has bits above its {slots} slots: wrong key or tampered ciphertext"
            )
    raw = np.frombuffer(b"".join(m.to_bytes(nbytes, "little") for m in plaintexts), np.uint8)
    bits = np.unpackbits(raw.reshape(len(plaintexts), nbytes), axis=1, bitorder="little")
    bits = bits[:, :width].reshape(len(plaintexts) * slots, slot_bits).astype(np.uint64)
    shifts = np.arange(slot_bits, dtype=np.uint64)
    return np.bitwise_or.reduce(bits << shifts, axis=1)
