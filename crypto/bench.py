"""Timing of plain `phe` encryption (value by value) against the packed path.

Plain `phe` costs one full modular exponentiation per value, so it is timed on a sample and
extrapolated linearly (the result says so). The packed path is timed on the whole vector, with
the obfuscator precomputation (the part a node can do while it trains) reported separately
from the online encryption and together with it. Both are extrapolated to 1M parameters.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from phe.paillier import PaillierPrivateKey, PaillierPublicKey

from flchain.crypto._parallel import resolve_workers
from flchain.crypto.errors import CryptoError
from flchain.crypto.obfuscators import (
    DEFAULT_METHOD,
    ObfuscatorMethod,
    precompute_obfuscators,
    prepare_fixed_base,
)
from flchain.crypto.packing import PackingSpec
from flchain.crypto.paillier import encrypt_packed, generate_keypair

__all__ = ["MILLION", "compare_phe_packed", "time_packed", "time_phe_per_value"]

MILLION = 1_000_000


def time_phe_per_value(public_key: PaillierPublicKey, values: np.ndarray) -> float:
    """Seconds per value for plain `phe` encryption (`public_key.encrypt(float)`), one process."""
    if len(values) == 0:
        raise CryptoError("need at least one value to time")
    start = time.perf_counter()
    for x in values:
        public_key.encrypt(float(x))
    return (time.perf_counter() - start) / len(values)


def time_packed(
    public_key: PaillierPublicKey,
    vector: np.ndarray,
    spec: PackingSpec,
    *,
    workers: int | None = None,
    method: ObfuscatorMethod = DEFAULT_METHOD,
    repeats: int = 1,
) -> tuple[float, float]:
    """Median seconds (obfuscator precomputation, encryption) of the packed path for `vector`."""
    if not isinstance(repeats, int) or repeats < 1:
        raise CryptoError(f"repeats must be an int >= 1, got {repeats!r}")
    obf_times, enc_times = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        obfuscators = precompute_obfuscators(
            public_key, spec.plaintexts_for(vector.size), workers, method=method
        )
        mid = time.perf_counter()
        encrypt_packed(vector, public_key, spec, obfuscators=obfuscators)
        obf_times.append(mid - start)
        enc_times.append(time.perf_counter() - mid)
    return float(np.median(obf_times)), float(np.median(enc_times))


def compare_phe_packed(
    dim: int,
    *,
    key_bits: int = 2048,
    baseline_sample: int = 200,
    workers: int | None = None,
    bits: int = 16,
    members: int = 8,
    method: ObfuscatorMethod = DEFAULT_METHOD,
    repeats: int = 1,
    keypair: tuple[PaillierPublicKey, PaillierPrivateKey] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Times both paths for a `dim`-parameter vector; returns a JSON-ready dict.

    The packed figures are the median of `repeats` runs. The baseline runs in one process
    (phe has no batch API); the packed path uses `workers` processes for the obfuscators. The
    one-time per-key setup of the DJN table is reported apart (`key_setup_s`), like key
    generation: members build it once per decryptor key, not once per update.
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise CryptoError(f"dim must be an int >= 1, got {dim!r}")
    if not isinstance(baseline_sample, int) or baseline_sample < 1:
        raise CryptoError(f"baseline_sample must be an int >= 1, got {baseline_sample!r}")
    nworkers = resolve_workers(workers)
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    public_key, _ = keypair if keypair is not None else generate_keypair(key_bits)
    keygen_s = time.perf_counter() - start
    spec = PackingSpec(bits, (-1.0, 1.0), members, key_bits)
    vector = rng.uniform(-1.0, 1.0, dim)
    sample = min(baseline_sample, dim)
    per_value = time_phe_per_value(public_key, vector[:sample])
    start = time.perf_counter()
    if method == "djn":
        prepare_fixed_base(public_key)
    key_setup_s = time.perf_counter() - start
    obf_s, enc_s = time_packed(
        public_key, vector, spec, workers=nworkers, method=method, repeats=repeats
    )
    plaintexts, plaintexts_1m = spec.plaintexts_for(dim), spec.plaintexts_for(MILLION)
    obf_1m = obf_s * plaintexts_1m / plaintexts
    enc_1m = enc_s * MILLION / dim
    baseline_s = per_value * dim
    return {
        "dim": dim,
        "key_bits": key_bits,
        "bits": bits,
        "members": members,
        "workers": nworkers,
        "method": method,
        "repeats": repeats,
        "slots_per_plaintext": spec.slots_per_plaintext,
        "plaintexts": plaintexts,
        "keygen_s": keygen_s if keypair is None else None,
        "baseline": {
            "sample": sample,
            "per_value_s": per_value,
            "extrapolated": sample < dim,
            "total_s": baseline_s,
            "total_1m_s": per_value * MILLION,
        },
        "packed": {
            "key_setup_s": key_setup_s,
            "obfuscators_s": obf_s,
            "encrypt_s": enc_s,
            "total_s": obf_s + enc_s,
            "obfuscators_1m_s": obf_1m,
            "encrypt_1m_s": enc_1m,
            "total_1m_s": obf_1m + enc_1m,
        },
        "speedup": {
            "total": baseline_s / (obf_s + enc_s),
            "online": baseline_s / enc_s,
            "total_1m": per_value * MILLION / (obf_1m + enc_1m),
        },
    }
