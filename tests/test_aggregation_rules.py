"""Hand-computed cases and robustness properties of the classic rules."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch

from flchain.aggregation import AggregationError, aggregate
from flchain.aggregation.trimmed_mean import default_trim


def col(*values: float) -> torch.Tensor:
    """n one-dimensional updates."""
    return torch.tensor([[v] for v in values], dtype=torch.float64)


def outlier_batch(n_benign: int, n_bad: int, d: int = 8, seed: int = 0) -> torch.Tensor:
    """Benign updates near 1.0 followed by far outliers (at +-100 on every coordinate)."""
    g = torch.Generator().manual_seed(seed)
    benign = 1.0 + 0.1 * torch.randn(n_benign, d, generator=g, dtype=torch.float64)
    signs = torch.where(torch.arange(n_bad) % 2 == 0, 1.0, -1.0).to(torch.float64)
    bad = 100.0 * signs[:, None] * torch.ones(n_bad, d, dtype=torch.float64)
    return torch.cat([benign, bad])


# --- fedavg ---------------------------------------------------------------------------


def test_fedavg_hand_computed():
    updates = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    res = aggregate("fedavg", updates, torch.tensor([1.0, 1.0, 2.0]))
    assert res.update.tolist() == [3.5, 4.5]
    assert res.scores.tolist() == [0.25, 0.25, 0.5]
    assert res.accepted.tolist() == [True, True, True]


def test_fedavg_default_weights_are_equal_and_zero_weight_is_not_accepted():
    updates = torch.tensor([[0.0], [6.0], [100.0]])
    assert aggregate("fedavg", updates[:2]).update.item() == 3.0
    res = aggregate("fedavg", updates, torch.tensor([1.0, 2.0, 0.0]))
    assert res.update.item() == 4.0
    assert res.accepted.tolist() == [True, True, False]


@pytest.mark.parametrize("deterministic", [True, False])
def test_fedavg_equals_the_weighted_mean(deterministic):
    g = torch.Generator().manual_seed(3)
    updates = torch.randn(9, 50, generator=g, dtype=torch.float64)
    weights = torch.rand(9, generator=g, dtype=torch.float64)
    expected = (weights[:, None] * updates).sum(0) / weights.sum()
    res = aggregate("fedavg", updates, weights, deterministic=deterministic)
    assert torch.allclose(res.update, expected, atol=1e-12, rtol=0)


# --- median ---------------------------------------------------------------------------


def test_median_odd_n():
    updates = torch.tensor([[1.0, 9.0], [3.0, 1.0], [2.0, 5.0]])
    res = aggregate("median", updates)
    assert res.update.tolist() == [2.0, 5.0]
    # update 2 is the middle value in both coordinates, update 1 and 0 in neither
    assert res.scores.tolist() == [0.0, 0.0, 1.0]
    assert res.accepted.tolist() == [False, False, True]


def test_median_even_n_averages_the_two_middle_values():
    res = aggregate("median", col(1.0, 2.0, 10.0, 4.0))
    assert res.update.item() == 3.0  # torch.median would give the lower middle value, 2
    assert res.accepted.tolist() == [False, True, False, True]
    assert res.scores.tolist() == [0.0, 1.0, 0.0, 1.0]


@pytest.mark.parametrize("rule", ["median", "trimmed_mean"])
@pytest.mark.parametrize("n_bad", [1, 3, 4])
def test_coordinate_rules_stay_in_the_benign_range(rule, n_bad):
    n_benign = 9
    updates = outlier_batch(n_benign, n_bad)
    benign = updates[:n_benign]
    params = {"beta": 0.3} if rule == "trimmed_mean" else {}
    res = aggregate(rule, updates, **params)
    assert bool((res.update >= benign.min(0).values).all())
    assert bool((res.update <= benign.max(0).values).all())


# --- trimmed mean ---------------------------------------------------------------------


def test_trimmed_mean_hand_computed():
    updates = torch.tensor([[1.0, 5.0], [2.0, 4.0], [3.0, 3.0], [4.0, 2.0], [100.0, 1.0]])
    res = aggregate("trimmed_mean", updates, beta=0.2)  # k = 1 per side
    assert res.update.tolist() == [3.0, 3.0]  # mean(2, 3, 4) in both columns
    # update 0 is trimmed in column 0 (smallest) and column 1 (largest): fraction 1
    assert res.scores.tolist() == [1.0, 0.0, 0.0, 0.0, 1.0]
    assert res.accepted.tolist() == [False, True, True, True, False]
    assert res.info["trimmed_per_side"] == 1


def test_trimmed_mean_beta_zero_is_the_mean_and_default_is_one_tenth():
    updates = col(1.0, 2.0, 3.0, 10.0)
    assert aggregate("trimmed_mean", updates, beta=0.0).update.item() == 4.0
    ten = col(*range(10))
    assert aggregate("trimmed_mean", ten).info["trimmed_per_side"] == 1
    assert aggregate("trimmed_mean", ten).update.item() == 4.5


def test_trimmed_mean_reads_beta_as_its_decimal():
    res = aggregate("trimmed_mean", torch.randn(100, 2), beta=0.29)
    assert res.info["trimmed_per_side"] == 29  # 0.29 * 100 is 28.999... in binary


@pytest.mark.parametrize("beta", [2 / 7, "2/7", Fraction(2, 7)])
def test_trimmed_mean_two_sevenths_of_seven_trims_two_per_side(beta):
    # 2/7 as a float is 0.2857142857142857, whose decimal times 7 is 1.99999...: still 2.
    updates = col(50.0, 1.0, 2.0, -40.0, 4.0, 3.0, 30.0)
    res = aggregate("trimmed_mean", updates, beta=beta)
    assert res.info["trimmed_per_side"] == 2
    assert res.update.item() == (2.0 + 3.0 + 4.0) / 3  # -40, 1 and 30, 50 dropped
    assert res.accepted.tolist() == [False, False, True, False, True, True, False]
    assert aggregate("trimmed_mean", updates, f=2).update.item() == 3.0  # ByzFL's count form


def test_trimmed_mean_default_trims_one_per_side_on_four_updates():
    res = aggregate("trimmed_mean", col(1.0, 2.0, 3.0, 100.0))
    assert res.info["trimmed_per_side"] == 1
    assert res.update.item() == 2.5  # the outlier never enters
    assert default_trim(3) == 1 and default_trim(2) == 0 and default_trim(25) == 2
    assert aggregate("trimmed_mean", col(1.0, 9.0)).update.item() == 5.0  # nothing to trim


def test_trimmed_mean_refuses_a_beta_that_trims_nothing():
    with pytest.raises(AggregationError, match=r"beta=0.1 trims .* nothing: use beta >= 1/4"):
        aggregate("trimmed_mean", col(1.0, 2.0, 3.0, 100.0), beta=0.1)


# --- krum / multikrum -----------------------------------------------------------------


def test_krum_hand_computed():
    # 1-D points 0, 1, 2, 10, 11 with f = 1: each score sums the 2 nearest squared distances
    res = aggregate("krum", col(0.0, 1.0, 2.0, 10.0, 11.0), f=1)
    assert res.scores.tolist() == [5.0, 2.0, 5.0, 65.0, 82.0]
    assert res.update.tolist() == [1.0]
    assert res.accepted.tolist() == [False, True, False, False, False]
    assert res.info == {"selected": [1], "f": 1}


def test_krum_ties_go_to_the_lowest_index():
    res = aggregate("krum", torch.tensor([[5.0], [1.0], [1.0], [1.0]]), f=0)
    assert res.info["selected"] == [1]


def test_krum_refuses_f_without_n_above_2f_plus_2():
    # n - f - 2 >= 1 holds (1 neighbour each), but the guarantee needs n > 2f + 2.
    with pytest.raises(AggregationError, match=r"n > 2f \+ 2 .*n=4 updates f can be at most 0"):
        aggregate("krum", torch.randn(4, 2), f=1)
    with pytest.raises(AggregationError, match=r"n > 2f \+ 2 .*n=6 updates f can be at most 1"):
        aggregate("multikrum", torch.randn(6, 2), f=2)
    assert aggregate("multikrum", torch.randn(5, 2), f=1).info["m"] == 4  # 5 > 2 * 1 + 2


def test_krum_default_f():
    assert aggregate("krum", torch.randn(10, 3)).info["f"] == 3  # floor(0.3 * 10)
    assert aggregate("krum", torch.randn(5, 3)).info["f"] == 1  # capped: 2f + 2 < 5
    assert aggregate("krum", torch.randn(3, 3)).info["f"] == 0


def test_multikrum_hand_computed():
    updates = col(0.0, 1.0, 2.0, 10.0, 11.0)
    res = aggregate("multikrum", updates, f=1, m=3)
    assert res.info["selected"] == [1, 0, 2]  # scores 2, 5, 5 (tie -> lower index first)
    assert res.update.tolist() == [1.0]
    assert res.accepted.tolist() == [True, True, True, False, False]
    weighted = aggregate("multikrum", updates, torch.tensor([1.0, 1.0, 2.0, 1.0, 1.0]), f=1, m=3)
    assert weighted.update.tolist() == [1.25]  # (0 + 1 + 2 * 2) / 4


def test_multikrum_default_m_is_n_minus_f():
    res = aggregate("multikrum", torch.randn(10, 4), f=2)
    assert res.info["m"] == 8 and int(res.accepted.sum()) == 8


def _naive_krum_scores(points: list[list[float]], f: int) -> list[float]:
    n = len(points)
    scores = []
    for i in range(n):
        dists = sorted(
            sum((a - b) ** 2 for a, b in zip(points[i], points[j], strict=True))
            for j in range(n)
            if j != i
        )
        scores.append(sum(dists[: n - f - 2]))
    return scores


@pytest.mark.parametrize("deterministic", [True, False])
def test_krum_matches_a_naive_implementation(deterministic):
    g = torch.Generator().manual_seed(21)
    updates = torch.randn(12, 7, generator=g, dtype=torch.float64)
    expected = _naive_krum_scores(updates.tolist(), 3)
    res = aggregate("krum", updates, f=3, deterministic=deterministic)
    assert torch.allclose(res.scores, torch.tensor(expected, dtype=torch.float64), rtol=1e-12)
    best = min(range(12), key=lambda i: expected[i])
    assert res.info["selected"] == [best]
    assert torch.equal(res.update, updates[best])


@pytest.mark.parametrize("n_bad", [1, 2, 3])
def test_krum_picks_a_benign_update_with_far_outliers(n_bad):
    n_benign = 8  # n = 8 + f with f < (n - 2) / 2
    updates = outlier_batch(n_benign, n_bad)
    res = aggregate("krum", updates, f=n_bad)
    assert res.info["selected"][0] < n_benign


@pytest.mark.parametrize("rule", ["multikrum", "bulyan"])
def test_selection_rules_reject_far_outliers(rule):
    n_benign, n_bad = 9, 2
    updates = outlier_batch(n_benign, n_bad)
    res = aggregate(rule, updates, f=n_bad)
    assert not bool(res.accepted[n_benign:].any())
    benign = updates[:n_benign]
    assert bool((res.update >= benign.min(0).values).all())
    assert bool((res.update <= benign.max(0).values).all())


# --- bulyan ---------------------------------------------------------------------------


def test_bulyan_hand_computed():
    # n = 7, f = 1: theta = 5 selected by iterated Krum, beta = 3 closest to the median.
    updates = col(0.0, 1.0, 2.0, 3.0, 4.0, 100.0, -100.0)
    res = aggregate("bulyan", updates, f=1)
    # first Krum round, 4 neighbours each, e.g. update 2: 1 + 1 + 4 + 4
    assert res.scores.tolist() == [30.0, 15.0, 10.0, 15.0, 30.0, 38030.0, 41214.0]
    assert res.info["selected"] == [2, 1, 3, 0, 4]
    assert res.info["theta"] == 5 and res.info["beta"] == 3
    assert res.accepted.tolist() == [True] * 5 + [False] * 2
    assert res.update.tolist() == [2.0]  # mean of 2, 1, 3


def test_bulyan_coordinate_phase_averages_the_values_closest_to_the_median():
    # Near-identical first coordinates make the selection rows 0..4; their second
    # coordinates 3, 2, 4.5, 1.5, 9 have median 3, and the third-closest value is a tie
    # (|4.5 - 3| = |1.5 - 3|) that goes to the lower index, row 2.
    updates = torch.tensor(
        [[0.0, 3.0], [0.0, 2.0], [0.0, 4.5], [0.0, 1.5], [0.0, 9.0], [50.0, 0.0], [-50.0, 0.0]],
        dtype=torch.float64,
    )
    res = aggregate("bulyan", updates, f=1)
    assert sorted(res.info["selected"]) == [0, 1, 2, 3, 4]
    assert res.update.tolist() == [0.0, (3.0 + 2.0 + 4.5) / 3]


def _naive_bulyan(points: list[list[float]], f: int) -> list[float]:
    n, d = len(points), len(points[0])

    def dist(i: int, j: int) -> float:
        return sum((a - b) ** 2 for a, b in zip(points[i], points[j], strict=True))

    remaining, selected = list(range(n)), []
    while len(selected) < n - 2 * f:
        r = len(remaining)
        k = min(r - 1, max(1, r - f - 2))
        scores = {i: sum(sorted(dist(i, j) for j in remaining if j != i)[:k]) for i in remaining}
        pick = min(remaining, key=lambda i: (scores[i], i))
        selected.append(pick)
        remaining.remove(pick)
    beta = n - 4 * f
    out = []
    for c in range(d):
        values = sorted(points[i][c] for i in selected)
        m = len(values)
        med = values[m // 2] if m % 2 else (values[m // 2 - 1] + values[m // 2]) / 2
        out.append(sum(sorted(values, key=lambda v: abs(v - med))[:beta]) / beta)
    return out


@pytest.mark.parametrize("f", [0, 1, 2])
def test_bulyan_matches_a_naive_implementation(f):
    g = torch.Generator().manual_seed(31 + f)
    updates = torch.randn(11, 6, generator=g, dtype=torch.float64)
    expected = torch.tensor(_naive_bulyan(updates.tolist(), f), dtype=torch.float64)
    for det in (True, False):
        res = aggregate("bulyan", updates, f=f, deterministic=det)
        assert torch.allclose(res.update, expected, atol=1e-12, rtol=0)


def test_bulyan_default_f():
    assert aggregate("bulyan", torch.randn(11, 2)).info["f"] == 2  # (11 - 3) // 4
    assert aggregate("bulyan", torch.randn(3, 2)).info["f"] == 0


# --- geomed ---------------------------------------------------------------------------


def test_geomed_of_three_points_on_a_line_is_the_middle_one():
    res = aggregate("geomed", col(0.0, 1.0, 10.0), tol=1e-12, max_iter=1000)
    assert abs(res.update.item() - 1.0) < 1e-4
    assert res.info["iterations"] >= 1


def test_geomed_of_a_square_is_its_centre():
    corners = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]], dtype=torch.float64)
    res = aggregate("geomed", corners)
    assert torch.allclose(res.update, torch.tensor([1.0, 1.0], dtype=torch.float64), atol=1e-12)
    assert torch.allclose(res.scores, torch.full((4,), math.sqrt(2.0), dtype=torch.float64))
    assert res.info["converged"] is True


def test_geomed_weights_pull_toward_the_heavy_point():
    res = aggregate("geomed", col(0.0, 1.0), torch.tensor([3.0, 1.0]), tol=0.0, max_iter=200)
    assert abs(res.update.item()) < 1e-4  # weighted 1-D median: the point with 3/4 weight
    zero = aggregate("geomed", col(0.0, 1.0, 5.0), torch.tensor([1.0, 1.0, 0.0]))
    assert zero.accepted.tolist() == [True, True, False]


def test_geomed_is_close_to_the_benign_centre_with_outliers():
    n_benign, n_bad = 9, 4
    updates = outlier_batch(n_benign, n_bad)
    updates[n_benign:] = 100.0  # all outliers on one side: the mean moves ~30 away
    res = aggregate("geomed", updates)
    centre = updates[:n_benign].mean(0)
    assert float((res.update - centre).norm()) < 1.0
    assert float((updates.mean(0) - centre).norm()) > 50.0
    assert res.info["converged"] is True


def test_geomed_stops_at_max_iter():
    res = aggregate("geomed", col(0.0, 1.0, 10.0), tol=0.0, max_iter=3)
    assert res.info["iterations"] == 3 and res.info["converged"] is False
