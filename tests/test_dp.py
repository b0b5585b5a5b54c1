"""flchain.crypto.dp: clipping and noise, and the accountant against dp-accounting: replace-one
adjacency of one node's whole data (sensitivity 2C) by default, add/remove (C) on request."""

from __future__ import annotations

import math

import dp_accounting
import numpy as np
import pytest
import torch
from dp_accounting import pld, rdp

from flchain.crypto.dp import (
    ADD_REMOVE,
    REPLACE_ONE,
    SENSITIVITY,
    PrivacyAccountant,
    accounted_noise_multiplier,
    clip_and_noise,
    epsilon,
)
from flchain.crypto.errors import CryptoError, DPError


def _library_rdp(sigma: float, q: float, rounds: int, delta: float) -> float:
    acc = rdp.RdpAccountant()
    event = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma))
    acc.compose(event, rounds)
    return acc.get_epsilon(delta)


# --- clip_and_noise ---------------------------------------------------------------------------


def test_clip_scales_long_update_to_the_clip_norm() -> None:
    out = clip_and_noise(torch.tensor([3.0, 4.0]), clip_norm=1.0, noise_multiplier=0.0)
    torch.testing.assert_close(out, torch.tensor([0.6, 0.8]))


def test_clip_leaves_short_update_unchanged() -> None:
    update = torch.tensor([[0.1, -0.2], [0.0, 0.3]], dtype=torch.float64)
    out = clip_and_noise(update, clip_norm=1.0, noise_multiplier=0.0)
    assert torch.equal(out, update)


def test_clip_keeps_shape_dtype_and_bounds_float32_norm() -> None:
    update = torch.randn(1000, 300, generator=torch.Generator().manual_seed(0)) * 50
    out = clip_and_noise(update, clip_norm=2.5, noise_multiplier=0.0)
    assert out.shape == update.shape and out.dtype == torch.float32
    assert float(torch.linalg.vector_norm(out.double())) == pytest.approx(2.5, rel=1e-6)
    # direction is preserved
    a, b = out.flatten().double(), update.flatten().double()
    cos = torch.nn.functional.cosine_similarity(a, b, dim=0)
    assert float(cos) == pytest.approx(1.0, abs=1e-9)


def test_noise_has_std_sigma_times_c_and_zero_mean() -> None:
    gen = torch.Generator().manual_seed(1)
    out = clip_and_noise(torch.zeros(400_000), clip_norm=2.0, noise_multiplier=0.5, generator=gen)
    assert float(out.mean()) == pytest.approx(0.0, abs=0.01)
    assert float(out.std()) == pytest.approx(1.0, rel=0.01)


def test_noise_is_reproducible_with_a_seeded_generator() -> None:
    update = torch.ones(50)
    a = clip_and_noise(update, 1.0, 1.0, torch.Generator().manual_seed(7))
    b = clip_and_noise(update, 1.0, 1.0, torch.Generator().manual_seed(7))
    c = clip_and_noise(update, 1.0, 1.0, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_input_is_not_modified() -> None:
    update = torch.tensor([30.0, 40.0])
    clip_and_noise(update, 1.0, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(update, torch.tensor([30.0, 40.0]))


@pytest.mark.parametrize(
    ("update", "clip", "sigma", "message"),
    [
        (torch.tensor([1.0, float("nan")]), 1.0, 1.0, "NaN"),
        (torch.tensor([1.0, float("inf")]), 1.0, 1.0, "NaN or infinite"),
        (torch.tensor([1, 2]), 1.0, 1.0, "floating-point"),
        ([1.0, 2.0], 1.0, 1.0, "torch.Tensor"),
        (torch.ones(3), 0.0, 1.0, "clip_norm"),
        (torch.ones(3), float("nan"), 1.0, "clip_norm"),
        (torch.ones(3), 1.0, -0.1, "noise_multiplier"),
        (torch.ones(3), 1.0, float("inf"), "noise_multiplier"),
    ],
)
def test_clip_and_noise_rejects_bad_input(update, clip, sigma, message) -> None:
    with pytest.raises(DPError, match=message):
        clip_and_noise(update, clip, sigma)


def test_dp_error_is_a_value_error() -> None:
    assert issubclass(DPError, CryptoError) and issubclass(DPError, ValueError)


# --- epsilon: adjacency and sensitivity ------------------------------------------------------


def _library_replace_one(sigma: float, rounds: int, delta: float) -> float:
    """Google's accountant under REPLACE_ONE: the Gaussian release of a clipped update has
    L2 sensitivity 2C, so its noise multiplier is (sigma*C) / (2C) = sigma / 2."""
    acc = rdp.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
    acc.compose(dp_accounting.GaussianDpEvent(sigma / 2), rounds)
    return acc.get_epsilon(delta)


def test_replacing_one_nodes_data_moves_its_clipped_release_by_up_to_2c() -> None:
    """The sensitivity the accountant uses is attained: two data sets whose updates point in
    opposite directions give clipped releases 2C apart (noise aside)."""
    C = 1.5
    u = torch.randn(1000, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 9
    apart = clip_and_noise(u, C, 0.0) - clip_and_noise(-u, C, 0.0)
    assert float(torch.linalg.vector_norm(apart)) == pytest.approx(2 * C, rel=1e-12)
    assert SENSITIVITY == {REPLACE_ONE: 2.0, ADD_REMOVE: 1.0}
    assert accounted_noise_multiplier(1.6) == 0.8
    assert accounted_noise_multiplier(1.6, ADD_REMOVE) == 1.6


@pytest.mark.parametrize(
    ("sigma", "rounds", "delta"), [(0.8, 3, 1e-5), (1.1, 100, 1e-5), (4.0, 1, 1e-6)]
)
def test_replace_one_epsilon_is_the_library_at_sensitivity_2c(sigma, rounds, delta) -> None:
    ours = epsilon(sigma, 1.0, rounds, delta)  # replace-one is the default
    assert ours == _library_replace_one(sigma, rounds, delta)
    # the same as add/remove at half the noise, and above add/remove at the same noise
    assert ours == epsilon(sigma / 2, 1.0, rounds, delta, adjacency=ADD_REMOVE)
    assert ours > epsilon(sigma, 1.0, rounds, delta, adjacency=ADD_REMOVE)


def test_replace_one_is_for_nodes_that_take_part_in_every_round() -> None:
    with pytest.raises(DPError, match="every round"):
        epsilon(1.0, 0.5, 10, 1e-5)
    with pytest.raises(DPError, match="every round"):
        PrivacyAccountant(1.0, 0.5, 1e-5)
    with pytest.raises(DPError, match="adjacency"):
        epsilon(1.0, 1.0, 10, 1e-5, adjacency="add-one")


@pytest.mark.parametrize(
    ("sigma", "q", "rounds", "delta"),
    [(1.1, 256 / 60000, 14062, 1e-5), (0.8, 0.1, 100, 1e-6), (4.0, 1.0, 1, 1e-5)],
)
def test_add_remove_epsilon_agrees_with_the_library(sigma, q, rounds, delta) -> None:
    ours = epsilon(sigma, q, rounds, delta, adjacency=ADD_REMOVE)
    assert ours == _library_rdp(sigma, q, rounds, delta)


def test_epsilon_is_an_upper_bound_of_the_tighter_pld_accountant() -> None:
    acc = pld.PLDAccountant()
    acc.compose(dp_accounting.PoissonSampledDpEvent(0.05, dp_accounting.GaussianDpEvent(1.0)), 200)
    tight = acc.get_epsilon(1e-5)
    ours = epsilon(1.0, 0.05, 200, 1e-5, adjacency=ADD_REMOVE)
    assert tight <= ours <= 1.5 * tight


def test_single_full_gaussian_step_between_exact_and_classic_rdp_bound() -> None:
    sigma, delta = 2.0, 1e-5
    s = sigma / 2  # replace-one: noise sigma*C over sensitivity 2C
    # Gaussian RDP is alpha / (2 s^2); the classic conversion adds log(1/delta)/(alpha-1).
    classic = min(
        a / (2 * s**2) + math.log(1 / delta) / (a - 1) for a in np.linspace(1.01, 200, 20000)
    )
    exact = dp_accounting.get_epsilon_gaussian(s, delta)
    ours = epsilon(sigma, 1.0, 1, delta)
    assert exact <= ours <= classic + 1e-9


def test_epsilon_grows_with_rounds_and_sample_rate_and_falls_with_noise() -> None:
    by_rounds = [epsilon(1.0, 1.0, t, 1e-5) for t in (1, 10, 100, 1000)]
    by_rate = [epsilon(1.0, q, 100, 1e-5, adjacency=ADD_REMOVE) for q in (0.01, 0.05, 0.2, 1.0)]
    by_sigma = [epsilon(s, 1.0, 100, 1e-5) for s in (0.7, 1.0, 2.0, 5.0)]
    assert by_rounds == sorted(by_rounds) and len(set(by_rounds)) == 4
    assert by_rate == sorted(by_rate) and len(set(by_rate)) == 4
    assert by_sigma == sorted(by_sigma, reverse=True) and len(set(by_sigma)) == 4


def test_epsilon_edge_cases() -> None:
    assert epsilon(0.0, 1.0, 10, 1e-5) == math.inf
    assert epsilon(1.0, 1.0, 0, 1e-5) == 0.0
    assert epsilon(1.0, 0.0, 10, 1e-5) == 0.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((-1.0, 1.0, 10, 1e-5), "noise_multiplier"),
        ((1.0, 1.5, 10, 1e-5), "sample_rate"),
        ((1.0, 1.0, -1, 1e-5), "rounds"),
        ((1.0, 1.0, 2.5, 1e-5), "rounds"),
        ((1.0, 1.0, 10, 0.0), "delta"),
        ((1.0, 1.0, 10, 1.0), "delta"),
    ],
)
def test_epsilon_rejects_bad_arguments(args, message) -> None:
    with pytest.raises(DPError, match=message):
        epsilon(*args)


# --- PrivacyAccountant ------------------------------------------------------------------------


def test_accountant_tracks_the_running_epsilon() -> None:
    acc = PrivacyAccountant(noise_multiplier=1.1, sample_rate=1.0, delta=1e-5)
    assert acc.epsilon == 0.0 and acc.rounds == 0 and acc.adjacency == REPLACE_ONE
    previous = 0.0
    for t in range(1, 6):
        acc.step()
        assert acc.rounds == t
        assert acc.epsilon == pytest.approx(_library_replace_one(1.1, t, 1e-5), rel=1e-9)
        assert acc.epsilon > previous
        previous = acc.epsilon
    acc.step(rounds=20)
    assert acc.rounds == 25
    assert acc.spent == (pytest.approx(epsilon(1.1, 1.0, 25, 1e-5), rel=1e-9), 1e-5)


def test_add_remove_accountant_keeps_poisson_subsampling() -> None:
    acc = PrivacyAccountant(1.1, 0.2, 1e-5, adjacency=ADD_REMOVE)
    acc.step(rounds=7)
    assert acc.epsilon == pytest.approx(_library_rdp(1.1, 0.2, 7, 1e-5), rel=1e-9)


def test_accountant_without_noise_reports_infinity() -> None:
    acc = PrivacyAccountant(noise_multiplier=0.0, sample_rate=1.0, delta=1e-5)
    acc.step()
    assert acc.epsilon == math.inf


def test_accountant_rejects_bad_arguments() -> None:
    with pytest.raises(DPError, match="delta"):
        PrivacyAccountant(1.0, 1.0, delta=2.0)
    acc = PrivacyAccountant(1.0, 1.0, 1e-5)
    with pytest.raises(DPError, match="rounds"):
        acc.step(-2)
