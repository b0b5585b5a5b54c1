"""The node's compute: local training, update blobs, deterministic aggregation, Siren checks.

Synchronous and free of networking so the trio engine runs it in a worker thread, and so it
can be tested on its own. Everything that crosses the wire is safetensors bytes checked here
before use (size, names, dtype, shape, finiteness); nothing is unpickled.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from flchain.aggregation import NETWORK_RULES, AggregateResult, aggregate, fit_params
from flchain.aggregation.siren import CLIENT_THRESHOLD, client_alarm, validation_split
from flchain.attacks import (
    DATA_ATTACKS,
    UPDATE_ATTACKS,
    AttackContext,
    apply,
    poison_dataset,
)
from flchain.crypto.dp import clip_and_noise
from flchain.models import (
    TrainConfig,
    build_model,
    evaluate,
    flatten_params,
    load_dataset,
    load_flat_params,
    local_update,
    model_from_bytes,
    model_to_bytes,
    partition,
    pick_device,
)
from flchain.taskconfig import DataSpec, TaskConfig, initial_model_bytes, rule_weights

UPDATE_KEY = "update"


class BlobError(ValueError):
    """A blob from a peer that is not a valid update or model for this task."""


@dataclass(frozen=True)
class LocalUpdate:
    blob: bytes
    samples: int
    loss: float


@dataclass(frozen=True)
class AggregateOutcome:
    model_blob: bytes
    accepted: list[int]  # member indices whose updates went into the model
    invalid: list[int] = field(default_factory=list)  # blobs that were not valid updates


class Learner:
    """One node's model, data shard and rule, as the task config and data spec define them."""

    def __init__(
        self,
        config: TaskConfig,
        data: DataSpec,
        *,
        device: str = "auto",
        attack: str | None = None,
        attack_params: dict | None = None,
        seed: int = 0,
        dp_clip: float | None = None,
        dp_noise: float | None = None,
        siren_validation: bool = False,
    ) -> None:
        """siren_validation: hold out Siren's validation split now (`hold_out_validation`);
        the engine does it before the first training of a task whose alarm window is open."""
        # Rules whose server side judges candidates on data a server holds (rule_spec's
        # `network` fact): on the network each node would judge on its own data and honest
        # nodes would derive different models. Siren's client-side alarms run on chain.
        if config.rule not in NETWORK_RULES:
            raise ValueError(
                f"rule {config.rule!r} evaluates candidates on server-held data, which a "
                "decentralized network has not got; on the network use one of "
                f"{', '.join(NETWORK_RULES)} (Siren alarms run on chain)"
            )
        self.config = config
        # A node may protect its data more than the task demands, never less: the tighter clip
        # and the larger noise multiplier win.
        clips = [c for c in (config.dp_clip, dp_clip) if c is not None]
        self.dp_clip: float | None = min(clips) if clips else None
        self.dp_noise = max(config.dp_noise, dp_noise or 0.0)
        if self.dp_noise > 0 and self.dp_clip is None:
            raise ValueError("DP noise needs a clipping norm (--dp-clip)")
        self.device = pick_device(device)
        self.attack = attack
        self.attack_params = dict(attack_params or {})
        self.seed = seed
        self.dataset = load_dataset(data.dataset, seed=config.seed)
        labels = self.dataset.y_train.numpy()
        shards = partition(labels, data.shards, data.partition, alpha=data.alpha, seed=config.seed)
        idx = torch.from_numpy(np.asarray(shards[data.shard]))
        self.x, self.y = self.dataset.x_train[idx], self.dataset.y_train[idx]
        if attack in DATA_ATTACKS:
            self.x, self.y = poison_dataset(
                attack,
                self.x,
                self.y,
                num_classes=self.dataset.num_classes,
                generator=torch.Generator().manual_seed(seed),
                params=self.attack_params,
            )
        self.model = build_model(config.model, self.dataset.input_shape, self.dataset.num_classes)
        self.num_params = int(flatten_params(self.model).numel())
        self.train_config = TrainConfig.of(config)
        self.last_local: torch.Tensor | None = None
        # Siren: the held-out split the alarms judge on (None until `hold_out_validation`), and
        # whether the last alarm was raised, so the next training starts from our own model.
        self._shard = data.shard
        self.val_x: torch.Tensor | None = None
        self.val_y: torch.Tensor | None = None
        self.resume_local = False
        if siren_validation:
            self.hold_out_validation()

    # ------------------------------------------------------------------ models and blobs
    def initial_model(self) -> bytes:
        return initial_model_bytes(self.config, self.dataset.input_shape, self.dataset.num_classes)

    def model_params(self, model_blob: bytes) -> torch.Tensor:
        """Flat parameters of a global model blob, validated against this task's model."""
        try:
            model_from_bytes(model_blob, self.model)
        except (ValueError, SafetensorError) as exc:
            raise BlobError(f"not a model of this task: {exc}") from exc
        return flatten_params(self.model)

    def encode_update(self, update: torch.Tensor) -> bytes:
        return st_save({UPDATE_KEY: update.detach().to("cpu", torch.float32).contiguous()})

    def decode_update(self, blob: bytes) -> torch.Tensor:
        """An update blob from a peer: exactly one finite float32 vector of the model's size."""
        if len(blob) > 64 + 4 * self.num_params + 256:
            raise BlobError(f"update blob of {len(blob)} bytes is larger than any valid one")
        try:
            tensors = st_load(blob)
        except (SafetensorError, ValueError, RuntimeError) as exc:
            raise BlobError(f"update blob is not safetensors: {exc}") from exc
        tensor = tensors.get(UPDATE_KEY)
        if set(tensors) != {UPDATE_KEY} or tensor is None:
            raise BlobError(f"update blob must hold one tensor {UPDATE_KEY!r}")
        if tensor.dtype != torch.float32 or tuple(tensor.shape) != (self.num_params,):
            raise BlobError(
                f"update has {tensor.dtype} {tuple(tensor.shape)}, "
                f"expected float32 ({self.num_params},)"
            )
        if not bool(torch.isfinite(tensor).all()):
            raise BlobError("update contains NaN or infinity")
        return tensor

    # ------------------------------------------------------------------ training
    def train(self, global_blob: bytes, round_: int) -> LocalUpdate:
        """Train on the local shard from the global model; apply this node's attack, if any.

        After a Siren alarm (`siren_alarm` returned True) training starts from our own previous
        local model instead, and the update is still local - global, as the reference's
        `agents.py` (`agent`) does."""
        base = self.model_params(global_blob)
        start = base
        if self.resume_local and self.last_local is not None:
            start = self.last_local
        self.resume_local = False
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + round_)
        _, local, result = local_update(
            self.model,
            start,
            self.x,
            self.y,
            self.train_config,
            generator=generator,
            device=self.device,
        )
        update = local - base
        self.last_local = local
        if self.attack in UPDATE_ATTACKS:
            context = AttackContext(
                honest_updates=update.unsqueeze(0),
                num_clients=2,
                num_byzantine=1,
                generator=torch.Generator().manual_seed(self.seed * 7919 + round_),
                params=self.attack_params,
            )
            update = apply(self.attack, update, context)
        if self.dp_clip is not None:
            update = clip_and_noise(
                update,
                self.dp_clip,
                self.dp_noise,
                torch.Generator().manual_seed(self.seed * 104_729 + round_),
            )
        return LocalUpdate(self.encode_update(update), len(self.y), result.loss)

    # ------------------------------------------------------------------ aggregation
    def aggregate(
        self,
        global_blob: bytes,
        updates: dict[int, bytes],
        weights: dict[int, float],
    ) -> AggregateOutcome:
        """Deterministic aggregation of the verified updates (member index -> blob).

        `weights` are the chain's consensus weights (claimed samples capped at the task's
        max_samples, times reputation); robust rules weigh the updates uniformly unless the
        task config says robust_weights="consensus" (`rule_weights`). Invalid blobs are left
        out (never accepted). The result is bit-identical on every node that fetched the
        same blobs: float64 CPU aggregation, fixed member order.
        """
        base = self.model_params(global_blob)
        valid: dict[int, torch.Tensor] = {}
        invalid: list[int] = []
        for index in sorted(updates):
            try:
                valid[index] = self.decode_update(updates[index])
            except BlobError:
                invalid.append(index)
        if not valid:
            return AggregateOutcome(global_blob, [], invalid)
        order = sorted(valid)
        stacked = torch.stack([valid[i] for i in order])
        consensus = [float(weights.get(i, 0.0)) for i in order]
        chosen = rule_weights(self.config.rule, self.config.robust_weights, consensus)
        w = torch.tensor(chosen, dtype=torch.float64)
        if float(w.sum()) <= 0:
            w = torch.ones(len(order), dtype=torch.float64)
        result = self._robust_aggregate(stacked, w)
        new = base + result.update.to(torch.float32)
        load_flat_params(self.model, new)
        accepted = [i for i, ok in zip(order, result.accepted.tolist(), strict=True) if ok]
        return AggregateOutcome(model_to_bytes(self.model), accepted, invalid)

    def apply_update(self, global_blob: bytes, update: torch.Tensor) -> bytes:
        """The next global model: base + update, rounded to float32 exactly as `aggregate` does
        (secure mode gets the mean update from the decrypted sum instead of from blobs)."""
        base = self.model_params(global_blob)
        flat = update.detach().to("cpu", torch.float64).reshape(-1)
        if flat.numel() != self.num_params or not bool(torch.isfinite(flat).all()):
            raise BlobError(f"an update of {self.num_params} finite values is needed")
        load_flat_params(self.model, base + flat.to(torch.float32))
        return model_to_bytes(self.model)

    def _robust_aggregate(self, stacked: torch.Tensor, weights: torch.Tensor) -> AggregateResult:
        """The task's rule with its parameters fitted to the updates that arrived
        (`fit_params`, from the rule's spec: Krum-family f lowered to n > 2f + 2, the median
        below three updates, a trimmed mean's beta that trims nothing trims one per side).
        Every honest node takes the same step, so the model stays bit-identical."""
        rule, params = fit_params(self.config.rule, self.config.rule_params, int(stacked.shape[0]))
        return aggregate(rule, stacked, weights, deterministic=True, **params)

    # ------------------------------------------------------------------ evaluation
    def test_accuracy(self, model_blob: bytes) -> float:
        load_flat_params(self.model, self.model_params(model_blob))
        ev = evaluate(self.model, self.dataset.x_test, self.dataset.y_test, device=self.device)
        return ev.accuracy

    def hold_out_validation(self) -> None:
        """Set Siren's validation split aside: a seeded tenth of the shard that this node
        never trains on from now on (`aggregation.siren.validation_split`). Idempotent."""
        if self.val_x is not None:
            return
        val, train = validation_split(len(self.y), self.config.seed * 1_000_003 + self._shard)
        self.val_x, self.val_y = self.x[val], self.y[val]
        self.x, self.y = self.x[train], self.y[train]

    def siren_alarm(self, model_blob: bytes, threshold: float = CLIENT_THRESHOLD) -> bool:
        """Siren's client check (`aggregation.siren.client_alarm`, the reference's
        `agents.py` `alarm`): does our own previous local model beat the new global model on
        our held-out validation split by more than C_l times its own accuracy
        (local > global + C_l * local)? If so, the next `train` starts from our own model.

        The split is held out here if the engine has not done so yet; the engine does it
        before the task's first training, so the split is never trained on."""
        self.hold_out_validation()
        self.resume_local = False
        if self.last_local is None or self.val_y is None or len(self.val_y) == 0:
            return False
        load_flat_params(self.model, self.model_params(model_blob))
        global_acc = evaluate(self.model, self.val_x, self.val_y, device=self.device).accuracy
        load_flat_params(self.model, self.last_local)
        local_acc = evaluate(self.model, self.val_x, self.val_y, device=self.device).accuracy
        self.resume_local = client_alarm(global_acc, local_acc, threshold)
        return self.resume_local
