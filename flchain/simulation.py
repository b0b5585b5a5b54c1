"""Standalone federated simulation: the network node's training, attack and aggregation code,
run for N simulated peers in one process.

The point is that experiments use exactly the code the real nodes run — `flchain.models` for
training, `flchain.attacks` for Byzantine peers, `flchain.aggregation` for the rule — so a result
here predicts the network's behaviour, minus the chain and the wire.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from flchain.aggregation import (
    RULES,
    aggregate,
    optional_inputs,
    required_inputs,
    rule_parameters,
)
from flchain.aggregation.siren import client_alarm
from flchain.attacks import (
    DATA_ATTACKS,
    UPDATE_ATTACKS,
    AttackContext,
    apply,
    attack_success_rate,
    poison_dataset,
)
from flchain.config import ConfigError, SimulationConfig
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
    partition,
    pick_device,
    split_public,
    train_local,
)

# Update attacks whose output does not depend on the attacker's own honest update: the
# attacker need not train, which keeps large benchmark matrices affordable.
_ATTACKS_WITHOUT_OWN_TRAINING = frozenset({"zero", "gaussian", "alie", "ipm"})
# Public-set loss reported for a candidate model whose evaluation is not finite.
_WORST_LOSS = 1e30


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

    def to_json(self) -> dict[str, Any]:
        last = self.rounds[-1]
        return {
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
            "config": self.config.to_dict(),
            "rounds": [asdict(r) for r in self.rounds],
        }


@dataclass
class _Client:
    index: int
    x: torch.Tensor
    y: torch.Tensor
    byzantine: bool
    last_local: torch.Tensor | None = None  # flat params after its latest local training


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
    if config.attack is not None and config.attack not in (*UPDATE_ATTACKS, *DATA_ATTACKS):
        raise ConfigError(
            f"attack {config.attack!r} cannot run in a simulation; choose one of "
            f"{', '.join((*UPDATE_ATTACKS, *DATA_ATTACKS))}"
        )


class Simulation:
    """One federated run. Build it, then call `run()`; every random draw derives from the seed."""

    def __init__(self, config: SimulationConfig) -> None:
        validate_config(config)
        self.config = config
        self.device = pick_device(config.device)
        self.dataset = load_dataset(config.dataset, seed=config.seed)
        self.train_config = TrainConfig(
            epochs=config.local_epochs,
            batch_size=config.batch_size,
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            prox_mu=config.prox_mu,
        )
        self.byzantine_ids = self._pick_byzantine()
        self.public_x, self.public_y, self.clients = self._split_data()
        torch.manual_seed(config.seed)
        self.model = build_model(config.model, self.dataset.input_shape, self.dataset.num_classes)
        self.global_params = flatten_params(self.model)
        self._history: dict[int, torch.Tensor] = {0: self.global_params}
        self.credits: torch.Tensor | None = None

    # ----------------------------------------------------------------- set-up
    def _pick_byzantine(self) -> list[int]:
        rng = np.random.Generator(np.random.PCG64([self.config.seed, 0xB1]))
        chosen = rng.choice(self.config.nodes, size=self.config.byzantine, replace=False)
        return sorted(int(i) for i in chosen)

    def _split_data(self) -> tuple[torch.Tensor, torch.Tensor, list[_Client]]:
        cfg, data = self.config, self.dataset
        labels = data.y_train.numpy()
        public_idx, rest_idx = split_public(
            len(labels), cfg.public_fraction, seed=cfg.seed, labels=labels
        )
        shards = partition(
            labels[rest_idx],
            cfg.nodes,
            cfg.partition,
            alpha=cfg.alpha,
            classes_per_client=cfg.classes_per_client,
            seed=cfg.seed,
        )
        clients = []
        for i, shard in enumerate(shards):
            idx = torch.from_numpy(rest_idx[shard])
            x, y = data.x_train[idx], data.y_train[idx]
            byzantine = i in self.byzantine_ids
            if byzantine and cfg.attack in DATA_ATTACKS:
                x, y = poison_dataset(
                    cfg.attack,
                    x,
                    y,
                    num_classes=data.num_classes,
                    generator=torch.Generator().manual_seed(cfg.seed * 1000 + i),
                    params=cfg.attack_params,
                )
            clients.append(_Client(i, x, y, byzantine))
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
        """Round r (1-based) starts from global version r-1 and produces version r."""
        cfg = self.config
        started = time.perf_counter()
        alarms = self._client_alarms()
        staleness = self._draw_staleness(r)
        updates: list[torch.Tensor | None] = []
        losses, samples = [], []
        for client in self.clients:
            base_version = (r - 1) - int(staleness[client.index])
            if client.byzantine and cfg.attack in _ATTACKS_WITHOUT_OWN_TRAINING:
                updates.append(None)
                samples.append(len(client.y))
                continue
            try:
                delta, loss = self._train(client, base_version, r)
            except TrainingError:
                # The global model is so far gone that honest training blows up: the attack won.
                return self._record(
                    r,
                    torch.zeros(cfg.nodes, dtype=torch.bool),
                    losses,
                    staleness,
                    alarms,
                    started,
                    diverged=True,
                )
            updates.append(delta)
            losses.append(loss)
            samples.append(len(client.y))
        stacked = self._apply_update_attacks(updates, r)
        weights = torch.tensor(samples, dtype=torch.float32)
        side = self._side_inputs(stacked, staleness, alarms)
        result = aggregate(
            cfg.rule,
            stacked,
            weights,
            deterministic=cfg.deterministic,
            **cfg.rule_params,
            **side,
        )
        if "credits" in result.info:
            self.credits = torch.as_tensor(result.info["credits"])
        self.global_params = self.global_params + cfg.server_lr * result.update.to(torch.float32)
        self._remember(r)
        diverged = not bool(torch.isfinite(self.global_params).all())
        return self._record(
            r, result.accepted, losses, staleness, alarms, started, diverged=diverged
        )

    def _train(self, client: _Client, base_version: int, r: int) -> tuple[torch.Tensor, float]:
        base = self._history[base_version]
        load_flat_params(self.model, base)
        generator = torch.Generator().manual_seed(
            (self.config.seed * 1_000_003 + r) * 1_009 + client.index
        )
        trained = train_local(
            self.model,
            client.x,
            client.y,
            self.train_config,
            generator=generator,
            device=self.device,
            global_params=base if self.config.prox_mu > 0 else None,
        )
        local = flatten_params(self.model)
        client.last_local = local
        return local - base, trained.loss

    def _apply_update_attacks(self, updates: list[torch.Tensor | None], r: int) -> torch.Tensor:
        cfg = self.config
        if cfg.attack not in UPDATE_ATTACKS or not self.byzantine_ids:
            return torch.stack([u for u in updates if u is not None])
        honest = torch.stack(
            [u for c, u in zip(self.clients, updates, strict=True) if not c.byzantine]
        )
        out = []
        for client, update in zip(self.clients, updates, strict=True):
            if not client.byzantine:
                out.append(update)
                continue
            context = AttackContext(
                honest_updates=honest,
                num_clients=cfg.nodes,
                num_byzantine=cfg.byzantine,
                generator=torch.Generator().manual_seed(cfg.seed * 7919 + r * 131 + client.index),
                params=cfg.attack_params,
            )
            own = update if update is not None else torch.zeros_like(honest[0])
            out.append(apply(cfg.attack, own, context))
        return torch.stack(out)

    def _draw_staleness(self, r: int) -> torch.Tensor:
        """Stragglers: with probability P a peer's update is based on a global model up to D
        rounds old (never older than the initial model)."""
        cfg = self.config
        staleness = torch.zeros(cfg.nodes, dtype=torch.long)
        if cfg.stragglers <= 0 or r == 1:
            return staleness
        rng = np.random.Generator(np.random.PCG64([cfg.seed, 0x57A1E, r]))
        late = rng.random(cfg.nodes) < cfg.stragglers
        delays = rng.integers(1, cfg.max_delay + 1, size=cfg.nodes)
        for i in range(cfg.nodes):
            if late[i]:
                staleness[i] = min(int(delays[i]), r - 1)
        return staleness

    def _remember(self, r: int) -> None:
        self._history[r] = self.global_params
        oldest = r - max(self.config.max_delay, 0)
        for version in [v for v in self._history if v < oldest]:
            del self._history[version]

    # ----------------------------------------------------------------- side inputs
    def _client_alarms(self) -> torch.Tensor:
        """Siren's client-side check: does the current global model do worse than the peer's own
        latest local model on the peer's data? Byzantine peers raise alarms regardless."""
        alarms = torch.zeros(self.config.nodes, dtype=torch.bool)
        if "alarms" not in required_inputs(self.config.rule):
            return alarms
        load_flat_params(self.model, self.global_params)
        for client in self.clients:
            if client.last_local is None:
                continue
            if client.byzantine and self.config.attack in UPDATE_ATTACKS:
                alarms[client.index] = True
                continue
            global_acc = evaluate(self.model, client.x, client.y, device=self.device).accuracy
            load_flat_params(self.model, client.last_local)
            local_acc = evaluate(self.model, client.x, client.y, device=self.device).accuracy
            load_flat_params(self.model, self.global_params)
            alarms[client.index] = client_alarm(global_acc, local_acc, self.config.alarm_threshold)
        return alarms

    def _side_inputs(
        self, updates: torch.Tensor, staleness: torch.Tensor, alarms: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        rule = self.config.rule
        needed = set(required_inputs(rule)) | set(optional_inputs(rule))
        side: dict[str, torch.Tensor] = {}
        if "staleness" in needed:
            side["staleness"] = staleness
        if "alarms" in needed:
            side["alarms"] = alarms
        if "credits" in needed and self.credits is not None:
            side["credits"] = self.credits
        if needed & {"public_loss", "public_entropy", "public_accuracy"}:
            loss, entropy, accuracy = [], [], []
            for client, update in zip(self.clients, updates, strict=True):
                base = self._history[max(self._history) - int(staleness[client.index])]
                load_flat_params(self.model, base + update.to(torch.float32))
                ev = evaluate(self.model, self.public_x, self.public_y, device=self.device)
                if math.isfinite(ev.loss) and math.isfinite(ev.entropy):
                    loss.append(ev.loss)
                    entropy.append(ev.entropy)
                    accuracy.append(ev.accuracy)
                else:  # a model that evaluates to NaN/Inf is as bad as a model can be
                    loss.append(_WORST_LOSS)
                    entropy.append(math.log(self.dataset.num_classes))
                    accuracy.append(0.0)
            side["public_loss"] = torch.tensor(loss, dtype=torch.float64)
            side["public_entropy"] = torch.tensor(entropy, dtype=torch.float64)
            side["public_accuracy"] = torch.tensor(accuracy, dtype=torch.float64)
            side = {k: v for k, v in side.items() if k in needed}
        return side

    # ----------------------------------------------------------------- metrics
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
    ) -> RoundRecord:
        load_flat_params(self.model, self.global_params)
        data = self.dataset
        ev = evaluate(self.model, data.x_test, data.y_test, device=self.device)
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
        )


def simulate(
    config: SimulationConfig, on_round: Callable[[RoundRecord], None] | None = None
) -> SimulationResult:
    """Run one simulation end to end (the library form of `flchain simulate`)."""
    return Simulation(config).run(on_round)
