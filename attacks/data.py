"""Data attacks: what a Byzantine peer does to its training set before it trains."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from flchain.attacks._checks import check_dataset, choose_subset, fraction_param
from flchain.attacks.backdoor import backdoor
from flchain.attacks.catalog import require_kind
from flchain.attacks.context import AttackError, check_params


def labelflip(
    x: Tensor,
    y: Tensor,
    *,
    num_classes: int,
    generator: torch.Generator | None = None,
    params: Mapping[str, float] | None = None,
) -> tuple[Tensor, Tensor]:
    """Copies of (x, y) with label y -> num_classes - 1 - y on a random `fraction` (1.0)."""
    params = params or {}
    check_params("labelflip", params, ("fraction",))
    check_dataset("labelflip", x, y, num_classes)
    rows = choose_subset(y.shape[0], fraction_param("labelflip", params, 1.0), generator)
    rows = rows.to(y.device)
    flipped = y.clone()
    flipped[rows] = num_classes - 1 - y[rows]
    return x.clone(), flipped


def poison_dataset(
    name: str,
    x: Tensor,
    y: Tensor,
    *,
    num_classes: int,
    generator: torch.Generator | None = None,
    params: Mapping[str, float] | None = None,
) -> tuple[Tensor, Tensor]:
    """Run data attack `name` on a copy of a node's training data; inputs are left untouched.

    `generator` picks which samples are poisoned, so a seeded run is reproducible.
    """
    require_kind(name, "data")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise AttackError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if params is not None and not isinstance(params, Mapping):
        raise AttackError(f"params must be a mapping of knob name to number, got {params!r}")
    attack = labelflip if name == "labelflip" else backdoor
    return attack(x, y, num_classes=num_classes, generator=generator, params=params)
