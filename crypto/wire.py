"""Byte formats for what secure aggregation sends over the network: keys and decryption proofs.

Both are fixed-width, versioned binary formats (no pickle, no JSON numbers): a peer's bytes are
parsed with explicit size checks before any big-integer work, and each value has exactly one
encoding, so the sha256 a node commits on chain names exactly one key or one proof.

Public key: b"FLPP" | version | key bytes (2 bytes, big-endian) | n (key bytes, big-endian).
Decryption proof: b"FLDP" | version | sha256 of the summed bundle (32 bytes) | count (4 bytes)
| key bytes (2 bytes) | count x (plaintext m, randomness r), each key-bytes wide. The bundle
digest binds the proof to one sum; `verify_decryption` checks each (m, r) against it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from phe.paillier import PaillierPublicKey

from flchain.crypto.ciphertext import PackedCiphertext
from flchain.crypto.errors import PaillierError
from flchain.crypto.paillier import public_key_from_modulus, verify_decryption

__all__ = [
    "MAX_KEY_BITS",
    "MIN_KEY_BITS",
    "DecryptionProof",
    "decode_public_key",
    "encode_public_key",
]

MIN_KEY_BITS = 512
MAX_KEY_BITS = 8192
_KEY_MAGIC = b"FLPP"
_PROOF_MAGIC = b"FLDP"
_VERSION = 1


def _key_bytes(n: int) -> int:
    return (n.bit_length() + 7) // 8


def encode_public_key(public_key: PaillierPublicKey) -> bytes:
    """The canonical bytes of a Paillier public key (what a member registers by digest)."""
    n = int(public_key.n)
    width = _key_bytes(n)
    return b"".join(
        [_KEY_MAGIC, bytes([_VERSION]), width.to_bytes(2, "big"), n.to_bytes(width, "big")]
    )


def decode_public_key(blob: bytes, *, key_bits: int | None = None) -> PaillierPublicKey:
    """Parse `encode_public_key` output from a peer; `key_bits` pins the modulus size."""
    blob = bytes(blob)
    if len(blob) < 7 or blob[:4] != _KEY_MAGIC:
        raise PaillierError("not a flchain Paillier public key (bad magic)")
    if blob[4] != _VERSION:
        raise PaillierError(f"unsupported public key version {blob[4]} (expected {_VERSION})")
    width = int.from_bytes(blob[5:7], "big")
    if not MIN_KEY_BITS // 8 <= width <= MAX_KEY_BITS // 8 or len(blob) != 7 + width:
        raise PaillierError(f"public key blob of {len(blob)} bytes has a bad width {width}")
    n = int.from_bytes(blob[7:], "big")
    if _key_bytes(n) != width:
        raise PaillierError("public key modulus has leading zero bytes: not canonical")
    if key_bits is not None and n.bit_length() != key_bits:
        raise PaillierError(f"public key has {n.bit_length()} bits, the task asks for {key_bits}")
    return public_key_from_modulus(n)


@dataclass(frozen=True)
class DecryptionProof:
    """The decryptor's published result: every plaintext of the summed bundle and its r."""

    bundle_digest: bytes
    plaintexts: tuple[int, ...]
    randomness: tuple[int, ...]

    @classmethod
    def of(cls, total: PackedCiphertext, pairs: list[tuple[int, int]]) -> DecryptionProof:
        """From `decryption_proof(total, key)` output."""
        return cls(
            hashlib.sha256(total.to_bytes()).digest(),
            tuple(m for m, _ in pairs),
            tuple(r for _, r in pairs),
        )

    def to_bytes(self, modulus: int) -> bytes:
        width = _key_bytes(int(modulus))
        parts = [
            _PROOF_MAGIC,
            bytes([_VERSION]),
            self.bundle_digest,
            len(self.plaintexts).to_bytes(4, "big"),
            width.to_bytes(2, "big"),
        ]
        try:
            for m, r in zip(self.plaintexts, self.randomness, strict=True):
                parts += [m.to_bytes(width, "big"), r.to_bytes(width, "big")]
        except (OverflowError, ValueError) as exc:
            raise PaillierError(f"proof values do not fit the key width: {exc}") from exc
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, blob: bytes, *, modulus: int, count: int) -> DecryptionProof:
        """Parse a peer's proof for a sum of `count` ciphertexts under `modulus`."""
        blob = bytes(blob)
        head = 4 + 1 + 32 + 4 + 2
        if len(blob) < head or blob[:4] != _PROOF_MAGIC:
            raise PaillierError("not a flchain decryption proof (bad magic)")
        if blob[4] != _VERSION:
            raise PaillierError(f"unsupported proof version {blob[4]} (expected {_VERSION})")
        digest = blob[5:37]
        n_items = int.from_bytes(blob[37:41], "big")
        width = int.from_bytes(blob[41:43], "big")
        if n_items != count or width != _key_bytes(int(modulus)):
            raise PaillierError(
                f"proof holds {n_items} values of {width} bytes, expected {count} of "
                f"{_key_bytes(int(modulus))}"
            )
        if len(blob) != head + 2 * width * count:
            raise PaillierError(f"proof of {len(blob)} bytes is truncated or padded")
        values = [
            int.from_bytes(blob[head + k * width : head + (k + 1) * width], "big")
            for k in range(2 * count)
        ]
        return cls(digest, tuple(values[0::2]), tuple(values[1::2]))

    def check(self, total: PackedCiphertext, public_key: PaillierPublicKey) -> None:
        """Raise `PaillierError` unless this proof decrypts exactly `total` under `public_key`."""
        if hashlib.sha256(total.to_bytes()).digest() != self.bundle_digest:
            raise PaillierError("the proof is for another sum than the committed ciphertexts")
        if not verify_decryption(total, self.plaintexts, self.randomness, public_key):
            raise PaillierError("the decryption proof does not verify: the decryptor lied")
