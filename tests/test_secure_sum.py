"""flchain.crypto.secure_sum: the secure aggregate equals plaintext FedAvg within quantization."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flchain.crypto import paillier as P
from flchain.crypto.errors import MaskingError, PaillierError, QuantizationError
from flchain.crypto.masking import MaskingSession, generate_mask_key, public_key_bytes
from flchain.crypto.secure_sum import (
    SecureAggregationConfig,
    encrypt_contribution,
    secure_fedavg,
    weight_shares,
)

KEY_BITS = 1024


@pytest.fixture(scope="module")
def keypair() -> tuple:
    return P.generate_keypair(KEY_BITS)


def _updates(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).uniform(-0.5, 0.5, (n, d))
    x[:, ::9] = 0.0
    x[0, 1], x[1, 2] = -0.5, 0.5  # range ends
    return x


def test_weight_shares_hand_computed() -> None:
    assert weight_shares({3: 1.0, 0: 3.0}) == {0: 0.75, 3: 0.25}
    with pytest.raises(QuantizationError, match="member 1"):
        weight_shares({0: 1.0, 1: 0.0})
    with pytest.raises(QuantizationError, match="no members"):
        weight_shares({})


def test_config_scales_the_range_to_cover_every_share() -> None:
    config = SecureAggregationConfig(1.0, max_members=4, bits=16, key_bits=KEY_BITS)
    assert config.value_range == (-1.0, 1.0) and config.ring_bits == 18
    spec = config.spec({0: 0.25, 1: 0.75})
    assert spec.value_range == (-0.75, 0.75) and spec.masked and spec.max_members == 4
    positive = SecureAggregationConfig((0.5, 1.0), max_members=2, key_bits=KEY_BITS)
    assert positive.spec({0: 0.2, 1: 0.8}).value_range == (0.1, 0.8)


def test_secure_fedavg_equals_plaintext_fedavg(keypair) -> None:
    x = _updates(5, 400)
    out = secure_fedavg(x, value_range=0.5, key_bits=KEY_BITS, keypair=keypair, workers=1)
    assert isinstance(out.update, torch.Tensor) and out.update.dtype == torch.float64
    assert out.members == (0, 1, 2, 3, 4) and out.attempts == 1 and out.verified
    err = np.abs(out.update.numpy() - x.mean(axis=0)).max()
    assert err <= out.error_bound
    # equal weights keep the precision of 16 bits over the range: bound = step / 2
    assert out.error_bound == pytest.approx(1.0 / (2**16 - 1) / 2)
    assert set(out.timings) >= {"encrypt", "sum", "decrypt", "verify"}


def test_weighted_secure_fedavg_from_tensors(keypair) -> None:
    x = torch.from_numpy(_updates(4, 300, seed=1)).float()
    w = torch.tensor([10.0, 30.0, 20.0, 40.0])
    out = secure_fedavg(x, w, value_range=(-0.5, 0.5), key_bits=KEY_BITS, keypair=keypair)
    expected = (x.double() * (w / w.sum()).double()[:, None]).sum(0)
    assert float((out.update - expected).abs().max()) <= out.error_bound
    assert out.error_bound < 1e-4


def test_dropped_member_is_handled_by_remasking(keypair) -> None:
    x = _updates(5, 250, seed=2)
    w = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    out = secure_fedavg(x, w, value_range=0.5, dropped=[3], key_bits=KEY_BITS, keypair=keypair)
    live = [0, 1, 2, 4]
    assert out.members == tuple(live) and out.dropped == (3,) and out.attempts == 2
    expected = (x[live] * w[live, None]).sum(0) / w[live].sum()
    assert np.abs(out.update.numpy() - expected).max() <= out.error_bound


def test_too_few_survivors_is_an_error(keypair) -> None:
    with pytest.raises(MaskingError, match="only 1 member"):
        secure_fedavg(_updates(3, 10), value_range=0.5, dropped=[0, 2], keypair=keypair,
                      key_bits=KEY_BITS)  # fmt: skip


def test_out_of_range_update_raises_unless_clip(keypair) -> None:
    x = _updates(3, 20)
    x[2, 5] = 0.9
    with pytest.raises(QuantizationError, match=r"outside the agreed range \[-0.5, 0.5\]"):
        secure_fedavg(x, value_range=0.5, key_bits=KEY_BITS, keypair=keypair)
    out = secure_fedavg(x, value_range=0.5, clip=True, key_bits=KEY_BITS, keypair=keypair)
    expected = np.clip(x, -0.5, 0.5).mean(axis=0)
    assert np.abs(out.update.numpy() - expected).max() <= out.error_bound


def test_one_masked_contribution_alone_does_not_decrypt(keypair) -> None:
    """The decryptor holding the key still cannot read a single member's update."""
    pub, priv = keypair
    keys = [generate_mask_key() for _ in range(3)]
    registry = {i: public_key_bytes(k) for i, k in enumerate(keys)}
    config = SecureAggregationConfig(0.5, max_members=3, key_bits=KEY_BITS)
    shares = weight_shares({0: 1.0, 1: 1.0, 2: 1.0})
    x = _updates(3, 200)
    bundles = [
        encrypt_contribution(
            x[i],
            session=MaskingSession(i, keys[i], registry, config.ring_bits, "t", 0),
            shares=shares,
            config=config,
            public_key=pub,
        )
        for i in range(3)
    ]
    with pytest.raises(PaillierError, match="masks did not cancel"):
        P.decrypt_packed(bundles[0], priv)
    total = P.decrypt_packed(P.sum_ciphertexts(bundles), priv)
    assert np.abs(total.values - x.mean(axis=0)).max() <= total.error_bound


def test_contribution_refuses_shares_that_do_not_match_the_masks(keypair) -> None:
    keys = [generate_mask_key() for _ in range(3)]
    registry = {i: public_key_bytes(k) for i, k in enumerate(keys)}
    config = SecureAggregationConfig(0.5, max_members=3, key_bits=KEY_BITS)
    session = MaskingSession(0, keys[0], registry, config.ring_bits, "t", 0)
    with pytest.raises(MaskingError, match="shares cover members"):
        encrypt_contribution(
            np.zeros(4), session=session, shares={0: 0.5, 1: 0.5}, config=config,
            public_key=keypair[0],
        )  # fmt: skip
    wrong_ring = MaskingSession(0, keys[0], registry, config.ring_bits + 1, "t", 0)
    with pytest.raises(MaskingError, match="ring"):
        encrypt_contribution(
            np.zeros(4), session=wrong_ring, shares=weight_shares({0: 1, 1: 1, 2: 1}),
            config=config, public_key=keypair[0],
        )  # fmt: skip


@pytest.mark.parametrize(
    ("vectors", "weights", "message"),
    [
        (np.zeros(5), None, r"\[n >= 2, d\]"),
        (np.zeros((1, 5)), None, r"\[n >= 2, d\]"),
        (np.zeros((2, 5)), [1.0], r"shape \(2,\)"),
    ],
)
def test_secure_fedavg_rejects_bad_shapes(keypair, vectors, weights, message) -> None:
    with pytest.raises(QuantizationError, match=message):
        secure_fedavg(vectors, weights, value_range=1.0, key_bits=KEY_BITS, keypair=keypair)
