"""The task configuration the chain commits to, and the data spec a node trains on.

Only the digest of the task config goes on chain (digests and small integers only); the
JSON itself travels with the task (a file the creator hands out, or a blob fetched by digest),
and every node checks it against the on-chain digest before using it. Canonical JSON (sorted
keys, no whitespace) makes the digest independent of who wrote the file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from flchain import safe_json
from flchain.aggregation.catalog import (
    NETWORK_RULES,
    PUBLIC_DATA_RULES,
    RULES,
    SECURE_RULES,
    WEIGHTED_RULES,
)
from flchain.aggregation.errors import AggregationError
from flchain.config import (
    DEFAULT_MAX_SAMPLES,
    DEFAULT_SECURE_KEY_BITS,
    MAX_SAMPLES_LIMIT,
    MAX_SECURE_KEY_BITS,
    ROBUST_WEIGHTS,
    secure_value_range,
)
from flchain.public_spec import DEFAULT_PUBLIC_FRACTION, PublicData, PublicSetError

# What secure mode runs on the network: the secure rules that need no per-update scores. Siren
# in secure mode is FedAvg plus its members' alarms on chain, so such a task says fedavg.
SECURE_NETWORK_RULES: tuple[str, ...] = tuple(
    r for r in SECURE_RULES if r in NETWORK_RULES and r not in PUBLIC_DATA_RULES
)
# A task config is a few hundred bytes of flat JSON (rule_params is the deepest part).
MAX_CONFIG_BYTES = 64 * 1024
MAX_CONFIG_DEPTH = 8
# Rules whose result is a weighted statistic of every update (their spec says `weighted`:
# fedavg, geomed) take the chain's consensus weights (samples capped at max_samples, times
# reputation). Every other rule keeps or drops updates by their values, and weighs those it
# keeps uniformly unless the task says robust_weights="consensus" (`rule_weights`).


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
    secure_key_bits: int = DEFAULT_SECURE_KEY_BITS
    secure_range: float | None = None
    seed: int = 0
    max_samples: int = DEFAULT_MAX_SAMPLES  # on chain: claims above it weigh as it (0: unused)
    robust_weights: str = "uniform"
    # SageFlow and Siren score updates on a public validation set: `PublicData` as a dict
    # (dataset, fraction, seed, sha256 of its samples); None for every other rule.
    public_data: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise TaskConfigError(f"unknown rule {self.rule!r}; choose one of {', '.join(RULES)}")
        # The rules' parameters are their functions' keyword arguments: the registry (torch)
        from flchain.aggregation.registry import check_params, rule_parameters

        unknown = set(self.rule_params) - set(rule_parameters(self.rule))
        if unknown:
            takes = ", ".join(rule_parameters(self.rule)) or "none"
            raise TaskConfigError(
                f"rule {self.rule!r} has no parameter(s) {sorted(unknown)}; it takes: {takes}"
            )
        try:  # values; the member count is not known here, each node fits them to what arrives
            check_params(self.rule, self.rule_params)
        except AggregationError as exc:
            raise TaskConfigError(str(exc)) from exc
        if not self.secure and self.rule not in NETWORK_RULES:
            raise TaskConfigError(
                f"rule {self.rule!r} does not run on the network: it judges updates on data the "
                f"aggregator holds (run it with `flchain simulate`); the network runs "
                f"{', '.join(NETWORK_RULES)}"
            )
        if self.dp_noise > 0 and self.dp_clip is None:
            raise TaskConfigError("DP noise needs a clipping norm (dp_clip)")
        self._check_public_data()
        if (
            isinstance(self.max_samples, bool)
            or not isinstance(self.max_samples, int)
            or not 0 <= self.max_samples <= MAX_SAMPLES_LIMIT
        ):
            raise TaskConfigError(
                f"max_samples must be an integer in [0, 2**64 - 1], got {self.max_samples!r}"
            )
        if self.robust_weights not in ROBUST_WEIGHTS:
            raise TaskConfigError(
                f"robust_weights must be one of {', '.join(ROBUST_WEIGHTS)}, got "
                f"{self.robust_weights!r}"
            )
        if self.secure:
            self._check_secure()

    def _check_public_data(self) -> None:
        if self.public_data is not None:
            try:
                spec = PublicData.from_dict(self.public_data)
            except PublicSetError as exc:
                raise TaskConfigError(str(exc)) from exc
            if spec.dataset != self.dataset:
                raise TaskConfigError(
                    f"public_data is cut from the task's dataset {self.dataset!r}, not "
                    f"{spec.dataset!r}"
                )
        elif needs_public_data(self.rule, self.secure):
            raise TaskConfigError(
                f"rule {self.rule!r} scores every update on a public validation set, which the "
                "task config must name (public_data, with the digest of its samples): build the "
                "config with `build_task_config` or `flchain task config`"
            )

    @property
    def public_spec(self) -> PublicData | None:
        """The public validation set the task names (`public_data`), parsed."""
        return None if self.public_data is None else PublicData.from_dict(self.public_data)

    def _check_secure(self) -> None:
        # The decryptor only ever sees the sum, so a rule that looks at single updates has
        # nothing to work on; Siren's alarms still run on chain. Which rules secure mode runs,
        # and which the network runs, are facts of the rule specs.
        runs = SECURE_NETWORK_RULES
        if self.rule not in runs or self.rule_params:
            raise TaskConfigError(
                f"secure mode on the network runs {' or '.join(runs)} (FedAvg, plus Siren alarms "
                f"on chain), not rule {self.rule!r}"
                f"{' with parameters' if self.rule_params else ''}: robust rules need "
                "plaintext updates"
            )
        if not 1 <= self.secure_bits <= 32:
            raise TaskConfigError(f"secure_bits must be in [1, 32], got {self.secure_bits}")
        if not 512 <= self.secure_key_bits <= MAX_SECURE_KEY_BITS:
            raise TaskConfigError(
                f"secure_key_bits must be in [512, {MAX_SECURE_KEY_BITS}], got "
                f"{self.secure_key_bits}"
            )
        if self.secure_range is not None and not (
            math.isfinite(self.secure_range) and self.secure_range > 0
        ):
            raise TaskConfigError(f"secure_range must be finite and > 0, got {self.secure_range}")

    @property
    def secure_value_range(self) -> float:
        """Per-coordinate bound c of the agreed quantization range (-c, c) in secure mode:
        `flchain.config.secure_value_range`."""
        return secure_value_range(self.secure_range, self.dp_clip)

    def to_json_bytes(self) -> bytes:
        fields = dataclasses.asdict(self)
        if fields["public_data"] is None:  # configs without one keep the digests they had
            del fields["public_data"]
        return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(self.to_json_bytes()).digest()

    @classmethod
    def from_json_bytes(cls, data: bytes) -> TaskConfig:
        """Parse a task config (from a file or a peer) within size and depth limits."""
        try:
            return cls(**cls.json_fields(data))
        except TypeError as exc:
            raise TaskConfigError(str(exc)) from exc

    @classmethod
    def json_fields(cls, data: bytes) -> dict[str, Any]:
        """A task config's JSON object within size and depth limits, its names checked and
        its values not: for a reader of a few fields of a config whose digest it verified
        (the ledger's privacy columns), which then need not import the rules (and torch)
        that checking every value takes."""
        try:
            raw = safe_json.loads(data, max_bytes=MAX_CONFIG_BYTES, max_depth=MAX_CONFIG_DEPTH)
        except ValueError as exc:
            raise TaskConfigError(f"task config is not JSON within limits: {exc}") from exc
        if not isinstance(raw, dict):
            raise TaskConfigError("task config must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        extra = set(raw) - known
        if extra:
            raise TaskConfigError(f"unknown task config field(s): {sorted(extra)}")
        return raw

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> TaskConfig:
        """Read and parse a task config file (bounded, see `read_config_bytes`)."""
        return cls.from_json_bytes(read_config_bytes(path))


def needs_public_data(rule: str, secure: bool) -> bool:
    """Whether a task with `rule` must name a public validation set: the rule's spec says it
    scores updates on one (SageFlow, Siren), and it sees single updates (not secure mode,
    where Siren is FedAvg plus the members' alarms)."""
    return rule in PUBLIC_DATA_RULES and not secure


def build_task_config(
    *,
    public_fraction: float = DEFAULT_PUBLIC_FRACTION,
    public_seed: int | None = None,
    **fields: Any,
) -> TaskConfig:
    """A TaskConfig from its fields that also names the public validation set when the rule
    needs one and `fields` does not: a stratified `public_fraction` of the dataset's training
    split drawn with `public_seed` (default: the task seed, as `flchain simulate` draws it),
    with the digest of its samples. Loads the dataset for that (the creator's side; every
    node derives the same set and checks the digest)."""
    rule = fields.get("rule", TaskConfig.rule)
    if fields.get("public_data") is None and needs_public_data(rule, bool(fields.get("secure"))):
        seed = int(fields.get("seed", TaskConfig.seed))
        name = str(fields.get("dataset", TaskConfig.dataset))
        from flchain.models import load_dataset  # torch: only where a set is drawn
        from flchain.public_set import describe

        data = load_dataset(name, seed=seed)
        try:
            draw = seed if public_seed is None else public_seed
            spec = describe(data, public_fraction, draw, name=name)
        except ValueError as exc:
            raise TaskConfigError(f"public validation set: {exc}") from exc
        fields["public_data"] = spec.to_dict()
    return TaskConfig(**fields)


def read_config_bytes(path: str | os.PathLike[str]) -> bytes:
    """A task config file's bytes, refusing one larger than any config before reading it
    whole (TaskConfigError); OSError when it cannot be read."""
    with open(path, "rb") as file:
        data = file.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise TaskConfigError(f"{path} is larger than {MAX_CONFIG_BYTES} bytes: not a task config")
    return data


def capped_samples(samples: int, max_samples: int) -> int:
    """The sample count an update weighs with, as FLChain's `consensus_weights` counts it
    before multiplying by reputation: min(samples, max_samples), or 1 when max_samples is 0
    (sample counts unused)."""
    return 1 if max_samples == 0 else min(samples, max_samples)


def claimed_samples(samples: int, dp_noise: float) -> int:
    """The sample count an honest node commits: its shard's size, or 1 under DP noise. The
    size of a node's data is private too, and the chain would publish it unnoised every
    round; with every claim equal, FedAvg weighs the members by reputation alone."""
    return 1 if dp_noise > 0 else samples


def raises_alarms(dp_noise: float) -> bool:
    """Whether an honest node raises Siren alarms: not under DP noise. An alarm is a bit on
    chain computed from the node's private validation split, unnoised, so no epsilon would
    cover it; under DP only Siren's server side (on the public set) and the alarms of
    members without DP judge the global model."""
    return dp_noise <= 0


def rule_weights(rule: str, robust_weights: str, weights: Sequence[float]) -> list[float]:
    """The weights `rule` aggregates with, given each update's consensus weight (0: none).

    fedavg and geomed take the consensus weights; the other rules weigh every update with a
    positive consensus weight equally unless robust_weights is "consensus". One function for
    the network (node/learner.py) and the simulation, so both weigh alike.
    """
    if rule in WEIGHTED_RULES or robust_weights == "consensus":
        return [float(w) for w in weights]
    return [1.0 if w > 0 else 0.0 for w in weights]


def initial_model_bytes(config: TaskConfig, input_shape: tuple[int, ...], classes: int) -> bytes:
    """The task's round-0 model, rebuilt from its seed: every node derives the same bytes, so
    the initial model never has to travel. Layers initialize from torch's global generator,
    so two threads building at once would draw from each other's seed: one at a time."""
    import torch  # here, not above: reading a config (the ledger commands do) needs no torch

    from flchain.models import build_model, model_to_bytes

    with _SEEDED_BUILD:
        torch.manual_seed(config.seed)
        return model_to_bytes(build_model(config.model, input_shape, classes))


_SEEDED_BUILD = threading.Lock()


def initial_model_digest(config: TaskConfig) -> bytes:
    """sha256 of `initial_model_bytes` for the config's dataset (what `task create` needs)."""
    from flchain.models import load_dataset

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
