"""Stragglers as SageFlow's asynchronous setup has them: late updates arrive rounds later from
the global version they trained on, and the peers in flight leave the fresh group."""

from __future__ import annotations

import pytest
import torch

from flchain.aggregation.sageflow import ASYNC_GAMMA_EVERY
from flchain.config import ConfigError, SimulationConfig
from flchain.simulation import Simulation, simulate
from flchain.stragglers import StragglerSchedule

SAGE = SimulationConfig(
    nodes=5, rounds=4, model="logreg", seed=3, device="cpu", rule="sageflow"
).replace(stragglers=0.6, max_delay=2, rule_params={"entropy_threshold": 1.5})


def _run_schedule(schedule: StragglerSchedule, rounds: int) -> dict[int, list]:
    """Post a tag per started update; what each round collects."""
    got = {}
    for r in range(1, rounds + 1):
        for peer, delay in schedule.start(r).items():
            schedule.post(peer, r, delay, torch.tensor([float(r)]))
        got[r] = schedule.collect(r)
    return got


def test_a_late_update_arrives_exactly_its_delay_later_with_its_base_version() -> None:
    schedule = StragglerSchedule(nodes=6, probability=1.0, max_delay=3, seed=1)
    first = schedule.delays(1)
    assert all(1 <= d <= 3 for d in first)  # P = 1: everyone is late in round 1
    got = _run_schedule(schedule, 8)
    for peer, delay in enumerate(first):
        (arrival,) = [a for a in got[1 + delay] if a.peer == peer and a.started == 1]
        assert arrival.staleness == delay
        assert arrival.base_version == 0  # trained from the global model of round 1's start
        assert arrival.update.tolist() == [1.0]  # the update it built when it started


def test_a_peer_in_flight_starts_nothing_and_fresh_groups_shrink() -> None:
    schedule = StragglerSchedule(nodes=6, probability=0.5, max_delay=2, seed=4)
    busy_until: dict[int, int] = {}
    for r in range(1, 12):
        delays = schedule.delays(r)
        started = schedule.start(r)
        in_flight = {p for p, until in busy_until.items() if until >= r}
        assert set(started) == set(range(6)) - in_flight
        assert all(started[p] == delays[p] for p in started)
        for p, d in started.items():
            busy_until[p] = r + d
    assert any(d > 0 for r in range(1, 12) for d in schedule.delays(r))
    # without stragglers every peer starts and arrives in the same round
    on_time = _run_schedule(StragglerSchedule(nodes=3), 3)
    for arrivals in on_time.values():
        assert [(a.peer, a.staleness) for a in arrivals] == [(0, 0), (1, 0), (2, 0)]


def test_delay_draws_depend_on_seed_and_round_only() -> None:
    a = StragglerSchedule(nodes=8, probability=0.5, max_delay=3, seed=7)
    b = StragglerSchedule(nodes=8, probability=0.5, max_delay=3, seed=7)
    assert [a.delays(r) for r in range(1, 6)] == [b.delays(r) for r in range(1, 6)]
    assert a.delays(2) != StragglerSchedule(8, 0.5, 3, seed=8).delays(2)


def test_simulation_hands_sageflow_stale_models_relative_to_the_current_global(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import flchain.simulation as simulation

    calls = []
    real = simulation.aggregate

    def spy(rule, updates, weights=None, **params):
        calls.append((updates.clone(), dict(params)))
        return real(rule, updates, weights, **params)

    monkeypatch.setattr(simulation, "aggregate", spy)
    sim = Simulation(SAGE)
    posted = []  # (arrival round, peer, started, update as the peer sent it)
    real_post = sim.stragglers.post

    def post(peer, started, delay, update):
        posted.append((started + delay, peer, started, update.clone()))
        real_post(peer, started, delay, update)

    monkeypatch.setattr(sim.stragglers, "post", post)
    start_of = {}  # round -> the global model that round's starters trained from
    checked = 0
    for r in range(1, 4):
        start_of[r] = current = sim.global_params.clone()
        sim.run_round(r)
        updates, params = calls[-1]
        assert params["round_index"] == r - 1
        assert params["gamma_every"] == ASYNC_GAMMA_EVERY
        late = [(p, s, u) for (t, p, s, u) in posted if t == r and s < r]
        staleness = params["staleness"].tolist()
        stale_rows = [row for row, s in zip(updates, staleness, strict=True) if s > 0]
        assert len(stale_rows) == len(late)
        for _, started, sent in late:  # rows come in content order (`canonical_order`)
            model = start_of[started] + sent  # what the late peer trained, from its old base
            # model - w_t, not the delta
            (row,) = [row for row in stale_rows if torch.allclose(current + row, model, atol=1e-6)]
            assert not torch.allclose(row, sent, atol=1e-6)
            checked += 1
    assert checked > 0


def test_synchronous_sageflow_mixes_nothing_in(monkeypatch: pytest.MonkeyPatch) -> None:
    import flchain.simulation as simulation

    seen = []
    real = simulation.aggregate
    monkeypatch.setattr(
        simulation,
        "aggregate",
        lambda rule, *a, **k: seen.append(k) or real(rule, *a, **k),
    )
    sim = Simulation(SAGE.replace(stragglers=0.0, max_delay=0, rounds=2))
    sim.run_round(1)
    assert "gamma_every" not in seen[-1] and seen[-1]["staleness"].tolist() == [0] * 5


def test_sageflow_with_stragglers_learns_digits() -> None:
    result = simulate(SAGE)
    assert sum(r.stale_updates for r in result.rounds) > 0
    assert any(r.accepted_honest < r.honest for r in result.rounds)  # peers in flight
    assert result.final_accuracy > 0.85
    assert result.final_accuracy > result.rounds[0].accuracy


def test_stragglers_refuse_secure_mode() -> None:
    with pytest.raises(ConfigError, match="--stragglers cannot run with --secure"):
        SimulationConfig(nodes=4, secure=True, stragglers=0.5, max_delay=1)
