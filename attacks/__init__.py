"""Byzantine behaviours: update attacks (`apply`), data attacks (`poison_dataset`), the ring
attack of a secure-mode member (`RingShift`) and the names of the protocol attacks that the
network node carries out."""

from flchain.attacks.backdoor import BACKDOOR_PARAMS, add_trigger, attack_success_rate
from flchain.attacks.catalog import (
    ATTACKS,
    DATA_ATTACKS,
    DESCRIPTIONS,
    PROTOCOL_ATTACKS,
    SECURE_ATTACKS,
    UPDATE_ATTACKS,
    always_alarms,
    is_data_attack,
    is_protocol_attack,
    is_secure_attack,
    is_update_attack,
    kind_of,
)
from flchain.attacks.collusion import alie_z
from flchain.attacks.context import AttackContext, AttackError
from flchain.attacks.data import poison_dataset
from flchain.attacks.registry import apply
from flchain.attacks.ringshift import RingShift

__all__ = [
    "ATTACKS",
    "BACKDOOR_PARAMS",
    "DATA_ATTACKS",
    "DESCRIPTIONS",
    "PROTOCOL_ATTACKS",
    "SECURE_ATTACKS",
    "UPDATE_ATTACKS",
    "AttackContext",
    "AttackError",
    "RingShift",
    "add_trigger",
    "alie_z",
    "always_alarms",
    "apply",
    "attack_success_rate",
    "is_data_attack",
    "is_protocol_attack",
    "is_secure_attack",
    "is_update_attack",
    "kind_of",
    "poison_dataset",
]
