"""The names of the model zoo's architectures and of the partitioners, importable without
torch (the command line offers them as choices); `zoo` and `partition` read them here."""

from __future__ import annotations

MODEL_NAMES = ("logreg", "mlp", "cnn", "resnet")
PARTITION_SCHEMES = ("iid", "dirichlet", "shards", "quantity")
