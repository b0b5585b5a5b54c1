"""flchain.models: data sets, partitioners, model zoo, local trainer, evaluation, params.

Everything a peer needs to turn a task config into a model, train it on its shard and
turn the result into the bytes and flat vector that FL exchanges.
"""

from flchain.models.datasets import (
    DATASET_SPECS_HELP,
    Dataset,
    DatasetError,
    load_dataset,
    synthetic_federated,
)
from flchain.models.device import DeviceError, on_device, pick_device
from flchain.models.evaluation import EvalResult, EvaluationError, evaluate
from flchain.models.params import (
    ParamsError,
    flatten_params,
    load_flat_params,
    model_from_bytes,
    model_to_bytes,
    num_params,
    sha256_hex,
)
from flchain.models.partition import PARTITION_SCHEMES, PartitionError, partition, split_public
from flchain.models.trainer import (
    TrainConfig,
    TrainingError,
    TrainResult,
    local_update,
    train_local,
)
from flchain.models.zoo import MODEL_NAMES, ModelError, build_model

__all__ = [
    "DATASET_SPECS_HELP",
    "MODEL_NAMES",
    "PARTITION_SCHEMES",
    "Dataset",
    "DatasetError",
    "DeviceError",
    "EvalResult",
    "EvaluationError",
    "ModelError",
    "ParamsError",
    "PartitionError",
    "TrainConfig",
    "TrainResult",
    "TrainingError",
    "build_model",
    "evaluate",
    "flatten_params",
    "load_dataset",
    "load_flat_params",
    "local_update",
    "model_from_bytes",
    "model_to_bytes",
    "num_params",
    "on_device",
    "partition",
    "pick_device",
    "sha256_hex",
    "split_public",
    "synthetic_federated",
    "train_local",
]
