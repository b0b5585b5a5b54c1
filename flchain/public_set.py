"""The public validation set a SageFlow or Siren task names, and the scores nodes agree on.

Both rules judge each update by how base + update_i does on data the aggregator holds
(SageFlow: loss and prediction entropy; Siren: accuracy). The network has no aggregator, so
the task config names a public set (`PublicData`: a seeded stratified fraction of the task's
training split, `models.partitioning.split_public`, as `flchain simulate` draws it) with the
SHA-256 of the selected samples' bytes. The config's digest is on chain, so the set's is
too: every node derives the set itself and refuses to run when the digest differs.

Every honest node must get the same accepted bitmap and the same global digest, so the
scores must be equal bit for bit on every node. `update_scores` therefore evaluates on the
CPU in float64 (the model and the samples cast up; float32 weights are exact in float64)
and rounds each score to a multiple of `SCORE_QUANTUM`: what is left of thread-count or
BLAS differences (last bits of a float64) disappears in the rounding unless a score lies
within ~1e-15 of a grid point, and accuracies are counts of argmax hits divided by the set
size. tests/test_network_scores.py checks two processes with different torch thread counts.
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from flchain.models import Dataset, evaluate, load_dataset, load_flat_params, split_public
from flchain.public_spec import DEFAULT_PUBLIC_FRACTION, PublicData, PublicSetError

# Scores are rounded to multiples of 2**-20 (about 1e-6): far coarser than float64 noise,
# far finer than anything SageFlow's threshold or loss weights or Siren's slack tell apart.
SCORE_QUANTUM = 2.0**-20
# A model whose scores are not finite is as bad as a model can be (the simulation's value).
WORST_LOSS = 1e30
_DIGEST_TAG = b"flchain-public-set-v1"


@dataclass(frozen=True)
class PublicSet:
    """The derived set: its samples, and the training indices left for the shards."""

    x: torch.Tensor
    y: torch.Tensor
    rest: np.ndarray  # indices into the dataset's training split that are not public
    classes: int


def samples_digest(x: torch.Tensor, y: torch.Tensor) -> str:
    """SHA-256 (hex) of the samples: shapes, then float32 features and int64 labels as
    little-endian bytes, so the digest names the data and not how it is held."""
    xs = np.ascontiguousarray(x.detach().cpu().numpy().astype("<f4"))
    ys = np.ascontiguousarray(y.detach().cpu().numpy().astype("<i8"))
    h = hashlib.sha256(_DIGEST_TAG)
    h.update(repr((tuple(xs.shape), tuple(ys.shape))).encode())
    h.update(xs.tobytes())
    h.update(ys.tobytes())
    return h.hexdigest()


def _select(data: Dataset, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    labels = data.y_train.numpy()
    return split_public(len(labels), fraction, seed=seed, labels=labels)


def describe(
    data: Dataset, fraction: float = DEFAULT_PUBLIC_FRACTION, seed: int = 0, name: str | None = None
) -> PublicData:
    """What the task creator writes into the config: the draw and its samples' digest
    (`name`: the dataset spec as the task config spells it; default `data.name`)."""
    public, _ = _select(data, fraction, seed)
    idx = torch.from_numpy(public)
    digest = samples_digest(data.x_train[idx], data.y_train[idx])
    return PublicData(name or data.name, float(fraction), int(seed), digest)


def derive(spec: PublicData, data: Dataset) -> PublicSet:
    """The public set `spec` names, cut from `data` (the task's dataset, loaded with the task
    seed); PublicSetError when its samples do not match the digest (another dataset file,
    version or loader: the node must not run)."""
    public, rest = _select(data, spec.fraction, spec.seed)
    idx = torch.from_numpy(public)
    x, y = data.x_train[idx], data.y_train[idx]
    found = samples_digest(x, y)
    if found != spec.sha256:
        raise PublicSetError(
            f"the public set derived from {spec.dataset!r} has digest {found}, but the task "
            f"config says {spec.sha256}: this node's copy of the dataset differs; refusing to run"
        )
    return PublicSet(x, y, rest, data.num_classes)


def load_public_data(spec: PublicData, dataset_seed: int) -> PublicSet:
    """`derive` from a freshly loaded dataset (load_dataset(spec.dataset, seed=dataset_seed))."""
    return derive(spec, load_dataset(spec.dataset, seed=dataset_seed))


def quantize(value: float) -> float:
    """`value` rounded to the nearest multiple of SCORE_QUANTUM (exact in float64)."""
    return math.floor(value / SCORE_QUANTUM + 0.5) * SCORE_QUANTUM


@dataclass(frozen=True)
class Scores:
    """Per-update scores on the public set (quantized), in the order of the updates."""

    loss: list[float]
    entropy: list[float]
    accuracy: list[float]

    def side_inputs(self, names: Sequence[str]) -> dict[str, torch.Tensor]:
        """The aggregation side inputs among `names` (public_loss, _entropy, _accuracy)."""
        values = {
            "public_loss": self.loss,
            "public_entropy": self.entropy,
            "public_accuracy": self.accuracy,
        }
        return {k: torch.tensor(v, dtype=torch.float64) for k, v in values.items() if k in names}


def update_scores(
    model: nn.Module, base: torch.Tensor, updates: torch.Tensor, public: PublicSet
) -> Scores:
    """Loss, prediction entropy and accuracy of base + updates[i] on the public set, for
    every row i of `updates` ([n, d] float32), as every honest node computes them: the
    model in float64 on the CPU, each score quantized (`quantize`). `model` is left as is."""
    scorer = copy.deepcopy(model).to(device="cpu", dtype=torch.float64)
    x = public.x.to(device="cpu", dtype=torch.float64)
    loss, entropy, accuracy = [], [], []
    for row in updates:
        params = base.to(torch.float32) + row.to(torch.float32)  # as the global model would be
        ev = None
        if bool(torch.isfinite(params).all()):
            load_flat_params(scorer, params.to(torch.float64))
            ev = evaluate(scorer, x, public.y, device="cpu")
        if ev is not None and math.isfinite(ev.loss) and math.isfinite(ev.entropy):
            loss.append(quantize(ev.loss))
            entropy.append(quantize(ev.entropy))
            accuracy.append(quantize(ev.accuracy))
        else:  # overflowed to a non-finite model: as bad as a model can be
            loss.append(WORST_LOSS)
            entropy.append(quantize(math.log(public.classes)))
            accuracy.append(0.0)
    return Scores(loss, entropy, accuracy)
