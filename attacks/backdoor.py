"""Backdoor (pixel-trigger) data poisoning and the attack success rate that measures it."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from flchain.attacks._checks import check_dataset, choose_subset, fraction_param
from flchain.attacks.context import AttackError, check_params, float_param, int_param

BACKDOOR_PARAMS: tuple[str, ...] = ("fraction", "target", "size", "value")
"""Knobs: `fraction` of samples poisoned (0.5), `target` label (0), trigger `size` (2: a 2x2
square on images, the last 2*2 features on flat inputs), trigger `value` (1.0, the maximum of
data scaled to [0, 1])."""

_EVAL_BATCH = 1024


def _trigger_shape(params: Mapping[str, object]) -> tuple[int, float]:
    check_params("backdoor", params, BACKDOOR_PARAMS)
    size = int_param("backdoor", params, "size", 2)
    if size < 1:
        raise AttackError(f"attack 'backdoor': size must be >= 1, got {size}")
    return size, float_param("backdoor", params, "value", 1.0)


def add_trigger(x: Tensor, params: Mapping[str, float] | None = None) -> Tensor:
    """A copy of `x` with the trigger stamped on every sample.

    Images `[N, C, H, W]` get a `size` x `size` square of `value` in the bottom-right corner
    of every channel; flat inputs `[N, F]` get their last `size * size` features set to
    `value`, so both layouts carry the same number of trigger values.
    """
    size, value = _trigger_shape(params or {})
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise AttackError("attack 'backdoor': x must be a floating torch.Tensor")
    stamped = x.clone()
    if x.ndim == 4:
        height, width = x.shape[2], x.shape[3]
        if size > height or size > width:
            raise AttackError(
                f"attack 'backdoor': a {size}x{size} trigger does not fit {height}x{width} images"
            )
        stamped[:, :, height - size :, width - size :] = value
    elif x.ndim == 2:
        features = x.shape[1]
        if size * size > features:
            raise AttackError(
                f"attack 'backdoor': {size * size} trigger features do not fit {features} features"
            )
        stamped[:, features - size * size :] = value
    else:
        raise AttackError(
            f"attack 'backdoor': x must be images [N, C, H, W] or flat [N, F], "
            f"got shape {tuple(x.shape)}"
        )
    return stamped


def _target_param(params: Mapping[str, object], num_classes: int) -> int:
    target = int_param("backdoor", params, "target", 0)
    if not 0 <= target < num_classes:
        raise AttackError(
            f"attack 'backdoor': target {target} is not a class in [0, {num_classes})"
        )
    return target


def backdoor(
    x: Tensor,
    y: Tensor,
    *,
    num_classes: int,
    generator: torch.Generator | None = None,
    params: Mapping[str, float] | None = None,
) -> tuple[Tensor, Tensor]:
    """Copies of (x, y) where a random `fraction` of samples carry the trigger and `target`."""
    params = params or {}
    check_params("backdoor", params, BACKDOOR_PARAMS)
    check_dataset("backdoor", x, y, num_classes)
    target = _target_param(params, num_classes)
    fraction = fraction_param("backdoor", params, 0.5)
    rows = choose_subset(x.shape[0], fraction, generator)
    poisoned_x, poisoned_y = x.clone(), y.clone()
    poisoned_x[rows.to(x.device)] = add_trigger(x[rows.to(x.device)], params)
    poisoned_y[rows.to(y.device)] = target
    return poisoned_x, poisoned_y


def _model_device(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def attack_success_rate(
    model: nn.Module,
    x_test: Tensor,
    y_test: Tensor,
    *,
    target: int = 0,
    params: Mapping[str, float] | None = None,
    device: torch.device | str | None = None,
) -> float:
    """Share of triggered test samples whose true label is not `target` that `model` calls `target`.

    Samples already labelled `target` are left out, since predicting it for them says nothing
    about the backdoor. The model is evaluated in eval mode and its mode is restored after.
    """
    params = params or {}
    check_params("backdoor", params, BACKDOOR_PARAMS)
    if "target" in params and int_param("backdoor", params, "target", target) != target:
        raise AttackError(
            f"attack 'backdoor': params target {params['target']} disagrees with target={target}"
        )
    if isinstance(target, bool) or not isinstance(target, int) or target < 0:
        raise AttackError(f"attack 'backdoor': target must be a class index >= 0, got {target!r}")
    check_dataset("backdoor", x_test, y_test, None)
    keep = y_test != target
    if not bool(keep.any()):
        raise AttackError(
            f"attack 'backdoor': no test sample has a label other than {target}; "
            "the success rate is undefined"
        )
    triggered = add_trigger(x_test[keep.to(x_test.device)], params)
    run_on = torch.device(device) if device is not None else _model_device(model)
    hits = 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, triggered.shape[0], _EVAL_BATCH):
                batch = triggered[start : start + _EVAL_BATCH].to(run_on)
                logits = model(batch)
                if logits.ndim != 2 or logits.shape[0] != batch.shape[0]:
                    raise AttackError(
                        f"attack 'backdoor': model must return [batch, classes] logits, "
                        f"got shape {tuple(logits.shape)}"
                    )
                if target >= logits.shape[1]:
                    raise AttackError(
                        f"attack 'backdoor': target {target} is not among the model's "
                        f"{logits.shape[1]} classes"
                    )
                hits += int((logits.argmax(dim=1) == target).sum())
    finally:
        model.train(was_training)
    return hits / triggered.shape[0]
