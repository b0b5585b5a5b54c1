"""Secure aggregation as nodes run it: the decrypted mean equals plaintext FedAvg within the
quantization bound, dropouts are re-masked, and a lying decryptor or a bad bundle is caught."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat

import pytest
import torch

from flchain.crypto.ciphertext import PackedCiphertext, sum_ciphertexts
from flchain.crypto.errors import CryptoError, PaillierError
from flchain.crypto.masking import generate_mask_key, public_key_bytes
from flchain.crypto.paillier import generate_keypair
from flchain.crypto.wire import DecryptionProof, decode_public_key, encode_public_key
from flchain.node.he_key import he_key_file, load_or_create_he_key
from flchain.node.identity import IdentityError, init_node_dir
from flchain.node.learner import Learner
from flchain.node.secure import BundleError, SecureCodec, mask_task_label
from flchain.taskconfig import DataSpec, TaskConfig, TaskConfigError

KEY_BITS = 1024
CONFIG = TaskConfig(model="logreg", local_epochs=1, secure=True, secure_key_bits=KEY_BITS)
N = 4


@pytest.fixture(scope="module")
def decryptor_keys():
    return generate_keypair(KEY_BITS)


@pytest.fixture(scope="module")
def members():
    """Four members: their learner, a trained update, their mask key and codec."""
    label = mask_task_label("0x" + "ab" * 20, 7)
    out = []
    for i in range(N):
        learner = Learner(CONFIG, DataSpec("digits", i, N), seed=i)
        base = learner.initial_model()
        update = learner.decode_update(learner.train(base, 1).blob)
        key = generate_mask_key()
        codec = SecureCodec(CONFIG, num_params=learner.num_params, mask_key=key, task_label=label)
        out.append((learner, base, update, key, codec))
    return out


def _encrypt_all(members, indices, attempt, public_key, mask_set=None):
    registry = {i: public_key_bytes(members[i][3]) for i in (mask_set or indices)}
    return {
        i: members[i][4].encrypt(
            members[i][2],
            my_index=i,
            round_index=1,
            attempt=attempt,
            mask_set=registry,
            n_eligible=N,
            public_key=public_key,
        )
        for i in indices
    }


def test_secure_mean_equals_plaintext_fedavg_within_the_bound(members, decryptor_keys) -> None:
    public, private = decryptor_keys
    blobs = _encrypt_all(members, range(N), 0, public)
    codec = members[0][4]
    total = codec.sum_bundles(blobs, n_eligible=N, public_key=public)
    proof = codec.prove(total, private)
    # Every member opens the same proof against its own sum to the same bits.
    means = [m[4].open(total, proof, public) for m in members]
    assert all(torch.equal(means[0], other) for other in means[1:])
    plain = torch.stack([m[2].double() for m in members]).mean(0)
    c = CONFIG.secure_value_range
    step = 2 * c / N / (2**CONFIG.secure_bits - 1)  # the quantizer's step for shares of 1/N
    assert float((means[0] - plain).abs().max()) <= N * step / 2 + 1e-12
    assert float((means[0] - plain).abs().max()) > 0  # it is quantized, not the plaintext
    # The model every member votes on is bit-identical, and close to plaintext FedAvg's.
    learner, base = members[0][0], members[0][1]
    models = [m[0].apply_update(base, means[0]) for m in members]
    assert len({hashlib.sha256(b).digest() for b in models}) == 1
    fedavg = learner.aggregate(
        base,
        {i: learner.encode_update(m[2]) for i, m in enumerate(members)},
        dict.fromkeys(range(N), 1.0),
    )
    got = learner.model_params(models[0])
    want = learner.model_params(fedavg.model_blob)
    assert float((got - want).abs().max()) <= N * step


def test_a_dropout_is_remasked_among_the_submitters(members, decryptor_keys) -> None:
    public, private = decryptor_keys
    codec = members[0][4]
    survivors = [0, 1, 2]
    first = _encrypt_all(members, survivors, 0, public, mask_set=range(N))  # masked over four
    with pytest.raises(BundleError, match="spec"):  # shares of 1/4 do not make a mean of 3
        codec.sum_bundles(first, n_eligible=N, public_key=public)
    raw = sum_ciphertexts([PackedCiphertext.from_bytes(b) for b in first.values()])
    with pytest.raises(PaillierError, match="masks did not cancel"):
        codec.prove(raw, private)
    again = _encrypt_all(members, survivors, 1, public)  # re-masked over the three
    assert all(first[i] != again[i] for i in survivors)
    total = codec.sum_bundles(again, n_eligible=N, public_key=public)
    mean = codec.open(total, codec.prove(total, private), public)
    plain = torch.stack([members[i][2].double() for i in survivors]).mean(0)
    step = 2 * CONFIG.secure_value_range / 3 / (2**CONFIG.secure_bits - 1)
    assert float((mean - plain).abs().max()) <= 3 * step / 2 + 1e-12


def test_a_lying_decryptor_is_caught(members, decryptor_keys) -> None:
    public, private = decryptor_keys
    codec = members[0][4]
    blobs = _encrypt_all(members, range(N), 0, public)
    total = codec.sum_bundles(blobs, n_eligible=N, public_key=public)
    honest = DecryptionProof.from_bytes(
        codec.prove(total, private), modulus=total.modulus, count=len(total.ciphertexts)
    )
    forged = dataclasses.replace(
        honest, plaintexts=(honest.plaintexts[0] + 1, *honest.plaintexts[1:])
    )
    with pytest.raises(CryptoError, match="does not verify"):
        codec.open(total, forged.to_bytes(total.modulus), public)
    other = sum_ciphertexts([PackedCiphertext.from_bytes(blobs[i]) for i in (0, 1)])
    with pytest.raises(CryptoError, match="another sum"):
        codec.open(other, honest.to_bytes(total.modulus), public)
    with pytest.raises(CryptoError, match="truncated"):
        codec.open(total, honest.to_bytes(total.modulus)[:-1], public)
    with pytest.raises(CryptoError, match="bad magic"):
        codec.open(total, b"junk" * 10, public)


def test_bad_bundles_are_named(members, decryptor_keys) -> None:
    public, _ = decryptor_keys
    codec = members[0][4]
    blobs = _encrypt_all(members, range(N), 0, public)
    other_key, _ = generate_keypair(KEY_BITS)
    foreign = _encrypt_all(members, range(N), 0, other_key)
    cases = {1: os.urandom(300), 2: foreign[2]}
    with pytest.raises(BundleError) as info:
        codec.sum_bundles({**blobs, **cases}, n_eligible=N, public_key=public)
    assert info.value.members == [1, 2]
    with pytest.raises(BundleError, match="spec"):  # encrypted for another N
        codec.sum_bundles(blobs, n_eligible=N + 4, public_key=public)


def test_public_key_blob_round_trip_and_rejects_bad_input(decryptor_keys) -> None:
    public, _ = decryptor_keys
    blob = encode_public_key(public)
    assert decode_public_key(blob, key_bits=KEY_BITS).n == public.n
    with pytest.raises(PaillierError, match="bits"):
        decode_public_key(blob, key_bits=2048)
    for bad in (b"", blob[:-1], blob + b"\0", b"XXXX" + blob[4:], blob[:4] + b"\x09" + blob[5:]):
        with pytest.raises(PaillierError):
            decode_public_key(bad)


def test_paillier_key_is_sealed_0600_and_survives_a_restart(tmp_path) -> None:
    node = tmp_path / "node"
    init_node_dir(node, "correct horse", scrypt_n=2**10)
    public, private = load_or_create_he_key(node, "correct horse", 512)
    file = he_key_file(node, 512)
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert format(int(private.p), "x") not in file.read_text()
    again_public, again_private = load_or_create_he_key(node, "correct horse", 512)
    assert again_public.n == public.n and again_private.p == private.p
    with pytest.raises(IdentityError, match="wrong password"):
        load_or_create_he_key(node, "wrong horse", 512)
    record = json.loads(file.read_text())
    record["n"] = record["n"][:-1] + ("0" if record["n"][-1] != "0" else "1")
    file.write_text(json.dumps(record))  # a swapped modulus: the seal no longer opens
    file.chmod(0o600)
    with pytest.raises(IdentityError):
        load_or_create_he_key(node, "correct horse", 512)
    file.chmod(0o644)
    with pytest.raises(IdentityError, match="accessible"):
        load_or_create_he_key(node, "correct horse", 512)


def test_secure_task_config_runs_fedavg_only() -> None:
    with pytest.raises(TaskConfigError, match="FedAvg"):
        TaskConfig(secure=True, rule="krum")
    with pytest.raises(TaskConfigError, match="key_bits"):
        TaskConfig(secure=True, secure_key_bits=256)
    # Members only clip: the range is C; distributed DP widens the ring for its noise itself.
    assert TaskConfig(secure=True, dp_clip=1.0, dp_noise=0.5).secure_value_range == 1.0
    assert TaskConfig(secure=True, secure_range=0.5).secure_value_range == 0.5
