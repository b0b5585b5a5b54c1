"""Click options that several commands share, declared once so names, defaults and help agree."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from flchain.config import DEFAULT_MAX_SAMPLES, MAX_SAMPLES_LIMIT, ROBUST_WEIGHTS

F = TypeVar("F", bound=Callable[..., Any])


def weight_options(fn: F) -> F:
    """`--max-samples` and `--robust-weights`: how a task forms aggregation weights, so that
    no member can inflate its own by what it claims."""
    fn = click.option(
        "--robust-weights",
        type=click.Choice(ROBUST_WEIGHTS),
        default="uniform",
        show_default=True,
        help="How rules other than fedavg/geomed weigh the updates they keep.",
    )(fn)
    return click.option(
        "--max-samples",
        type=click.IntRange(0, MAX_SAMPLES_LIMIT),
        default=DEFAULT_MAX_SAMPLES,
        show_default=True,
        help="A claimed sample count weighs at most this much (0: weights ignore samples).",
    )(fn)


def keep_rounds_option(fn: F) -> F:
    """`--keep-rounds`: how many rounds of blobs a node's store keeps (finalized global models
    are always kept)."""
    from flchain.node.blobstore import DEFAULT_KEEP_ROUNDS

    return click.option(
        "--keep-rounds",
        type=click.IntRange(min=1),
        default=DEFAULT_KEEP_ROUNDS,
        show_default=True,
        help="Blob store retention: keep the blobs of the last K rounds (finalized global "
        "models are always kept).",
    )(fn)
