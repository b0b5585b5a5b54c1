"""Distributed DP in secure mode: the decrypted sum carries the central noise sigma*C, each
member adds 1/n of its variance as integers that survive the ring, the accounting agrees with
dp-accounting, and dropouts are reported for the members actually in the sum."""

from __future__ import annotations

import math

import dp_accounting
import numpy as np
import pytest
from dp_accounting import rdp

from flchain.crypto.distributed_dp import (
    ORDERS,
    DistributedAccountant,
    DistributedNoise,
    distributed_noise,
    learning_warning,
    rounded_sensitivity,
    skellam_rdp,
)
from flchain.crypto.dp import SENSITIVITY
from flchain.crypto.masking import MaskingSession, generate_mask_key, public_key_bytes
from flchain.crypto.paillier import generate_keypair
from flchain.crypto.quantize import ring_add
from flchain.crypto.secure_sum import SecureAggregationConfig, secure_fedavg

SIGMA, CLIP = 0.8, 1.0


@pytest.fixture(scope="module")
def keypair():
    return generate_keypair(512)


def _clipped(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d))
    return x * (CLIP / np.linalg.norm(x, axis=1, keepdims=True))


def test_decrypted_mean_carries_the_central_noise(keypair):
    n, d = 4, 3000
    x = _clipped(n, d)
    noise = DistributedNoise(SIGMA, CLIP, min_members=n)
    result = secure_fedavg(
        x, value_range=CLIP, bits=16, key_bits=512, keypair=keypair, noise=noise, noise_seed=7
    )
    residual = result.update.numpy() - x.mean(axis=0)
    # The noise of central DP-FedAvg's mean, (sum + N(0, (sigma*C)^2)) / n: std sigma*C/n.
    assert residual.std() == pytest.approx(SIGMA * CLIP / n, rel=0.08)
    # ... and it is exactly the members' shares: the rest is quantization error.
    assert np.abs(residual - result.noise.numpy()).max() <= result.error_bound
    assert result.levels_per_unit == pytest.approx(
        SecureAggregationConfig(CLIP, n, noise=noise).levels_per_unit(dict.fromkeys(range(n), 0.25))
    )


def test_each_member_adds_one_nth_of_the_variance_and_the_shares_sum_to_it():
    noise = DistributedNoise(SIGMA, CLIP, min_members=10)
    u = 500.0  # levels per unit: sigma*C*u = 400 levels of central std
    rng = np.random.default_rng(1)
    shares = np.stack([noise.sample(20_000, u, rng) for _ in range(10)])
    assert shares.dtype == np.int64
    assert shares[0].var() == pytest.approx(noise.central_variance(u) / 10, rel=0.05)
    assert shares.sum(axis=0).var() == pytest.approx((SIGMA * CLIP * u) ** 2, rel=0.05)


def test_noisy_integers_survive_masking_exactly():
    n, d, ring = 5, 1000, 20
    rng = np.random.default_rng(2)
    keys = [generate_mask_key() for _ in range(n)]
    registry = {i: public_key_bytes(k) for i, k in enumerate(keys)}
    levels = rng.integers(0, 1 << 16, size=(n, d)).astype(np.uint64)
    noise = rng.integers(-50_000, 50_000, size=(n, d)).astype(np.int64)
    masked = [
        MaskingSession(i, keys[i], registry, ring, b"t", 0).mask(
            ring_add(levels[i], noise[i], ring)
        )
        for i in range(n)
    ]
    total = np.zeros(d, dtype=np.uint64)
    for m in masked:
        total = (total + m) & np.uint64((1 << ring) - 1)
    exact = levels.astype(np.int64).sum(axis=0) + noise.sum(axis=0)
    assert np.array_equal(total.astype(np.int64), np.mod(exact, 1 << ring))


def test_accounting_is_the_gaussian_rdp_plus_the_skellam_term():
    noise = DistributedNoise(SIGMA, CLIP, min_members=10, sensitivity_factor=2.0)
    acc = DistributedAccountant(noise, dimension=650, delta=1e-5)
    u = 30_000.0
    for _ in range(20):
        acc.step(u, members=10)
    l2, _ = rounded_sensitivity(2.0 * CLIP * u, 650)
    assert l2 == pytest.approx(2.0 * CLIP * u + math.sqrt(650))
    # The Skellam bound is the Gaussian RDP of std sqrt(mu) and sensitivity Delta_2, plus a
    # correction that is negligible at this many levels.
    effective = math.sqrt(noise.central_variance(u)) / l2
    gauss = rdp.RdpAccountant(orders=list(ORDERS))
    gauss.compose(dp_accounting.GaussianDpEvent(effective), 20)
    assert acc.epsilon >= gauss.get_epsilon(1e-5)
    assert acc.epsilon == pytest.approx(gauss.get_epsilon(1e-5), rel=1e-3)
    # Rounding costs a little against central DP at sigma (replace-one: sigma / 2).
    central = rdp.RdpAccountant(orders=list(ORDERS))
    central.compose(dp_accounting.GaussianDpEvent(SIGMA / 2), 20)
    assert central.get_epsilon(1e-5) < acc.epsilon < 1.01 * central.get_epsilon(1e-5)
    # One member's own guarantee: its share alone, sigma / sqrt(10).
    own = rdp.RdpAccountant(orders=list(ORDERS))
    own.compose(dp_accounting.GaussianDpEvent(effective / math.sqrt(10)), 20)
    assert acc.member_epsilon == pytest.approx(own.get_epsilon(1e-5), rel=1e-3)
    assert acc.epsilon_against(9) == pytest.approx(acc.member_epsilon)
    assert acc.epsilon < acc.epsilon_against(3) < acc.member_epsilon


def test_skellam_correction_matters_when_the_noise_is_a_few_levels():
    rdp_few = skellam_rdp(2.0, 4.0, variance=4.0)
    gaussian = np.asarray(ORDERS) * 4.0 / (2 * 4.0)
    assert (rdp_few > gaussian).all()
    assert rdp_few[0] - gaussian[0] == pytest.approx(min((3 * 4 + 24) / 64, 3 * 4 / 8))


def test_dropouts_keep_the_noise_of_min_members_and_report_the_actual_count(keypair):
    n, d = 5, 1200
    x = _clipped(n, d, seed=3)
    noise = DistributedNoise(SIGMA, CLIP, min_members=4)  # the round may finalize with 4
    result = secure_fedavg(
        x, value_range=CLIP, key_bits=512, keypair=keypair, noise=noise, noise_seed=1, dropped=[2]
    )
    assert result.members == (0, 1, 3, 4)
    residual = result.update.numpy() - x[[0, 1, 3, 4]].mean(axis=0)
    assert residual.std() == pytest.approx(SIGMA * CLIP / 4, rel=0.1)  # 4 of 4 shares: exact
    full = secure_fedavg(
        x, value_range=CLIP, key_bits=512, keypair=keypair, noise=noise, noise_seed=1
    )
    # All 5 delivered: 5/4 of the variance sigma*C needs; the guarantee is reported for 5.
    assert (full.update.numpy() - x.mean(axis=0)).std() == pytest.approx(
        SIGMA * CLIP / 5 * math.sqrt(5 / 4), rel=0.1
    )
    four, five = (DistributedAccountant(noise, d, 1e-5) for _ in range(2))
    four.step(result.levels_per_unit, 4)
    five.step(full.levels_per_unit, 5)
    assert five.epsilon < four.epsilon
    # A node sizes the shares per round (its eligible count): the accountant takes that size.
    sized = DistributedAccountant(DistributedNoise(SIGMA, CLIP, min_members=2), d, 1e-5)
    sized.step(result.levels_per_unit, 4, min_members=4)
    assert sized.epsilon == pytest.approx(four.epsilon)


def test_adjacency_comes_from_the_dp_module():
    assert distributed_noise(SIGMA, CLIP, 10).sensitivity_factor == SENSITIVITY["replace-one"]
    assert distributed_noise(0.0, CLIP, 10) is None
    assert distributed_noise(SIGMA, None, 10) is None


def test_settings_that_cannot_learn_get_a_warning():
    # The former README example: mlp on digits (17226 parameters), 10 peers each adding sigma*C.
    warning = learning_warning(0.8, 10, 17226, 20, local=True)
    assert warning is not None and "drowns" in warning
    assert learning_warning(0.8, 10, 650, 20, local=False) is None  # logreg, noise on the sum
    assert learning_warning(0.0, 10, 17226, 20, local=True) is None
    # Siren's alarms compare noise-free local models with the noised global one.
    siren = learning_warning(0.8, 10, 17226, 20, local=False, rule="siren")
    assert siren is not None and "alarm" in siren


def test_a_node_codec_adds_its_share_and_the_round_mean_carries_sigma_c(keypair):
    import torch

    from flchain.node.secure import SecureCodec, equal_shares, mask_task_label
    from flchain.taskconfig import TaskConfig

    n, d = 3, 2000
    config = TaskConfig(
        model="logreg", secure=True, secure_key_bits=512, dp_clip=CLIP, dp_noise=SIGMA
    )
    keys = [generate_mask_key() for _ in range(n)]
    label = mask_task_label("0x" + "ab" * 20, 1)
    codecs = [SecureCodec(config, num_params=d, mask_key=k, task_label=label) for k in keys]
    assert codecs[0].noise(n) == DistributedNoise(SIGMA, CLIP, n, SENSITIVITY["replace-one"])
    registry = {i: public_key_bytes(k) for i, k in enumerate(keys)}
    x = torch.from_numpy(_clipped(n, d, seed=4))
    public, private = keypair
    blobs = {
        i: codecs[i].encrypt(
            x[i],
            my_index=i,
            round_index=1,
            attempt=0,
            mask_set=registry,
            n_eligible=n,
            public_key=public,
        )
        for i in range(n)
    }
    total = codecs[0].sum_bundles(blobs, n_eligible=n, public_key=public)
    mean = codecs[1].open(total, codecs[0].prove(total, private), public)
    residual = (mean.double() - x.mean(0)).numpy()
    assert residual.std() == pytest.approx(SIGMA * CLIP / n, rel=0.1)
    u = codecs[0].aggregation_config(n).levels_per_unit(equal_shares(range(n)))
    assert math.sqrt(d) < 0.02 * CLIP * u  # rounding inflates the sensitivity by under 2%
