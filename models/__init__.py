"""flchain.models: data sets, partitioners, model zoo, local trainer, evaluation, params.

Everything a peer needs to turn a task config into a model, train it on its shard and
turn the result into the bytes and flat vector that FL exchanges.
"""

from flchain._lazy import lazy_exports

_EXPORTS = {
    "DATASET_SPECS_HELP": "flchain.models.datasets",
    "Dataset": "flchain.models.datasets",
    "DatasetError": "flchain.models.datasets",
    "DeviceError": "flchain.models.device",
    "EvalResult": "flchain.models.evaluation",
    "EvaluationError": "flchain.models.evaluation",
    "MODEL_NAMES": "flchain.models.catalog",
    "ModelError": "flchain.models.zoo",
    "PARTITION_SCHEMES": "flchain.models.catalog",
    "ParamsError": "flchain.models.params",
    "PartitionError": "flchain.models.partitioning",
    "TrainConfig": "flchain.models.trainer",
    "TrainResult": "flchain.models.trainer",
    "TrainingError": "flchain.models.trainer",
    "build_model": "flchain.models.zoo",
    "evaluate": "flchain.models.evaluation",
    "flatten_params": "flchain.models.params",
    "load_dataset": "flchain.models.datasets",
    "load_flat_params": "flchain.models.params",
    "local_update": "flchain.models.trainer",
    "model_from_bytes": "flchain.models.params",
    "model_to_bytes": "flchain.models.params",
    "num_params": "flchain.models.params",
    "on_device": "flchain.models.device",
    "partition": "flchain.models.partitioning",
    "pick_device": "flchain.models.device",
    "sha256_hex": "flchain.models.params",
    "split_public": "flchain.models.partitioning",
    "synthetic_federated": "flchain.models.datasets",
    "train_local": "flchain.models.trainer",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = sorted(_EXPORTS)
