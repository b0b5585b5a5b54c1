"""Paillier secure aggregation: plain `phe` value by value versus the packed path at d = 100k
with 2048-bit keys (both extrapolated to 1M parameters), and one full secure round for N = 8
members (quantize, mask, pack, encrypt; sum; decrypt with proof; verify). Results go to
docs/benchmarks.md.

    python benchmarks/bench_paillier.py [--dim 100000] [--members 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from flchain.crypto._parallel import resolve_workers
from flchain.crypto.bench import MILLION, time_packed, time_phe_per_value
from flchain.crypto.masking import MaskingSession, generate_mask_key, public_key_bytes
from flchain.crypto.obfuscators import ObfuscatorPool, prepare_fixed_base
from flchain.crypto.packing import PackingSpec
from flchain.crypto.paillier import (
    decryption_proof,
    generate_keypair,
    open_plaintexts,
    sum_ciphertexts,
    verify_decryption,
)
from flchain.crypto.secure_sum import SecureAggregationConfig, encrypt_contribution, weight_shares

try:
    from benchmarks._report import machine, write_section
except ModuleNotFoundError:  # run as a script: benchmarks/ is on sys.path, not the repo root
    from _report import machine, write_section


def _timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def compare(args, keys, workers: int) -> tuple[list[str], dict]:
    """The packed path in four settings against one phe baseline measurement."""
    pub, _ = keys
    spec = PackingSpec(args.bits, (-1.0, 1.0), args.members, args.key_bits)
    vector = np.random.default_rng(0).uniform(-1.0, 1.0, args.dim)
    per_value = time_phe_per_value(pub, vector[: args.baseline_sample])
    base_d, base_1m = per_value * args.dim, per_value * MILLION
    print(f"phe: {per_value * 1e3:.3f} ms/value -> {base_d:.0f} s at d={args.dim:,}", flush=True)
    _, table_s = _timed(prepare_fixed_base, pub)
    scale_obf = spec.plaintexts_for(MILLION) / spec.plaintexts_for(args.dim)
    rows, headline = [], {}
    for method in ("djn", "full"):
        for w in sorted({workers, 1}, reverse=True):
            obf, enc = time_packed(
                pub, vector, spec, workers=w, method=method, repeats=args.repeats
            )
            total, total_1m = obf + enc, obf * scale_obf + enc * MILLION / args.dim
            rows.append(
                f"| packed, {method} obfuscators, {w} worker{'s' if w > 1 else ''} | {obf:.3f} | "
                f"{enc:.3f} | {total:.3f} | {total_1m:.1f} | **{base_d / total:,.0f}x** | "
                f"{base_d / enc:,.0f}x |"
            )
            print(rows[-1], flush=True)
            headline.setdefault(method, (base_d / total, base_d / enc))
    lines = [
        f"### Plain phe versus packed, d = {args.dim:,}, {args.key_bits}-bit key",
        "",
        f"`python benchmarks/bench_paillier.py` (also `flchain bench paillier --dim D --json`), "
        f"{machine()}, {resolve_workers(None)} CPUs. Values are {args.bits}-bit fixed point in "
        f"[-1, 1] with headroom for N = {args.members}: {spec.slots_per_plaintext} values per "
        f"plaintext, {spec.plaintexts_for(args.dim):,} ciphertexts. Plain `phe` "
        f"(`public_key.encrypt(float)`, one process: phe has no batch API) is timed on "
        f"{args.baseline_sample} values and **extrapolated** linearly: {per_value * 1e3:.2f} ms "
        f"per value, {base_d:,.0f} s for d = {args.dim:,}, {base_1m:,.0f} s for 1M. The packed "
        f"path is measured on the whole vector, median of {args.repeats} runs; *obfuscators* is "
        "the r^n precomputation a node can do while it trains, *encrypt* is quantize + pack + "
        "one multiplication per plaintext. The DJN fixed-base table is a one-time cost per "
        f"decryptor key ({table_s:.2f} s here), like key generation, and is not in the rows.",
        "",
        "| path | obfuscators (s) | encrypt (s) | together (s) | together at 1M (s, "
        "extrapolated) | speedup, together | speedup, online |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| plain phe, value by value, 1 process | - | {base_d:,.1f} | {base_d:,.1f} | "
        f"{base_1m:,.0f} | 1x | 1x |",
        *rows,
    ]
    return lines, headline


def secure_round(args, keys, workers: int) -> list[str]:
    """One secure round for N members at d: every step timed, the result checked."""
    pub, priv = keys
    n, d = args.members, args.dim
    rng = np.random.default_rng(1)
    updates = rng.uniform(-0.05, 0.05, (n, d))
    mask_keys = [generate_mask_key() for _ in range(n)]
    registry = {i: public_key_bytes(k) for i, k in enumerate(mask_keys)}
    config = SecureAggregationConfig(0.05, max_members=n, bits=args.bits, key_bits=args.key_bits)
    shares = weight_shares(dict.fromkeys(range(n), 1.0))
    spec = config.spec(shares)
    per_member = spec.plaintexts_for(d)
    pools, obf_times = [], []
    for _ in range(n):
        pool, t = _timed(ObfuscatorPool.precompute, pub, per_member, workers)
        pools.append(pool)
        obf_times.append(t)
    bundles, enc_times = [], []
    for i in range(n):
        session = MaskingSession(i, mask_keys[i], registry, config.ring_bits, "bench", 0)
        bundle, t = _timed(
            encrypt_contribution,
            updates[i],
            session=session,
            shares=shares,
            config=config,
            public_key=pub,
            obfuscators=pools[i],
        )
        bundles.append(bundle)
        enc_times.append(t)
    total, sum_s = _timed(sum_ciphertexts, bundles)
    proof, decrypt_s = _timed(decryption_proof, total, priv, workers=workers)
    plaintexts, randomness = [m for m, _ in proof], [r for _, r in proof]
    ok_batch, verify_batch_s = _timed(verify_decryption, total, plaintexts, randomness, pub)
    ok_each, verify_each_s = _timed(
        verify_decryption, total, plaintexts, randomness, pub, batch=False, workers=workers
    )
    opened, open_s = _timed(open_plaintexts, total, plaintexts)
    if not (ok_batch and ok_each):
        raise SystemExit("decryption proof did not verify")
    err = float(np.abs(opened.values - updates.mean(axis=0)).max())
    if err > opened.error_bound:
        raise SystemExit(f"secure mean is off by {err}, more than {opened.error_bound}")
    bundle_mb = len(bundles[0].to_bytes()) / 1e6
    steps = [
        ("obfuscators, per member (precomputable)", statistics.median(obf_times)),
        ("quantize + mask + pack + encrypt, per member", statistics.median(enc_times)),
        (f"homomorphic sum of {n} bundles", sum_s),
        ("decrypt the sum + recover randomness (proof)", decrypt_s),
        ("verify the proof, batch check (anyone)", verify_batch_s),
        ("verify the proof, every ciphertext exactly", verify_each_s),
        ("unpack, reduce mod 2^k, dequantize", open_s),
    ]
    for name, t in steps:
        print(f"{name:>48}: {t:8.3f} s", flush=True)
    lines = [
        f"### Full secure round, N = {n}, d = {d:,}, {args.key_bits}-bit key",
        "",
        f"Each member pre-scales its update by its weight share, quantizes it to {args.bits} "
        f"bits, adds its pairwise X25519/ChaCha20 mask mod 2^{config.ring_bits}, packs "
        f"{spec.slots_per_plaintext} values per plaintext and encrypts {per_member:,} "
        f"ciphertexts ({bundle_mb:.2f} MB serialized, against {d * 4 / 1e6:.2f} MB of float32). "
        f"Members run one after another here, each with {workers} worker processes; on the "
        "network they run in parallel. DJN obfuscators.",
        "",
        "| step | time (s) |",
        "|---|---:|",
        *(f"| {name} | {t:.3f} |" for name, t in steps),
        "",
        f"The decrypted mean matches plaintext FedAvg within {err:.2e} (bound "
        f"{opened.error_bound:.2e}, half a quantization step per member); both proof checks "
        "pass.",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dim", type=int, default=100_000)
    parser.add_argument("--key-bits", type=int, default=2048)
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--bits", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline-sample", type=int, default=200)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    workers = resolve_workers(args.workers)
    load_before = os.getloadavg()[0]
    keys = generate_keypair(args.key_bits)
    table, headline = compare(args, keys, workers)
    round_lines = secure_round(args, keys, workers)
    load_after = os.getloadavg()[0]
    djn_total, djn_online = headline["djn"]
    full_total, full_online = headline["full"]
    lines = [
        "## Paillier secure aggregation",
        "",
        f"Packed encryption is **{djn_total:,.0f}x** faster than plain `phe` including the "
        f"obfuscator precomputation with DJN obfuscators ({full_total:,.0f}x with full r^n "
        f"obfuscators), and {djn_online:,.0f}x ({full_online:,.0f}x) once the obfuscators are "
        f"precomputed; {workers} worker processes. 1-minute load average {load_before:.1f} at "
        f"the start, {load_after:.1f} at the end: above {resolve_workers(None)} means other "
        "jobs shared the CPUs and the absolute times are inflated (the ratios less so).",
        "",
        *table,
        "",
        *round_lines,
    ]
    path = write_section("paillier", "\n".join(lines))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
