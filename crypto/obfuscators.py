"""Precomputed Paillier obfuscators r^n mod n^2, made ahead of time and in parallel.

A Paillier encryption is (1 + m*n) * r^n mod n^2; the exponentiation r^n is almost all of the
cost and does not depend on m, so a node computes its obfuscators while it trains and the
encryption itself is one multiplication per plaintext. Two ways to make them:

- `"full"`: r uniform in Z_n^*, r^n by one full exponentiation (a 2048-bit exponent).
- `"djn"` (default): the Damgard-Jurik(-Nielsen) variant used by ABY and SecretFlow HEU. With a
  public base h = -x^2 mod n and hs = h^n mod n^2, the obfuscator is hs^a mod n^2 for a random
  a of ceil(key_bits / 2) bits, computed from a fixed-base table in ~key_bits/16 multiplications
  (about 15x faster than "full"). It is still r^n with r = h^a mod n, so decryption,
  homomorphic sums and the published-randomness proof are unchanged. Its semantic security
  rests on the DCR assumption plus the short-exponent assumption those works state; pick
  "full" to rely on DCR alone. Here x is derived from n by hashing, so the base needs no extra
  public-key material and every member derives the same one.

Each obfuscator must encrypt exactly one plaintext: two ciphertexts sharing one leak the
difference of their plaintexts. `ObfuscatorPool` hands each out once.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from typing import Literal

import gmpy2
from phe.paillier import PaillierPublicKey

from flchain.crypto._parallel import chunked, parallel_map, resolve_workers
from flchain.crypto.errors import PaillierError

__all__ = [
    "DEFAULT_METHOD",
    "ObfuscatorMethod",
    "ObfuscatorPool",
    "djn_base",
    "precompute_obfuscators",
    "prepare_fixed_base",
]

ObfuscatorMethod = Literal["djn", "full"]
DEFAULT_METHOD: ObfuscatorMethod = "djn"
_WINDOW = 8  # bits of exponent per table row: 255 entries per row
# Below these counts (about 50 ms of work) starting worker processes costs more than it saves.
_INLINE_BELOW: dict[str, int] = {"djn": 128, "full": 8}
_TABLES: dict[int, list[list[gmpy2.mpz]]] = {}
_MAX_TABLES = 2  # a table for a 2048-bit key is about 17 MB


def djn_base(n: int) -> int:
    """The public DJN base hs = (-x^2 mod n)^n mod n^2, with x = SHAKE-256(n) mod n."""
    nbytes = (n.bit_length() + 7) // 8
    seed = b"flchain/djn-base/v1|" + n.to_bytes(nbytes, "big")
    x = gmpy2.mpz(int.from_bytes(hashlib.shake_256(seed).digest(nbytes + 16), "big")) % n
    if gmpy2.gcd(x, n) != 1 or x <= 1:
        raise PaillierError("modulus is degenerate: cannot derive a DJN base from it")
    h = (-x * x) % n
    return int(gmpy2.powmod(h, n, gmpy2.mpz(n) * n))


def _exponent_bits(n: int) -> int:
    return (n.bit_length() + 1) // 2


def _djn_table(n: int) -> list[list[gmpy2.mpz]]:
    """Rows i of hs^(j * 2^(8i)) for j < 256, built once per key and process."""
    table = _TABLES.get(n)
    if table is not None:
        return table
    n2 = gmpy2.mpz(n) * n
    base = gmpy2.mpz(djn_base(n))
    table = []
    for _ in range(-(-_exponent_bits(n) // _WINDOW)):
        row = [gmpy2.mpz(1), base]
        for _ in range((1 << _WINDOW) - 2):
            row.append(row[-1] * base % n2)
        table.append(row)
        base = row[-1] * base % n2
    while len(_TABLES) >= _MAX_TABLES:
        _TABLES.pop(next(iter(_TABLES)))
    _TABLES[n] = table
    return table


def prepare_fixed_base(public_key: PaillierPublicKey) -> None:
    """Build and cache the DJN fixed-base table for this key: a one-time cost per key.

    `precompute_obfuscators` does it on first use; calling it ahead keeps that cost (about a
    quarter second for a 2048-bit key) out of the first round.
    """
    _djn_table(int(public_key.n))


def _djn_chunk(n: int, count: int) -> list[int]:
    table = _djn_table(n)
    n2 = gmpy2.mpz(n) * n
    width = len(table)
    out = []
    for _ in range(count):
        exponent = secrets.randbits(width * _WINDOW).to_bytes(width, "little")
        acc = gmpy2.mpz(1)
        for row, digit in zip(table, exponent, strict=True):
            if digit:
                acc = acc * row[digit] % n2
        out.append(int(acc))
    return out


def _full_chunk(n: int, count: int) -> list[int]:
    mpz_n = gmpy2.mpz(n)
    n2 = mpz_n * mpz_n
    out = []
    while len(out) < count:
        r = gmpy2.mpz(secrets.randbelow(n - 1) + 1)
        if gmpy2.gcd(r, mpz_n) == 1:
            out.append(int(gmpy2.powmod(r, mpz_n, n2)))
    return out


def _chunk_job(job: tuple[str, int, int]) -> list[int]:
    method, n, count = job
    return _djn_chunk(n, count) if method == "djn" else _full_chunk(n, count)


def precompute_obfuscators(
    public_key: PaillierPublicKey,
    count: int,
    workers: int | None = None,
    *,
    method: ObfuscatorMethod = DEFAULT_METHOD,
) -> list[int]:
    """`count` fresh obfuscators r^n mod n^2 for `public_key`, on `workers` processes."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise PaillierError(f"count must be an int >= 0, got {count!r}")
    if method not in ("djn", "full"):
        raise PaillierError(f"method must be 'djn' or 'full', got {method!r}")
    n = int(public_key.n)
    nworkers = resolve_workers(workers)
    if method == "djn":
        _djn_table(n)  # built before forking, so the workers inherit it
    if count < _INLINE_BELOW[method]:
        nworkers = 1
    sizes = [len(c) for c in chunked(range(count), nworkers)] if count else []
    jobs = [(method, n, size) for size in sizes]
    return [o for chunk in parallel_map(_chunk_job, jobs, nworkers) for o in chunk]


class ObfuscatorPool:
    """Obfuscators for one public key, each handed out at most once."""

    def __init__(self, public_key: PaillierPublicKey, obfuscators: Iterable[int]) -> None:
        self.public_key = public_key
        n2 = int(public_key.nsquare)
        self._items = [int(o) for o in obfuscators]
        if any(not 0 < o < n2 for o in self._items):
            raise PaillierError("an obfuscator is outside (0, n^2): not made for this key")
        if len(set(self._items)) != len(self._items):
            raise PaillierError("duplicate obfuscators: each may encrypt only one plaintext")

    @classmethod
    def precompute(
        cls,
        public_key: PaillierPublicKey,
        count: int,
        workers: int | None = None,
        *,
        method: ObfuscatorMethod = DEFAULT_METHOD,
    ) -> ObfuscatorPool:
        """A pool of `count` fresh obfuscators (see `precompute_obfuscators`)."""
        return cls(public_key, precompute_obfuscators(public_key, count, workers, method=method))

    def __len__(self) -> int:
        return len(self._items)

    def take(self, count: int) -> list[int]:
        """Remove and return `count` obfuscators; raises if the pool has fewer left."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise PaillierError(f"count must be an int >= 0, got {count!r}")
        if count > len(self._items):
            raise PaillierError(
                f"obfuscator pool has {len(self._items)} left, {count} needed: precompute more"
            )
        taken, self._items = self._items[:count], self._items[count:]
        return taken
