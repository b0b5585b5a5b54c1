"""Packed Paillier encryption on `phe` keys with gmpy2 arithmetic, and verifiable decryption.

    pub, priv = generate_keypair(2048)
    spec = PackingSpec(bits=16, value_range=(-1.0, 1.0), max_members=8, key_bits=2048)
    cts = [encrypt_packed(v, pub, spec) for v in member_vectors]
    total = sum_ciphertexts(cts)
    result = decrypt_packed(total, priv)          # result.values: the float sum
    proof = decryption_proof(total, priv)         # [(plaintext, r), ...], published
    assert verify_decryption(total, *zip(*proof), pub)

`phe` supplies key generation and the key objects (and, in the benchmark, the value-by-value
baseline); the packed path does its own arithmetic: with g = n + 1 a ciphertext is
(1 + m*n) * r^n mod n^2, where r^n is a precomputed obfuscator (see `obfuscators`).

Decryption checks, before trusting a plaintext, that the key fingerprint matches, that every
ciphertext is a unit mod n^2, and that every slot holds at most count * (2^bits - 1) with nothing
above the last slot. A wrong key or a tampered ciphertext decrypts to a random-looking integer,
which fails these checks almost surely, so it raises instead of returning garbage. (Paillier is
malleable: someone who multiplies in a valid encryption changes the sum undetectably; who may
submit is the contract's job.)

Verifiable decryption: the decryptor publishes each plaintext m with the randomness r
recovered with the private key (r = c^(n^-1 mod phi(n)) mod n; the (1 + m*n) factor is 1 mod n,
so it drops out), and anyone checks (1 + m*n) * r^n == c mod n^2.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import gmpy2
import numpy as np
from phe import paillier as phe_paillier
from phe.paillier import PaillierPrivateKey, PaillierPublicKey

from flchain.crypto._parallel import chunked, parallel_map, resolve_workers
from flchain.crypto.ciphertext import PackedCiphertext, add, key_fingerprint, sum_ciphertexts
from flchain.crypto.errors import PaillierError, QuantizationError
from flchain.crypto.obfuscators import (
    DEFAULT_METHOD,
    ObfuscatorMethod,
    ObfuscatorPool,
    precompute_obfuscators,
)
from flchain.crypto.packing import PackingSpec, pack_slots, unpack_slots

__all__ = [
    "DecryptedSum",
    "ObfuscatorPool",
    "PackedCiphertext",
    "PackingSpec",
    "add",
    "decrypt_packed",
    "decryption_proof",
    "encrypt_packed",
    "encrypt_slots",
    "generate_keypair",
    "key_fingerprint",
    "open_plaintexts",
    "precompute_obfuscators",
    "public_key_from_modulus",
    "sum_ciphertexts",
    "verify_decryption",
]

_BATCH_EXPONENT_BITS = 64  # odd 64-bit e_j: a wrong plaintext passes with probability <= 2^-63
_INLINE_BELOW = 16  # fewer ciphertexts than this are decrypted/verified without processes


def generate_keypair(key_bits: int = 2048) -> tuple[PaillierPublicKey, PaillierPrivateKey]:
    """A fresh Paillier key pair from `phe` (g = n + 1; n has exactly `key_bits` bits)."""
    if isinstance(key_bits, bool) or not isinstance(key_bits, int) or key_bits < 256:
        raise PaillierError(f"key_bits must be an int >= 256, got {key_bits!r}")
    return phe_paillier.generate_paillier_keypair(n_length=key_bits)


def public_key_from_modulus(n: int) -> PaillierPublicKey:
    """The public key object for a modulus published elsewhere (e.g. on chain)."""
    n = int(n)
    if n < 3 or n % 2 == 0:
        raise PaillierError("a Paillier modulus is an odd integer > 2")
    return PaillierPublicKey(n)


def _check_key_for_spec(public_key: PaillierPublicKey, spec: PackingSpec) -> None:
    if not isinstance(public_key, PaillierPublicKey):
        raise PaillierError(f"expected a phe PaillierPublicKey, got {type(public_key).__name__}")
    bits = int(public_key.n).bit_length()
    if bits != spec.key_bits:
        raise PaillierError(f"public key has {bits} bits, the spec says key_bits={spec.key_bits}")


def _take_obfuscators(
    obfuscators: ObfuscatorPool | Sequence[int] | None,
    public_key: PaillierPublicKey,
    count: int,
    workers: int | None,
    method: ObfuscatorMethod,
) -> list[int]:
    if obfuscators is None:
        return precompute_obfuscators(public_key, count, workers, method=method)
    if isinstance(obfuscators, ObfuscatorPool):
        if obfuscators.public_key != public_key:
            raise PaillierError("the obfuscator pool was made for another public key")
        return obfuscators.take(count)
    items = [int(o) for o in obfuscators]
    if len(items) != count:
        raise PaillierError(
            f"{len(items)} obfuscators given, this vector needs exactly {count} (one per "
            "plaintext); pass an ObfuscatorPool to draw from a larger supply"
        )
    return ObfuscatorPool(public_key, items).take(count)


def encrypt_slots(
    values: np.ndarray,
    public_key: PaillierPublicKey,
    spec: PackingSpec,
    *,
    workers: int | None = None,
    obfuscators: ObfuscatorPool | Sequence[int] | None = None,
    method: ObfuscatorMethod = DEFAULT_METHOD,
) -> PackedCiphertext:
    """Pack and encrypt unsigned ints, each below 2^spec.value_bits (quantized or masked).

    Obfuscators come from `obfuscators` (a pool, or exactly one per plaintext) or, when None,
    are computed now on `workers` processes with `method`.
    """
    _check_key_for_spec(public_key, spec)
    ints = np.asarray(values)
    if ints.ndim != 1 or (ints.size and ints.dtype.kind not in "ui"):
        raise PaillierError(f"values must be a 1-D integer array, got {ints.dtype} {ints.shape}")
    if ints.size and (int(ints.min()) < 0 or int(ints.max()) >> spec.value_bits):
        raise PaillierError(f"values must lie in [0, 2^{spec.value_bits}) for this spec")
    plaintexts = pack_slots(ints.astype(np.uint64), spec.slot_bits, spec.slots_per_plaintext)
    obf = _take_obfuscators(obfuscators, public_key, len(plaintexts), workers, method)
    n = gmpy2.mpz(public_key.n)
    n2 = n * n
    cts = tuple(int((1 + m * n) * o % n2) for m, o in zip(plaintexts, obf, strict=True))
    return PackedCiphertext(cts, spec, 1, int(ints.size), int(public_key.n))


def encrypt_packed(
    vector: object,
    public_key: PaillierPublicKey,
    spec: PackingSpec,
    *,
    workers: int | None = None,
    obfuscators: ObfuscatorPool | Sequence[int] | None = None,
    method: ObfuscatorMethod = DEFAULT_METHOD,
) -> PackedCiphertext:
    """Quantize a float vector (tensor or array) with `spec`, pack it and encrypt it."""
    if spec.masked:
        raise PaillierError(
            "a masked spec encrypts masked ring values: use flchain.crypto.secure_sum "
            "(or encrypt_slots with values from masking.apply_mask)"
        )
    levels = spec.quantizer.quantize(vector)
    return encrypt_slots(
        levels, public_key, spec, workers=workers, obfuscators=obfuscators, method=method
    )


@dataclass(frozen=True)
class DecryptedSum:
    """A decrypted bundle: the float sum, the integer slot sums and the raw plaintexts."""

    values: np.ndarray
    slots: np.ndarray
    plaintexts: tuple[int, ...]
    count: int
    error_bound: float

    @property
    def mean(self) -> np.ndarray:
        """The members' average: values / count."""
        return self.values / self.count


def open_plaintexts(ct: PackedCiphertext, plaintexts: Sequence[int]) -> DecryptedSum:
    """Unpack and dequantize decrypted plaintexts of `ct`, checking every slot's headroom.

    Used by the decryptor after decryption and by anyone who verified published plaintexts.
    """
    spec = ct.spec
    ms = [int(m) for m in plaintexts]
    if len(ms) != len(ct.ciphertexts):
        raise PaillierError(f"{len(ms)} plaintexts for {len(ct.ciphertexts)} ciphertexts")
    slots = unpack_slots(ms, spec.slot_bits, spec.slots_per_plaintext)
    used, unused = slots[: ct.length], slots[ct.length :]
    limit = spec.max_slot_sum(ct.count)
    if (used.size and int(used.max()) > limit) or (unused.size and int(unused.max()) != 0):
        raise PaillierError(
            f"a slot exceeds the sum of {ct.count} members (headroom bits not clean): wrong key "
            "or tampered ciphertext"
        )
    if spec.masked:
        used = used & np.uint64((1 << spec.ring_bits) - 1)
    quantizer = spec.quantizer
    try:
        values = quantizer.dequantize(used, ct.count)
    except QuantizationError as exc:
        raise PaillierError(
            f"slot sums exceed {ct.count} * (2^bits - 1): the pairwise masks did not cancel "
            "(not every masked member is in this sum) or the ciphertext was tampered with"
        ) from exc
    return DecryptedSum(values, used, tuple(ms), ct.count, quantizer.error_bound(ct.count))


def _check_private_key(ct: PackedCiphertext, private_key: PaillierPrivateKey) -> None:
    if not isinstance(private_key, PaillierPrivateKey):
        raise PaillierError(f"expected a phe PaillierPrivateKey, got {type(private_key).__name__}")
    mine = key_fingerprint(private_key.public_key.n)
    if mine != ct.key_fingerprint:
        raise PaillierError(
            f"wrong key: the ciphertexts were made under key {ct.key_fingerprint[:16]}..., "
            f"this private key belongs to {mine[:16]}..."
        )
    ct.check_ciphertexts()


def _crt_decrypt_job(job: tuple[int, int, tuple[int, ...], bool]) -> list[tuple[int, int]]:
    """(m, r) for each ciphertext, by CRT over p and q (r is 0 unless asked for)."""
    p_int, q_int, cts, with_r = job
    p, q = gmpy2.mpz(p_int), gmpy2.mpz(q_int)
    n = p * q
    psq, qsq = p * p, q * q
    hp = gmpy2.invert((gmpy2.powmod(n + 1, p - 1, psq) - 1) // p, p)
    hq = gmpy2.invert((gmpy2.powmod(n + 1, q - 1, qsq) - 1) // q, q)
    p_inv = gmpy2.invert(p, q)
    dp, dq = gmpy2.invert(n, p - 1), gmpy2.invert(n, q - 1)
    out = []
    for c_int in cts:
        c = gmpy2.mpz(c_int)
        mp = (gmpy2.powmod(c, p - 1, psq) - 1) // p * hp % p
        mq = (gmpy2.powmod(c, q - 1, qsq) - 1) // q * hq % q
        m = mp + p * ((mq - mp) * p_inv % q)
        r = 0
        if with_r:
            rp, rq = gmpy2.powmod(c % p, dp, p), gmpy2.powmod(c % q, dq, q)
            r = int(rp + p * ((rq - rp) * p_inv % q))
        out.append((int(m), r))
    return out


def _decrypt_all(
    ct: PackedCiphertext, private_key: PaillierPrivateKey, workers: int | None, with_r: bool
) -> list[tuple[int, int]]:
    _check_private_key(ct, private_key)
    nworkers = resolve_workers(workers) if len(ct.ciphertexts) >= _INLINE_BELOW else 1
    p, q = int(private_key.p), int(private_key.q)
    jobs = [(p, q, tuple(chunk), with_r) for chunk in chunked(ct.ciphertexts, nworkers)]
    return [pair for part in parallel_map(_crt_decrypt_job, jobs, nworkers) for pair in part]


def decrypt_packed(
    ct: PackedCiphertext, private_key: PaillierPrivateKey, *, workers: int | None = None
) -> DecryptedSum:
    """Decrypt a (summed) bundle to the float sum of its members' vectors, with checks."""
    pairs = _decrypt_all(ct, private_key, workers, with_r=False)
    return open_plaintexts(ct, [m for m, _ in pairs])


def decryption_proof(
    ct: PackedCiphertext, private_key: PaillierPrivateKey, *, workers: int | None = None
) -> list[tuple[int, int]]:
    """[(plaintext, r), ...] per ciphertext: what the decryptor publishes for anyone to check.

    Checks the slots like `decrypt_packed`, so a decryptor never publishes a sum that fails.
    """
    pairs = _decrypt_all(ct, private_key, workers, with_r=True)
    open_plaintexts(ct, [m for m, _ in pairs])
    return pairs


def _verify_each_job(job: tuple[int, tuple[tuple[int, int, int], ...]]) -> bool:
    n_int, triples = job
    n = gmpy2.mpz(n_int)
    n2 = n * n
    return all((1 + m * n) * gmpy2.powmod(r, n, n2) % n2 == c for c, m, r in triples)


def _verify_batch(n_int: int, triples: list[tuple[int, int, int]]) -> bool:
    """One random linear combination of all the equations (small-exponent batch test).

    With verifier-chosen 64-bit e_j it checks prod c_j^e_j == (1 + n sum e_j m_j) (prod r_j^e_j)^n
    mod n^2. A wrong plaintext shifts the order-n part of the left side, which random e_j cancel
    with probability at most 2^-63; one full n-th power replaces one per ciphertext.
    """
    n = gmpy2.mpz(n_int)
    n2 = n * n
    left, r_acc, m_acc = gmpy2.mpz(1), gmpy2.mpz(1), gmpy2.mpz(0)
    for c, m, r in triples:
        e = secrets.randbits(_BATCH_EXPONENT_BITS) | 1
        left = left * gmpy2.powmod(c, e, n2) % n2
        r_acc = r_acc * gmpy2.powmod(r, e, n) % n
        m_acc = (m_acc + e * m) % n
    right = (1 + m_acc * n) * gmpy2.powmod(r_acc, n, n2) % n2
    return left == right


def verify_decryption(
    ct: PackedCiphertext,
    plaintexts: Sequence[int],
    randomness: Sequence[int],
    public_key: PaillierPublicKey,
    *,
    batch: bool = True,
    workers: int | None = None,
) -> bool:
    """True iff the published plaintexts decrypt `ct`: (1 + m n) r^n == c mod n^2 for each.

    `batch=True` (default) checks one random combination of all equations, which accepts a
    wrong plaintext with probability at most 2^-63 (it may accept an r off by a small-order
    factor, which still proves m); `batch=False` checks each equation exactly, on `workers`.
    """
    if key_fingerprint(public_key.n) != ct.key_fingerprint:
        raise PaillierError("the public key is not the one the ciphertexts were made under")
    if len(plaintexts) != len(ct.ciphertexts) or len(randomness) != len(ct.ciphertexts):
        raise PaillierError(
            f"need one plaintext and one r per ciphertext ({len(ct.ciphertexts)}), got "
            f"{len(plaintexts)} and {len(randomness)}"
        )
    n = int(public_key.n)
    claims = zip(ct.ciphertexts, plaintexts, randomness, strict=True)
    triples = [(c, int(m), int(r)) for c, m, r in claims]
    n_mpz = gmpy2.mpz(n)
    if any(not 0 <= m < n or not 0 < r < n or gmpy2.gcd(r, n_mpz) != 1 for _, m, r in triples):
        return False
    if batch:
        return _verify_batch(n, triples)
    nworkers = resolve_workers(workers) if len(triples) >= _INLINE_BELOW else 1
    jobs = [(n, tuple(chunk)) for chunk in chunked(triples, nworkers)]
    return all(parallel_map(_verify_each_job, jobs, nworkers))
