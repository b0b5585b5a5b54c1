"""Sageflow (staleness, entropy, loss) and Siren (alarms, credits, rollback) aggregation."""

from __future__ import annotations

import pytest
import torch

from flchain.aggregation import AggregationError, aggregate
from flchain.aggregation.sageflow import ASYNC_GAMMA_EVERY, gamma_at
from flchain.aggregation.siren import (
    DEFAULT_MAX_CREDIT,
    Rollback,
    client_alarm,
    credit_limit,
    fresh_credits,
    validation_split,
)


def col(*values: float) -> torch.Tensor:
    return torch.tensor([[v] for v in values], dtype=torch.float64)


def sage(updates, staleness, loss, entropy, weights=None, **params):
    return aggregate(
        "sageflow",
        updates,
        weights,
        staleness=torch.tensor(staleness),
        public_loss=torch.tensor(loss, dtype=torch.float64),
        public_entropy=torch.tensor(entropy, dtype=torch.float64),
        **params,
    )


# --- sageflow -------------------------------------------------------------------------


def test_sageflow_hand_computed_filtering_and_loss_weighting():
    res = sage(col(3.0, 6.0, 100.0), [0, 0, 0], [1.0, 2.0, 0.5], [0.1, 0.2, 2.0])
    # update 2 is dropped (entropy 2 >= 1); weights 1/1 and 1/2 -> 2/3 and 1/3
    assert res.info["filtered"] == [2]
    assert res.accepted.tolist() == [True, True, False]
    assert torch.allclose(res.scores, torch.tensor([2 / 3, 1 / 3, 0.0], dtype=torch.float64))
    assert res.update.item() == pytest.approx(4.0, abs=1e-12)


def test_sageflow_hand_computed_staleness_groups():
    # lam = 1: the group one round behind counts (1 + 1) ** -1 = 1/2 as much
    res = sage(col(1.0, 4.0), [0, 1], [1.0, 1.0], [0.1, 0.1], lam=1.0)
    assert res.info["groups"] == {0: 2 / 3, 1: 1 / 3}
    assert res.update.item() == pytest.approx(2.0, abs=1e-12)
    mixed = sage(col(1.0, 4.0), [0, 1], [1.0, 1.0], [0.1, 0.1], lam=1.0, gamma=0.5)
    assert mixed.update.item() == pytest.approx(1.0, abs=1e-12)  # gamma * average


def test_sageflow_group_weight_counts_the_samples_of_its_survivors():
    # group 0 has 3 samples, group 1 has 1 sample and lam = 0: shares 3/4 and 1/4
    res = sage(col(0.0, 8.0), [0, 1], [1.0, 1.0], [0.1, 0.1], torch.tensor([3.0, 1.0]), lam=0.0)
    assert res.update.item() == pytest.approx(2.0, abs=1e-12)


def test_sageflow_drops_high_entropy_updates():
    updates = col(1.0, 1.1, 0.9, -50.0)
    res = sage(updates, [0] * 4, [1.0] * 4, [0.5, 0.6, 0.4, 1.7], entropy_threshold=1.0)
    assert res.accepted.tolist() == [True, True, True, False]
    assert 0.9 <= res.update.item() <= 1.1


def test_sageflow_down_weights_high_loss_updates():
    res = sage(col(0.0, 1.0, 2.0), [0] * 3, [0.5, 1.0, 4.0], [0.1] * 3)
    s = res.scores.tolist()
    assert s[0] > s[1] > s[2] > 0
    assert s[0] / s[2] == pytest.approx(8.0)  # delta = 1: weight proportional to 1 / loss


def test_sageflow_respects_staleness():
    fresh_first = sage(col(0.0, 1.0), [0, 2], [1.0, 1.0], [0.1, 0.1]).update.item()
    stale_first = sage(col(0.0, 1.0), [2, 0], [1.0, 1.0], [0.1, 0.1]).update.item()
    assert fresh_first < 0.5 < stale_first  # the fresh update dominates either way
    res = sage(col(0.0, 1.0, 2.0), [0, 1, 3], [1.0] * 3, [0.1] * 3, max_staleness=2)
    assert res.info["too_stale"] == [2]
    assert res.accepted.tolist() == [True, True, False]


def test_sageflow_when_entropy_filters_everyone_the_global_model_stays():
    # The reference has no average to use then (it crashes); the global model stays.
    res = sage(col(4.0, 8.0), [0, 0], [1.0, 3.0], [3.0, 4.0])
    assert res.update.tolist() == [0.0]
    assert res.accepted.tolist() == [False, False]
    assert res.info["empty"] is True
    assert res.info["entropy_fallback"] is False


def test_sageflow_entropy_fallback_is_an_explicit_option():
    # Both models are uncertain (entropy over the threshold): loss weights 1/1 and 1/3.
    res = sage(col(4.0, 8.0), [0, 0], [1.0, 3.0], [3.0, 4.0], entropy_fallback=True)
    assert res.update.item() == pytest.approx(4.0 * 0.75 + 8.0 * 0.25)
    assert res.accepted.tolist() == [True, True]
    assert res.info["entropy_fallback"] is True
    assert res.info["empty"] is False


def test_sageflow_averages_models_per_staleness_group():
    # Global w_t = 10. Fresh models 12 and 14 (from w_t); one model 7 trained from w_{t-1} = 6
    # (its own delta +1). Callers pass model - w_t for every update, stale ones included, so
    # w_t + update is the paper's sum_s p_s * (group s's average model), p_s ~ (s+1)^-lam * |s|.
    w_t = 10.0
    models = [12.0, 14.0, 7.0]
    res = sage(col(*(m - w_t for m in models)), [0, 0, 1], [1.0] * 3, [0.1] * 3, lam=0.5)
    p0, p1 = 2.0, 2.0**-0.5
    expected = (p0 * 13.0 + p1 * 7.0) / (p0 + p1)
    assert w_t + res.update.item() == pytest.approx(expected, abs=1e-12)
    # not the stale delta (+1) added to the current model
    assert w_t + res.update.item() < (p0 * 13.0 + p1 * (w_t + 1.0)) / (p0 + p1)


def test_sageflow_group_weights_follow_staleness_to_the_minus_lambda():
    res = sage(col(1.0, 2.0, 3.0, 4.0), [0, 0, 1, 2], [1.0] * 4, [0.1] * 4, lam=0.5)
    raw = {0: 2.0, 1: 2.0**-0.5, 2: 3.0**-0.5}
    total = sum(raw.values())
    assert res.info["groups"] == pytest.approx({s: w / total for s, w in raw.items()}, abs=1e-15)


def test_sageflow_gamma_schedule_halves_as_the_reference_does():
    # The reference's MNIST run: gamma = 0.5 ** (epoch // 15) over 150 rounds.
    assert ASYNC_GAMMA_EVERY == 15
    assert [gamma_at(1.0, 15, e) for e in (0, 14, 15, 29, 30, 149)] == [
        1.0,
        1.0,
        0.5,
        0.5,
        0.25,
        0.5**9,
    ]
    assert gamma_at(0.8, 0, 1000) == 0.8  # gamma_every 0: constant (the synchronous setup)
    base = sage(col(4.0), [0], [1.0], [0.1])
    late = sage(col(4.0), [0], [1.0], [0.1], gamma_every=2, round_index=5)
    assert base.info["gamma"] == 1.0 and late.info["gamma"] == 0.25
    assert late.update.item() == 1.0  # (1 - gamma) * w_t + gamma * model, as an update


def test_sageflow_group_without_usable_models_has_no_weight():
    # Group 1's only model has a public loss of 2000: its loss score 1/2000 <= 1e-3, so the
    # group is empty as in the reference's Eflow, and group 0 takes all the weight.
    res = sage(col(2.0, 4.0, 100.0), [0, 0, 1], [1.0, 1.0, 2000.0], [0.1] * 3)
    assert res.info["empty_groups"] == [1]
    assert res.info["groups"] == {0: 1.0}
    assert res.accepted.tolist() == [True, True, False]
    assert res.update.item() == pytest.approx(3.0, abs=1e-12)
    # a group whose every model the entropy filter drops likewise gets no weight
    res = sage(col(2.0, 100.0), [0, 2], [1.0, 1.0], [0.1, 1.5])
    assert res.info["groups"] == {0: 1.0} and res.update.item() == pytest.approx(2.0)


def test_sageflow_with_nothing_usable_gives_a_zero_update():
    res = sage(col(5.0, 6.0), [0, 3], [1.0, 1.0], [3.0, 4.0], [0.0, 1.0], max_staleness=2)
    assert res.update.tolist() == [0.0]
    assert res.accepted.tolist() == [False, False]
    assert res.info["empty"] is True


def test_sageflow_deterministic_exponents_must_be_dyadic():
    with pytest.raises(AggregationError, match="multiples of 1/16"):
        sage(col(1.0, 2.0), [0, 1], [1.0, 2.0], [0.1, 0.1], delta=0.3)
    fast = sage(col(1.0, 2.0), [0, 1], [1.0, 2.0], [0.1, 0.1], delta=0.3, deterministic=False)
    assert 1.0 < fast.update.item() < 2.0


def test_sageflow_zero_loss_does_not_divide_by_zero():
    res = sage(col(1.0, 2.0), [0, 0], [0.0, 1.0], [0.1, 0.1])
    assert res.update.item() == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"gamma": 0.0}, "gamma must be > 0.0"),
        ({"gamma": 1.5}, "gamma must be <= 1.0"),
        ({"entropy_threshold": 0.0}, "entropy_threshold must be > 0.0"),
        ({"delta": -1.0}, "delta must be >= 0.0"),
        ({"max_staleness": -1}, "max_staleness must be >= 0"),
        ({"gamma_every": -1}, "gamma_every must be >= 0"),
        ({"round_index": -1}, "round_index must be >= 0"),
        ({"entropy_fallback": "yes"}, "entropy_fallback must be true or false"),
    ],
)
def test_sageflow_bad_params(params, message):
    with pytest.raises(AggregationError, match=message):
        sage(col(1.0, 2.0), [0, 0], [1.0, 1.0], [0.1, 0.1], **params)


# --- siren: client side ---------------------------------------------------------------


def test_client_alarm_threshold_is_relative_to_the_local_accuracy():
    # the reference (agents.py, alarm): local > global + C_l * local, C_l = 0.04
    assert client_alarm(0.80, 0.84) is True  # 0.84 > 0.80 + 0.0336
    assert client_alarm(0.80, 0.83) is False  # 0.83 < 0.80 + 0.0332
    # relative, not absolute: the same 3-point gap alarms at 0.50 but not at 0.90 ...
    assert client_alarm(0.47, 0.50) is True  # 0.50 > 0.47 + 0.02
    assert client_alarm(0.87, 0.90) is False  # 0.90 < 0.87 + 0.036
    # ... and C_l scales with the local accuracy
    assert client_alarm(0.80, 0.84, 0.03) is True
    assert client_alarm(0.80, 0.84, 0.05) is False  # 0.84 < 0.80 + 0.042
    assert client_alarm(0.80, 0.80, 0.0) is False
    with pytest.raises(AggregationError, match=r"global_accuracy must be <= 1\.0"):
        client_alarm(80.0, 84.0)
    with pytest.raises(AggregationError, match=r"threshold must be >= 0\.0"):
        client_alarm(0.8, 0.9, -0.1)


# --- siren: server side ---------------------------------------------------------------

# Three honest updates pointing one way and one attacker pointing the other way.
HONEST_AND_ATTACKER = torch.tensor(
    [[1.0, 1.0], [1.0, 0.9], [-1.0, -1.0], [1.0, 1.1]], dtype=torch.float64
)


def siren(updates, alarms, accuracy, credits=None, weights=None, **params):
    side = {
        "alarms": torch.tensor(alarms, dtype=torch.bool),
        "public_accuracy": torch.tensor(accuracy, dtype=torch.float64),
    }
    if credits is not None:
        side["credits"] = torch.tensor(credits, dtype=torch.float64)
    return aggregate("siren", updates, weights, **side, **params)


def test_siren_without_alarms_aggregates_everyone_and_forgives():
    res = siren(HONEST_AND_ATTACKER, [False] * 4, [0.9, 0.9, 0.1, 0.9], [10.0, 18.0, 17.9, 1.0])
    assert res.info["case"] == "no_alarm"
    assert res.accepted.tolist() == [True] * 4
    assert res.info["credits"].tolist() == [10.5, 18.0, 18.0, 1.5]  # capped at max_credit
    assert res.info["dropped_any"] is False and res.info["dropped_eligible"] is False
    assert torch.allclose(res.update, HONEST_AND_ATTACKER.mean(0))


def test_siren_single_alarm_checks_everyone_against_the_best():
    res = siren(HONEST_AND_ATTACKER, [False, False, True, False], [0.9, 0.88, 0.5, 0.85])
    # reference: update 0 (0.9); floor 0.9 - 0.1 * 0.9 = 0.81; update 2 fails both tests
    assert res.info["case"] == "single_alarm" and res.info["reference"] == 0
    assert res.info["rejected"] == [2]
    assert res.accepted.tolist() == [True, True, False, True]
    assert res.info["credits"].tolist() == [18.0, 18.0, 17.0, 18.0]
    assert res.info["dropped_any"] is True and res.info["dropped_eligible"] is True
    assert torch.allclose(res.update, torch.tensor([1.0, 1.0], dtype=torch.float64))
    assert res.scores.tolist() == [0.9, 0.88, 0.5, 0.85]


def test_siren_cosine_test_rejects_an_accurate_update_pointing_away():
    updates = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
    res = siren(updates, [True, False, False], [0.9, 0.9, 0.9])
    # update 1 is orthogonal to the reference (cosine 0 <= 0), update 2 opposite
    assert res.info["rejected"] == [1, 2]


def test_siren_believes_consistent_alarms_when_the_quiet_updates_are_worse():
    res = siren(HONEST_AND_ATTACKER, [True, True, False, False], [0.9, 0.88, 0.3, 0.4])
    assert res.info["case"] == "alarmers_trusted"
    assert res.accepted.tolist() == [True, True, False, False]
    assert res.info["credits"].tolist() == [18.0, 18.0, 17.0, 17.0]


def test_siren_rejects_inconsistent_alarmers_and_all_quiet_updates():
    res = siren(HONEST_AND_ATTACKER, [True, True, True, False], [0.9, 0.88, 0.3, 0.9])
    assert res.info["case"] == "alarmers_split"
    assert res.info["rejected"] == [2, 3]
    assert res.accepted.tolist() == [True, True, False, False]


def test_siren_rejects_false_alarms_when_the_quiet_updates_are_as_good():
    updates = torch.tensor([[1.0, 1.0], [1.0, 0.9], [-1.0, -1.0], [-1.0, -0.9]])
    res = siren(updates, [False, False, True, True], [0.9, 0.88, 0.5, 0.48])
    assert res.info["case"] == "alarmers_rejected" and res.info["reference"] == 0
    assert res.accepted.tolist() == [True, True, False, False]
    assert res.info["dropped_eligible"] is True


def test_siren_blacklists_after_credits_run_out_and_ignores_their_alarms():
    first = siren(
        HONEST_AND_ATTACKER,
        [False, False, True, False],
        [0.9, 0.88, 0.5, 0.85],
        credits=[18.0, 18.0, 1.0, 18.0],
    )
    assert first.info["credits"].tolist()[2] == 0.0
    assert first.info["blacklisted"].tolist() == [False, False, True, False]
    second = siren(
        HONEST_AND_ATTACKER,
        [False, False, True, False],
        [0.9, 0.88, 0.95, 0.85],
        credits=first.info["credits"].tolist(),
    )
    assert second.info["alarms_counted"] == 0 and second.info["case"] == "no_alarm"
    assert second.accepted.tolist() == [True, True, False, True]
    assert second.info["credits"].tolist()[2] == 0.0
    # a blacklisted client is dropped, but that alone is no fresh detection
    assert second.info["dropped_any"] is True and second.info["dropped_eligible"] is False


def test_siren_credits_default_to_fresh_and_may_not_exceed_the_maximum():
    assert fresh_credits(3).tolist() == [18.0, 18.0, 18.0]
    res = siren(HONEST_AND_ATTACKER, [False] * 4, [0.9] * 4, max_credit=5.0)
    assert res.info["credits"].tolist() == [5.0] * 4
    with pytest.raises(AggregationError, match="credits must be <= max_credit"):
        siren(HONEST_AND_ATTACKER, [False] * 4, [0.9] * 4, credits=[19.0] * 4)


def test_siren_weights_the_accepted_updates():
    updates = col(1.0, 5.0, -100.0)
    res = siren(updates, [True, False, False], [0.9, 0.9, 0.1], weights=torch.tensor([1, 3, 1]))
    assert res.accepted.tolist() == [True, True, False]
    assert res.update.item() == 4.0  # (1 * 1 + 3 * 5) / 4


def test_siren_everything_rejected_gives_a_zero_update():
    res = siren(col(1.0, 2.0), [False, False], [0.9, 0.9], credits=[0.0, -1.0])
    assert res.update.tolist() == [0.0]
    assert res.accepted.tolist() == [False, False]


def test_siren_credit_limit_scales_with_the_rounds():
    # the reference blacklists after int(server_prohibit * T) points, server_prohibit = 0.45
    assert credit_limit(40) == DEFAULT_MAX_CREDIT == 18.0
    assert credit_limit(100) == 45.0
    assert credit_limit(20) == 9.0
    assert credit_limit(10) == 4.0
    assert credit_limit(1) == 1.0  # never 0: that would blacklist everyone at once
    with pytest.raises(AggregationError, match="positive integer"):
        credit_limit(0)
    res = siren(HONEST_AND_ATTACKER, [False] * 4, [0.9] * 4, rounds=10)
    assert res.info["max_credit"] == 4.0 and res.info["credits"].tolist() == [4.0] * 4
    # 10 rounds: four rejections blacklist (credits 4 -> 0); with 40 rounds they do not
    credits = None
    for _ in range(4):
        res = siren(
            HONEST_AND_ATTACKER,
            [False, False, True, False],
            [0.9, 0.88, 0.5, 0.85],
            credits=credits,
            rounds=10,
        )
        credits = res.info["credits"].tolist()
    assert res.info["blacklisted"].tolist() == [False, False, True, False]
    long = siren(
        HONEST_AND_ATTACKER,
        [False, False, True, False],
        [0.9, 0.88, 0.5, 0.85],
        credits=[18.0, 18.0, 15.0, 18.0],
        rounds=40,
    )
    assert long.info["blacklisted"].tolist() == [False] * 4


def test_siren_rollback_follows_the_reference_state_machine():
    # main.py, train_fn: detection -> global model of t-1; the round right after a rollback
    # does not roll back again; a detection after a round that only dropped blacklisted
    # clients goes back to t-2.
    rb = Rollback()
    assert rb.step(0, False, False) == 0
    assert rb.step(1, True, True) == 1  # first detection: t-1
    assert rb.step(2, True, True) == 0  # right after a rollback
    assert rb.step(3, True, True) == 1
    assert rb.step(4, False, False) == 0
    rb = Rollback()
    assert rb.step(3, True, False) == 0  # only a blacklisted client dropped
    assert rb.step(4, True, True) == 2  # detection now: t-2
    assert rb.step(5, False, False) == 0
    rb = Rollback()
    assert rb.step(0, True, True) == 0  # nothing older than the initial model


def test_siren_validation_split_is_disjoint_and_complete():
    val, train = validation_split(95, seed=3)
    assert len(val) == 9 and len(train) == 86
    assert set(val.tolist()).isdisjoint(train.tolist())
    assert sorted(val.tolist() + train.tolist()) == list(range(95))
    again, _ = validation_split(95, seed=3)
    assert torch.equal(val, again)  # deterministic per seed
    assert len(validation_split(5, seed=0)[0]) == 1  # a small shard still holds one out
    assert len(validation_split(1, seed=0)[0]) == 0


def test_siren_defaults_have_one_source():
    import inspect

    from flchain import siren_defaults as d
    from flchain.aggregation import siren as rule
    from flchain.config import SimulationConfig
    from flchain.node.daemon import NodeSettings
    from flchain.node.engine import RoundEngine
    from flchain.node.learner import Learner

    assert d.CLIENT_THRESHOLD == 0.04 and d.SERVER_THRESHOLD == 0.1
    assert d.PROHIBIT_FRACTION == 0.45 and d.FORGIVE == 0.5 and d.VALIDATION_FRACTION == 0.1
    for name in ("CLIENT_THRESHOLD", "SERVER_THRESHOLD", "FORGIVE", "PENALTY", "DEFAULT_ROUNDS"):
        assert getattr(rule, name) is getattr(d, name)
    assert inspect.signature(client_alarm).parameters["threshold"].default == d.CLIENT_THRESHOLD
    run = inspect.signature(rule.run).parameters
    assert run["server_threshold"].default == d.SERVER_THRESHOLD
    assert run["forgive"].default == d.FORGIVE and run["penalty"].default == d.PENALTY
    assert run["rounds"].default == d.DEFAULT_ROUNDS
    assert SimulationConfig().alarm_threshold == d.CLIENT_THRESHOLD
    alarm = inspect.signature(Learner.siren_alarm).parameters["threshold"]
    assert alarm.default == d.CLIENT_THRESHOLD
    engine = inspect.signature(RoundEngine.__init__).parameters["alarm_threshold"]
    assert engine.default == d.CLIENT_THRESHOLD
    # the daemon's settings are what `node run` and every devnet node start with
    assert NodeSettings.__dataclass_fields__["alarm_threshold"].default == d.CLIENT_THRESHOLD
