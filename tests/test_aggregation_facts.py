"""Rule facts in one place: what each rule needs, its valid f for n, how it degrades."""

from __future__ import annotations

import pytest

from flchain.aggregation import (
    F_RULES,
    NETWORK_RULES,
    PUBLIC_DATA_RULES,
    RULES,
    SECURE_RULES,
    WEIGHTED_RULES,
    AggregationError,
    check_params,
    fit_params,
    max_f,
    rule_spec,
)


def test_the_registry_states_what_each_rule_needs():
    assert SECURE_RULES == ("fedavg", "siren")
    assert set(WEIGHTED_RULES) == {"fedavg", "geomed"}
    assert set(F_RULES) == {"trimmed_mean", "krum", "multikrum", "bulyan"}
    assert set(PUBLIC_DATA_RULES) == {"sageflow", "siren"}
    assert set(NETWORK_RULES) == set(RULES)  # sageflow/siren score on the task's public set
    assert all(rule_spec(r).f_bound for r in RULES if rule_spec(r).max_f is not None)


@pytest.mark.parametrize(
    ("rule", "table"),
    [
        # n:              2   3  4  5  6  7  10  11
        ("krum", [-1, 0, 0, 1, 1, 2, 3, 4]),  # n > 2f + 2
        ("multikrum", [-1, 0, 0, 1, 1, 2, 3, 4]),
        ("bulyan", [-1, 0, 0, 0, 0, 1, 1, 2]),  # n >= 4f + 3
        ("trimmed_mean", [0, 1, 1, 2, 2, 3, 4, 5]),  # 2f < n
        ("median", [0, 1, 1, 2, 2, 3, 4, 5]),
        ("fedavg", [0] * 8),
    ],
)
def test_valid_f_for_n(rule, table):
    ns = [2, 3, 4, 5, 6, 7, 10, 11]
    assert [max_f(rule, n) for n in ns] == table
    for n, most in zip(ns, table, strict=True):
        if rule in F_RULES and most >= 0:
            check_params(rule, {"f": most}, n)
            with pytest.raises(AggregationError, match="at most"):
                check_params(rule, {"f": most + 1}, n)
    assert max_f("siren", 10) is None


def test_check_params_names_the_valid_parameters_and_checks_values_without_n():
    with pytest.raises(AggregationError, match=r"does not take parameter.*f; it accepts: no par"):
        check_params("median", {"f": 1})
    with pytest.raises(AggregationError, match="it accepts: f, m"):
        check_params("multikrum", {"k": 1})
    with pytest.raises(AggregationError, match="multikrum f must be >= 0"):
        check_params("multikrum", {"f": -1})
    with pytest.raises(AggregationError, match="beta must be < 1/2"):
        check_params("trimmed_mean", {"beta": "1/2"})
    check_params("trimmed_mean", {"beta": "2/7"}, 7)
    with pytest.raises(AggregationError, match=r"cannot run on 2 update\(s\): it needs n > 2f"):
        check_params("krum", {}, 2)


def test_fit_params_degrades_as_every_node_would():
    assert fit_params("multikrum", {"f": 3, "m": 7}, 10) == ("multikrum", {"f": 3, "m": 7})
    assert fit_params("multikrum", {"f": 3, "m": 7}, 6) == ("multikrum", {"f": 1, "m": 5})
    assert fit_params("krum", {"f": 1}, 2) == ("median", {})
    assert fit_params("bulyan", {"f": 2}, 8) == ("bulyan", {"f": 1})
    assert fit_params("trimmed_mean", {"f": 3}, 4) == ("trimmed_mean", {"f": 1})
    # a beta that trims nothing at this n trims one per side instead
    assert fit_params("trimmed_mean", {"beta": 0.1}, 4) == ("trimmed_mean", {"f": 1})
    assert fit_params("trimmed_mean", {"beta": 0.25}, 4) == ("trimmed_mean", {"beta": 0.25})
    assert fit_params("fedavg", {}, 1) == ("fedavg", {})
    for rule in F_RULES:
        for n in range(1, 12):
            fitted, params = fit_params(rule, {"f": 5}, n)
            if rule_spec(fitted).takes_f and max_f(fitted, n) >= 0:
                check_params(fitted, params, n)  # what fit returns always runs
