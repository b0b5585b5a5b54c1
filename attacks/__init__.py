"""Byzantine behaviours: update attacks (`apply`), data attacks (`poison_dataset`), the ring
attack of a secure-mode member (`RingShift`) and the names of the protocol attacks that the
network node carries out."""

from flchain._lazy import lazy_exports

_EXPORTS = {
    "ATTACKS": "flchain.attacks.catalog",
    "AttackContext": "flchain.attacks.context",
    "AttackError": "flchain.attacks.errors",
    "BACKDOOR_PARAMS": "flchain.attacks.backdoor",
    "DATA_ATTACKS": "flchain.attacks.catalog",
    "DESCRIPTIONS": "flchain.attacks.catalog",
    "PROTOCOL_ATTACKS": "flchain.attacks.catalog",
    "RingShift": "flchain.attacks.ringshift",
    "SECURE_ATTACKS": "flchain.attacks.catalog",
    "UPDATE_ATTACKS": "flchain.attacks.catalog",
    "add_trigger": "flchain.attacks.backdoor",
    "alie_z": "flchain.attacks.collusion",
    "always_alarms": "flchain.attacks.catalog",
    "apply": "flchain.attacks.registry",
    "attack_success_rate": "flchain.attacks.backdoor",
    "is_data_attack": "flchain.attacks.catalog",
    "is_protocol_attack": "flchain.attacks.catalog",
    "is_secure_attack": "flchain.attacks.catalog",
    "is_update_attack": "flchain.attacks.catalog",
    "kind_of": "flchain.attacks.catalog",
    "poison_dataset": "flchain.attacks.data",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = sorted(_EXPORTS)
