"""flchain.contracts: the FLChain Vyper contract, its compiled artifact and a typed client.

`FLChain.vy` is the source, `FLChain.json` the committed compile (ABI + bytecode, kept in
step by `python -m flchain.contracts.build --check`), `FLChainClient` the typed web3
client that signs locally.
"""

from flchain._lazy import lazy_exports

_EXPORTS = {
    "Artifact": "flchain.contracts.artifact",
    "ArtifactError": "flchain.contracts.errors",
    "ContractRevert": "flchain.contracts.errors",
    "FLChainClient": "flchain.contracts.client",
    "FLChainError": "flchain.contracts.errors",
    "FailReason": "flchain.contracts.types",
    "InvalidArgumentError": "flchain.contracts.errors",
    "LOSS_SCALE": "flchain.contracts.types",
    "MemberInfo": "flchain.contracts.types",
    "MemberStatus": "flchain.contracts.types",
    "NonceManager": "flchain.contracts.nonce",
    "REP_UNIT": "flchain.contracts.types",
    "RPCError": "flchain.contracts.errors",
    "RetryPolicy": "flchain.contracts.rpc",
    "RoundInfo": "flchain.contracts.types",
    "RoundStatus": "flchain.contracts.types",
    "TaskInfo": "flchain.contracts.types",
    "TaskParams": "flchain.contracts.types",
    "TaskStatus": "flchain.contracts.types",
    "TransactionTimeoutError": "flchain.contracts.errors",
    "TxResult": "flchain.contracts.client",
    "UpdateCommit": "flchain.contracts.types",
    "Vote": "flchain.contracts.types",
    "bitmap": "flchain.contracts.types",
    "bitmap_indices": "flchain.contracts.types",
    "in_bitmap": "flchain.contracts.types",
    "decode_loss": "flchain.contracts.types",
    "deploy": "flchain.contracts.client",
    "encode_loss": "flchain.contracts.types",
    "finalize_gas_bound": "flchain.contracts.client",
    "load_artifact": "flchain.contracts.artifact",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = sorted(_EXPORTS)
