"""Standalone federated simulation: the network node's training, attack and aggregation code,
run for N simulated peers in one process.

The point is that experiments use exactly the code the real nodes run — `flchain.models` for
training, `flchain.attacks` for Byzantine peers, `flchain.aggregation` for the rule,
`flchain.crypto` for privacy — so a result here predicts the network's behaviour, minus the chain
and the wire.

Privacy, as on a node:
- DP (`dp_clip`, `dp_noise`): every peer builds its update with the node's pipeline
  (`flchain.pipeline`: train -> attack -> clip -> noise), so it is clipped to L2 norm C and gets
  N(0, (sigma*C)^2) noise before it leaves the peer, a Byzantine peer's crafted update too.
  Every peer takes part every round, so the running epsilon is that of T Gaussian releases
  (q = 1) under replace-one adjacency (`flchain.crypto.dp`: sensitivity 2C).
- Secure mode (`secure`): the round's updates are summed by `secure_fedavg` (quantize, pairwise
  masks, pack, Paillier-encrypt, add, decrypt, verify), so nobody sees a single update. Robust
  rules need plaintext updates, so the rule is FedAvg, or FedAvg plus alarms for `siren`: after
  the sum is decrypted every peer compares the candidate global model with its own fresh local
  model on its validation split, and when a majority raises an alarm the candidate is rejected
  and the global model stays. Each coordinate travels in the agreed range (-c, c): values
  outside it (a Byzantine scale attack) are clipped by their sender, as a node does, and
  counted. A `ringshift` peer encrypts ring values of its choice instead; a mean that does not
  decode or breaks the aggregate bound (`flchain.crypto.aggregate_bound`) fails the round for
  everyone, as on the network.

Siren (`rule="siren"`) as published (`flchain.aggregation.siren`): each peer holds out a tenth of
its data for its alarms and never trains on it; an alarm is local > global + C_l * local on that
split; a peer that alarmed trains from its own previous model next; the server's check runs on the
public split, its credit limit is int(0.45 * rounds), and a round that catches an attacker is
applied to the global model of t-1 or t-2 (`RoundRecord.rollback`). On top, as the contract
does on the network, alarms from `alarm_bps` of the peers (per head; the chain weighs them by
reputation) revert the round they judge and abort the running one (`RoundRecord.reverted`,
`aborted`); the lineage of good rounds then drives the rollback, as a node follows base_round.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from flchain.aggregation import (
    RULES,
    aggregate,
    canonical_order,
    fit_params,
    optional_inputs,
    required_inputs,
    rule_parameters,
)
from flchain.aggregation.sageflow import ASYNC_GAMMA_EVERY
from flchain.aggregation.siren import Rollback, client_alarm, fresh_credits
from flchain.attacks import (
    DATA_ATTACKS,
    SECURE_ATTACKS,
    UPDATE_ATTACKS,
    AttackContext,
    RingShift,
    always_alarms,
    apply,
    attack_success_rate,
)
from flchain.config import ConfigError, SimulationConfig
from flchain.crypto.errors import CryptoError
from flchain.models import (
    MODEL_NAMES,
    PARTITION_SCHEMES,
    TrainConfig,
    TrainingError,
    build_model,
    evaluate,
    flatten_params,
    load_dataset,
    load_flat_params,
    model_to_bytes,
    pick_device,
    split_public,
)
from flchain.peer_data import byzantine_indices, poisoned, shard_indices, siren_validation
from flchain.pipeline import AttackHook, Peer, Privacy, finish, own_model, train_step
from flchain.pipeline import stream_seed as _stream_seed
from flchain.public_set import PublicSet, Scores, update_scores
from flchain.stragglers import Arrival, StragglerSchedule
from flchain.taskconfig import (
    capped_samples,
    claimed_samples,
    needs_public_data,
    raises_alarms,
    rule_weights,
)

# Update attacks whose output does not depend on the attacker's own honest update: the
# attacker need not train, which keeps large benchmark matrices affordable.
_ATTACKS_WITHOUT_OWN_TRAINING = frozenset({"zero", "gaussian", "alie", "ipm"})
_SKELLAM_STREAM = 0x5CE  # distributed DP's noise shares in secure mode (_SecureAggregator)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from phe.paillier import PaillierPrivateKey, PaillierPublicKey

    from flchain.crypto.distributed_dp import DistributedAccountant
    from flchain.crypto.dp import PrivacyAccountant
    from flchain.crypto.secure_sum import SecureAggregationConfig


@dataclass(frozen=True)
class RoundRecord:
    """What one round did: the global model's test metrics and who got into the aggregate."""

    round: int
    accuracy: float
    loss: float
    train_loss: float
    accepted_honest: int
    honest: int
    accepted_byzantine: int
    byzantine: int
    stale_updates: int
    alarms: int
    attack_success_rate: float | None
    seconds: float
    diverged: bool = False
    # Running epsilon at dp_delta after this round (None without DP, inf when clipping only).
    epsilon: float | None = None
    # Secure mode: the peer that decrypted the sum, max |secure - plaintext FedAvg| over the
    # coordinates, its quantization bound, and how many coordinates were clamped to the range.
    decryptor: int | None = None
    secure_error: float | None = None
    secure_bound: float | None = None
    secure_clipped: int | None = None
    # Secure mode: why every member rejected the decrypted mean (None: it was not rejected).
    secure_rejected: str | None = None
    # Siren: how many global versions this round's update was applied back from (0, 1, 2).
    rollback: int = 0
    # Siren with the chain's revert (`SimulationConfig.alarm_bps`): the next round's alarms
    # reverted this round's model; this round was aborted by them (its model is the restored
    # one, no update was applied and its global_digest is "", as on chain).
    reverted: bool = False
    aborted: bool = False
    # sha256 of the global model's bytes after the round, "0x"-prefixed as on chain: a devnet
    # with the same settings and seed finalizes the same digest (`flchain.peer_data`).
    global_digest: str = ""


@dataclass
class SimulationResult:
    """Outcome of a run; `to_json()` is what `flchain simulate --json` prints."""

    config: SimulationConfig
    rounds: list[RoundRecord]
    byzantine_ids: list[int]
    num_params: int
    device: str
    model_bytes: bytes = field(repr=False)
    diverged_round: int | None = None

    @property
    def final_accuracy(self) -> float:
        return self.rounds[-1].accuracy

    @property
    def best_accuracy(self) -> float:
        return max(r.accuracy for r in self.rounds)

    @property
    def model_sha256(self) -> str:
        return hashlib.sha256(self.model_bytes).hexdigest()

    @property
    def final_epsilon(self) -> float | None:
        """Privacy spent by each honest peer over the run (None when DP is off)."""
        return self.rounds[-1].epsilon

    @property
    def secure_max_error(self) -> float | None:
        """Largest per-coordinate gap between a secure aggregate and plaintext FedAvg."""
        errors = [r.secure_error for r in self.rounds if r.secure_error is not None]
        return max(errors) if errors else None

    def to_json(self) -> dict[str, Any]:
        """The run as standard JSON: non-finite floats (an infinite epsilon when DP clips without
        noise, the NaN loss of a diverged model) are written as null."""
        last = self.rounds[-1]
        return _json_safe(
            {
                "final_accuracy": last.accuracy,
                "final_loss": last.loss,
                "best_accuracy": self.best_accuracy,
                "attack_success_rate": last.attack_success_rate,
                "diverged_round": self.diverged_round,
                "byzantine_ids": self.byzantine_ids,
                "byzantine_accepted_total": sum(r.accepted_byzantine for r in self.rounds),
                "honest_rejected_total": sum(r.honest - r.accepted_honest for r in self.rounds),
                "model_sha256": self.model_sha256,
                "num_params": self.num_params,
                "device": self.device,
                "seconds": round(sum(r.seconds for r in self.rounds), 3),
                "epsilon": self.final_epsilon,
                "dp_delta": self.config.dp_delta if self.config.dp_enabled else None,
                "secure": self.config.secure,
                "secure_max_error": self.secure_max_error,
                "config": self.config.to_dict(),
                "rounds": [asdict(r) for r in self.rounds],
            }
        )


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


@dataclass(frozen=True)
class _Good:
    """A global model along Siren's lineage (the rounds that were not reverted, as a node
    follows base_round on chain), with the server state right after it: the credits and the
    rollback state a revert restores."""

    index: int  # t: how many good rounds built it
    model: torch.Tensor
    credits: torch.Tensor | None
    rollback: Rollback


# Lineage entries kept: Siren's rollback reaches back two models; a revert pops one.
_LINEAGE_KEPT = 8


@dataclass
class _Client:
    index: int
    x: torch.Tensor
    y: torch.Tensor
    byzantine: bool
    last_local: torch.Tensor | None = None  # flat params after its latest local training
    # Siren: the held-out validation split the peer's alarms judge on (never trained on), and
    # whether its last alarm was raised, so that it trains from its own model this round.
    val_x: torch.Tensor | None = None
    val_y: torch.Tensor | None = None
    resume_local: bool = False


def validate_config(config: SimulationConfig) -> None:
    """Check names against the registries so a typo fails before any data is loaded."""
    if config.rule not in RULES:
        raise ConfigError(f"unknown rule {config.rule!r}; choose one of {', '.join(RULES)}")
    unknown = sorted(set(config.rule_params) - set(rule_parameters(config.rule)))
    if unknown:
        allowed = ", ".join(rule_parameters(config.rule)) or "none"
        raise ConfigError(
            f"rule {config.rule!r} has no parameter(s) {', '.join(unknown)}; it takes: {allowed}"
        )
    if config.model not in MODEL_NAMES:
        raise ConfigError(f"unknown model {config.model!r}; choose one of {', '.join(MODEL_NAMES)}")
    if config.partition not in PARTITION_SCHEMES:
        raise ConfigError(
            f"unknown partition {config.partition!r}; choose one of {', '.join(PARTITION_SCHEMES)}"
        )
    simulated = (*UPDATE_ATTACKS, *DATA_ATTACKS, *SECURE_ATTACKS)
    if config.attack is not None and config.attack not in simulated:
        raise ConfigError(
            f"attack {config.attack!r} cannot run in a simulation; choose one of "
            f"{', '.join(simulated)}"
        )
    if config.attack in SECURE_ATTACKS and not config.secure:
        raise ConfigError(f"attack {config.attack!r} attacks secure aggregation: it needs --secure")
    if config.secure:
        _secure_parameters(config)
        if config.attack in SECURE_ATTACKS:
            try:
                RingShift.of(config.attack_params, config.secure_value_range)
            except ValueError as exc:
                raise ConfigError(str(exc)) from exc


def _secure_parameters(config: SimulationConfig) -> SecureAggregationConfig:
    """The crypto layer's check of bits, range, member count and key size, as a ConfigError."""
    from flchain.crypto.secure_sum import SecureAggregationConfig

    try:
        return SecureAggregationConfig(
            value_range=config.secure_value_range,
            max_members=config.nodes,
            bits=config.secure_bits,
            key_bits=config.secure_key_bits,
        )
    except CryptoError as exc:
        raise ConfigError(
            f"secure aggregation cannot run with --secure-bits {config.secure_bits}, "
            f"--secure-key-bits {config.secure_key_bits}, {config.nodes} nodes and range "
            f"+-{config.secure_value_range:g}: {exc}"
        ) from exc


@dataclass(frozen=True)
class _SecureOutcome:
    """One secure round: the decrypted weighted mean and how far it is from plaintext FedAvg,
    or why every member rejects it (`rejected`: the sum does not decode, or its norm breaks
    `flchain.crypto.aggregate_bound`), as a node's secure engine does."""

    update: torch.Tensor | None
    decryptor: int
    error: float | None
    bound: float
    clipped: int
    rejected: str | None = None


class _SecureAggregator:
    """Secure FedAvg with one Paillier key pair per run and one X25519 mask key per peer
    (the settings were checked by `validate_config`).

    The keys are random, not seeded: the masks cancel exactly and decryption is exact, so the
    aggregate (and the run's model bytes) depend only on the quantized updates.
    """

    def __init__(self, config: SimulationConfig) -> None:
        from flchain.crypto.masking import generate_mask_key
        from flchain.crypto.paillier import generate_keypair

        self.config = config
        self.bound = config.secure_value_range
        self.keypair: tuple[PaillierPublicKey, PaillierPrivateKey] = generate_keypair(
            config.secure_key_bits
        )
        self.mask_keys: list[X25519PrivateKey] = [generate_mask_key() for _ in range(config.nodes)]
        self.task = f"flchain-simulate/{config.seed}"
        self.ring_attack = (
            RingShift.of(config.attack_params, self.bound) if config.attack == "ringshift" else None
        )
        # Distributed DP (crypto/distributed_dp.py): the peers only clip; each adds its Skellam
        # share of sigma*C in the ring, sized for every peer (a simulated round has no dropouts).
        from flchain.crypto.distributed_dp import distributed_noise

        self.noise = distributed_noise(config.dp_noise, config.dp_clip, config.nodes)
        self.dp_accountant: DistributedAccountant | None = None

    def decryptor(self, r: int) -> int:
        """Round-robin from a seed-dependent start: every peer takes its turn at decrypting."""
        return (self.config.seed + r - 1) % self.config.nodes

    def _account(self, levels_per_unit: float, members: int, dimension: int) -> None:
        """One more distributed-DP release (the decrypted sum), whether or not it decodes."""
        if self.noise is None:
            return
        if self.dp_accountant is None:
            from flchain.crypto.distributed_dp import DistributedAccountant

            self.dp_accountant = DistributedAccountant(self.noise, dimension, self.config.dp_delta)
        self.dp_accountant.step(levels_per_unit, members)

    def aggregate(
        self, updates: torch.Tensor, weights: torch.Tensor, r: int, byzantine: Sequence[int] = ()
    ) -> _SecureOutcome:
        """The round as the network runs it: each peer clips its own update into the agreed
        range (`clip=True`, as `node.secure.SecureCodec` does; a non-finite value goes as the
        range's edge or 0), Byzantine peers with a ring attack encrypt their ring values, and
        the decrypted mean is rejected when it does not decode or breaks the aggregate bound."""
        from flchain.crypto.aggregate_bound import bound_for
        from flchain.crypto.secure_sum import (
            SecureAggregationConfig,
            secure_fedavg,
            weight_shares,
        )

        raw = updates.detach().to(device="cpu", dtype=torch.float64)
        c = self.bound
        outside = ~torch.isfinite(raw) | (raw.abs() > c)
        sent = torch.nan_to_num(raw, nan=0.0, posinf=c, neginf=-c)
        attacks = dict.fromkeys(byzantine, self.ring_attack) if self.ring_attack else None
        shares = weight_shares({i: float(w) for i, w in enumerate(weights.tolist())})
        config = SecureAggregationConfig(
            c,
            len(shares),
            self.config.secure_bits,
            self.config.secure_key_bits,
            clip=True,
            noise=self.noise,
        )
        # A ring attacker replaces its noisy levels: only the other members' shares are in.
        self._account(
            config.levels_per_unit(shares), len(shares) - len(attacks or {}), raw.shape[1]
        )
        outcome = dict(decryptor=self.decryptor(r), bound=0.0, clipped=int(outside.sum()))
        try:
            result = secure_fedavg(
                sent,
                weights,
                value_range=c,
                bits=self.config.secure_bits,
                key_bits=self.config.secure_key_bits,
                clip=True,
                keypair=self.keypair,
                mask_keys=self.mask_keys,
                task=self.task,
                round_index=r,
                verify=True,
                ring_attacks=attacks,
                noise=self.noise,
                noise_seed=_stream_seed(self.config.seed, _SKELLAM_STREAM),
            )
        except CryptoError as exc:  # a ring value pushed a slot sum past the range's edge
            return _SecureOutcome(update=None, error=None, rejected=str(exc), **outcome)
        outcome["bound"] = float(result.error_bound)
        # Plaintext FedAvg of what the peers meant to send (inf/NaN there make the error so).
        plain = torch.tensor(list(shares.values()), dtype=torch.float64) @ raw
        secure = result.update.to(torch.float64)
        noise = result.noise if result.noise is not None else torch.zeros_like(secure)
        error = float((secure - noise - plain).abs().max())
        limit = bound_for(
            self.config.dp_clip,
            self.config.dp_noise,
            list(shares.values()),
            result.error_bound,
            self.noise.min_members if self.noise is not None else None,
        )
        rejected = None
        if limit is not None:
            try:
                limit.check(secure)
            except CryptoError as exc:
                rejected = str(exc)
        return _SecureOutcome(update=secure, error=error, rejected=rejected, **outcome)


def _privacy_accountant(config: SimulationConfig) -> PrivacyAccountant | None:
    """Each peer's running epsilon: one Gaussian release a round, replace-one adjacency (the
    accountant's default, sensitivity 2C: `flchain.crypto.dp`)."""
    if not config.dp_enabled:
        return None
    from flchain.crypto.dp import PrivacyAccountant

    return PrivacyAccountant(config.dp_noise, sample_rate=1.0, delta=config.dp_delta)


class Simulation:
    """One federated run. Build it, then call `run()`; every random draw derives from the seed."""

    def __init__(self, config: SimulationConfig) -> None:
        validate_config(config)
        self.config = config
        self.device = pick_device(config.device)
        self.dataset = load_dataset(config.dataset, seed=config.seed)
        self.train_config = TrainConfig.of(config)
        self.byzantine_ids = byzantine_indices(config.nodes, config.byzantine, config.seed)
        self.public_x, self.public_y, self.clients = self._split_data()
        torch.manual_seed(config.seed)
        self.model = build_model(config.model, self.dataset.input_shape, self.dataset.num_classes)
        self.global_params = flatten_params(self.model)
        self._history: dict[int, torch.Tensor] = {0: self.global_params}
        self.credits: torch.Tensor | None = None
        self.rollback = Rollback()
        self._rolled_back = 0
        self._lineage = [_Good(0, self.global_params, None, Rollback())]
        # The alarms that reverted the last round: they count in the next round's check, as a
        # node counts the alarms raised on the round they reverted (and nobody judges again).
        self._reverting_alarms: torch.Tensor | None = None
        self.accountant = _privacy_accountant(config)
        self.secure = _SecureAggregator(config) if config.secure else None
        self.stragglers = StragglerSchedule(
            config.nodes, config.stragglers, config.max_delay, config.seed
        )

    # ----------------------------------------------------------------- set-up
    def _split_data(self) -> tuple[torch.Tensor, torch.Tensor, list[_Client]]:
        """Every peer's shard, cut as a node cuts its own (`flchain.peer_data`): the public
        set comes off first only where the rule scores on one, as on the network."""
        cfg, data = self.config, self.dataset
        labels = data.y_train.numpy()
        public_idx = np.zeros(0, dtype=np.int64)
        rest_idx = np.arange(len(labels), dtype=np.int64)
        if needs_public_data(cfg.rule, cfg.secure):
            public_idx, rest_idx = split_public(
                len(labels), cfg.public_fraction, seed=cfg.seed, labels=labels
            )
        clients = []
        for i in range(cfg.nodes):
            idx = torch.from_numpy(
                shard_indices(
                    labels,
                    rest_idx,
                    cfg.nodes,
                    i,
                    cfg.partition,
                    alpha=cfg.alpha,
                    classes_per_client=cfg.classes_per_client,
                    seed=cfg.seed,
                )
            )
            byzantine = i in self.byzantine_ids
            x, y = poisoned(
                cfg.attack if byzantine else None,
                data.x_train[idx],
                data.y_train[idx],
                num_classes=data.num_classes,
                seed=cfg.seed,
                index=i,
                params=cfg.attack_params,
            )
            client = _Client(i, x, y, byzantine)
            if cfg.rule == "siren":
                # Siren's clients hold out a tenth of their data for their alarms.
                val, train = siren_validation(len(y), cfg.seed, i)
                client.val_x, client.val_y = x[val], y[val]
                client.x, client.y = x[train], y[train]
            clients.append(client)
        pub = torch.from_numpy(public_idx)
        return data.x_train[pub], data.y_train[pub], clients

    # ----------------------------------------------------------------- round
    def run(self, on_round: Callable[[RoundRecord], None] | None = None) -> SimulationResult:
        """Run every round; a run whose global model stops being finite ends at that round
        (training on from NaN weights says nothing) and reports `diverged_round`."""
        records = []
        diverged_round = None
        for r in range(1, self.config.rounds + 1):
            record = self.run_round(r)
            if record.aborted and records:
                records[-1] = dataclasses.replace(records[-1], reverted=True)
            records.append(record)
            if on_round is not None:
                on_round(record)
            if record.diverged:
                diverged_round = r
                break
        load_flat_params(self.model, self.global_params)
        return SimulationResult(
            config=self.config,
            rounds=records,
            byzantine_ids=self.byzantine_ids,
            num_params=int(self.global_params.numel()),
            device=str(self.device),
            model_bytes=model_to_bytes(self.model),
            diverged_round=diverged_round,
        )

    def run_round(self, r: int) -> RoundRecord:
        """Round r (1-based) starts from global version r-1 and produces version r.

        Stragglers (`flchain.stragglers`): only the peers not in flight start, from version
        r-1; each update is built in the round it starts in and delivered `delay` rounds later,
        and the round aggregates what arrives: the fresh updates and the late ones that
        started 1..D rounds ago. Without stragglers every peer starts and arrives each round.
        """
        cfg = self.config
        started = time.perf_counter()
        if self._reverting_alarms is not None:
            alarms, self._reverting_alarms = self._reverting_alarms, None
        else:
            alarms = self._client_alarms(r)
            if self._alarms_revert(alarms):
                return self._revert(r, alarms, started)
        delays = self.stragglers.start(r)
        senders = [c for c in self.clients if c.index in delays]
        updates: list[torch.Tensor | None] = []
        losses = []
        for client in senders:
            if client.byzantine and cfg.attack in _ATTACKS_WITHOUT_OWN_TRAINING:
                updates.append(None)
                continue
            try:
                delta, loss = self._train(client, r - 1, r)
            except TrainingError:
                # The global model is so far gone that honest training blows up: the attack won.
                none = torch.zeros(cfg.nodes, dtype=torch.bool)
                return self._record(r, none, losses, torch.zeros(0), alarms, started, diverged=True)
            updates.append(delta)
            losses.append(loss)
        if senders:
            sent = self._finish(updates, r, senders)
            for client, row in zip(senders, sent, strict=True):
                self.stragglers.post(client.index, r, delays[client.index], row)
        arrivals = self.stragglers.collect(r)
        if self.secure is None:  # aggregated in content order, as nodes do (secure sums exactly)
            arrivals = [arrivals[k] for k in canonical_order([a.update for a in arrivals])]
        staleness = torch.tensor([a.staleness for a in arrivals], dtype=torch.long)
        accepted = torch.zeros(cfg.nodes, dtype=torch.bool)
        secure = None
        if arrivals:
            stacked = torch.stack([a.update for a in arrivals])
            # Weighted as on the network: capped sample counts, uniform for robust rules
            # (secure mode aggregates as FedAvg, siren included: its alarms judge the aggregate
            # only).
            capped = [
                capped_samples(
                    claimed_samples(len(self.clients[a.peer].y), cfg.dp_noise), cfg.max_samples
                )
                for a in arrivals
            ]
            chosen = rule_weights(cfg.rule, cfg.robust_weights, capped)
            if self.secure is not None:  # equal shares, as node/secure.py weighs the mask set
                chosen = [1.0] * len(arrivals)
            weights = torch.tensor(chosen, dtype=torch.float64)  # as the node weighs
            if self.secure is not None:  # no stragglers (config): every peer arrives, in order
                secure = self.secure.aggregate(stacked, weights, r, self.byzantine_ids)
                accepted, alarms = self._secure_step(secure)
            else:
                peers = [a.peer for a in arrivals]
                accepted[peers] = self._plaintext_step(r, arrivals, weights, alarms[peers]).cpu()
        self._remember(r)
        if cfg.rule == "siren" and self.secure is None:
            rollback = dataclasses.replace(self.rollback)
            credits = None if self.credits is None else self.credits.clone()
            t = self._lineage[-1].index + 1
            self._lineage.append(_Good(t, self.global_params, credits, rollback))
            del self._lineage[:-_LINEAGE_KEPT]
        diverged = not bool(torch.isfinite(self.global_params).all())
        return self._record(
            r, accepted, losses, staleness, alarms, started, diverged=diverged, secure=secure
        )

    def _reverts_on_alarms(self) -> bool:
        """Whether alarms can revert rounds here, as the contract's alarm_bps does on the
        network: Siren in plaintext and synchronous (secure mode's alarms judge the candidate
        aggregate instead; stragglers have no chain counterpart)."""
        cfg = self.config
        return cfg.rule == "siren" and not cfg.secure and cfg.stragglers == 0

    def _alarms_revert(self, alarms: torch.Tensor) -> bool:
        """The contract's test, per head: alarms * 10000 >= alarm_bps * members. With every
        reputation equal (and at 10000, whatever they are) it is the chain's decision."""
        if not self._reverts_on_alarms() or self._lineage[-1].index == 0:
            return False
        return int(alarms.sum()) * 10_000 >= self.config.alarm_bps * self.config.nodes

    def _revert(self, r: int, alarms: torch.Tensor, started: float) -> RoundRecord:
        """Round r - 1's model is reverted and round r aborted, as the contract does when the
        alarms reach alarm_bps: the good model is again the one round r - 1 trained from, with
        Siren's credits and rollback state as they were then. Nobody trains in round r (a node
        forgets an aborted round's training), so a peer that alarmed still resumes from its own
        model next round, and the next round's check counts these alarms."""
        self._lineage.pop()
        good = self._lineage[-1]
        self.global_params = good.model
        self.credits = None if good.credits is None else good.credits.clone()
        self.rollback = dataclasses.replace(good.rollback)
        self._rolled_back = 0
        self._reverting_alarms = alarms
        self._remember(r)
        none = torch.zeros(self.config.nodes, dtype=torch.bool)
        record = self._record(r, none, [], torch.zeros(0), alarms, started)
        return dataclasses.replace(record, aborted=True, global_digest="")

    def _plaintext_step(
        self,
        r: int,
        arrivals: list[Arrival],
        weights: torch.Tensor,
        alarms: torch.Tensor,
    ) -> torch.Tensor:
        """Apply the configured rule to the round's arrived updates; returns who of them was
        accepted. Fewer arrivals than peers (stragglers in flight) degrade the rule's
        parameters as on the network (`fit_params`)."""
        cfg = self.config
        peers = [a.peer for a in arrivals]
        side = self._side_inputs(arrivals, alarms)
        stacked = self._rule_updates(arrivals)
        rule, params = cfg.rule, dict(cfg.rule_params)
        if len(arrivals) < cfg.nodes:
            rule, params = fit_params(rule, params, len(arrivals))
        if rule == "siren":
            params.setdefault("rounds", cfg.rounds)  # credit limit int(0.45 * T), T this run's
        if rule == "sageflow":
            # The reference's gamma schedule runs in its asynchronous setup only (its
            # synchronous one mixes nothing in); round_index is its 0-based epoch.
            params["round_index"] = r - 1
            if cfg.stragglers > 0:
                params.setdefault("gamma_every", ASYNC_GAMMA_EVERY)
        result = aggregate(
            rule,
            stacked,
            weights,
            deterministic=cfg.deterministic,
            **params,
            **side,
        )
        if "credits" in result.info:
            if self.credits is None:
                self.credits = fresh_credits(cfg.nodes, result.info["max_credit"])
            self.credits[peers] = torch.as_tensor(result.info["credits"], dtype=torch.float64)
        base = self.global_params
        self._rolled_back = 0
        if cfg.rule == "siren":
            # Siren's rollback: a round that caught an attacker applies its accepted updates to
            # the global model of t-1 or t-2 (aggregation.siren.Rollback); t counts the good
            # rounds behind the current model (a reverted one is not among them, as on chain).
            t = self._lineage[-1].index
            lag = self.rollback.step(t, result.info["dropped_any"], result.info["dropped_eligible"])
            self._rolled_back = lag
            base = self._lineage[-1 - lag].model  # lag <= t, and t-2 is always kept
        self.global_params = base + cfg.server_lr * result.update.to(torch.float32)
        return result.accepted

    def _secure_step(self, outcome: _SecureOutcome) -> tuple[torch.Tensor, torch.Tensor]:
        """FedAvg through secure aggregation, plus Siren's alarms when the rule is siren.

        The aggregate is all anyone learns, so the alarms are about the candidate global model:
        a majority of alarms rejects it (nobody is accepted and the global model stays). A
        mean every member rejects (it does not decode, or breaks the aggregate bound) fails the
        round the same way, as on the network.
        """
        cfg = self.config
        if outcome.update is None or outcome.rejected is not None:
            for client in self.clients:
                client.resume_local = False
            none = torch.zeros(cfg.nodes, dtype=torch.bool)
            return none, none.clone()
        step = outcome.update.to(device=self.global_params.device, dtype=torch.float32)
        candidate = self.global_params + cfg.server_lr * step
        accepted = torch.ones(cfg.nodes, dtype=torch.bool)
        alarms = torch.zeros(cfg.nodes, dtype=torch.bool)
        if cfg.rule == "siren":
            alarms = self._candidate_alarms(candidate)
            if cfg.attack in SECURE_ATTACKS:  # a ring attacker wants its mean applied
                alarms[self.byzantine_ids] = False
            if 2 * int(alarms.sum()) > cfg.nodes:
                # Rejected: the global model stays, so nobody needs to resume from its own.
                for client in self.clients:
                    client.resume_local = False
                return torch.zeros(cfg.nodes, dtype=torch.bool), alarms
        self.global_params = candidate
        return accepted, alarms

    def _train(self, client: _Client, base_version: int, r: int) -> tuple[torch.Tensor, float]:
        """The peer's pipeline up to its trained update (`flchain.pipeline.train_step`, the
        node's), against global version `base_version`. A Siren peer whose last alarm was
        raised trains from its own previous local model instead and still reports
        local - global, as the reference's `agents.py` (`agent`) does."""
        start = client.last_local if client.resume_local else None
        client.resume_local = False
        trained = train_step(
            Peer(self.model, client.x, client.y, self.train_config, self.device),
            self._history[base_version],
            start=start,
            seed=self.config.seed,
            index=client.index,
            round_=r,
        )
        client.last_local = own_model(trained, self._history[base_version], self.config.dp_clip)
        return trained.update, trained.loss

    def _finish(
        self,
        updates: list[torch.Tensor | None],
        r: int,
        clients: Sequence[_Client] | None = None,
    ) -> torch.Tensor:
        """The rest of every peer's pipeline (`flchain.pipeline.finish`, the node's): attack
        -> clip -> noise, one row per update of `clients` (default all; stragglers in flight
        send nothing). A Byzantine peer's attack crafts from the honest trained updates of the
        same peers (before their clipping and noise, the stage its own update is at). Every
        peer is clipped and noised, Byzantine ones too, as nodes running this code are; in
        secure mode the peers only clip (distributed DP adds the noise in the secure sum,
        `_SecureAggregator`). Accounts one more release."""
        cfg = self.config
        clients = clients or self.clients
        privacy = Privacy(cfg.dp_clip, 0.0 if self.secure is not None else cfg.dp_noise)
        honest = [u for c, u in zip(clients, updates, strict=True) if not c.byzantine]
        benign = torch.stack([u for u in honest if u is not None]) if honest else None
        if benign is not None and len(benign):  # in content order, as a node's channel has them
            benign = benign[canonical_order(list(benign))]
        out = []
        for client, update in zip(clients, updates, strict=True):
            attack = None
            if client.byzantine and cfg.attack in UPDATE_ATTACKS:
                attack = self._attack_hook(benign)
            sent = finish(
                update, attack=attack, privacy=privacy, seed=cfg.seed, index=client.index, round_=r
            )
            out.append(sent)
        if self.accountant is not None:
            self.accountant.step()
        return torch.stack(out)

    def _attack_hook(self, benign: torch.Tensor | None) -> AttackHook:
        """`_finish`'s attack step: the configured update attack with the simulation's
        omniscient view (the honest trained updates of the round; the peer's own when no
        honest peer sends this round). An attacker that skipped training crafts from zeros."""
        cfg = self.config

        def hook(own: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
            if own is None:
                like = benign[0] if benign is not None else self.global_params
                own = torch.zeros_like(like)
            context = AttackContext(
                honest_updates=benign if benign is not None else own.unsqueeze(0),
                num_clients=cfg.nodes,
                num_byzantine=cfg.byzantine,
                generator=generator,
                params=cfg.attack_params,
            )
            return apply(str(cfg.attack), own, context)

        return hook

    def _rule_updates(self, arrivals: list[Arrival]) -> torch.Tensor:
        """The arrived updates as the rule takes them. SageFlow averages MODELS per staleness
        group (`flchain.aggregation.sageflow`), so a late update, sent relative to the global
        version it trained from, is shifted to model - current global; other rules take every
        update as sent and apply it to the current model (delayed-gradient semantics)."""
        current = self.global_params
        rows = []
        for a in arrivals:
            update = a.update
            if self.config.rule == "sageflow" and a.staleness > 0:
                update = update + (self._history[a.base_version] - current).to(update.device)
            rows.append(update)
        return torch.stack(rows)

    def _remember(self, r: int) -> None:
        self._history[r] = self.global_params
        # Late updates come from up to D versions back (Siren's rollback reads its lineage).
        oldest = r - self.config.max_delay
        for version in [v for v in self._history if v < oldest]:
            del self._history[version]

    # ----------------------------------------------------------------- side inputs
    def _client_alarms(self, r: int) -> torch.Tensor:
        """Siren's client-side check (`aggregation.siren.client_alarm`) as round r opens, on
        the model of round r - 1: does the peer's own previous local model beat it on its
        held-out validation split by more than C_l times its own accuracy? A peer that alarms
        trains from its own model this round. Byzantine peers with update attacks alarm from
        round 2 on regardless (`attacks.always_alarms`), as on the network."""
        alarms = torch.zeros(self.config.nodes, dtype=torch.bool)
        if self.config.secure or "alarms" not in required_inputs(self.config.rule) or r == 1:
            return alarms
        for client in self.clients:
            if client.byzantine and always_alarms(self.config.attack):
                alarms[client.index] = True
                continue
            if client.last_local is None:
                continue
            alarm = self._alarm(client, self.global_params)
            alarms[client.index] = alarm
            client.resume_local = alarm  # a data attacker checks (and resumes) as a node does
        return alarms

    def _alarm(self, client: _Client, global_params: torch.Tensor) -> bool:
        """One peer's Siren alarm on `global_params`, judged on its validation split (never
        under DP noise: `taskconfig.raises_alarms`)."""
        if not raises_alarms(self.config.dp_noise):
            return False
        if client.last_local is None or client.val_x is None or len(client.val_y) == 0:
            return False
        load_flat_params(self.model, global_params)
        global_acc = evaluate(self.model, client.val_x, client.val_y, device=self.device).accuracy
        load_flat_params(self.model, client.last_local)
        local_acc = evaluate(self.model, client.val_x, client.val_y, device=self.device).accuracy
        load_flat_params(self.model, self.global_params)
        return client_alarm(global_acc, local_acc, self.config.alarm_threshold)

    def _candidate_alarms(self, candidate: torch.Tensor) -> torch.Tensor:
        """Secure mode's alarms: does the candidate global model do worse than the peer's fresh
        local model on the peer's data? Byzantine peers with update attacks always cry wolf."""
        cfg = self.config
        alarms = torch.zeros(cfg.nodes, dtype=torch.bool)
        for client in self.clients:
            if client.byzantine and always_alarms(cfg.attack):
                alarms[client.index] = True
            elif client.last_local is not None:
                alarm = self._alarm(client, candidate)
                alarms[client.index] = alarm
                client.resume_local = alarm  # a data attacker checks (and resumes) as a node does
        return alarms

    def _side_inputs(
        self, arrivals: list[Arrival], alarms: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The rule's per-update inputs for the arrived updates: staleness, the arrivals'
        alarms and credits, and each sender's model (its base version plus its update) scored
        on the public split."""
        rule = self.config.rule
        needed = set(required_inputs(rule)) | set(optional_inputs(rule))
        side: dict[str, torch.Tensor] = {}
        if "staleness" in needed:
            side["staleness"] = torch.tensor([a.staleness for a in arrivals], dtype=torch.long)
        if "alarms" in needed:
            side["alarms"] = alarms
        if "credits" in needed and self.credits is not None:
            side["credits"] = self.credits[[a.peer for a in arrivals]]
        if needed & {"public_loss", "public_entropy", "public_accuracy"}:
            # Scored as every node scores (`flchain.public_set.update_scores`: float64 on the
            # CPU, quantized), each update against the model it was trained from.
            public = PublicSet(
                self.public_x, self.public_y, np.zeros(0, np.int64), self.dataset.num_classes
            )
            # One scoring pass per base version (one in a synchronous round), rows kept in
            # arrival order.
            by_base: dict[int, list[int]] = {}
            for k, a in enumerate(arrivals):
                by_base.setdefault(a.base_version, []).append(k)
            loss, entropy, accuracy = ([0.0] * len(arrivals) for _ in range(3))
            for version, rows in by_base.items():
                stacked = torch.stack([arrivals[k].update for k in rows])
                scores = update_scores(self.model, self._history[version], stacked, public)
                for j, k in enumerate(rows):
                    loss[k], entropy[k] = scores.loss[j], scores.entropy[j]
                    accuracy[k] = scores.accuracy[j]
            side.update(Scores(loss, entropy, accuracy).side_inputs(sorted(needed)))
            side = {k: v for k, v in side.items() if k in needed}
        return side

    # ----------------------------------------------------------------- metrics
    def _epsilon(self) -> float | None:
        """The running epsilon a user is told: in secure mode with DP noise, the decrypted
        sum's (distributed Skellam noise, `crypto.distributed_dp`); otherwise each peer's own
        release's (the Gaussian accountant); None without DP."""
        if self.secure is not None and self.secure.dp_accountant is not None:
            return self.secure.dp_accountant.epsilon
        return self.accountant.epsilon if self.accountant is not None else None

    def _record(
        self,
        r: int,
        accepted: torch.Tensor,
        losses: list[float],
        staleness: torch.Tensor,
        alarms: torch.Tensor,
        started: float,
        *,
        diverged: bool = False,
        secure: _SecureOutcome | None = None,
    ) -> RoundRecord:
        load_flat_params(self.model, self.global_params)
        data = self.dataset
        ev = evaluate(self.model, data.x_test, data.y_test, device=self.device, channels_last=True)
        asr = None
        if self.config.attack == "backdoor":
            asr = attack_success_rate(
                self.model,
                data.x_test,
                data.y_test,
                params=self.config.attack_params,
                target=int(self.config.attack_params.get("target", 0)),
                device=self.device,
            )
        byz = torch.zeros(self.config.nodes, dtype=torch.bool)
        byz[self.byzantine_ids] = True
        accepted = accepted.to(torch.bool).cpu()
        return RoundRecord(
            round=r,
            accuracy=ev.accuracy,
            loss=ev.loss,
            train_loss=float(np.mean(losses)) if losses else float("nan"),
            accepted_honest=int((accepted & ~byz).sum()),
            honest=int((~byz).sum()),
            accepted_byzantine=int((accepted & byz).sum()),
            byzantine=int(byz.sum()),
            stale_updates=int((staleness > 0).sum()),
            alarms=int(alarms.sum()),
            attack_success_rate=asr,
            seconds=time.perf_counter() - started,
            diverged=diverged,
            epsilon=self._epsilon(),
            decryptor=secure.decryptor if secure is not None else None,
            secure_error=secure.error if secure is not None else None,
            secure_bound=secure.bound if secure is not None else None,
            secure_clipped=secure.clipped if secure is not None else None,
            secure_rejected=secure.rejected if secure is not None else None,
            rollback=self._rolled_back,
            global_digest="0x" + hashlib.sha256(model_to_bytes(self.model)).hexdigest(),
        )


def simulate(
    config: SimulationConfig, on_round: Callable[[RoundRecord], None] | None = None
) -> SimulationResult:
    """Run one simulation end to end (the library form of `flchain simulate`)."""
    return Simulation(config).run(on_round)
