"""Input checks and sample selection shared by the update and data attacks."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from flchain.attacks.context import AttackContext, AttackError, float_param


def check_update(attack: str, update: object) -> Tensor:
    """The peer's own update: a finite, non-empty, 1-D floating tensor."""
    if not isinstance(update, Tensor):
        raise AttackError(
            f"attack {attack!r}: honest_update must be a torch.Tensor, got {type(update).__name__}"
        )
    if update.ndim != 1 or update.numel() == 0:
        raise AttackError(
            f"attack {attack!r}: honest_update must be a non-empty 1-D vector, "
            f"got shape {tuple(update.shape)}"
        )
    if not update.is_floating_point():
        raise AttackError(f"attack {attack!r}: honest_update must be floating, got {update.dtype}")
    if not bool(torch.isfinite(update).all()):
        raise AttackError(f"attack {attack!r}: honest_update contains NaN or infinity")
    return update


def honest_matrix(attack: str, update: Tensor, context: AttackContext) -> Tensor:
    """The colluders' view `[m, d]` of the benign updates, checked against the peer's `[d]`.

    The result is on the update's device and dtype so the attack's output matches it.
    """
    honest = context.honest_updates
    if honest is None:
        raise AttackError(
            f"attack {attack!r} needs context.honest_updates (the benign updates of the round)"
        )
    if not isinstance(honest, Tensor):
        raise AttackError(f"attack {attack!r}: honest_updates must be a torch.Tensor")
    if honest.ndim != 2 or honest.shape[0] == 0:
        raise AttackError(
            f"attack {attack!r}: honest_updates must be a non-empty [m, d] matrix, "
            f"got shape {tuple(honest.shape)}"
        )
    if honest.shape[1] != update.shape[0]:
        raise AttackError(
            f"attack {attack!r}: honest_updates have dimension {honest.shape[1]} but "
            f"honest_update has {update.shape[0]}"
        )
    if not honest.is_floating_point():
        raise AttackError(f"attack {attack!r}: honest_updates must be floating, got {honest.dtype}")
    if not bool(torch.isfinite(honest).all()):
        raise AttackError(f"attack {attack!r}: honest_updates contain NaN or infinity")
    return honest.to(device=update.device, dtype=update.dtype)


def check_output(attack: str, result: Tensor) -> Tensor:
    """Refuse to hand back an update that overflowed (e.g. a huge scale in float16)."""
    if not bool(torch.isfinite(result).all()):
        raise AttackError(
            f"attack {attack!r} produced NaN or infinity (its knobs overflow {result.dtype})"
        )
    return result


def check_dataset(attack: str, x: object, y: object, num_classes: int | None) -> None:
    """`x` is `[N, ...]` floating, `y` is `[N]` integer class labels (below `num_classes`)."""
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise AttackError(f"attack {attack!r}: x and y must be torch.Tensors")
    if not x.is_floating_point():
        raise AttackError(
            f"attack {attack!r}: x must be floating (scaled to [0, 1]), got {x.dtype}"
        )
    if y.ndim != 1 or y.dtype == torch.bool or y.is_floating_point() or y.is_complex():
        raise AttackError(
            f"attack {attack!r}: y must be a 1-D integer label vector, "
            f"got {y.dtype} of shape {tuple(y.shape)}"
        )
    if x.ndim < 2 or x.shape[0] != y.shape[0]:
        raise AttackError(
            f"attack {attack!r}: x must be [N, ...] with N = len(y) = {y.shape[0]}, "
            f"got shape {tuple(x.shape)}"
        )
    if num_classes is None:
        return
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise AttackError(
            f"attack {attack!r}: num_classes must be an int >= 2, got {num_classes!r}"
        )
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise AttackError(
            f"attack {attack!r}: labels must lie in [0, {num_classes}), "
            f"got range [{int(y.min())}, {int(y.max())}]"
        )


def fraction_param(attack: str, params: Mapping[str, object], default: float) -> float:
    """The `fraction` knob: the share of samples an attack poisons, in [0, 1]."""
    fraction = float_param(attack, params, "fraction", default)
    if not 0.0 <= fraction <= 1.0:
        raise AttackError(f"attack {attack!r}: fraction must lie in [0, 1], got {fraction}")
    return fraction


def choose_subset(count: int, fraction: float, generator: torch.Generator | None) -> Tensor:
    """Indices of round(fraction * count) samples drawn without replacement.

    Rounds half up, so fraction 0.5 of 5 samples poisons 3; the same seed picks the same rows.
    """
    chosen = math.floor(fraction * count + 0.5)
    device = generator.device if generator is not None else torch.device("cpu")
    order = torch.randperm(count, generator=generator, device=device)
    return order[:chosen].cpu()
