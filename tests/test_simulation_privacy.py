"""Privacy in `flchain simulate`: DP noise with a running epsilon, and secure aggregation that
matches plaintext FedAvg within the quantization bound while Siren's alarms keep working."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from flchain.cli import cli
from flchain.config import DEFAULT_SECURE_KEY_BITS, ConfigError, SimulationConfig
from flchain.crypto.dp import epsilon
from flchain.simulation import Simulation, simulate

SMALL = SimulationConfig(nodes=4, rounds=3, model="logreg", seed=5, device="cpu")
DP = SMALL.replace(dp_clip=1.0, dp_noise=0.8)
FAST_CLI = ["simulate", "--nodes", "3", "--rounds", "2", "--model", "logreg", "--seed", "1"]


# --- differential privacy ---------------------------------------------------------------------


def test_dp_noise_changes_the_model_and_epsilon_grows_as_the_accountant_says() -> None:
    noisy, plain = simulate(DP), simulate(SMALL)
    assert noisy.model_bytes != plain.model_bytes
    eps = [r.epsilon for r in noisy.rounds]
    assert eps == pytest.approx([epsilon(0.8, 1.0, t, 1e-5) for t in (1, 2, 3)], rel=1e-9)
    assert eps[0] < eps[1] < eps[2]
    assert noisy.to_json()["epsilon"] == pytest.approx(eps[-1])
    assert plain.final_epsilon is None and plain.to_json()["epsilon"] is None


def test_same_seed_with_dp_gives_identical_model_bytes() -> None:
    cfg = DP.replace(rounds=2)
    first, second = simulate(cfg), simulate(cfg)
    assert first.model_bytes == second.model_bytes
    assert simulate(cfg.replace(seed=6)).model_bytes != first.model_bytes


def test_clipping_bounds_every_global_step_by_the_clip_norm() -> None:
    # FedAvg of vectors of norm <= C has norm <= C; unclipped, these steps are far longer.
    sim = Simulation(SMALL.replace(rounds=2, dp_clip=0.05))
    before = sim.global_params.clone()
    record = sim.run_round(1)
    step = (sim.global_params - before).to(torch.float64).norm()
    assert 0.04 < float(step) <= 0.05 * (1 + 1e-5)
    assert record.epsilon == float("inf")  # clipping without noise buys no privacy
    assert simulate(SMALL.replace(rounds=1, dp_clip=0.05)).to_json()["epsilon"] is None


def test_every_peer_clips_and_noises_its_update_byzantine_ones_too() -> None:
    """The peer pipeline (flchain.pipeline): a Byzantine peer's update is clipped and noised
    like everyone's, as on a node running this code."""
    sim = Simulation(DP.replace(byzantine=1, attack="labelflip"))
    raw = [torch.full((650,), 0.5) for _ in range(4)]  # norm 12.7
    sent = sim._finish(list(raw), 1)
    assert all(not torch.equal(update, before) for update, before in zip(sent, raw, strict=True))
    assert sim.accountant is not None and sim.accountant.rounds == 1
    clip_only = Simulation(DP.replace(byzantine=1, attack="labelflip", dp_noise=0.0))
    clipped = clip_only._finish(list(raw), 1)
    assert clipped.double().norm(dim=1).max() <= DP.dp_clip * (1 + 1e-6)


# --- secure aggregation -----------------------------------------------------------------------


def test_secure_fedavg_matches_plaintext_within_the_quantization_bound() -> None:
    # Secure mode weighs members equally, as a node does (node/secure.py): so does plaintext
    # FedAvg when sample counts are unused (max_samples 0).
    plain = Simulation(SMALL.replace(max_samples=0))
    secure = Simulation(SMALL.replace(secure=True))
    start = secure.global_params.clone()
    assert torch.equal(start, plain.global_params)
    plain_record, record = plain.run_round(1), secure.run_round(1)
    gap = float((secure.global_params - plain.global_params).abs().max())
    assert record.secure_bound is not None and record.secure_error is not None
    assert 0 < record.secure_bound < 1e-4
    assert record.secure_error <= record.secure_bound * (1 + 1e-9)
    assert gap <= record.secure_bound + 1e-6  # plus float32 rounding of the parameters
    assert record.secure_clipped == 0
    assert record.accepted_honest == 4
    assert abs(record.accuracy - plain_record.accuracy) < 0.01
    later = [secure.run_round(r) for r in (2, 3)]
    assert [r.decryptor for r in (record, *later)] == [(5 + r - 1) % 4 for r in (1, 2, 3)]
    assert all(r.secure_error <= r.secure_bound * (1 + 1e-9) for r in later)


def test_secure_runs_are_reproducible_although_the_keys_are_random() -> None:
    cfg = SMALL.replace(rounds=2, secure=True, dp_clip=1.0, dp_noise=0.5)
    first, second = simulate(cfg), simulate(cfg)
    assert first.model_bytes == second.model_bytes
    data = first.to_json()
    assert data["secure"] is True
    # The decrypted sum's guarantee (distributed Skellam noise, rounding accounted): close to
    # central DP-FedAvg's Gaussian figure at the same sigma, never better.
    central = epsilon(0.5, 1.0, 2, 1e-5)
    assert central <= data["epsilon"] <= 1.05 * central
    assert data["config"]["secure_key_bits"] == DEFAULT_SECURE_KEY_BITS  # one default everywhere


def test_secure_siren_without_alarms_is_secure_fedavg() -> None:
    cfg = SMALL.replace(rounds=2, secure=True)
    # An alarm needs local accuracy > global accuracy + 1 * local accuracy: never.
    sim = Simulation(cfg.replace(rule="siren", alarm_threshold=1.0))
    models = [sim.global_params]
    siren = sim.run(lambda _: models.append(sim.global_params))
    assert all(r.alarms == 0 and r.accepted_honest == 4 for r in siren.rounds)
    # every candidate is adopted; the model differs from plain secure FedAvg's only because
    # Siren's peers hold a tenth of their data out for their alarms
    assert len(models) == 3
    assert not torch.equal(models[0], models[1]) and not torch.equal(models[1], models[2])


def test_secure_siren_alarms_reject_a_poisoned_aggregate() -> None:
    cfg = SMALL.replace(nodes=5, rounds=2, secure=True, byzantine=2, attack="signflip")
    sim = Simulation(cfg.replace(rule="siren"))
    initial = sim.global_params.clone()
    siren = sim.run()
    fedavg = simulate(cfg)
    # The honest peers see the candidate do far worse than their own model: all 5 alarm.
    assert [r.alarms for r in siren.rounds] == [5, 5]
    assert all(r.accepted_honest == 0 and r.accepted_byzantine == 0 for r in siren.rounds)
    assert torch.equal(sim.global_params, initial)
    assert fedavg.final_accuracy < siren.final_accuracy
    assert all(r.accepted_byzantine == 2 for r in fedavg.rounds)


def test_out_of_range_coordinates_are_clamped_and_counted() -> None:
    cfg = SMALL.replace(
        rounds=1, secure=True, byzantine=1, attack="scale", attack_params={"factor": 100.0}
    )
    record = simulate(cfg).rounds[0]
    assert record.secure_clipped is not None and record.secure_clipped > 0
    assert record.secure_error is not None and record.secure_bound is not None
    assert record.secure_error > record.secure_bound  # the clamp, not quantization


def test_secure_range_defaults_follow_the_dp_clip_norm() -> None:
    assert SMALL.secure_value_range == 4.0
    assert SMALL.replace(dp_clip=2.0).secure_value_range == 2.0
    # Peers only clip in secure mode; distributed DP's noise widens the ring by itself.
    assert SMALL.replace(dp_clip=2.0, dp_noise=0.5).secure_value_range == 2.0
    assert SMALL.replace(dp_clip=2.0, secure_range=0.3).secure_value_range == 0.3


# --- configuration and CLI --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"secure": True, "rule": "krum"}, "robust rules need plaintext updates"),
        ({"secure": True, "rule": "median"}, "--rule fedavg"),
        ({"secure": True, "rule": "siren", "rule_params": {"slack": 0.1}}, "no rule parameters"),
        ({"secure": True, "nodes": 1}, "--nodes >= 2"),
        ({"dp_noise": 1.0}, "--dp-noise SIGMA needs --dp-clip"),
        ({"dp_clip": -1.0}, "--dp-clip must be"),
        ({"dp_clip": 1.0, "dp_noise": -0.1}, "--dp-noise must be"),
        ({"dp_delta": 1.0}, "--dp-delta"),
        ({"secure_range": 0.0}, "--secure-range"),
        ({"secure_key_bits": 256}, "--secure-key-bits"),
        ({"secure_bits": 0}, "--secure-bits"),
    ],
)
def test_inconsistent_privacy_settings_are_refused_clearly(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SMALL.replace(**changes)


def test_secure_mode_allows_byzantine_update_attacks_and_checks_crypto_limits() -> None:
    SMALL.replace(secure=True, byzantine=1, attack="alie")  # no error
    with pytest.raises(ConfigError, match="secure aggregation cannot run"):
        Simulation(SMALL.replace(secure=True, secure_bits=60))


def test_cli_secure_json_reports_epsilon_decryptor_and_error() -> None:
    result = CliRunner().invoke(
        cli, [*FAST_CLI, "--secure", "--dp-clip", "2", "--dp-noise", "0.7", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["secure"] is True
    central = epsilon(0.7, 1.0, 2, 1e-5)  # the sum's Skellam figure is close, never better
    assert central <= data["epsilon"] <= 1.05 * central
    assert data["config"]["dp_clip"] == 2.0 and data["config"]["secure"] is True
    assert [r["decryptor"] for r in data["rounds"]] == [1, 2]
    for r in data["rounds"]:
        assert r["secure_error"] <= r["secure_bound"] * (1 + 1e-9)
    assert data["secure_max_error"] == max(r["secure_error"] for r in data["rounds"])


def test_cli_table_shows_privacy_and_refuses_secure_robust_rules() -> None:
    runner = CliRunner()
    table = runner.invoke(cli, [*FAST_CLI, "--secure", "--rule", "siren", "--dp-clip", "1"])
    assert table.exit_code == 0, table.output
    assert "epsilon" in table.stdout and "inf (no noise)" in table.stdout
    assert "secure aggregation (FedAvg plus alarms" in table.stdout
    refused = runner.invoke(cli, [*FAST_CLI, "--secure", "--rule", "multikrum"])
    assert refused.exit_code == 2
    assert "robust rules need plaintext updates" in refused.output
    help_text = " ".join(runner.invoke(cli, ["simulate", "--help"]).output.split())
    assert "--secure-key-bits" in help_text and "Slow for large models" in help_text
