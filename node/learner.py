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

from flchain.aggregation import AggregateResult, AggregationError, aggregate
from flchain.aggregation.siren import client_alarm
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
# Rules whose server-side step evaluates every candidate on data the server holds. On the network
# each node would judge on its own data and honest nodes would derive different models, so
# these run in `flchain simulate`; on the network Siren's client-side alarms run on chain for
# every task whose alarm window is open (docs/architecture.md, the round engine).
NETWORK_RULES_UNSUPPORTED = frozenset({"sageflow", "siren"})


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
    ) -> None:
        if config.rule in NETWORK_RULES_UNSUPPORTED:
            raise ValueError(
                f"rule {config.rule!r} evaluates candidates on server-held data, which a "
                "decentralized network has not got; on the network use one of fedavg, median, "
                "trimmed_mean, krum, multikrum, bulyan, geomed (Siren alarms run on chain)"
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
        """Train on the local shard from the global model; apply this node's attack, if any."""
        base = self.model_params(global_blob)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + round_)
        update, local, result = local_update(
            self.model,
            base,
            self.x,
            self.y,
            self.train_config,
            generator=generator,
            device=self.device,
        )
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
        """The task's rule; when fewer updates arrived than its `f` allows (peers withheld),
        lower f step by step, and below Krum's minimum of three use the median. Every honest
        node takes the same steps, so the model stays bit-identical."""
        params = dict(self.config.rule_params)
        while True:
            try:
                return aggregate(self.config.rule, stacked, weights, deterministic=True, **params)
            except AggregationError:
                f = params.get("f")
                if isinstance(f, int) and f > 0:
                    params["f"] = f - 1
                    params.pop("m", None)
                    continue
                if self.config.rule in {"krum", "multikrum", "bulyan"}:
                    return aggregate("median", stacked, weights, deterministic=True)
                raise

    # ------------------------------------------------------------------ evaluation
    def test_accuracy(self, model_blob: bytes) -> float:
        load_flat_params(self.model, self.model_params(model_blob))
        ev = evaluate(self.model, self.dataset.x_test, self.dataset.y_test, device=self.device)
        return ev.accuracy

    def siren_alarm(self, model_blob: bytes, threshold: float = 0.05) -> bool:
        """Siren's client check: is the new global model worse than our own last local one
        on our own data?"""
        if self.last_local is None:
            return False
        load_flat_params(self.model, self.model_params(model_blob))
        global_acc = evaluate(self.model, self.x, self.y, device=self.device).accuracy
        load_flat_params(self.model, self.last_local)
        local_acc = evaluate(self.model, self.x, self.y, device=self.device).accuracy
        return client_alarm(global_acc, local_acc, threshold)
