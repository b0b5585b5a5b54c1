"""Sageflow (staleness, entropy, loss) and Siren (alarms, credits) aggregation."""

from __future__ import annotations

import pytest
import torch

from flchain.aggregation import AggregationError, aggregate
from flchain.aggregation.siren import client_alarm, fresh_credits


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


def test_sageflow_when_entropy_filters_everyone_it_falls_back_to_loss_weighting():
    # Both models are uncertain (entropy over the threshold): loss weights 1/1 and 1/3.
    res = sage(col(4.0, 8.0), [0, 0], [1.0, 3.0], [3.0, 4.0])
    assert res.update.item() == pytest.approx(4.0 * 0.75 + 8.0 * 0.25)
    assert res.accepted.tolist() == [True, True]
    assert res.info["entropy_fallback"] is True
    assert res.info["empty"] is False


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
    ],
)
def test_sageflow_bad_params(params, message):
    with pytest.raises(AggregationError, match=message):
        sage(col(1.0, 2.0), [0, 0], [1.0, 1.0], [0.1, 0.1], **params)


# --- siren: client side ---------------------------------------------------------------


def test_client_alarm():
    assert client_alarm(0.80, 0.84, 0.03) is True
    assert client_alarm(0.80, 0.82, 0.03) is False
    assert client_alarm(0.80, 0.83, 0.05) is False
    assert client_alarm(0.50, 0.90) is True  # default threshold: 3 points
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
    assert res.info["rollback"] is False
    assert torch.allclose(res.update, HONEST_AND_ATTACKER.mean(0))


def test_siren_single_alarm_checks_everyone_against_the_best():
    res = siren(HONEST_AND_ATTACKER, [False, False, True, False], [0.9, 0.88, 0.5, 0.85])
    # reference: update 0 (0.9); floor 0.9 - 0.1 * 0.9 = 0.81; update 2 fails both tests
    assert res.info["case"] == "single_alarm" and res.info["reference"] == 0
    assert res.info["rejected"] == [2]
    assert res.accepted.tolist() == [True, True, False, True]
    assert res.info["credits"].tolist() == [18.0, 18.0, 17.0, 18.0]
    assert res.info["rollback"] is True
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
    assert res.info["rollback"] is True


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
