"""Packed Paillier ciphertext bundles: homomorphic sums and a deterministic byte format.

A bundle carries its ciphertexts, the packing spec, how many members it sums, the vector length
and the modulus n, so anyone can add bundles without holding a key object; the key fingerprint
(SHA-256 of n) is what the decryptor checks against its own key. Sums refuse to go past the
spec's N: the slots only have headroom for N members, so one more would carry between slots.

Byte format (no pickle): b"FLPK" | version (1 byte) | header length (4 bytes, big-endian) |
header (canonical JSON) | n (key_bits/8 bytes, big-endian) | each ciphertext (2 * key_bits/8
bytes, big-endian).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import gmpy2

from flchain import safe_json
from flchain.crypto.errors import PackingOverflowError, PaillierError
from flchain.crypto.packing import PackingSpec

__all__ = ["PackedCiphertext", "add", "key_fingerprint", "sum_ciphertexts"]

_MAGIC = b"FLPK"
_VERSION = 1
_PREFIX = len(_MAGIC) + 1 + 4
# A real header is ~200 bytes and nests 3 deep (header -> spec -> value_range); anything
# larger or deeper is refused before it is parsed (a peer's nested brackets would otherwise
# overflow the C JSON parser's stack in a process whose recursion limit py_ecc raised).
MAX_HEADER_BYTES = 4096
MAX_HEADER_DEPTH = 3


def key_fingerprint(n: int) -> str:
    """Hex SHA-256 of the modulus n (big-endian): names a Paillier public key."""
    n = int(n)
    return hashlib.sha256(n.to_bytes((n.bit_length() + 7) // 8, "big")).hexdigest()


@dataclass(frozen=True)
class PackedCiphertext:
    """Paillier ciphertexts (mod n^2) of one packed vector, or of a sum of `count` of them."""

    ciphertexts: tuple[int, ...]
    spec: PackingSpec
    count: int
    length: int
    modulus: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "ciphertexts", tuple(int(c) for c in self.ciphertexts))
        object.__setattr__(self, "modulus", int(self.modulus))
        if not isinstance(self.spec, PackingSpec):
            raise PaillierError(f"spec must be a PackingSpec, got {type(self.spec).__name__}")
        if isinstance(self.length, bool) or not isinstance(self.length, int) or self.length < 0:
            raise PaillierError(f"length must be an int >= 0, got {self.length!r}")
        c = self.count
        if isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= self.spec.max_members:
            raise PaillierError(
                f"count must be an int in [1, {self.spec.max_members}] (the spec's N), got {c!r}"
            )
        if self.modulus.bit_length() != self.spec.key_bits:
            raise PaillierError(
                f"modulus has {self.modulus.bit_length()} bits, the spec says {self.spec.key_bits}"
            )
        expected = self.spec.plaintexts_for(self.length)
        if len(self.ciphertexts) != expected:
            raise PaillierError(
                f"{len(self.ciphertexts)} ciphertexts for length {self.length}; the spec packs "
                f"that into {expected}"
            )

    @property
    def key_fingerprint(self) -> str:
        """Fingerprint of the public key these ciphertexts were made under."""
        return key_fingerprint(self.modulus)

    @property
    def nsquare(self) -> int:
        return self.modulus**2

    def check_ciphertexts(self) -> None:
        """Raise `PaillierError` unless every ciphertext is a unit of Z_{n^2}."""
        n, n2 = gmpy2.mpz(self.modulus), gmpy2.mpz(self.nsquare)
        for i, c in enumerate(self.ciphertexts):
            if not 0 < c < n2 or gmpy2.gcd(c, n) != 1:
                raise PaillierError(
                    f"ciphertext {i} is not a unit mod n^2: tampered or corrupted ciphertext"
                )

    def to_bytes(self) -> bytes:
        """Deterministic bytes: the same bundle always serializes identically."""
        header = json.dumps(
            {
                "count": self.count,
                "key_fingerprint": self.key_fingerprint,
                "length": self.length,
                "spec": self.spec.to_dict(),
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
        width = (self.spec.key_bits + 7) // 8
        parts = [
            _MAGIC,
            bytes([_VERSION]),
            len(header).to_bytes(4, "big"),
            header,
            self.modulus.to_bytes(width, "big"),
        ]
        try:
            parts += [c.to_bytes(2 * width, "big") for c in self.ciphertexts]
        except OverflowError as exc:
            raise PaillierError("a ciphertext does not fit below n^2: corrupted bundle") from exc
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> PackedCiphertext:
        """Parse `to_bytes` output; raises `PaillierError` on any malformed or foreign input."""
        data = bytes(data)
        if len(data) < _PREFIX or data[:4] != _MAGIC:
            raise PaillierError("not a flchain packed-ciphertext bundle (bad magic)")
        if data[4] != _VERSION:
            raise PaillierError(f"unsupported bundle version {data[4]} (expected {_VERSION})")
        hlen = int.from_bytes(data[5:9], "big")
        if not 0 < hlen <= MAX_HEADER_BYTES or len(data) < _PREFIX + hlen:
            raise PaillierError(
                f"bundle header length {hlen} is outside 1..{MAX_HEADER_BYTES} or past the end"
            )
        try:
            header = safe_json.loads(
                data[_PREFIX : _PREFIX + hlen],
                max_bytes=MAX_HEADER_BYTES,
                max_depth=MAX_HEADER_DEPTH,
            )
        except ValueError as exc:  # JsonLimitError / JsonFormatError
            raise PaillierError(f"bundle header is malformed: {exc}") from exc
        if not isinstance(header, dict) or set(header) != {
            "count",
            "key_fingerprint",
            "length",
            "spec",
        }:
            raise PaillierError("bundle header has unexpected fields")
        try:
            spec = PackingSpec.from_dict(header["spec"])
        except (KeyError, TypeError, OverflowError) as exc:
            raise PaillierError(f"bundle header has a bad packing spec: {exc}") from exc
        count, length = header["count"], header["length"]
        fingerprint = header["key_fingerprint"]
        if isinstance(length, bool) or not isinstance(length, int) or length < 0:
            raise PaillierError(f"bundle header has a bad length {length!r}")
        width = (spec.key_bits + 7) // 8
        body = data[_PREFIX + hlen :]
        nct = spec.plaintexts_for(length)
        if len(body) != width + nct * 2 * width:
            raise PaillierError(
                f"bundle body is {len(body)} bytes, expected {width + nct * 2 * width}: truncated "
                "or padded"
            )
        modulus = int.from_bytes(body[:width], "big")
        if key_fingerprint(modulus) != fingerprint:
            raise PaillierError("bundle key fingerprint does not match its modulus: tampered")
        cts = tuple(
            int.from_bytes(body[width + i * 2 * width : width + (i + 1) * 2 * width], "big")
            for i in range(nct)
        )
        return cls(cts, spec, count, length, modulus)


def _check_compatible(a: PackedCiphertext, b: PackedCiphertext) -> None:
    if a.modulus != b.modulus:
        raise PaillierError(
            f"ciphertexts are under different keys ({a.key_fingerprint[:16]} vs "
            f"{b.key_fingerprint[:16]})"
        )
    if a.spec != b.spec:
        raise PaillierError(f"ciphertexts use different packing specs: {a.spec} vs {b.spec}")
    if a.length != b.length:
        raise PaillierError(f"ciphertexts hold vectors of lengths {a.length} and {b.length}")


def sum_ciphertexts(bundles: Sequence[PackedCiphertext]) -> PackedCiphertext:
    """Homomorphic sum of bundles (product mod n^2); counts add, up to the spec's N."""
    bundles = list(bundles)
    if not bundles:
        raise PaillierError("nothing to sum: no ciphertext bundles given")
    first = bundles[0]
    for other in bundles[1:]:
        _check_compatible(first, other)
    total = sum(b.count for b in bundles)
    if total > first.spec.max_members:
        raise PackingOverflowError(
            f"sum of {total} members exceeds the spec's max_members N = {first.spec.max_members}:"
            " the slots only have headroom for N, so the sum would overflow into the next slot"
        )
    n2 = gmpy2.mpz(first.nsquare)
    out = []
    for column in zip(*(b.ciphertexts for b in bundles), strict=True):
        acc = gmpy2.mpz(column[0])
        for c in column[1:]:
            acc = acc * c % n2
        out.append(int(acc))
    return PackedCiphertext(tuple(out), first.spec, total, first.length, first.modulus)


def add(a: PackedCiphertext, b: PackedCiphertext) -> PackedCiphertext:
    """Homomorphic sum of two bundles (see `sum_ciphertexts`)."""
    return sum_ciphertexts([a, b])
