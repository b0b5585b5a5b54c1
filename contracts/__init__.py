"""flchain.contracts: the FLChain Vyper contract, its compiled artifact and a typed client.

`FLChain.vy` is the source, `FLChain.json` the committed compile (ABI + bytecode, kept in
step by `python -m flchain.contracts.build --check`), `FLChainClient` the typed web3
client that signs locally.
"""

from flchain.contracts.artifact import Artifact, load_artifact
from flchain.contracts.client import FLChainClient, TxResult, deploy, finalize_gas_bound
from flchain.contracts.errors import (
    ArtifactError,
    ContractRevert,
    FLChainError,
    InvalidArgumentError,
    RPCError,
    TransactionTimeoutError,
)
from flchain.contracts.nonce import NonceManager
from flchain.contracts.rpc import RetryPolicy
from flchain.contracts.types import (
    LOSS_SCALE,
    REP_UNIT,
    FailReason,
    MemberInfo,
    MemberStatus,
    RoundInfo,
    RoundStatus,
    TaskInfo,
    TaskParams,
    TaskStatus,
    UpdateCommit,
    Vote,
    bitmap,
    bitmap_indices,
    decode_loss,
    encode_loss,
)

__all__ = [
    "LOSS_SCALE",
    "REP_UNIT",
    "Artifact",
    "ArtifactError",
    "ContractRevert",
    "FLChainClient",
    "FLChainError",
    "FailReason",
    "InvalidArgumentError",
    "MemberInfo",
    "MemberStatus",
    "NonceManager",
    "RPCError",
    "RetryPolicy",
    "RoundInfo",
    "RoundStatus",
    "TaskInfo",
    "TaskParams",
    "TaskStatus",
    "TransactionTimeoutError",
    "TxResult",
    "UpdateCommit",
    "Vote",
    "bitmap",
    "bitmap_indices",
    "decode_loss",
    "deploy",
    "encode_loss",
    "finalize_gas_bound",
    "load_artifact",
]
