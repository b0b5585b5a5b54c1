"""What data a peer holds, cut the same way by `flchain simulate` and by a network node.

A simulated peer and the node with the same task seed and index hold the same samples: the
public set (only where the task's rule needs one) comes off the training split first, the rest
is partitioned among the peers, a data attacker poisons its shard from its own seeded stream,
and Siren's peers hold out a seeded tenth for their alarms. Which peers are Byzantine is one
seeded draw too (`byzantine_indices`), so `devnet up --byzantine K` and `simulate
--byzantine K` with one seed make the same peers attack. The simulation and the network then
run the same experiment, and the network robustness matrix (`make bench-robust-network`)
compares like with like.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from flchain.aggregation.siren import validation_split
from flchain.attacks import DATA_ATTACKS, poison_dataset
from flchain.models import partition
from flchain.pipeline import stream, stream_seed

POISON_STREAM = 0x9015
"""Stream tag of a data attacker's poisoning draw (which samples, which trigger)."""
SIREN_VALIDATION_STREAM = 0x5A1
"""Stream tag of a Siren peer's held-out validation tenth."""
_BYZANTINE_STREAM = 0xB1


def byzantine_indices(nodes: int, count: int, seed: int) -> list[int]:
    """The `count` of `nodes` peers that attack, a seeded draw (sorted): placed at random
    rather than last, so a non-IID partition does not hand the attackers particular shards."""
    if not 0 <= count <= nodes:
        raise ValueError(f"{count} Byzantine peers among {nodes} is not possible")
    rng = np.random.Generator(np.random.PCG64([seed, _BYZANTINE_STREAM]))
    return sorted(int(i) for i in rng.choice(nodes, size=count, replace=False))


def shard_indices(
    labels: np.ndarray,
    rest: np.ndarray,
    nodes: int,
    index: int,
    scheme: str,
    *,
    alpha: float,
    classes_per_client: int = 2,
    seed: int,
) -> np.ndarray:
    """Peer `index`'s indices into the training split: its part of `rest` (the indices not
    in the public set) under the partition `scheme`, drawn from the task seed."""
    shards = partition(
        labels[rest], nodes, scheme, alpha=alpha, classes_per_client=classes_per_client, seed=seed
    )
    return rest[np.asarray(shards[index])]


def poisoned(
    attack: str | None,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    num_classes: int,
    seed: int,
    index: int,
    params: Mapping[str, float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The shard a peer trains on: poisoned by its data attack (from the peer's poison
    stream), untouched otherwise."""
    if attack not in DATA_ATTACKS:
        return x, y
    generator = stream(seed, POISON_STREAM, 0, index)
    return poison_dataset(attack, x, y, num_classes=num_classes, generator=generator, params=params)


def siren_validation(n: int, seed: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(validation, training) positions in a Siren peer's shard of n samples."""
    return validation_split(n, stream_seed(seed, SIREN_VALIDATION_STREAM, index))
