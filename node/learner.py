"""The node's compute: local training, update blobs, deterministic aggregation, Siren checks.

Synchronous and free of networking so the trio engine runs it in a worker thread, and so it
can be tested on its own. Everything that crosses the wire is safetensors bytes checked here
before use (size, names, dtype, shape, finiteness); nothing is unpickled.
"""

from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass, field

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from flchain import peer_data
from flchain.aggregation import (
    NETWORK_RULES,
    AggregateResult,
    aggregate,
    canonical_order,
    finite_rows,
    fit_params,
    optional_inputs,
    required_inputs,
)
from flchain.aggregation.siren import (
    CLIENT_THRESHOLD,
    Rollback,
    client_alarm,
    credit_limit,
    replay,
    settle,
)
from flchain.attacks import (
    UPDATE_ATTACKS,
    AttackContext,
    apply,
)
from flchain.models import (
    TrainConfig,
    build_model,
    evaluate,
    flatten_params,
    load_dataset,
    load_flat_params,
    model_from_bytes,
    model_to_bytes,
    pick_device,
)
from flchain.pipeline import AttackHook, Peer, Privacy, own_model, peer_update
from flchain.public_set import PublicSet, PublicSetError, derive, update_scores
from flchain.siren_defaults import DEFAULT_ROUNDS, FORGIVE, PENALTY
from flchain.taskconfig import (
    DataSpec,
    TaskConfig,
    initial_model_bytes,
    needs_public_data,
    raises_alarms,
    rule_weights,
)

UPDATE_KEY = "update"


class BlobError(ValueError):
    """A blob from a peer that is not a valid update or model for this task."""


@dataclass(frozen=True)
class LocalUpdate:
    blob: bytes
    samples: int
    loss: float


@dataclass(frozen=True)
class SirenRound:
    """What Siren's server side needs besides the round's updates, as every honest node reads
    it from the chain (node/engine.py): the members whose alarm counts this round, who
    committed an update, the (submitted, accepted) members of each round that built the
    current global model (oldest first; credits and rollback state are replayed from them),
    the global models of t-1 and t-2 along that lineage (nearest first, as many as exist),
    and the task's number of rounds (the credit limit int(0.45 * T))."""

    alarms: frozenset[int] = frozenset()
    submitted: tuple[int, ...] = ()
    lineage: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...] = ()
    history: tuple[bytes, ...] = ()
    rounds: int = DEFAULT_ROUNDS


@dataclass(frozen=True)
class AggregateOutcome:
    model_blob: bytes
    accepted: list[int]  # member indices whose updates went into the model
    invalid: list[int] = field(default_factory=list)  # blobs that were not valid updates
    rollback: int = 0  # Siren: the update went onto the global model of t - rollback


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
        noise_seed: int | None = None,
    ) -> None:
        """siren_validation: hold out Siren's validation split now (`hold_out_validation`);
        the engine does it before the first training of a task whose alarm window is open.
        noise_seed: seeds the DP noise; None (what a node runs with) draws a secret one from
        the OS, since anyone who knows it could subtract the noise (tests pass one to compare
        with the simulation)."""
        # Rules that run on the network (rule_spec's `network` fact): every honest node must
        # derive the same model from the peers' blobs and public facts alone.
        if config.rule not in NETWORK_RULES:
            raise ValueError(
                f"rule {config.rule!r} does not run on the network; on the network use one of "
                f"{', '.join(NETWORK_RULES)}"
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
        self.noise_seed = secrets.randbits(62) if noise_seed is None else noise_seed
        self.dataset = load_dataset(data.dataset, seed=config.seed)
        # SageFlow / Siren: the public validation set the task names, derived here and checked
        # against its digest (a mismatch refuses to run); the shards are cut from the rest, as
        # `flchain simulate` cuts them.
        self.public: PublicSet | None = None
        rest = np.arange(len(self.dataset.y_train), dtype=np.int64)
        spec = config.public_spec
        if spec is not None and needs_public_data(config.rule, config.secure):
            if data.dataset != config.dataset:
                raise PublicSetError(
                    f"the task's public set is cut from {config.dataset!r}; this node's data "
                    f"spec names {data.dataset!r}"
                )
            self.public = derive(spec, self.dataset)
            rest = self.public.rest
        idx = peer_data.shard_indices(
            self.dataset.y_train.numpy(),
            rest,
            data.shards,
            data.shard,
            data.partition,
            alpha=data.alpha,
            seed=config.seed,
        )
        picked = torch.from_numpy(idx)
        self.x, self.y = peer_data.poisoned(
            attack,
            self.dataset.x_train[picked],
            self.dataset.y_train[picked],
            num_classes=self.dataset.num_classes,
            seed=seed,
            index=data.shard,
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
        if not bool(finite_rows(tensor).all()):
            raise BlobError("update contains NaN or infinity")
        return tensor

    # ------------------------------------------------------------------ training
    def train(
        self,
        global_blob: bytes,
        round_: int,
        *,
        attack: AttackHook | None = None,
        local_noise: bool = True,
    ) -> LocalUpdate:
        """Train on the local shard from the global model, then attack, clip and noise:
        `flchain.pipeline.peer_update`, the simulation's pipeline, seeded with this node's
        seed and its shard as the peer's index.

        `attack` is the attack hook (`attacks.channel.ColludingTrainer` passes its channel's);
        without one this node's own update attack, if any, crafts from its own update alone.
        `local_noise=False` clips without noise: secure mode with distributed DP adds the noise
        after quantization. After a Siren alarm (`siren_alarm` returned True) training starts
        from our own previous local model instead, and the update is still local - global, as
        the reference's `agents.py` (`agent`) does."""
        base = self.model_params(global_blob)
        start = self.last_local if self.resume_local else None
        self.resume_local = False
        out = peer_update(
            Peer(self.model, self.x, self.y, self.train_config, self.device),
            base,
            seed=self.seed,
            index=self._shard,
            round_=round_,
            start=start,
            attack=attack if attack is not None else self._own_attack(),
            privacy=Privacy(self.dp_clip, self.dp_noise if local_noise else 0.0),
            noise_seed=self.noise_seed,
        )
        assert out.trained is not None
        self.last_local = own_model(out.trained, base, self.dp_clip)
        return LocalUpdate(self.encode_update(out.update), len(self.y), out.trained.loss)

    def _own_attack(self) -> AttackHook | None:
        """This node's update attack crafted from its own update alone (n = 2, f = 1), or None.
        Attacks that craft from the honest statistics collude instead (`ColludingTrainer`)."""
        if self.attack not in UPDATE_ATTACKS:
            return None
        name, params = self.attack, self.attack_params

        def hook(own: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
            assert own is not None
            context = AttackContext(
                honest_updates=own.unsqueeze(0),
                num_clients=2,
                num_byzantine=1,
                generator=generator,
                params=params,
            )
            return apply(name, own, context)

        return hook

    # ------------------------------------------------------------------ aggregation
    def aggregate(
        self,
        global_blob: bytes,
        updates: dict[int, bytes],
        weights: dict[int, float],
        *,
        siren: SirenRound | None = None,
    ) -> AggregateOutcome:
        """Deterministic aggregation of the verified updates (member index -> blob).

        `weights` are the chain's consensus weights (claimed samples capped at the task's
        max_samples, times reputation); robust rules weigh the updates uniformly unless the
        task config says robust_weights="consensus" (`rule_weights`). Invalid blobs are left
        out (never accepted). The result is bit-identical on every node that fetched the
        same blobs: float64 CPU aggregation, updates in content order (`canonical_order`), and
        for SageFlow and Siren quantized float64 scores on the task's public set
        (`flchain.public_set`).

        SageFlow runs as on a synchronous server: every update is fresh (staleness 0) and
        relative to the current global model. Siren needs `siren` (its alarms, credits and
        rollback state, `SirenRound`; without it: no alarms, fresh credits, no history).
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
        members = sorted(valid)
        order = [members[k] for k in canonical_order([valid[i] for i in members])]
        stacked = torch.stack([valid[i] for i in order])
        consensus = [float(weights.get(i, 0.0)) for i in order]
        chosen = rule_weights(self.config.rule, self.config.robust_weights, consensus)
        w = torch.tensor(chosen, dtype=torch.float64)
        if float(w.sum()) <= 0:
            w = torch.ones(len(order), dtype=torch.float64)
        side = self._side_inputs(base, stacked, order, siren)
        result = self._robust_aggregate(stacked, w, side)
        accepted = sorted(i for i, ok in zip(order, result.accepted.tolist(), strict=True) if ok)
        lag = 0
        if self.config.rule == "siren":
            lag = self._siren_rollback(siren or SirenRound(), order, accepted)
            if lag:  # Siren's rollback: the update goes onto the model of t-1 or t-2
                base = self.model_params((siren or SirenRound()).history[lag - 1])
        new = base + result.update.to(torch.float32)
        load_flat_params(self.model, new)
        return AggregateOutcome(model_to_bytes(self.model), accepted, invalid, lag)

    def apply_update(self, global_blob: bytes, update: torch.Tensor) -> bytes:
        """The next global model: base + update, rounded to float32 exactly as `aggregate` does
        (secure mode gets the mean update from the decrypted sum instead of from blobs)."""
        base = self.model_params(global_blob)
        flat = update.detach().to("cpu", torch.float64).reshape(-1)
        if flat.numel() != self.num_params or not bool(torch.isfinite(flat).all()):
            raise BlobError(f"an update of {self.num_params} finite values is needed")
        load_flat_params(self.model, base + flat.to(torch.float32))
        return model_to_bytes(self.model)

    def _robust_aggregate(
        self,
        stacked: torch.Tensor,
        weights: torch.Tensor,
        side: dict[str, object] | None = None,
    ) -> AggregateResult:
        """The task's rule with its parameters fitted to the updates that arrived
        (`fit_params`, from the rule's spec: Krum-family f lowered to n > 2f + 2, the median
        below three updates, a trimmed mean's beta that trims nothing trims one per side),
        plus the side inputs and task facts the rule needs (`_side_inputs`). Every honest
        node takes the same step, so the model stays bit-identical."""
        rule, params = fit_params(self.config.rule, self.config.rule_params, int(stacked.shape[0]))
        return aggregate(rule, stacked, weights, deterministic=True, **params, **(side or {}))

    def _side_inputs(
        self,
        base: torch.Tensor,
        stacked: torch.Tensor,
        order: list[int],
        siren: SirenRound | None,
    ) -> dict[str, object]:
        """SageFlow's and Siren's inputs, as every honest node derives them: scores of
        base + update_i on the public set; SageFlow's staleness (all 0: the network is
        synchronous); Siren's alarms, credits (replayed from the lineage) and the task's
        rounds (unless its rule_params fix them)."""
        names = set(required_inputs(self.config.rule)) | set(optional_inputs(self.config.rule))
        side: dict[str, object] = {}
        if names & {"public_loss", "public_entropy", "public_accuracy"}:
            if self.public is None:
                raise PublicSetError(f"rule {self.config.rule!r} needs the task's public set")
            side.update(update_scores(self.model, base, stacked, self.public).side_inputs(names))
        if "staleness" in names:
            side["staleness"] = torch.zeros(len(order), dtype=torch.long)
        if self.config.rule == "siren":
            siren = siren or SirenRound()
            credits, _ = self._siren_state(siren)
            limit = self._siren_limit(siren)
            side["alarms"] = torch.tensor([i in siren.alarms for i in order], dtype=torch.bool)
            side["credits"] = torch.tensor(
                [credits.get(i, limit) for i in order], dtype=torch.float64
            )
            if "max_credit" not in self.config.rule_params:
                side["max_credit"] = limit
        return side

    def _siren_limit(self, siren: SirenRound) -> float:
        """The credit limit: rule_params' max_credit, else int(0.45 * rounds) with the rounds
        of rule_params or of the task on chain."""
        params = self.config.rule_params
        if "max_credit" in params:
            return float(params["max_credit"])
        return credit_limit(int(params.get("rounds", siren.rounds)))

    def _siren_state(self, siren: SirenRound) -> tuple[dict[int, float], Rollback]:
        """Credits and rollback state replayed from the rounds that built the global model."""
        params = self.config.rule_params
        return replay(
            siren.lineage,
            max_credit=self._siren_limit(siren),
            penalty=float(params.get("penalty", PENALTY)),
            forgive=float(params.get("forgive", FORGIVE)),
        )

    def _siren_rollback(self, siren: SirenRound, order: list[int], accepted: list[int]) -> int:
        """How many global models back this round's update goes (`Rollback.step`, 0..2),
        from the replayed state and this round's outcome, settled as the replay will settle
        it once the round is on chain; never further back than the history reaches."""
        params = self.config.rule_params
        credits, rollback = self._siren_state(siren)
        flags = settle(
            credits,
            siren.submitted or tuple(order),
            accepted,
            max_credit=self._siren_limit(siren),
            penalty=float(params.get("penalty", PENALTY)),
            forgive=float(params.get("forgive", FORGIVE)),
        )
        lag = dataclasses.replace(rollback).step(len(siren.lineage), *flags)
        return min(lag, len(siren.history))

    # ------------------------------------------------------------------ evaluation
    def test_accuracy(self, model_blob: bytes) -> float:
        load_flat_params(self.model, self.model_params(model_blob))
        ev = evaluate(
            self.model,
            self.dataset.x_test,
            self.dataset.y_test,
            device=self.device,
            channels_last=True,  # a reported figure: the faster layout (`evaluate`)
        )
        return ev.accuracy

    def hold_out_validation(self) -> None:
        """Set Siren's validation split aside: a seeded tenth of the shard that this node
        never trains on from now on (`flchain.peer_data.siren_validation`). Idempotent."""
        if self.val_x is not None:
            return
        val, train = peer_data.siren_validation(len(self.y), self.config.seed, self._shard)
        self.val_x, self.val_y = self.x[val], self.y[val]
        self.x, self.y = self.x[train], self.y[train]

    def siren_state(self) -> tuple[torch.Tensor | None, bool]:
        """What Siren's client side carries between rounds: our last local model and whether
        the next training resumes from it (`restore_siren_state` puts it back)."""
        return self.last_local, self.resume_local

    def restore_siren_state(self, state: tuple[torch.Tensor | None, bool]) -> None:
        """Undo a training whose update never counted (`siren_state` took `state` before)."""
        self.last_local, self.resume_local = state

    def siren_alarm(self, model_blob: bytes, threshold: float = CLIENT_THRESHOLD) -> bool:
        """Siren's client check (`aggregation.siren.client_alarm`, the reference's
        `agents.py` `alarm`): does our own previous local model beat the new global model on
        our held-out validation split by more than C_l times its own accuracy
        (local > global + C_l * local)? If so, the next `train` starts from our own model.

        The split is held out here if the engine has not done so yet; the engine does it
        before the task's first training, so the split is never trained on. Under DP noise
        it is always False (`taskconfig.raises_alarms`)."""
        self.hold_out_validation()
        self.resume_local = False
        if not raises_alarms(self.dp_noise):
            return False
        if self.last_local is None or self.val_y is None or len(self.val_y) == 0:
            return False
        load_flat_params(self.model, self.model_params(model_blob))
        global_acc = evaluate(self.model, self.val_x, self.val_y, device=self.device).accuracy
        load_flat_params(self.model, self.last_local)
        local_acc = evaluate(self.model, self.val_x, self.val_y, device=self.device).accuracy
        self.resume_local = client_alarm(global_acc, local_acc, threshold)
        return self.resume_local
