"""Update attacks and the attack catalogue: hand-computed vectors and the errors users hit."""

from __future__ import annotations

import math
from statistics import NormalDist

import pytest
import torch

from flchain.attacks import (
    ATTACKS,
    DATA_ATTACKS,
    DESCRIPTIONS,
    PROTOCOL_ATTACKS,
    SECURE_ATTACKS,
    UPDATE_ATTACKS,
    AttackContext,
    AttackError,
    alie_z,
    apply,
    is_data_attack,
    is_protocol_attack,
    is_secure_attack,
    is_update_attack,
    kind_of,
)
from flchain.attacks.registry import UPDATE_FUNCTIONS

HONEST = torch.tensor([[1.0, 2.0], [3.0, 2.0], [5.0, 8.0]])


def _ctx(**kwargs: object) -> AttackContext:
    return AttackContext(**kwargs)  # type: ignore[arg-type]


# --- signflip / scale / zero ------------------------------------------------------------


def test_signflip_default_factor_is_minus_four() -> None:
    update = torch.tensor([1.0, -2.0, 0.5])
    assert torch.equal(apply("signflip", update, _ctx()), torch.tensor([-4.0, 8.0, -2.0]))


def test_signflip_factor_param() -> None:
    update = torch.tensor([1.0, -2.0, 0.5])
    out = apply("signflip", update, _ctx(params={"factor": 2}))
    assert torch.equal(out, torch.tensor([-2.0, 4.0, -1.0]))


def test_three_of_ten_signflip_peers_reverse_the_fedavg_mean() -> None:
    update = torch.tensor([0.3, -1.2, 2.0])
    sent = [update] * 7 + [apply("signflip", update, _ctx())] * 3
    mean = torch.stack(sent).mean(dim=0)
    # (7 - 3 * 4) / 10 = -0.5: the average points against the honest direction.
    assert torch.allclose(mean, -0.5 * update)


@pytest.mark.parametrize("factor", [0.0, -1.0])
def test_signflip_rejects_non_positive_factor(factor: float) -> None:
    with pytest.raises(AttackError, match="factor"):
        apply("signflip", torch.ones(3), _ctx(params={"factor": factor}))


def test_scale_default_and_param() -> None:
    update = torch.tensor([1.0, -2.0])
    assert torch.equal(apply("scale", update, _ctx()), torch.tensor([50.0, -100.0]))
    assert torch.equal(
        apply("scale", update, _ctx(params={"factor": 3.0})), torch.tensor([3.0, -6.0])
    )
    with pytest.raises(AttackError, match="non-zero"):
        apply("scale", update, _ctx(params={"factor": 0}))


def test_zero_returns_zeros_of_same_dtype() -> None:
    update = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    out = apply("zero", update, _ctx())
    assert out.dtype == torch.float64
    assert torch.equal(out, torch.zeros(3, dtype=torch.float64))


def test_apply_leaves_the_honest_update_untouched() -> None:
    update = torch.tensor([1.0, -2.0])
    for name in ("signflip", "scale", "zero", "gaussian"):
        apply(name, update, _ctx(generator=torch.Generator().manual_seed(0)))
    assert torch.equal(update, torch.tensor([1.0, -2.0]))


# --- gaussian ---------------------------------------------------------------------------


def test_gaussian_statistics() -> None:
    gen = torch.Generator().manual_seed(1234)
    out = apply("gaussian", torch.zeros(40_000), _ctx(generator=gen, params={"sigma": 2.0}))
    # Standard errors: mean 2/sqrt(4e4) = 0.01, std about 2/sqrt(8e4) = 0.007.
    assert abs(out.mean().item()) < 0.06
    assert abs(out.std().item() - 2.0) < 0.04


def test_gaussian_is_reproducible_and_ignores_the_update() -> None:
    def seeded(seed: int) -> AttackContext:
        return _ctx(generator=torch.Generator().manual_seed(seed))

    first = apply("gaussian", torch.ones(50), seeded(7))
    again = apply("gaussian", torch.full((50,), 9.0), seeded(7))
    other = apply("gaussian", torch.ones(50), seeded(8))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_gaussian_sigma_zero_and_negative() -> None:
    gen = torch.Generator().manual_seed(0)
    out = apply("gaussian", torch.ones(4), _ctx(generator=gen, params={"sigma": 0}))
    assert torch.equal(out, torch.zeros(4))
    with pytest.raises(AttackError, match="sigma"):
        apply("gaussian", torch.ones(4), _ctx(params={"sigma": -1.0}))


# --- ALIE -------------------------------------------------------------------------------


def test_alie_z_matches_the_paper_formula_by_hand() -> None:
    # n = 10, f = 3: s = floor(10/2 + 1) - 3 = 3, so Phi(z) = (10 - 3) / 10 = 0.7.
    assert alie_z(10, 3) == pytest.approx(NormalDist().inv_cdf(0.7))
    assert alie_z(10, 3) == pytest.approx(0.5244005, abs=1e-6)
    # n = 10, f = 5: s = 1, Phi(z) = 0.9.
    assert alie_z(10, 5) == pytest.approx(NormalDist().inv_cdf(0.9))
    # n = 7, f = 2: s = floor(4.5) - 2 = 2, Phi(z) = 5/7.
    assert alie_z(7, 2) == pytest.approx(NormalDist().inv_cdf(5 / 7))


@pytest.mark.parametrize(("n", "f"), [(10, 6), (1, 0), (0, 0), (3, 4)])
def test_alie_z_undefined_cases_raise(n: int, f: int) -> None:
    with pytest.raises(AttackError):
        alie_z(n, f)


def test_alie_is_mean_minus_z_std_per_coordinate() -> None:
    # Column 0: 1, 3, 5 -> mean 3, population std sqrt(8/3); column 1: 2, 2, 8 -> 4, sqrt(8).
    z = alie_z(10, 3)
    ctx = _ctx(honest_updates=HONEST, num_clients=10, num_byzantine=3)
    out = apply("alie", torch.zeros(2), ctx)
    expected = torch.tensor([3.0 - z * math.sqrt(8 / 3), 4.0 - z * math.sqrt(8.0)])
    assert torch.allclose(out, expected)


def test_alie_z_param_overrides_the_formula() -> None:
    out = apply("alie", torch.zeros(2), _ctx(honest_updates=HONEST, params={"z": 1.5}))
    expected = torch.tensor([3.0 - 1.5 * math.sqrt(8 / 3), 4.0 - 1.5 * math.sqrt(8.0)])
    assert torch.allclose(out, expected)


def test_alie_with_one_honest_update_is_that_update() -> None:
    out = apply("alie", torch.zeros(2), _ctx(honest_updates=HONEST[:1], params={"z": 2.0}))
    assert torch.equal(out, HONEST[0])


def test_alie_without_n_or_z_raises() -> None:
    with pytest.raises(AttackError, match="num_clients"):
        apply("alie", torch.zeros(2), _ctx(honest_updates=HONEST))


# --- IPM --------------------------------------------------------------------------------


def test_ipm_is_minus_epsilon_times_mean() -> None:
    honest = torch.tensor([[1.0, 2.0], [3.0, -4.0]])  # mean [2, -1]
    out = apply("ipm", torch.zeros(2), _ctx(honest_updates=honest))
    assert torch.allclose(out, torch.tensor([-1.0, 0.5]))
    out = apply("ipm", torch.zeros(2), _ctx(honest_updates=honest, params={"epsilon": 2}))
    assert torch.allclose(out, torch.tensor([-4.0, 2.0]))
    with pytest.raises(AttackError, match="epsilon"):
        apply("ipm", torch.zeros(2), _ctx(honest_updates=honest, params={"epsilon": 0}))


@pytest.mark.parametrize("name", ["alie", "ipm"])
def test_colluding_attacks_need_honest_updates(name: str) -> None:
    params = {"z": 1.0} if name == "alie" else {}
    with pytest.raises(AttackError, match="honest_updates"):
        apply(name, torch.zeros(2), _ctx(params=params))
    with pytest.raises(AttackError, match="non-empty"):
        apply(name, torch.zeros(2), _ctx(honest_updates=torch.zeros(0, 2), params=params))
    with pytest.raises(AttackError, match="dimension 2"):
        apply(name, torch.zeros(3), _ctx(honest_updates=HONEST, params=params))
    with pytest.raises(AttackError, match="NaN"):
        bad = HONEST.clone()
        bad[1, 1] = float("nan")
        apply(name, torch.zeros(2), _ctx(honest_updates=bad, params=params))


# --- shared checks ----------------------------------------------------------------------


@pytest.mark.parametrize("name", UPDATE_ATTACKS)
def test_every_update_attack_keeps_shape_dtype_and_is_finite(name: str) -> None:
    update = torch.tensor([0.5, -1.5, 2.0], dtype=torch.float64)
    ctx = _ctx(
        honest_updates=torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]]),
        num_clients=10,
        num_byzantine=3,
        generator=torch.Generator().manual_seed(0),
    )
    out = apply(name, update, ctx)
    assert out.shape == update.shape
    assert out.dtype == torch.float64
    assert bool(torch.isfinite(out).all())


@pytest.mark.parametrize(
    "update",
    [torch.zeros(2, 3), torch.zeros(0), torch.tensor([1, 2]), torch.tensor([1.0, float("nan")])],
)
def test_bad_honest_update_raises(update: torch.Tensor) -> None:
    with pytest.raises(AttackError):
        apply("signflip", update, _ctx())


def test_overflowing_output_raises_instead_of_returning_inf() -> None:
    with pytest.raises(AttackError, match="infinity"):
        apply("scale", torch.tensor([1000.0], dtype=torch.float16), _ctx(params={"factor": 1e6}))


def test_unknown_and_invalid_params_raise() -> None:
    with pytest.raises(AttackError, match="unknown params"):
        apply("signflip", torch.ones(2), _ctx(params={"factr": 3.0}))
    with pytest.raises(AttackError, match="unknown params"):
        apply("zero", torch.ones(2), _ctx(params={"factor": 3.0}))
    with pytest.raises(AttackError, match="finite"):
        apply("scale", torch.ones(2), _ctx(params={"factor": float("inf")}))
    with pytest.raises(AttackError, match="number"):
        apply("scale", torch.ones(2), _ctx(params={"factor": True}))


def test_unknown_name_lists_the_known_attacks() -> None:
    with pytest.raises(AttackError, match=r"unknown attack 'flip'.*signflip"):
        apply("flip", torch.ones(2), _ctx())


def test_data_and_protocol_names_say_where_they_apply() -> None:
    with pytest.raises(AttackError, match=r"not an update attack.*poison_dataset"):
        apply("labelflip", torch.ones(2), _ctx())
    with pytest.raises(AttackError, match=r"not an update attack.*protocol.*flchain.node"):
        apply("equivocate", torch.ones(2), _ctx())


def test_attack_error_is_a_value_error() -> None:
    assert issubclass(AttackError, ValueError)


@pytest.mark.parametrize(
    "kwargs",
    [{"num_clients": -1}, {"num_clients": 3, "num_byzantine": 4}, {"num_byzantine": 1.5}],
)
def test_context_rejects_inconsistent_counts(kwargs: dict[str, object]) -> None:
    with pytest.raises(AttackError):
        AttackContext(**kwargs)  # type: ignore[arg-type]


def test_context_none_means_no_knowledge() -> None:
    assert torch.equal(apply("signflip", torch.ones(2), None), torch.full((2,), -4.0))


# --- catalogue --------------------------------------------------------------------------


def test_catalogue_partitions_all_attack_names() -> None:
    assert set(PROTOCOL_ATTACKS) == {
        *("equivocate", "withhold", "badvote", "spam", "liesamples", "copy", "replay"),
        *("slowloris", "blobflood", "deepjson", "freeride", "falsealarm", "novote"),
    }
    assert set(UPDATE_ATTACKS) == {"signflip", "scale", "gaussian", "zero", "alie", "ipm"}
    assert set(DATA_ATTACKS) == {"labelflip", "backdoor"}
    assert set(SECURE_ATTACKS) == {"ringshift"}
    assert len(set(ATTACKS)) == len(ATTACKS) == 22
    assert set(UPDATE_FUNCTIONS) == set(UPDATE_ATTACKS)
    assert set(DESCRIPTIONS) == set(ATTACKS)
    assert all(DESCRIPTIONS[name] for name in ATTACKS)
    for name in ATTACKS:
        kinds = [is_update_attack(name), is_data_attack(name), is_protocol_attack(name)]
        kinds.append(is_secure_attack(name))
        assert kinds.count(True) == 1
    assert [kind_of(n) for n in ("alie", "backdoor", "spam")] == ["update", "data", "protocol"]
    assert not is_update_attack("nope")
