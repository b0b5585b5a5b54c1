"""The task configuration the chain commits to, and the data spec a node trains on.

Only the digest of the task config goes on chain (DESIGN: digests and small integers only); the
JSON itself travels with the task (a file the creator hands out, or a blob fetched by digest),
and every node checks it against the on-chain digest before using it. Canonical JSON (sorted
keys, no whitespace) makes the digest independent of who wrote the file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from flchain.aggregation import RULES, rule_parameters
from flchain.config import DEFAULT_SECURE_RANGE, NOISE_TAIL
from flchain.models import build_model, load_dataset, model_to_bytes


class TaskConfigError(ValueError):
    """A task config or data spec that cannot be used."""


@dataclass(frozen=True)
class TaskConfig:
    """What every member must agree on to produce bit-identical global models."""

    model: str = "cnn"
    dataset: str = "digits"
    rule: str = "fedavg"
    rule_params: dict[str, Any] = field(default_factory=dict)
    local_epochs: int = 2
    batch_size: int = 16
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    prox_mu: float = 0.0
    dp_clip: float | None = None
    dp_noise: float = 0.0
    dp_delta: float = 1e-5
    secure: bool = False
    secure_bits: int = 16
    secure_key_bits: int = 2048
    secure_range: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise TaskConfigError(f"unknown rule {self.rule!r}; choose one of {', '.join(RULES)}")
        unknown = set(self.rule_params) - set(rule_parameters(self.rule))
        if unknown:
            raise TaskConfigError(f"rule {self.rule!r} has no parameter(s) {sorted(unknown)}")
        if self.dp_noise > 0 and self.dp_clip is None:
            raise TaskConfigError("DP noise needs a clipping norm (dp_clip)")
        if self.secure:
            self._check_secure()

    def _check_secure(self) -> None:
        # The decryptor only ever sees the sum, so a rule that looks at single updates has
        # nothing to work on; Siren's alarms still run on chain.
        if self.rule != "fedavg" or self.rule_params:
            raise TaskConfigError(
                f"secure mode runs FedAvg (plus Siren alarms on chain), not rule {self.rule!r}"
                f"{' with parameters' if self.rule_params else ''}: robust rules need "
                "plaintext updates"
            )
        if not 1 <= self.secure_bits <= 32:
            raise TaskConfigError(f"secure_bits must be in [1, 32], got {self.secure_bits}")
        if not 512 <= self.secure_key_bits <= 8192:
            raise TaskConfigError(
                f"secure_key_bits must be in [512, 8192] (2048 for real use), got "
                f"{self.secure_key_bits}"
            )
        if self.secure_range is not None and not (
            math.isfinite(self.secure_range) and self.secure_range > 0
        ):
            raise TaskConfigError(f"secure_range must be finite and > 0, got {self.secure_range}")

    @property
    def secure_value_range(self) -> float:
        """Per-coordinate bound c of the agreed quantization range (-c, c) in secure mode:
        explicit, else the DP clip plus the noise tail, else the simulation's default."""
        if self.secure_range is not None:
            return float(self.secure_range)
        if self.dp_clip is not None:
            return float(self.dp_clip) * (1.0 + NOISE_TAIL * self.dp_noise)
        return DEFAULT_SECURE_RANGE

    def to_json_bytes(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":")).encode()

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(self.to_json_bytes()).digest()

    @classmethod
    def from_json_bytes(cls, data: bytes) -> TaskConfig:
        try:
            raw = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise TaskConfigError(f"task config is not JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise TaskConfigError("task config must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        extra = set(raw) - known
        if extra:
            raise TaskConfigError(f"unknown task config field(s): {sorted(extra)}")
        try:
            return cls(**raw)
        except TypeError as exc:
            raise TaskConfigError(str(exc)) from exc


def initial_model_bytes(config: TaskConfig, input_shape: tuple[int, ...], classes: int) -> bytes:
    """The task's round-0 model, rebuilt from its seed: every node derives the same bytes, so
    the initial model never has to travel."""
    torch.manual_seed(config.seed)
    return model_to_bytes(build_model(config.model, input_shape, classes))


def initial_model_digest(config: TaskConfig) -> bytes:
    """sha256 of `initial_model_bytes` for the config's dataset (what `task create` needs)."""
    data = load_dataset(config.dataset, seed=config.seed)
    return hashlib.sha256(initial_model_bytes(config, data.input_shape, data.num_classes)).digest()


@dataclass(frozen=True)
class DataSpec:
    """`DATASET[#shard=I/N[,partition=P][,alpha=A]]`: which slice of a dataset a node holds.

    Every node derives the same partition from the task seed, so shards are disjoint without
    anyone handing out indices.
    """

    dataset: str
    shard: int = 0
    shards: int = 1
    partition: str = "iid"
    alpha: float = 0.5

    @classmethod
    def parse(cls, spec: str) -> DataSpec:
        dataset, _, options = spec.partition("#")
        if not dataset:
            raise TaskConfigError(f"empty dataset in data spec {spec!r}")
        values: dict[str, Any] = {}
        for item in filter(None, options.split(",")):
            key, sep, value = item.partition("=")
            if not sep:
                raise TaskConfigError(f"data spec option {item!r} is not KEY=VALUE")
            if key == "shard":
                index, slash, total = value.partition("/")
                if not slash or not index.isdigit() or not total.isdigit():
                    raise TaskConfigError(f"shard must look like I/N, got {value!r}")
                values["shard"], values["shards"] = int(index), int(total)
            elif key == "partition":
                values["partition"] = value
            elif key == "alpha":
                values["alpha"] = float(value)
            else:
                raise TaskConfigError(f"unknown data spec option {key!r} (shard, partition, alpha)")
        data = cls(dataset=dataset, **values)
        if not 0 <= data.shard < data.shards:
            raise TaskConfigError(f"shard index {data.shard} is not in [0, {data.shards})")
        return data

    def __str__(self) -> str:
        return (
            f"{self.dataset}#shard={self.shard}/{self.shards},partition={self.partition},"
            f"alpha={self.alpha}"
        )
