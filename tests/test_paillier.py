"""flchain.crypto.paillier: quantization, packing, packed encryption, sums, checks and proofs."""

from __future__ import annotations

import math

import gmpy2
import numpy as np
import pytest
import torch

from flchain.crypto import paillier as P
from flchain.crypto.errors import (
    CryptoError,
    PackingOverflowError,
    PaillierError,
    QuantizationError,
)
from flchain.crypto.obfuscators import djn_base, precompute_obfuscators
from flchain.crypto.packing import PackingSpec, pack_slots, unpack_slots
from flchain.crypto.quantize import Quantizer

KEY_BITS = 1024


@pytest.fixture(scope="module")
def keys() -> tuple:
    return P.generate_keypair(KEY_BITS)


@pytest.fixture(scope="module")
def other_keys() -> tuple:
    return P.generate_keypair(KEY_BITS)


def _spec(members: int = 4, bits: int = 16, **kw) -> PackingSpec:
    return PackingSpec(bits, (-1.0, 1.0), members, KEY_BITS, **kw)


def _edge_vector(d: int, seed: int) -> np.ndarray:
    """Random values in [-1, 1] with zeros and both range ends mixed in."""
    x = np.random.default_rng(seed).uniform(-1.0, 1.0, d)
    x[::7] = 0.0
    x[1::11] = -1.0
    x[2::13] = 1.0
    return x


# --- quantization -----------------------------------------------------------------------------


def test_quantize_hand_computed() -> None:
    q = Quantizer(bits=2, lo=-1.0, hi=2.0)  # step 1
    assert q.step == 1.0 and q.levels == 3
    assert q.quantize([-1.0, 0.4, 0.6, 2.0]).tolist() == [0, 1, 2, 3]
    # two members summed: levels 1 and 6 mean -1 + 2*(-1)... i.e. level*step + count*lo
    np.testing.assert_array_equal(q.dequantize(np.array([1, 6]), count=2), [-1.0, 4.0])


def test_quantize_round_trip_within_half_a_step() -> None:
    q = Quantizer(bits=12, lo=-1.0, hi=1.0)
    x = _edge_vector(5000, 0)
    back = q.dequantize(q.quantize(x))
    assert np.abs(back - x).max() <= q.step / 2 + 1e-15
    assert back[x == -1.0].tolist() == [-1.0] * int((x == -1.0).sum())
    assert np.allclose(back[x == 1.0], 1.0, atol=1e-15)


def test_quantize_rejects_out_of_range_unless_clip() -> None:
    with pytest.raises(QuantizationError, match=r"outside the range \[-1.0, 1.0\]"):
        Quantizer(8, -1.0, 1.0).quantize([0.5, 1.01])
    clipped = Quantizer(8, -1.0, 1.0, clip=True).quantize([-3.0, 1.01])
    assert clipped.tolist() == [0, 255]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_quantize_rejects_non_finite(bad: float) -> None:
    with pytest.raises(QuantizationError, match="index 1"):
        Quantizer(8, -1.0, 1.0, clip=True).quantize([0.0, bad])


@pytest.mark.parametrize(
    ("bits", "lo", "hi"), [(0, -1.0, 1.0), (53, -1.0, 1.0), (8, 1.0, 1.0), (8, 0.0, math.inf)]
)
def test_quantizer_rejects_bad_parameters(bits, lo, hi) -> None:
    with pytest.raises(QuantizationError):
        Quantizer(bits, lo, hi)


def test_quantize_accepts_tensors_and_rejects_matrices() -> None:
    q = Quantizer(4, 0.0, 15.0)
    assert q.quantize(torch.tensor([1.0, 15.0])).tolist() == [1, 15]
    with pytest.raises(QuantizationError, match="1-D"):
        q.quantize(np.zeros((2, 2)))


# --- packing spec and slots -------------------------------------------------------------------


def test_spec_slot_arithmetic() -> None:
    spec = PackingSpec(16, (-1.0, 1.0), 8, 2048)
    assert (spec.headroom_bits, spec.slot_bits, spec.slots_per_plaintext) == (3, 19, 107)
    assert spec.plaintexts_for(100_000) == 935
    assert PackingSpec(16, 1.0, 9, 2048).slot_bits == 20  # ceil(log2 9) = 4
    assert PackingSpec(16, 1.0, 1, 2048).slot_bits == 16  # one member needs no headroom
    masked = PackingSpec(16, 0.5, 8, 2048, masked=True)
    assert (masked.ring_bits, masked.slot_bits, masked.value_range) == (19, 22, (-0.5, 0.5))
    # the packed integer stays below 2^(key_bits - 2), hence below n
    assert spec.slots_per_plaintext * spec.slot_bits <= 2048 - 2


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"bits": 50, "max_members": 2**16}, PaillierError),  # 50 + 16 > 64-bit slots
        ({"bits": 50, "max_members": 256, "masked": True}, PaillierError),  # 50 + 8 + 8
        ({"key_bits": 128}, PaillierError),
        ({"max_members": 0}, PaillierError),
        ({"value_range": -1.0}, QuantizationError),
        ({"value_range": (1.0, -1.0)}, QuantizationError),
        ({"value_range": "wide"}, QuantizationError),
    ],
)
def test_spec_rejects_bad_parameters(kwargs, error) -> None:
    args = {"bits": 16, "value_range": (-1.0, 1.0), "max_members": 8, "key_bits": 2048} | kwargs
    with pytest.raises(error):
        PackingSpec(**args)


def test_pack_slots_hand_computed() -> None:
    packed = pack_slots(np.array([1, 2, 3]), slot_bits=4, slots=2)
    assert packed == [1 + (2 << 4), 3]
    assert pack_slots(np.array([1, 2, 3]), 4, 5) == [0x321]
    assert unpack_slots([0x321], 4, 5).tolist() == [1, 2, 3, 0, 0]


def test_pack_unpack_round_trip_wide_slots() -> None:
    rng = np.random.default_rng(3)
    for width in (1, 19, 64):
        values = rng.integers(0, 2**width - 1, 1000, dtype=np.uint64, endpoint=True)
        back = unpack_slots(pack_slots(values, width, 13), width, 13)
        assert np.array_equal(back[:1000], values) and not back[1000:].any()


def test_pack_rejects_values_wider_than_the_slot() -> None:
    with pytest.raises(PaillierError, match="4-bit slot"):
        pack_slots(np.array([16]), 4, 2)


def test_unpack_rejects_bits_above_the_last_slot() -> None:
    with pytest.raises(PaillierError, match="wrong key or tampered"):
        unpack_slots([1 << 8], 4, 2)


# --- encryption, sums and decryption ----------------------------------------------------------


def test_ciphertext_is_textbook_paillier_of_the_packed_integer(keys) -> None:
    pub, priv = keys
    n = pub.n
    spec = PackingSpec(4, (0.0, 15.0), 2, KEY_BITS)  # step 1, 5-bit slots
    obfuscator = pow(12345, n, n * n)
    ct = P.encrypt_packed([1.0, 2.0, 3.0], pub, spec, obfuscators=[obfuscator])
    m = 1 + (2 << 5) + (3 << 10)
    assert ct.ciphertexts == ((1 + m * n) * obfuscator % (n * n),)
    assert ct.count == 1 and ct.length == 3
    assert priv.raw_decrypt(ct.ciphertexts[0]) == m  # phe agrees it encrypts m
    assert P.decryption_proof(ct, priv) == [(m, 12345)]


def test_round_trip_with_negatives_zeros_and_range_ends(keys) -> None:
    pub, priv = keys
    spec = _spec()
    x = _edge_vector(700, 1)
    result = P.decrypt_packed(P.encrypt_packed(x, pub, spec), priv)
    np.testing.assert_array_equal(
        result.values, spec.quantizer.dequantize(spec.quantizer.quantize(x))
    )
    assert np.abs(result.values - x).max() <= spec.quantizer.step / 2 + 1e-12
    assert result.count == 1 and len(result.plaintexts) == spec.plaintexts_for(700)


def test_sum_of_n_members(keys) -> None:
    pub, priv = keys
    spec = _spec(members=5)
    vectors = [_edge_vector(300, seed) for seed in range(5)]
    total = P.sum_ciphertexts([P.encrypt_packed(v, pub, spec) for v in vectors])
    assert total.count == 5
    result = P.decrypt_packed(total, priv)
    levels = sum(spec.quantizer.quantize(v).astype(np.int64) for v in vectors)
    assert result.slots.tolist() == levels.tolist()  # integer sums are exact
    assert np.abs(result.values - sum(vectors)).max() <= result.error_bound + 1e-12
    assert result.error_bound == pytest.approx(5 * spec.quantizer.step / 2)
    np.testing.assert_allclose(result.mean, result.values / 5)


def test_all_members_at_the_top_of_the_range_fill_the_headroom_exactly(keys) -> None:
    pub, priv = keys
    spec = _spec(members=4, bits=8)  # 2 headroom bits: 4 * 255 = 1020 < 1024
    total = P.sum_ciphertexts([P.encrypt_packed(np.ones(60), pub, spec) for _ in range(4)])
    result = P.decrypt_packed(total, priv)
    assert result.slots.tolist() == [1020] * 60
    np.testing.assert_allclose(result.values, 4.0)


def test_add_is_the_two_bundle_sum(keys) -> None:
    pub, priv = keys
    spec = _spec()
    a = P.encrypt_packed(np.full(10, 0.5), pub, spec)
    b = P.encrypt_packed(np.full(10, -0.25), pub, spec)
    np.testing.assert_allclose(P.decrypt_packed(P.add(a, b), priv).values, 0.25, atol=1e-4)


def test_sum_past_max_members_is_refused(keys) -> None:
    pub, _ = keys
    spec = _spec(members=3)
    cts = [P.encrypt_packed(np.zeros(5), pub, spec, workers=1) for _ in range(4)]
    three = P.sum_ciphertexts(cts[:3])
    with pytest.raises(PackingOverflowError, match="exceeds the spec's max_members N = 3"):
        P.add(three, cts[3])
    with pytest.raises(PackingOverflowError):
        P.sum_ciphertexts(cts)
    assert issubclass(PackingOverflowError, PaillierError)


def test_sum_refuses_mismatched_key_spec_or_length(keys, other_keys) -> None:
    pub, _ = keys
    base = P.encrypt_packed(np.zeros(5), pub, _spec())
    with pytest.raises(PaillierError, match="different keys"):
        P.add(base, P.encrypt_packed(np.zeros(5), other_keys[0], _spec()))
    with pytest.raises(PaillierError, match="different packing specs"):
        P.add(base, P.encrypt_packed(np.zeros(5), pub, _spec(bits=15)))
    with pytest.raises(PaillierError, match="lengths 5 and 6"):
        P.add(base, P.encrypt_packed(np.zeros(6), pub, _spec()))
    with pytest.raises(PaillierError, match="nothing to sum"):
        P.sum_ciphertexts([])


def test_out_of_range_values_raise_unless_the_spec_clips(keys) -> None:
    pub, priv = keys
    x = np.array([0.0, 1.5, -2.0])
    with pytest.raises(QuantizationError, match="2 value"):
        P.encrypt_packed(x, pub, _spec())
    result = P.decrypt_packed(P.encrypt_packed(x, pub, _spec(clip=True)), priv)
    np.testing.assert_allclose(result.values, [0.0, 1.0, -1.0], atol=1e-4)


def test_encrypt_refuses_a_key_of_another_size(keys) -> None:
    with pytest.raises(PaillierError, match="spec says key_bits=2048"):
        P.encrypt_packed(np.zeros(3), keys[0], PackingSpec(16, 1.0, 2, 2048))


def test_wrong_private_key_gives_a_clear_error(keys, other_keys) -> None:
    ct = P.encrypt_packed(np.zeros(20), keys[0], _spec())
    with pytest.raises(PaillierError, match="wrong key"):
        P.decrypt_packed(ct, other_keys[1])


def test_wrong_key_plaintexts_fail_the_headroom_check(keys, other_keys) -> None:
    """What the headroom check sees if a foreign key got past the fingerprint: garbage."""
    ct = P.encrypt_packed(np.zeros(200), keys[0], _spec())
    garbage = [other_keys[1].raw_decrypt(c % other_keys[0].nsquare) for c in ct.ciphertexts]
    with pytest.raises(PaillierError, match="wrong key or tampered"):
        P.open_plaintexts(ct, garbage)


def test_tampered_ciphertext_gives_a_clear_error(keys) -> None:
    pub, priv = keys
    ct = P.encrypt_packed(_edge_vector(100, 2), pub, _spec())
    forged = P.PackedCiphertext(
        (ct.ciphertexts[0] * 3 + 1, *ct.ciphertexts[1:]), ct.spec, 1, ct.length, ct.modulus
    )
    with pytest.raises(PaillierError, match="tampered"):
        P.decrypt_packed(forged, priv)
    not_unit = P.PackedCiphertext((pub.n, *ct.ciphertexts[1:]), ct.spec, 1, ct.length, pub.n)
    with pytest.raises(PaillierError, match="not a unit"):
        P.decrypt_packed(not_unit, priv)


def test_parallel_decryption_matches_serial(keys) -> None:
    pub, priv = keys
    spec = _spec()
    ct = P.encrypt_packed(_edge_vector(53 * 20, 4), pub, spec)  # 20 ciphertexts
    serial = P.decrypt_packed(ct, priv, workers=1)
    parallel = P.decrypt_packed(ct, priv, workers=2)
    assert serial.plaintexts == parallel.plaintexts
    np.testing.assert_array_equal(serial.values, parallel.values)


# --- obfuscators ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["djn", "full"])
def test_obfuscators_are_fresh_nth_residues(keys, method) -> None:
    pub, priv = keys
    obf = precompute_obfuscators(pub, 130, workers=2, method=method)  # uses the process pool
    assert len(obf) == 130 == len(set(obf))
    spec = PackingSpec(4, (0.0, 15.0), 2, KEY_BITS)
    ct = P.encrypt_packed(np.arange(10.0), pub, spec, obfuscators=obf[:1])
    ((_m, r),) = P.decryption_proof(ct, priv)
    assert pow(r, pub.n, pub.nsquare) == obf[0]  # o = r^n: the randomness the proof recovers
    assert P.decrypt_packed(ct, priv).values.tolist() == list(range(10))


def test_djn_base_is_deterministic_per_key(keys, other_keys) -> None:
    assert djn_base(keys[0].n) == djn_base(keys[0].n) != djn_base(other_keys[0].n)


def test_obfuscator_pool_hands_each_out_once(keys) -> None:
    pub, _ = keys
    pool = P.ObfuscatorPool.precompute(pub, 5, workers=1)
    spec = _spec()
    a = P.encrypt_packed(np.zeros(60), pub, spec, obfuscators=pool)  # 2 plaintexts
    b = P.encrypt_packed(np.zeros(60), pub, spec, obfuscators=pool)
    assert len(pool) == 1
    assert not set(a.ciphertexts) & set(b.ciphertexts)
    with pytest.raises(PaillierError, match="1 left, 2 needed"):
        P.encrypt_packed(np.zeros(60), pub, spec, obfuscators=pool)


def test_obfuscator_misuse_is_refused(keys, other_keys) -> None:
    pub, _ = keys
    obf = precompute_obfuscators(pub, 2, workers=1)
    with pytest.raises(PaillierError, match="duplicate"):
        P.ObfuscatorPool(pub, [obf[0], obf[0]])
    with pytest.raises(PaillierError, match="exactly 1"):
        P.encrypt_packed(np.zeros(5), pub, _spec(), obfuscators=obf)
    with pytest.raises(PaillierError, match="another public key"):
        foreign = P.ObfuscatorPool.precompute(other_keys[0], 1, workers=1)
        P.encrypt_packed(np.zeros(5), pub, _spec(), obfuscators=foreign)
    with pytest.raises(PaillierError, match="method"):
        precompute_obfuscators(pub, 1, method="fast")  # type: ignore[arg-type]
    with pytest.raises(CryptoError, match="workers"):
        precompute_obfuscators(pub, 1, workers=0)


# --- serialization ----------------------------------------------------------------------------


def test_bundle_bytes_round_trip_and_are_deterministic(keys) -> None:
    pub, priv = keys
    ct = P.encrypt_packed(_edge_vector(120, 5), pub, _spec(clip=True))
    data = ct.to_bytes()
    assert data == ct.to_bytes()
    back = P.PackedCiphertext.from_bytes(data)
    assert back == ct
    np.testing.assert_array_equal(
        P.decrypt_packed(back, priv).values, P.decrypt_packed(ct, priv).values
    )
    width = KEY_BITS // 8
    header_len = int.from_bytes(data[5:9], "big")
    assert len(data) == 9 + header_len + width + len(ct.ciphertexts) * 2 * width


def test_malformed_bundle_bytes_raise(keys, other_keys) -> None:
    data = P.encrypt_packed(np.zeros(70), keys[0], _spec()).to_bytes()
    with pytest.raises(PaillierError, match="bad magic"):
        P.PackedCiphertext.from_bytes(b"ZZZZ" + data[4:])
    with pytest.raises(PaillierError, match="truncated"):
        P.PackedCiphertext.from_bytes(data[:-1])
    with pytest.raises(PaillierError, match="version"):
        P.PackedCiphertext.from_bytes(data[:4] + b"\x09" + data[5:])
    with pytest.raises(PaillierError, match="header"):
        P.PackedCiphertext.from_bytes(data[:9] + b"[" + data[10:])
    # swap in another modulus: the fingerprint in the header no longer matches
    header_end = 9 + int.from_bytes(data[5:9], "big")
    width = KEY_BITS // 8
    other_n = other_keys[0].n.to_bytes(width, "big")
    swapped = data[:header_end] + other_n + data[header_end + width :]
    with pytest.raises(PaillierError, match="fingerprint"):
        P.PackedCiphertext.from_bytes(swapped)


# --- verifiable decryption --------------------------------------------------------------------


def test_proof_verifies_and_opens_to_the_sum(keys) -> None:
    pub, priv = keys
    spec = _spec()
    vectors = [_edge_vector(250, s) for s in range(3)]
    total = P.sum_ciphertexts([P.encrypt_packed(v, pub, spec) for v in vectors])
    proof = P.decryption_proof(total, priv)
    plaintexts, randomness = [m for m, _ in proof], [r for _, r in proof]
    assert P.verify_decryption(total, plaintexts, randomness, pub)
    assert P.verify_decryption(total, plaintexts, randomness, pub, batch=False)
    opened = P.open_plaintexts(total, plaintexts)  # anyone can open what they verified
    np.testing.assert_array_equal(opened.values, P.decrypt_packed(total, priv).values)


@pytest.mark.parametrize("batch", [True, False])
def test_proof_with_a_wrong_plaintext_or_randomness_fails(keys, batch) -> None:
    pub, priv = keys
    total = P.encrypt_packed(_edge_vector(200, 6), pub, _spec())
    proof = P.decryption_proof(total, priv)
    plaintexts, randomness = [m for m, _ in proof], [r for _, r in proof]
    lied = list(plaintexts)
    lied[2] += 1 << 16  # claim one slot held one more
    assert not P.verify_decryption(total, lied, randomness, pub, batch=batch)
    wrong_r = list(randomness)
    wrong_r[0] = randomness[0] * 2 % pub.n
    assert not P.verify_decryption(total, plaintexts, wrong_r, pub, batch=batch)
    out_of_range = list(plaintexts)
    out_of_range[1] = pub.n + plaintexts[1]
    assert not P.verify_decryption(total, out_of_range, randomness, pub, batch=batch)


def test_verify_refuses_a_foreign_key_or_wrong_counts(keys, other_keys) -> None:
    pub, priv = keys
    total = P.encrypt_packed(np.zeros(10), pub, _spec())
    ((m, r),) = P.decryption_proof(total, priv)
    with pytest.raises(PaillierError, match="not the one"):
        P.verify_decryption(total, [m], [r], other_keys[0])
    with pytest.raises(PaillierError, match="one plaintext and one r"):
        P.verify_decryption(total, [m, m], [r], pub)


def test_randomness_recovery_matches_the_gmpy2_definition(keys) -> None:
    pub, priv = keys
    ct = P.encrypt_packed(np.zeros(3), pub, _spec())
    ((_, r),) = P.decryption_proof(ct, priv)
    phi = (priv.p - 1) * (priv.q - 1)
    expected = gmpy2.powmod(ct.ciphertexts[0] % pub.n, gmpy2.invert(pub.n, phi), pub.n)
    assert r == int(expected)


# --- 2048-bit smoke test ----------------------------------------------------------------------


def test_2048_bit_keys_end_to_end() -> None:
    pub, priv = P.generate_keypair(2048)
    assert pub.n.bit_length() == 2048
    spec = PackingSpec(16, (-1.0, 1.0), 8, 2048)
    vectors = [_edge_vector(1000, s) for s in range(3)]
    total = P.sum_ciphertexts([P.encrypt_packed(v, pub, spec) for v in vectors])
    assert len(total.ciphertexts) == 10  # 107 values per plaintext
    proof = P.decryption_proof(total, priv)
    assert P.verify_decryption(total, [m for m, _ in proof], [r for _, r in proof], pub)
    result = P.decrypt_packed(total, priv)
    assert np.abs(result.values - sum(vectors)).max() <= result.error_bound + 1e-12


def test_public_key_from_a_published_modulus(keys) -> None:
    pub, priv = keys
    rebuilt = P.public_key_from_modulus(pub.n)
    ct = P.encrypt_packed(np.array([0.5, -0.5]), rebuilt, _spec())
    assert ct.key_fingerprint == P.key_fingerprint(pub.n)
    np.testing.assert_allclose(P.decrypt_packed(ct, priv).values, [0.5, -0.5], atol=2e-5)
    with pytest.raises(PaillierError, match="odd integer"):
        P.public_key_from_modulus(pub.n + 1)
