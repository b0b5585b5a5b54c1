"""Pairwise additive masks from X25519 agreements, cancelling exactly in the members' sum.

Every pair of members (i, j) agrees on a secret with X25519 (the public keys are registered on
chain), expands it with HKDF-SHA256 into a ChaCha20 key bound to the task, the round, the retry
attempt, the member set and the pair, and reads `length` 64-bit words of keystream reduced mod
2^k. Member i adds the stream for every j > i and subtracts it for every j < i, so in the ring
Z_{2^k} the masks of all members sum to exactly zero and each masked vector alone looks uniform.

If a member fails to deliver, the survivors `remask` over the live set: the context changes
(attempt + 1 and the new member set), so every mask is fresh and none is ever used twice; the
dropped member's masks are simply never needed. At least two members must remain, otherwise
the "sum" would be one member's vector in the clear.

The ChaCha20 nonce is zero: each key is unique to its pair and context and encrypts only this
one stream.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from flchain.crypto.errors import MaskingError

__all__ = [
    "MaskingSession",
    "apply_mask",
    "generate_mask_key",
    "mask_context",
    "mask_vector",
    "pairwise_masks",
    "public_key_bytes",
]

_INFO_PREFIX = b"flchain/pairwise-mask/v1"
_CONTEXT_PREFIX = b"flchain/mask-context/v1"
_MAX_INDEX = (1 << 32) - 1


def generate_mask_key() -> X25519PrivateKey:
    """A fresh X25519 private key for pairwise masking."""
    return X25519PrivateKey.generate()


def public_key_bytes(private_key: X25519PrivateKey) -> bytes:
    """The raw 32-byte public key, the form registered on chain."""
    return private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


def _check_index(name: str, index: object) -> int:
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= _MAX_INDEX:
        raise MaskingError(f"{name} must be an int in [0, 2^32), got {index!r}")
    return index


def _check_modulus_bits(bits: object) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 64:
        raise MaskingError(f"modulus_bits must be an int in [1, 64], got {bits!r}")
    return bits


def _ring_mask(bits: int) -> np.uint64:
    return np.uint64((1 << bits) - 1)


def mask_context(
    task: bytes | str, round_index: int, attempt: int = 0, members: Iterable[int] = ()
) -> bytes:
    """Canonical context bytes: task, round, retry attempt and the sorted member set."""
    task_bytes = task.encode() if isinstance(task, str) else bytes(task)
    _check_index("round_index", round_index)
    _check_index("attempt", attempt)
    ids = sorted({_check_index("member", m) for m in members})
    body = [
        _CONTEXT_PREFIX,
        hashlib.sha256(task_bytes).digest(),
        round_index.to_bytes(4, "big"),
        attempt.to_bytes(4, "big"),
        len(ids).to_bytes(4, "big"),
        *(m.to_bytes(4, "big") for m in ids),
    ]
    return b"".join(body)


def _pair_stream(shared: bytes, context: bytes, i: int, j: int, length: int) -> np.ndarray:
    lo, hi = min(i, j), max(i, j)
    parts = [_INFO_PREFIX, len(context).to_bytes(4, "big"), context]
    info = b"".join([*parts, lo.to_bytes(4, "big"), hi.to_bytes(4, "big")])
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)
    encryptor = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()
    return np.frombuffer(encryptor.update(bytes(8 * length)), dtype="<u8").astype(np.uint64)


def _load_public(index: int, raw: bytes) -> X25519PublicKey:
    try:
        return X25519PublicKey.from_public_bytes(bytes(raw))
    except (TypeError, ValueError) as exc:
        raise MaskingError(f"member {index}'s X25519 public key is invalid: {exc}") from exc


def pairwise_masks(
    my_index: int,
    my_private: X25519PrivateKey,
    peer_publics: Mapping[int, bytes],
    *,
    length: int,
    modulus_bits: int,
    context: bytes,
) -> np.ndarray:
    """This member's total mask: sum over peers j of +stream (j > i) or -stream (j < i), mod 2^k.

    `peer_publics` maps member index to raw public key; an entry for `my_index` is ignored when
    it is this member's own key (so the whole on-chain registry can be passed).
    """
    i = _check_index("my_index", my_index)
    bits = _check_modulus_bits(modulus_bits)
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise MaskingError(f"length must be an int >= 0, got {length!r}")
    if not isinstance(my_private, X25519PrivateKey):
        raise MaskingError(f"my_private must be an X25519PrivateKey, got {type(my_private)}")
    own = public_key_bytes(my_private)
    total = np.zeros(length, dtype=np.uint64)
    for j, raw in sorted(peer_publics.items()):
        j = _check_index("peer index", j)
        if j == i:
            if bytes(raw) != own:
                raise MaskingError(f"peer_publics[{i}] is not this member's own public key")
            continue
        try:
            shared = my_private.exchange(_load_public(j, raw))
        except ValueError as exc:  # a low-order point gives an all-zero secret
            raise MaskingError(f"key agreement with member {j} failed: {exc}") from exc
        stream = _pair_stream(shared, context, i, j, length)
        if j > i:
            total += stream
        else:
            total -= stream
    return total & _ring_mask(bits)


def apply_mask(quantized: np.ndarray, mask: np.ndarray, modulus_bits: int) -> np.ndarray:
    """(quantized + mask) mod 2^k as uint64: the value a member encrypts."""
    bits = _check_modulus_bits(modulus_bits)
    q = np.asarray(quantized)
    m = np.asarray(mask)
    if q.shape != m.shape or q.ndim != 1:
        raise MaskingError(f"quantized {q.shape} and mask {m.shape} must be equal 1-D shapes")
    if q.size and (q.dtype.kind not in "ui" or int(q.min()) < 0 or int(q.max()) >> bits):
        raise MaskingError(f"quantized values must be integers in [0, 2^{bits})")
    return (q.astype(np.uint64) + m.astype(np.uint64)) & _ring_mask(bits)


def mask_vector(
    quantized: np.ndarray,
    my_index: int,
    my_private: X25519PrivateKey,
    peer_publics: Mapping[int, bytes],
    *,
    modulus_bits: int,
    context: bytes,
) -> np.ndarray:
    """`apply_mask(quantized, pairwise_masks(...))` in one call."""
    mask = pairwise_masks(
        my_index,
        my_private,
        peer_publics,
        length=int(np.asarray(quantized).shape[0]),
        modulus_bits=modulus_bits,
        context=context,
    )
    return apply_mask(quantized, mask, modulus_bits)


@dataclass(frozen=True)
class MaskingSession:
    """One member's masking state for one round attempt over a fixed member set."""

    my_index: int
    my_private: X25519PrivateKey = field(repr=False)
    member_publics: Mapping[int, bytes]
    modulus_bits: int
    task: bytes | str
    round_index: int
    attempt: int = 0

    def __post_init__(self) -> None:
        publics = {_check_index("member", m): bytes(k) for m, k in self.member_publics.items()}
        object.__setattr__(self, "member_publics", publics)
        _check_index("my_index", self.my_index)
        _check_modulus_bits(self.modulus_bits)
        if self.my_index not in publics:
            raise MaskingError(f"member {self.my_index} is not in the member set {sorted(publics)}")
        if len(publics) < 2:
            raise MaskingError("masking needs at least 2 members: one alone would be in the clear")
        if publics[self.my_index] != public_key_bytes(self.my_private):
            raise MaskingError(f"the registered key of member {self.my_index} is not my key")
        _check_index("round_index", self.round_index)
        _check_index("attempt", self.attempt)
        if not isinstance(self.task, bytes | str):
            raise MaskingError(f"task must be bytes or str, got {type(self.task).__name__}")

    @property
    def members(self) -> tuple[int, ...]:
        """Sorted indices of the members whose masks cancel together."""
        return tuple(sorted(self.member_publics))

    @property
    def context(self) -> bytes:
        """The HKDF context of this attempt: task, round, attempt and member set."""
        return mask_context(self.task, self.round_index, self.attempt, self.members)

    def masks(self, length: int) -> np.ndarray:
        """This member's mask for a vector of `length` ring elements."""
        return pairwise_masks(
            self.my_index,
            self.my_private,
            self.member_publics,
            length=length,
            modulus_bits=self.modulus_bits,
            context=self.context,
        )

    def mask(self, quantized: np.ndarray) -> np.ndarray:
        """Mask a quantized vector: (quantized + mask) mod 2^k."""
        q = np.asarray(quantized)
        if q.ndim != 1:
            raise MaskingError(f"quantized must be a 1-D vector, got shape {q.shape}")
        return apply_mask(q, self.masks(q.shape[0]), self.modulus_bits)

    def remask(self, live_members: Iterable[int]) -> MaskingSession:
        """The session for the retry over `live_members` (who delivered): fresh masks."""
        live = sorted(set(live_members))
        unknown = [m for m in live if m not in self.member_publics]
        if unknown:
            raise MaskingError(f"live members {unknown} are not in the member set {self.members}")
        if self.my_index not in live:
            raise MaskingError(f"member {self.my_index} is not live: it cannot re-mask")
        return MaskingSession(
            my_index=self.my_index,
            my_private=self.my_private,
            member_publics={m: self.member_publics[m] for m in live},
            modulus_bits=self.modulus_bits,
            task=self.task,
            round_index=self.round_index,
            attempt=self.attempt + 1,
        )
