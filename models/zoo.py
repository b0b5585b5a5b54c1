"""The model zoo: small classifiers that every peer can build identically from a name.

Weights are initialised by torch's default initialisers from the global RNG, so the caller
seeds (``torch.manual_seed(s)`` right before `build_model`) and every peer that uses the
same seed gets the same initial global model. No model has BatchNorm or other running-stat
buffers: averaging such statistics across clients is ill-defined, so the ResNet uses
GroupNorm, and the flat parameter vector exchanged in FL covers the whole model state.
"""

from __future__ import annotations

import math
import operator

import torch
from torch import nn

from flchain.models.catalog import MODEL_NAMES

_MLP_HIDDEN = (128, 64)
_CNN_POOLED = 4  # the CNN pools its feature maps to 4x4 whatever the image size
_GN_GROUPS = 8


class ModelError(ValueError):
    """Raised for an unknown model name or an input shape the model cannot take."""


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Build model `name` for samples of `input_shape` (``(F,)`` or ``(C, H, W)``).

    - ``logreg``: flatten + one linear layer (multinomial logistic regression).
    - ``mlp``: flatten, two hidden layers (128, 64) with ReLU.
    - ``cnn``: conv3x3(32)-ReLU-conv3x3(64)-ReLU-maxpool2, adaptive average pool to 4x4,
      fc(128)-ReLU-fc; the same parameter count for 8x8, 28x28 and 32x32 images.
    - ``resnet``: a ResNet-8 (stem + three stages of one basic block, 16/32/64 channels)
      with GroupNorm in place of BatchNorm.

    The model outputs logits of shape ``[N, num_classes]``.
    """
    shape = _check_shape(input_shape)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ModelError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    features = math.prod(shape)
    if name == "logreg":
        return nn.Sequential(nn.Flatten(), nn.Linear(features, num_classes))
    if name == "mlp":
        h1, h2 = _MLP_HIDDEN
        return nn.Sequential(
            nn.Flatten(),
            nn.Linear(features, h1),
            nn.ReLU(),
            nn.Linear(h1, h2),
            nn.ReLU(),
            nn.Linear(h2, num_classes),
        )
    if name == "cnn":
        channels, height, width = _image_shape(name, shape)
        if height < 2 or width < 2:
            raise ModelError(f"cnn needs images of at least 2x2, got {height}x{width}")
        return nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(_CNN_POOLED),
            nn.Flatten(),
            nn.Linear(64 * _CNN_POOLED * _CNN_POOLED, 128),
            nn.ReLU(),
            nn.Linear(128, num_classes),
        )
    if name == "resnet":
        channels, _, _ = _image_shape(name, shape)
        return _ResNet(channels, num_classes)
    raise ModelError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")


class _BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (He et al. 2016), GroupNorm."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.norm1 = nn.GroupNorm(_GN_GROUPS, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.norm2 = nn.GroupNorm(_GN_GROUPS, out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.GroupNorm(_GN_GROUPS, out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class _ResNet(nn.Module):
    """ResNet-8: stem, stages of 16, 32 (stride 2) and 64 (stride 2) channels, global pool."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False),
            nn.GroupNorm(_GN_GROUPS, 16),
            nn.ReLU(),
        )
        self.stages = nn.Sequential(
            _BasicBlock(16, 16, 1), _BasicBlock(16, 32, 2), _BasicBlock(32, 64, 2)
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


def _check_shape(input_shape: tuple[int, ...]) -> tuple[int, ...]:
    try:
        shape = tuple(operator.index(d) for d in input_shape)
    except TypeError:
        raise ModelError(f"input_shape must be a tuple of ints, got {input_shape!r}") from None
    if not shape or any(d < 1 for d in shape) or any(isinstance(d, bool) for d in input_shape):
        raise ModelError(f"input_shape must be positive ints, e.g. (1, 8, 8), got {input_shape!r}")
    return shape


def _image_shape(name: str, shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise ModelError(f"{name} needs image input (C, H, W), got input_shape {shape}")
    return shape[0], shape[1], shape[2]
