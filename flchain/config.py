"""The simulation's configuration schema: one frozen dataclass the CLI, benchmarks and tests share.

Keeping every knob in one validated object means a JSON dump of it fully describes a run, so a
result can always be reproduced from its own output.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from flchain.siren_defaults import CLIENT_THRESHOLD


class ConfigError(ValueError):
    """A simulation setting is out of range or inconsistent with another."""


def __getattr__(name: str) -> Any:
    """SECURE_RULES, read from the rule specs (flchain.aggregation) on first use, so importing
    this module stays free of torch: secure aggregation only reveals the sum of the updates,
    so only rules whose spec says `secure` (FedAvg, Siren as FedAvg plus alarms) run."""
    if name == "SECURE_RULES":
        from flchain.aggregation import SECURE_RULES

        return SECURE_RULES
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Quantization range per coordinate in secure mode without DP clipping: local updates of the
# zoo's models at the default learning rates stay well inside +-1, so 4 leaves ample headroom
# while 16 bits still resolve about 1e-4 of it.
DEFAULT_SECURE_RANGE = 4.0
# The reward pool a devnet task escrows by default (`devnet up --reward-eth`), in ETH.
DEFAULT_DEVNET_REWARD_ETH = "1"
# Seconds a node keeps serving blobs after its task ended, so peers a step behind can fetch
# the final model (`node run --linger`).
DEFAULT_LINGER_S = 10.0
# Paillier modulus bits wherever a secure run is configured (simulate, devnet up, task config).
DEFAULT_SECURE_KEY_BITS = 2048
MAX_SECURE_KEY_BITS = 8192
# The sample count an update weighs with at most, unless the task says otherwise: what
# `consensus_weights` caps claims at on chain (TaskParams, the task config) and what the
# simulation uses, so a member claiming 2**64 - 1 samples weighs no more than an honest one.
DEFAULT_MAX_SAMPLES = 10_000
MAX_SAMPLES_LIMIT = 2**64 - 1  # the largest max_samples FLChain's create_task accepts
# Task economics (contracts/README.md, "Economics"), the defaults of TaskParams, `task create`
# and `devnet up`. The quorum is the share of the round's reputation whose votes finalize it:
# 2/3 is 6666.7 bps, so 6666 is the largest quorum two of three equal members reach. An alarm
# threshold below the quorum would let fewer members undo a round than agreed on it (the
# contract refuses one). Below the floor (REP_UNIT 1000 = 1.0) a member is ejected and its
# stake and rewards go to the reward pool: from 1000, eleven rejected updates, ten missed
# rounds or five failed alarms.
DEFAULT_QUORUM_BPS = 6666
DEFAULT_ALARM_BPS = 6666
DEFAULT_REP_FLOOR = 500
# How rules other than fedavg/geomed weigh the updates they keep (flchain.taskconfig).
ROBUST_WEIGHTS = ("uniform", "consensus")


@dataclass(frozen=True)
class SimulationConfig:
    """Everything that determines a standalone federated run (same seed -> same model bytes)."""

    nodes: int = 10
    rounds: int = 20
    local_epochs: int = 2
    batch_size: int = 16
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    prox_mu: float = 0.0
    dataset: str = "digits"
    partition: str = "iid"
    alpha: float = 0.5
    classes_per_client: int = 2
    public_fraction: float = 0.05
    model: str = "cnn"
    rule: str = "fedavg"
    rule_params: dict[str, Any] = field(default_factory=dict)
    byzantine: int = 0
    attack: str | None = None
    attack_params: dict[str, Any] = field(default_factory=dict)
    stragglers: float = 0.0
    max_delay: int = 0
    alarm_threshold: float = CLIENT_THRESHOLD  # Siren's C_l: alarm when local > global + C_l*local
    # Share of the peers (basis points) whose alarms on a round revert it, as the contract's
    # alarm_bps reverts a finalized round on the network (counted per head here: the
    # simulation has no reputation; at 10000 both need every member).
    alarm_bps: int = DEFAULT_ALARM_BPS
    server_lr: float = 1.0
    deterministic: bool = True
    seed: int = 0
    device: str = "auto"
    dp_clip: float | None = None
    dp_noise: float = 0.0
    dp_delta: float = 1e-5
    secure: bool = False
    secure_bits: int = 16
    secure_key_bits: int = DEFAULT_SECURE_KEY_BITS
    secure_range: float | None = None
    # Weights as a task config forms them (flchain.taskconfig.rule_weights): sample counts
    # capped at max_samples (0: unused) for fedavg/geomed, uniform for robust rules unless
    # robust_weights is "consensus".
    max_samples: int = DEFAULT_MAX_SAMPLES
    robust_weights: str = "uniform"

    def __post_init__(self) -> None:
        _check(self.nodes >= 1, f"--nodes must be >= 1, got {self.nodes}")
        _check(self.rounds >= 1, f"--rounds must be >= 1, got {self.rounds}")
        _check(self.local_epochs >= 1, f"--local-epochs must be >= 1, got {self.local_epochs}")
        _check(self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}")
        _check(self.lr > 0, f"--lr must be > 0, got {self.lr}")
        _check(0 <= self.byzantine < self.nodes, "--byzantine must be in [0, nodes)")
        _check(
            self.byzantine == 0 or self.attack is not None,
            "--byzantine K needs --attack NAME (which behaviour the K peers show)",
        )
        _check(0.0 <= self.stragglers <= 1.0, "--stragglers is a probability in [0, 1]")
        _check(self.max_delay >= 0, "--max-delay must be >= 0 rounds")
        _check(0 < self.alarm_bps <= 10_000, "--alarm-bps must be in 1..10000")
        _check(
            self.stragglers == 0.0 or self.max_delay >= 1,
            "--stragglers P needs --max-delay D >= 1 (how many rounds late an update may be)",
        )
        _check(
            self.stragglers == 0.0 or not self.secure,
            "--stragglers cannot run with --secure: secure aggregation sums the updates of one "
            "round's full member set, and late updates arrive in a later round",
        )
        _check(0.0 < self.public_fraction < 0.5, "--public-fraction must be in (0, 0.5)")
        _check(self.server_lr > 0, "--server-lr must be > 0")
        _check(
            0 <= self.max_samples <= MAX_SAMPLES_LIMIT,
            f"max_samples must be in [0, 2**64 - 1], got {self.max_samples}",
        )
        _check(
            self.robust_weights in ROBUST_WEIGHTS,
            f"robust_weights must be one of {', '.join(ROBUST_WEIGHTS)}, got "
            f"{self.robust_weights!r}",
        )
        self._check_rule()
        self._check_privacy()

    def _check_rule(self) -> None:
        """The rule's parameter values for --nodes updates, from its spec (e.g. krum's
        n > 2f + 2); unknown rules and parameter names are left to the simulation's
        `validate_config`, which lists the valid ones."""
        from flchain.aggregation import RULES, AggregationError, check_params, rule_parameters

        if self.secure or self.rule not in RULES:
            return
        if set(self.rule_params) - set(rule_parameters(self.rule)):
            return
        try:
            check_params(self.rule, self.rule_params, self.nodes)
        except AggregationError as exc:
            raise ConfigError(f"--rule {self.rule} with {self.nodes} nodes: {exc}") from exc

    def _check_privacy(self) -> None:
        """DP and secure-aggregation settings: each alone, then how they combine with the rule."""
        _check(
            self.dp_clip is None or _positive(self.dp_clip),
            f"--dp-clip must be a finite number > 0, got {self.dp_clip}",
        )
        _check(
            math.isfinite(self.dp_noise) and self.dp_noise >= 0,
            f"--dp-noise must be a finite number >= 0, got {self.dp_noise}",
        )
        _check(
            self.dp_noise == 0 or self.dp_clip is not None,
            "--dp-noise SIGMA needs --dp-clip C: the noise std is SIGMA * C, so without a clip "
            "norm an update's sensitivity (and the privacy it buys) is unbounded",
        )
        _check(0.0 < self.dp_delta < 1.0, f"--dp-delta must be in (0, 1), got {self.dp_delta}")
        _check(
            self.secure_range is None or _positive(self.secure_range),
            f"--secure-range must be a finite number > 0, got {self.secure_range}",
        )
        _check(self.secure_bits >= 1, f"--secure-bits must be >= 1, got {self.secure_bits}")
        _check(
            self.secure_key_bits >= 512,
            f"--secure-key-bits must be >= 512 (2048 for real use), got {self.secure_key_bits}",
        )
        if not self.secure:
            return
        _check(self.nodes >= 2, "--secure needs --nodes >= 2: a sum of one update is no secret")
        from flchain.aggregation import SECURE_RULES

        _check(
            self.rule in SECURE_RULES,
            f"--secure cannot run rule {self.rule!r}: robust rules need plaintext updates and "
            "secure aggregation only reveals their sum; use "
            + " or ".join(f"--rule {r}" for r in SECURE_RULES)
            + " (siren: FedAvg plus client alarms)",
        )
        _check(
            not self.rule_params,
            f"--secure runs {self.rule} as FedAvg (plus alarms for siren), which takes no rule "
            f"parameters; got {', '.join(sorted(self.rule_params))}",
        )

    @property
    def dp_enabled(self) -> bool:
        """Whether honest peers clip (and maybe noise) their updates before sending them."""
        return self.dp_clip is not None

    @property
    def secure_value_range(self) -> float:
        """Per-coordinate bound c of the agreed quantization range (-c, c) in secure mode."""
        return secure_value_range(self.secure_range, self.dp_clip)

    @property
    def byzantine_fraction(self) -> float:
        return self.byzantine / self.nodes

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> SimulationConfig:
        return dataclasses.replace(self, **changes)


def secure_value_range(secure_range: float | None, dp_clip: float | None) -> float:
    """The per-coordinate bound c of secure mode's quantization range (-c, c): explicit, else
    the clip C (a clipped update has no coordinate beyond C; distributed DP's integer noise
    widens the ring by itself, `crypto.distributed_dp`), else DEFAULT_SECURE_RANGE."""
    if secure_range is not None:
        return float(secure_range)
    if dp_clip is not None:
        return float(dp_clip)
    return DEFAULT_SECURE_RANGE


def _positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def parse_key_values(pairs: tuple[str, ...] | list[str], option: str) -> dict[str, Any]:
    """Parse repeated `KEY=VALUE` options; numbers become int/float, true/false become bools."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{option} expects KEY=VALUE, got {pair!r}")
        out[key.strip().replace("-", "_")] = _parse_scalar(raw.strip())
    return out


def _parse_scalar(raw: str) -> Any:
    lowered = raw.lower()
    if lowered in {"true", "false"}:
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            continue
    return raw
