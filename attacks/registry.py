"""`apply`: run an update attack by name, with the checks every attack shares."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from flchain.attacks._checks import check_output, check_update
from flchain.attacks.catalog import require_kind
from flchain.attacks.collusion import alie, ipm
from flchain.attacks.context import AttackContext, AttackError
from flchain.attacks.update import gaussian, scale, signflip, zero

UpdateAttack = Callable[[Tensor, AttackContext], Tensor]

UPDATE_FUNCTIONS: dict[str, UpdateAttack] = {
    "signflip": signflip,
    "scale": scale,
    "gaussian": gaussian,
    "zero": zero,
    "alie": alie,
    "ipm": ipm,
}


def apply(name: str, honest_update: Tensor, context: AttackContext | None = None) -> Tensor:
    """The update a Byzantine peer sends instead of `honest_update` (a `[d]` vector).

    The result has the update's shape, dtype and device and is always finite. Data and
    protocol attacks are refused with a message saying where they apply.
    """
    require_kind(name, "update")
    if context is None:
        context = AttackContext()
    elif not isinstance(context, AttackContext):
        raise AttackError(f"context must be an AttackContext, got {type(context).__name__}")
    update = check_update(name, honest_update)
    result = UPDATE_FUNCTIONS[name](update, context)
    return check_output(name, result)
