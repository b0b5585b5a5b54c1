"""`ringshift`: a Byzantine member of a secure round encrypts any ring value; the decrypted mean
moves as computed, the aggregate bound rejects what clipped honest updates cannot give and
accepts honest rounds, and the simulation runs the node's arithmetic bit for bit."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from flchain.attacks import AttackError, RingShift, kind_of
from flchain.attacks.catalog import require_kind
from flchain.cli import cli
from flchain.config import ConfigError, SimulationConfig
from flchain.crypto.aggregate_bound import (
    NOISE_TAIL,
    AggregateBound,
    AggregateBoundError,
    bound_for,
)
from flchain.crypto.errors import CryptoError
from flchain.crypto.masking import generate_mask_key, public_key_bytes
from flchain.crypto.paillier import generate_keypair
from flchain.crypto.secure_sum import SecureAggregationConfig, secure_fedavg, weight_shares
from flchain.node.secure import SecureCodec, mask_task_label
from flchain.simulation import Simulation
from flchain.taskconfig import TaskConfig

KEY_BITS = 512
N, D, C = 4, 650, 1.0  # logreg on digits has 650 parameters
SMALL = SimulationConfig(
    nodes=N, rounds=1, model="logreg", seed=5, device="cpu", secure=True, secure_key_bits=KEY_BITS
)


@pytest.fixture(scope="module")
def keypair():
    return generate_keypair(KEY_BITS)


def _clipped(n: int, d: int, seed: int = 0, std: float = 0.05) -> np.ndarray:
    """n honest-looking updates, each clipped to L2 norm C."""
    x = np.random.default_rng(seed).normal(0.0, std, size=(n, d))
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x * np.minimum(1.0, C / norms)


def _mean(x: np.ndarray, keypair, attacks=None, value_range=C, **kw) -> np.ndarray:
    result = secure_fedavg(
        x, value_range=value_range, key_bits=KEY_BITS, keypair=keypair, ring_attacks=attacks, **kw
    )
    return result.update.numpy()


# --- the attack ---------------------------------------------------------------------------------


def test_shift_moves_the_decrypted_mean_by_exactly_the_chosen_amount(keypair) -> None:
    x = _clipped(N, 40)
    honest = _mean(x, keypair)
    attacked = _mean(x, keypair, {2: RingShift.of({"shift": 0.5}, C)})
    step = 2 * C / N / (2**16 - 1)  # one level of the members' share-scaled range
    # A constant number of levels, whatever the others sent: the same shift on every coordinate.
    assert np.ptp(attacked - honest) < 1e-12
    assert abs(float((attacked - honest)[0]) - 0.5 * C) <= step


def test_target_puts_the_mean_near_the_range_edge_on_every_coordinate(keypair) -> None:
    x = _clipped(N, 40, std=0.02)
    attacked = _mean(x, keypair, {1: RingShift.of({}, C)})
    # The attacker assumes the others sent its own levels: the miss is their spread around it.
    miss = (x.sum(0) - N * x[1]) / N
    assert np.allclose(attacked, 0.9 * C + miss, atol=2 * C / (2**16 - 1))
    assert np.linalg.norm(attacked) > 5 * C  # far outside what clipped updates can average to
    # A spread past the margin carries the sum past the edge: with N = 4 the ring is exactly
    # N levels wide, so it wraps to the bottom of the range instead of failing to decode.
    wide = _clipped(N, 40, std=0.05)
    wrapped = _mean(wide, keypair, {1: RingShift.of({}, C)})
    over = 0.9 * C + (wide.sum(0) - N * wide[1]) / N > C
    assert over.any() and np.all(wrapped[over] < -0.8 * C)


def test_a_shift_past_the_range_edge_makes_the_sum_undecodable(keypair) -> None:
    # Five members: the ring holds 8 members' levels, so a sum past 5 no longer decodes.
    x = _clipped(5, 40)
    with pytest.raises(CryptoError, match="slot sums exceed"):
        _mean(x, keypair, {0: RingShift.of({"shift": 2.0}, C)})


def test_ringshift_is_a_secure_attack_with_checked_knobs() -> None:
    assert kind_of("ringshift") == "secure"
    with pytest.raises(AttackError, match="secure-mode attack"):
        require_kind("ringshift", "update")
    for bad in ({"target": 1.5}, {"shift": 3.0}, {"oppose": 0.0}, {"target": 0.5, "shift": 0.1}):
        with pytest.raises(AttackError):
            RingShift.of(bad, C)
    with pytest.raises(AttackError, match="unknown params"):
        RingShift.of({"factor": 2.0}, C)


# --- the bound ----------------------------------------------------------------------------------


def test_bound_accepts_honest_means_and_rejects_a_ringshift_mean(keypair) -> None:
    x = _clipped(N, D, seed=1)
    config = SecureAggregationConfig(C, N, key_bits=KEY_BITS)
    shares = weight_shares(dict.fromkeys(range(N), 1.0))
    quant_error = config.spec(shares).quantizer.error_bound(N)
    bound = bound_for(C, 0.0, list(shares.values()), quant_error)
    assert bound is not None
    assert bound.limit(D) == pytest.approx(C + bound.quant_error * math.sqrt(D))
    # Even identical updates of norm exactly C (the worst honest case) pass, quantized.
    same = np.tile(x[0] / np.linalg.norm(x[0]) * C, (N, 1))
    bound.check(_mean(same, keypair))
    bound.check(_mean(x, keypair))
    with pytest.raises(AggregateBoundError, match="L2 norm"):
        bound.check(_mean(x, keypair, {3: RingShift.of({}, C)}))
    # Inside the bound the attacker still sets the mean: opposite its own update, norm 0.8 C,
    # when the honest updates agree (as trained ones do), so its own is a good estimate.
    rng = np.random.default_rng(4)
    common = rng.normal(0.0, 1.0, D)
    agreeing = 0.8 * C * common / np.linalg.norm(common) + rng.normal(0.0, 0.002, (N, D))
    inside = _mean(agreeing, keypair, {3: RingShift.of({"oppose": 0.8}, C)})
    bound.check(inside)
    honest_mean = agreeing.mean(0)
    cosine = float(inside @ honest_mean) / np.linalg.norm(inside) / np.linalg.norm(honest_mean)
    assert cosine < -0.99 and np.linalg.norm(inside) > 0.7 * C
    assert bound_for(None, 0.0, list(shares.values()), quant_error) is None


def test_bound_leaves_room_for_the_dp_noise_of_honest_members() -> None:
    sigma, shares = 0.8, [0.25] * N
    noisy = AggregateBound(clip=C, noise_std=sigma * C * math.sqrt(sum(s * s for s in shares)))
    assert noisy.limit(D) == pytest.approx(C + noisy.noise_std * (math.sqrt(D) + NOISE_TAIL))
    rng = np.random.default_rng(2)
    for _ in range(20):  # clipped updates, each with N(0, (sigma C)^2) noise, averaged
        x = _clipped(N, D, seed=int(rng.integers(1 << 30)))
        x = x + rng.normal(0.0, sigma * C, size=x.shape)
        noisy.check(x.mean(0))
    with pytest.raises(AggregateBoundError):
        noisy.check(np.full(D, 0.9 * 4.0))
    with pytest.raises(AggregateBoundError, match="not finite"):
        noisy.check(np.array([np.nan, 0.0]))


def test_honest_rounds_with_distributed_dp_noise_stay_inside_the_bound() -> None:
    sim = Simulation(SMALL.replace(dp_clip=C, dp_noise=0.8))
    assert sim.secure is not None and sim.secure.noise is not None
    for r in (1, 2, 3):  # identical updates of norm C: the largest honest mean, plus the noise
        x = torch.from_numpy(np.tile(_clipped(1, D, seed=r) * 1e3, (N, 1))).float()
        x = x / x[0].norm() * C * (1 - 1e-6)
        outcome = sim.secure.aggregate(x, torch.ones(N), r)
        assert outcome.update is not None and outcome.rejected is None
        assert float(outcome.update.norm()) > C  # the noise is there, and the bound allows it


# --- the simulation runs the node's arithmetic ------------------------------------------------


def test_simulation_and_node_compute_the_same_attacked_mean_and_verdict() -> None:
    sim = Simulation(SMALL.replace(byzantine=1, attack="ringshift", dp_clip=C))
    assert sim.secure is not None and sim.secure.ring_attack is not None
    (byz,) = sim.byzantine_ids
    x = torch.from_numpy(_clipped(N, D, seed=3))
    outcome = sim.secure.aggregate(x.float(), torch.ones(N), 1, sim.byzantine_ids)
    # The node path: each member's codec, the Byzantine one with the same ring attack.
    task = TaskConfig(model="logreg", secure=True, secure_key_bits=KEY_BITS, dp_clip=C)
    keys = [generate_mask_key() for _ in range(N)]
    label = mask_task_label("0x" + "cd" * 20, 3)
    codecs = [SecureCodec(task, num_params=D, mask_key=k, task_label=label) for k in keys]
    registry = {i: public_key_bytes(k) for i, k in enumerate(keys)}
    public, private = sim.secure.keypair
    attack = RingShift.of({}, task.secure_value_range)
    blobs = {
        i: codecs[i].encrypt(
            x[i].float(),
            my_index=i,
            round_index=1,
            attempt=0,
            mask_set=registry,
            n_eligible=N,
            public_key=public,
            ring_attack=attack if i == byz else None,
        )
        for i in range(N)
    }
    total = codecs[0].sum_bundles(blobs, n_eligible=N, public_key=public)
    mean = codecs[0].open(total, codecs[0].prove(total, private), public)
    assert outcome.update is not None and torch.equal(outcome.update, mean)
    bound = codecs[0].aggregate_bound(range(N), N)
    assert bound is not None
    with pytest.raises(AggregateBoundError):
        bound.check(mean)
    assert outcome.rejected is not None and "L2 norm" in outcome.rejected


def test_simulated_round_is_rejected_by_the_bound_and_hijacked_without_a_clip() -> None:
    sim = Simulation(SMALL.replace(byzantine=1, attack="ringshift", dp_clip=C, local_epochs=1))
    before = sim.global_params.clone()
    record = sim.run_round(1)
    assert record.secure_rejected is not None and "L2 norm" in record.secure_rejected
    assert record.accepted_honest == record.accepted_byzantine == 0
    assert torch.equal(sim.global_params, before)  # a failed round: the global model stays
    # No clip, no bound: the mean lands near 0.9 x the range (+-4) on every coordinate.
    sim = Simulation(SMALL.replace(byzantine=1, attack="ringshift"))
    assert sim.secure is not None
    before = sim.global_params.clone()
    x = torch.from_numpy(_clipped(N, D, seed=5, std=0.01)).float()
    outcome = sim.secure.aggregate(x, torch.ones(N), 1, sim.byzantine_ids)
    assert outcome.rejected is None
    accepted, _ = sim._secure_step(outcome)
    assert bool(accepted.all())
    step = (sim.global_params - before).to(torch.float64)
    assert float(step.min()) > 0.8 * 4.0 and float(step.max()) < 4.0


def test_ringshift_needs_secure_mode() -> None:
    with pytest.raises(ConfigError, match="needs --secure"):
        Simulation(SMALL.replace(secure=False, byzantine=1, attack="ringshift"))
    with pytest.raises(ConfigError, match="target must be"):
        Simulation(SMALL.replace(byzantine=1, attack="ringshift", attack_params={"target": 2.0}))
    args = ["simulate", "--nodes", "3", "--rounds", "1", "--model", "logreg", "--byzantine", "1"]
    result = CliRunner().invoke(cli, [*args, "--attack", "ringshift"])
    assert result.exit_code != 0 and "needs --secure" in result.output
