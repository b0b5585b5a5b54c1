"""Warnings about settings that run but cannot do what the user wants, said before the run.

One place for them, so `flchain simulate` and `flchain devnet up` tell the same story.
"""

from __future__ import annotations

from flchain.crypto.distributed_dp import learning_warning
from flchain.models import build_model, load_dataset
from flchain.taskconfig import TaskConfig


def setting_warnings(
    *,
    rule: str,
    nodes: int,
    rounds: int,
    dimension: int,
    secure: bool,
    dp_clip: float | None,
    dp_noise: float,
) -> list[str]:
    """What is wrong with these settings, in words (empty when nothing is)."""
    warnings = []
    if secure and dp_clip is None:
        warnings.append(
            "secure mode without --dp-clip: nothing bounds what a member encrypts, so one "
            "Byzantine member can set the decrypted mean anywhere in the quantization range "
            "(the ringshift attack); with a clip C the nodes reject a mean whose norm exceeds "
            "C plus the noise allowance (crypto/aggregate_bound.py)"
        )
    if dp_noise > 0:
        reason = learning_warning(dp_noise, nodes, dimension, rounds, local=not secure, rule=rule)
        if reason is not None:
            warnings.append(reason)
    return warnings


def task_warnings(config: TaskConfig, *, nodes: int, rounds: int) -> list[str]:
    """`setting_warnings` for a network task of `nodes` members over `rounds` rounds (loads
    the dataset to size the model only when DP or secure mode is on)."""
    if not config.secure and config.dp_noise <= 0:
        return []
    data = load_dataset(config.dataset, seed=config.seed)
    model = build_model(config.model, data.input_shape, data.num_classes)
    return setting_warnings(
        rule=config.rule,
        nodes=nodes,
        rounds=rounds,
        dimension=sum(int(p.numel()) for p in model.parameters()),
        secure=config.secure,
        dp_clip=config.dp_clip,
        dp_noise=config.dp_noise,
    )
