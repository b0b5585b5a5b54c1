"""flchain.aggregation: registry, input validation and properties shared by every rule."""

from __future__ import annotations

import pytest
import torch

from flchain.aggregation import (
    RULES,
    AggregateResult,
    AggregationError,
    aggregate,
    optional_inputs,
    required_inputs,
)

N, D = 11, 6


def side_inputs(rule: str, n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Plausible side inputs with distinct values (no ties), as the simulation computes them."""
    g = torch.Generator().manual_seed(seed)
    values = {
        "staleness": torch.randint(0, 3, (n,), generator=g),
        "public_loss": 0.5 + torch.rand(n, generator=g, dtype=torch.float64),
        "public_entropy": 0.3 + torch.rand(n, generator=g, dtype=torch.float64),
        "public_accuracy": 0.6 + 0.3 * torch.rand(n, generator=g, dtype=torch.float64),
        "alarms": torch.arange(n) % 4 == 1,
    }
    return {name: values[name] for name in required_inputs(rule)}


def random_batch(n: int = N, d: int = D, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    updates = torch.randn(n, d, generator=g)
    weights = 1.0 + torch.randint(0, 5, (n,), generator=g).to(torch.float64)
    return updates, weights


# --- registry -------------------------------------------------------------------------


def test_rules_are_the_documented_names_in_order():
    assert RULES == (
        "fedavg",
        "median",
        "trimmed_mean",
        "krum",
        "multikrum",
        "bulyan",
        "geomed",
        "sageflow",
        "siren",
    )


def test_required_inputs_per_rule():
    assert required_inputs("sageflow") == ("staleness", "public_loss", "public_entropy")
    assert required_inputs("siren") == ("alarms", "public_accuracy")
    assert optional_inputs("siren") == ("credits",)
    for rule in ("fedavg", "median", "trimmed_mean", "krum", "multikrum", "bulyan", "geomed"):
        assert required_inputs(rule) == ()
        assert optional_inputs(rule) == ()


def test_unknown_rule_lists_the_known_rules():
    with pytest.raises(AggregationError, match="unknown aggregation rule 'mean'") as err:
        aggregate("mean", torch.ones(3, 2))
    assert all(rule in str(err.value) for rule in RULES)
    with pytest.raises(AggregationError, match="known rules"):
        required_inputs("krumm")


def test_aggregation_error_is_a_value_error():
    assert issubclass(AggregationError, ValueError)


@pytest.mark.parametrize("rule", RULES)
def test_result_shapes_and_dtypes(rule):
    updates, weights = random_batch()
    res = aggregate(rule, updates, weights, **side_inputs(rule, N))
    assert isinstance(res, AggregateResult)
    assert res.update.shape == (D,) and res.update.dtype == torch.float32
    assert res.accepted.shape == (N,) and res.accepted.dtype == torch.bool
    assert res.scores.shape == (N,) and res.scores.dtype == torch.float64
    assert isinstance(res.info, dict)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("deterministic", [True, False])
def test_update_keeps_the_input_dtype(dtype, deterministic):
    updates = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 7.0]], dtype=dtype)
    res = aggregate("median", updates, deterministic=deterministic)
    assert res.update.dtype == dtype
    assert res.update.tolist() == [3.0, 4.0]


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_input_tensors_are_not_modified(rule, dtype):
    # float64 CPU input is used without a copy in deterministic mode: rules must not write to it
    updates, weights = random_batch(seed=3)
    updates = updates.to(dtype)
    before_u, before_w = updates.clone(), weights.clone()
    for det in (True, False):
        aggregate(rule, updates, weights, deterministic=det, **side_inputs(rule, N))
    assert torch.equal(updates, before_u) and torch.equal(weights, before_w)


# --- validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("updates", "message"),
    [
        (torch.ones(4), "2-D"),
        (torch.ones(2, 3, 4), "2-D"),
        (torch.ones(0, 3), "empty"),
        (torch.ones(3, 0), "empty"),
        (torch.ones(3, 2, dtype=torch.int64), "floating dtype"),
        ([[1.0, 2.0]], "torch.Tensor"),
    ],
)
def test_bad_updates_are_rejected(updates, message):
    with pytest.raises(AggregationError, match=message):
        aggregate("fedavg", updates)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_updates_name_the_indices(rule, bad):
    updates, _ = random_batch()
    updates[1, 2] = bad
    updates[7, 0] = bad
    with pytest.raises(AggregationError, match=r"NaN or Inf in update indices \[1, 7\]"):
        aggregate(rule, updates, **side_inputs(rule, N))


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        (torch.ones(3), r"shape \(4,\)"),
        (torch.ones(4, 1), r"shape \(4,\)"),
        (torch.tensor([1.0, -1.0, 1.0, 1.0]), r"negative at indices \[1\]"),
        (torch.zeros(4), "all zero"),
        (torch.tensor([1.0, float("nan"), 1.0, 1.0]), r"NaN or Inf at indices \[1\]"),
        (torch.tensor([1.0, float("inf"), 1.0, 1.0]), r"NaN or Inf at indices \[1\]"),
        (torch.tensor([True, True, True, True]), "real numbers"),
    ],
)
def test_bad_weights_are_rejected(weights, message):
    with pytest.raises(AggregationError, match=message):
        aggregate("fedavg", torch.ones(4, 2), weights)


def test_weights_may_be_integer_sample_counts_or_a_list():
    updates = torch.tensor([[0.0], [4.0]])
    assert aggregate("fedavg", updates, torch.tensor([3, 1])).update.item() == 1.0
    assert aggregate("fedavg", updates, [1, 3]).update.item() == 3.0


def test_missing_side_input_is_named():
    with pytest.raises(AggregationError, match=r"needs side input.*public_loss, public_entropy"):
        aggregate("sageflow", torch.ones(3, 2), staleness=torch.zeros(3, dtype=torch.long))


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("staleness", torch.zeros(4, dtype=torch.long), r"shape \(3,\)"),
        ("staleness", torch.tensor([0, -1, 0]), r"whole numbers >= 0.*\[1\]"),
        ("staleness", torch.tensor([0.0, 0.5, 0.0]), r"whole numbers >= 0.*\[1\]"),
        ("public_loss", torch.tensor([1.0, float("nan"), 1.0]), r"NaN or Inf at indices \[1\]"),
        ("public_loss", torch.tensor([1.0, 1.0, -0.1]), r"negative at indices \[2\]"),
        ("public_entropy", torch.tensor([-1.0, 0.1, 0.1]), r"negative at indices \[0\]"),
    ],
)
def test_bad_sageflow_side_inputs(name, value, message):
    good = {
        "staleness": torch.zeros(3, dtype=torch.long),
        "public_loss": torch.ones(3),
        "public_entropy": torch.full((3,), 0.1),
    }
    good[name] = value
    with pytest.raises(AggregationError, match=message):
        aggregate("sageflow", torch.ones(3, 2), **good)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("alarms", torch.tensor([0, 2, 1]), r"booleans.*\[1\]"),
        ("alarms", torch.zeros(2, dtype=torch.bool), r"shape \(3,\)"),
        ("public_accuracy", torch.tensor([0.5, 1.5, 0.5]), r"\[0, 1\].*\[1\]"),
        ("credits", torch.tensor([1.0, float("inf"), 1.0]), r"NaN or Inf at indices \[1\]"),
        ("credits", torch.ones(4), r"shape \(3,\)"),
    ],
)
def test_bad_siren_side_inputs(name, value, message):
    good = {"alarms": torch.zeros(3, dtype=torch.bool), "public_accuracy": torch.full((3,), 0.5)}
    good[name] = value
    with pytest.raises(AggregationError, match=message):
        aggregate("siren", torch.ones(3, 2), **good)


def test_unknown_parameters_are_rejected_not_ignored():
    with pytest.raises(AggregationError, match=r"'fedavg' does not take parameter.*beta"):
        aggregate("fedavg", torch.ones(3, 2), beta=0.1)
    with pytest.raises(AggregationError, match=r"'krum' does not take parameter.*staleness"):
        aggregate("krum", torch.ones(5, 2), staleness=torch.zeros(5))
    with pytest.raises(AggregationError, match="it accepts: beta"):
        aggregate("trimmed_mean", torch.ones(3, 2), betta=0.2)


@pytest.mark.parametrize(
    ("rule", "n", "params", "message"),
    [
        ("krum", 5, {"f": 3}, r"n > 2f \+ 2.*n=5 updates f can be at most 1; got f=3"),
        ("krum", 4, {"f": 1}, r"n > 2f \+ 2.*n=4 updates f can be at most 0; got f=1"),
        ("multikrum", 6, {"f": 2}, r"n > 2f \+ 2.*at most 1; got f=2"),
        ("krum", 2, {}, r"krum needs at least 3 updates.*n=2"),
        ("krum", 5, {"f": -1}, "krum f must be >= 0"),
        ("krum", 5, {"f": 1.0}, "krum f must be an int"),
        ("krum", 5, {"f": True}, "krum f must be an int"),
        ("multikrum", 5, {"f": 1, "m": 0}, "multikrum m must be >= 1"),
        ("multikrum", 5, {"f": 1, "m": 6}, "multikrum m must be <= 5"),
        ("bulyan", 6, {"f": 1}, r"n >= 4f \+ 3; got n=6, f=1: f can be at most 0"),
        ("bulyan", 2, {}, r"n >= 4f \+ 3; got n=2, f=0"),
        ("trimmed_mean", 5, {"beta": 0.5}, "beta must be < 1/2, got 0.5"),
        ("trimmed_mean", 5, {"beta": -0.1}, "beta must be >= 0, got -0.1"),
        ("trimmed_mean", 5, {"beta": float("nan")}, "beta must be finite"),
        ("trimmed_mean", 5, {"beta": "a tenth"}, "beta must be a fraction such as"),
        ("trimmed_mean", 5, {"beta": 0.1}, r"trims floor\(1/10 \* 5\) = 0 .*nothing.*1/5"),
        ("trimmed_mean", 5, {"f": 3}, r"2f < n.*f can be at most 2; got f=3"),
        ("trimmed_mean", 5, {"f": 1, "beta": 0.2}, "beta .* or f .*not both"),
        ("geomed", 5, {"nu": 0.0}, "nu must be > 0.0"),
        ("geomed", 5, {"max_iter": 0}, "max_iter must be >= 1"),
        ("geomed", 5, {"tol": -1e-3}, "tol must be >= 0.0"),
    ],
)
def test_impossible_parameters(rule, n, params, message):
    with pytest.raises(AggregationError, match=message):
        aggregate(rule, torch.randn(n, 3), **params)


# --- properties over all rules --------------------------------------------------------


@pytest.mark.parametrize("rule", RULES)
def test_deterministic_mode_is_bit_identical_between_calls(rule):
    updates, weights = random_batch(seed=5)
    side = side_inputs(rule, N, seed=5)
    first = aggregate(rule, updates, weights, **side)
    second = aggregate(rule, updates.clone(), weights.clone(), **side)
    assert torch.equal(first.update, second.update)
    assert torch.equal(first.accepted, second.accepted)
    assert torch.equal(first.scores, second.scores)


@pytest.mark.parametrize("rule", RULES)
def test_deterministic_and_fast_modes_agree(rule):
    updates, weights = random_batch(n=13, d=40, seed=7)
    side = side_inputs(rule, 13, seed=7)
    det = aggregate(rule, updates, weights, deterministic=True, **side)
    fast = aggregate(rule, updates, weights, deterministic=False, **side)
    assert torch.allclose(det.update, fast.update, atol=1e-5, rtol=0)
    assert torch.equal(det.accepted, fast.accepted)
    assert torch.allclose(det.scores, fast.scores, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("deterministic", [True, False])
def test_permutation_invariance(rule, deterministic):
    updates, weights = random_batch(seed=11)
    side = side_inputs(rule, N, seed=11)
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(1))
    base = aggregate(rule, updates, weights, deterministic=deterministic, **side)
    permuted = aggregate(
        rule,
        updates[perm],
        weights[perm],
        deterministic=deterministic,
        **{name: value[perm] for name, value in side.items()},
    )
    assert torch.allclose(base.update, permuted.update, atol=1e-6, rtol=0)
    assert torch.equal(base.accepted[perm], permuted.accepted)
    tol = 1e-9 if deterministic else 1e-5  # the fast path may compute in float32
    assert torch.allclose(base.scores[perm], permuted.scores, atol=tol, rtol=tol)


@pytest.mark.parametrize("rule", ["median", "trimmed_mean", "krum", "bulyan"])
def test_order_free_rules_are_bit_identical_under_permutation(rule):
    updates, weights = random_batch(n=15, d=30, seed=13)
    perm = torch.randperm(15, generator=torch.Generator().manual_seed(2))
    base = aggregate(rule, updates, weights)
    permuted = aggregate(rule, updates[perm], weights[perm])
    assert torch.equal(base.update, permuted.update)
    assert torch.equal(base.scores[perm], permuted.scores)


_THREAD_RULES = ("fedavg", "trimmed_mean", "multikrum", "geomed")


def test_deterministic_mode_ignores_the_thread_count():
    g = torch.Generator().manual_seed(17)
    updates = torch.randn(9, 200_001, generator=g)
    threads = torch.get_num_threads()
    results = {}
    try:
        for count in (1, max(2, threads)):
            torch.set_num_threads(count)
            results[count] = [aggregate(rule, updates).update for rule in _THREAD_RULES]
    finally:
        torch.set_num_threads(threads)
    one, many = results.values()
    assert all(torch.equal(a, b) for a, b in zip(one, many, strict=True))


@pytest.mark.parametrize("rule", ["fedavg", "multikrum", "bulyan", "trimmed_mean"])
def test_in_canonical_order_the_aggregate_is_a_function_of_the_set_of_updates(rule: str) -> None:
    # Nodes number members by join order and the simulation numbers peers its own way; in
    # content order both aggregate the same sequence, so the same set gives the same bits.
    from flchain.aggregation import canonical_order

    g = torch.Generator().manual_seed(5)
    updates = torch.randn(11, 300, generator=g) * (1 + torch.rand(11, 1, generator=g))
    weights = torch.rand(11, generator=g, dtype=torch.float64) + 0.5
    params = {"f": 2} if rule in ("multikrum", "bulyan") else {}

    def run(perm: torch.Tensor) -> torch.Tensor:
        u, w = updates[perm], weights[perm]
        order = canonical_order(list(u))
        return aggregate(rule, u[order], w[order], deterministic=True, **params).update

    first = run(torch.arange(11))
    shuffled = run(torch.randperm(11, generator=g))
    assert torch.equal(first, shuffled)
    if rule in ("fedavg", "trimmed_mean"):  # means: only the rounding depends on the order
        plain = aggregate(rule, updates, weights, deterministic=True, **params).update
        assert torch.allclose(first, plain, atol=1e-12)
