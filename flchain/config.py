"""The simulation's configuration schema: one frozen dataclass the CLI, benchmarks and tests share.

Keeping every knob in one validated object means a JSON dump of it fully describes a run, so a
result can always be reproduced from its own output.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """A simulation setting is out of range or inconsistent with another."""


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
    alarm_threshold: float = 0.05
    server_lr: float = 1.0
    deterministic: bool = True
    seed: int = 0
    device: str = "auto"

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
        _check(
            self.stragglers == 0.0 or self.max_delay >= 1,
            "--stragglers P needs --max-delay D >= 1 (how many rounds late an update may be)",
        )
        _check(0.0 < self.public_fraction < 0.5, "--public-fraction must be in (0, 0.5)")
        _check(self.server_lr > 0, "--server-lr must be > 0")

    @property
    def byzantine_fraction(self) -> float:
        return self.byzantine / self.nodes

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> SimulationConfig:
        return dataclasses.replace(self, **changes)


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
