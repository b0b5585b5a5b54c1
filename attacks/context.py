"""What a Byzantine peer knows in a round, and the one error type every attack raises."""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from flchain.attacks.errors import AttackError


@dataclass
class AttackContext:
    """The round as a (possibly colluding) Byzantine peer sees it.

    Colluders in the strongest threat model of the literature see the benign updates of the
    round, so the statistical attacks (ALIE, IPM) read them from `honest_updates`. On the
    network the colluders fill it with their own honestly trained updates, as the ALIE paper
    estimates the benign statistics (or, in the omniscient test mode, with the honest nodes'
    updates): see `flchain.attacks.channel`. `params`
    holds the attack's knobs by name; each attack documents and checks the ones it accepts,
    so a misspelt knob raises instead of being silently ignored.
    """

    honest_updates: Tensor | None = None
    num_clients: int = 0
    num_byzantine: int = 0
    generator: torch.Generator | None = None
    params: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.num_clients, bool) or not isinstance(self.num_clients, int):
            raise AttackError(f"num_clients must be an int, got {self.num_clients!r}")
        if isinstance(self.num_byzantine, bool) or not isinstance(self.num_byzantine, int):
            raise AttackError(f"num_byzantine must be an int, got {self.num_byzantine!r}")
        if self.num_clients < 0 or self.num_byzantine < 0:
            raise AttackError(
                f"num_clients ({self.num_clients}) and num_byzantine ({self.num_byzantine}) "
                "must be >= 0"
            )
        if self.num_clients and self.num_byzantine > self.num_clients:
            raise AttackError(
                f"num_byzantine ({self.num_byzantine}) exceeds num_clients ({self.num_clients})"
            )
        if self.generator is not None and not isinstance(self.generator, torch.Generator):
            raise AttackError(f"generator must be a torch.Generator, got {type(self.generator)}")
        if not isinstance(self.params, Mapping):
            raise AttackError(
                f"params must be a mapping of knob name to number, got {self.params!r}"
            )


def check_params(attack: str, params: Mapping[str, object], allowed: Collection[str]) -> None:
    """Reject knobs the attack does not know, so a typo never runs the default silently."""
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        known = ", ".join(sorted(allowed)) or "none"
        raise AttackError(f"attack {attack!r} got unknown params {unknown}; it accepts: {known}")


def float_param(attack: str, params: Mapping[str, object], key: str, default: float) -> float:
    """A finite real knob, `default` when absent."""
    if key not in params:
        return default
    value = params[key]
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise AttackError(f"attack {attack!r}: param {key!r} must be a number, got {value!r}")
    result = float(value)
    if not math.isfinite(result):
        raise AttackError(f"attack {attack!r}: param {key!r} must be finite, got {value!r}")
    return result


def int_param(attack: str, params: Mapping[str, object], key: str, default: int) -> int:
    """An integer knob; integral floats such as 3.0 pass because params are float-typed."""
    value = float_param(attack, params, key, float(default))
    if not value.is_integer():
        raise AttackError(f"attack {attack!r}: param {key!r} must be an integer, got {value!r}")
    return int(value)
