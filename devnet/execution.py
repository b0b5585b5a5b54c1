"""Message calls without a transaction: eth_call and gas estimation on a throwaway state.

The state comes from `DevChain`; this module builds the unsigned, sender-spoofed transaction,
runs it, and turns EVM failures into JSON-RPC errors. A REVERT keeps its raw payload (code 3,
`data`), which is how web3 and cast recover a reason string or a custom error.
"""

from __future__ import annotations

from eth.abc import StateAPI, TransactionBuilderAPI
from eth.estimators.gas import binary_gas_search_exact
from eth.exceptions import Revert, VMError
from eth.vm.spoof import SpoofTransaction
from eth_abi import decode as abi_decode
from eth_utils import ValidationError as EthValidationError

from flchain.devnet.encoding import to_data
from flchain.devnet.errors import ExecutionFailedError, ExecutionRevertedError
from flchain.devnet.txargs import TxArgs

_ERROR_SELECTOR = bytes.fromhex("08c379a0")
_PANIC_SELECTOR = bytes.fromhex("4e487b71")
_ZERO_ADDRESS = b"\x00" * 20


def call_transaction(
    builder: TransactionBuilderAPI, chain_id: int, state: StateAPI, args: TxArgs, gas: int
) -> SpoofTransaction:
    """An unsigned transaction for `args`, sent as `args.sender` (the zero address if unset).

    Like geth, calls skip the nonce check (the sender's current nonce is used) and cost nothing
    unless a gas price is given.
    """
    sender = args.sender or _ZERO_ADDRESS
    nonce = state.get_nonce(sender)
    gas_price = args.gas_price or 0
    to = args.to if args.to is not None else b""
    if args.access_list:
        unsigned = builder.new_unsigned_access_list_transaction(
            chain_id=chain_id,
            nonce=nonce,
            gas_price=gas_price,
            gas=gas,
            to=to,
            value=args.value,
            data=args.data,
            access_list=args.access_list,
        )
    else:
        unsigned = builder.create_unsigned_transaction(
            nonce=nonce, gas_price=gas_price, gas=gas, to=to, value=args.value, data=args.data
        )
    return SpoofTransaction(unsigned, from_=sender)


def run_call(state: StateAPI, tx: SpoofTransaction) -> bytes:
    """Execute and roll back; the return data, or an execution error."""
    snapshot = state.snapshot()
    try:
        computation = state.apply_transaction(tx)
    except EthValidationError as exc:
        raise ExecutionFailedError(str(exc)) from exc
    finally:
        state.revert(snapshot)
    if computation.is_error:
        raise_execution_error(computation.error, bytes(computation.output))
    return bytes(computation.output)


def estimate_gas(state: StateAPI, tx: SpoofTransaction, cap: int) -> int:
    """The least gas limit (at most `cap`) with which `tx` succeeds, by exact binary search."""
    try:
        estimate = binary_gas_search_exact(state, tx)
    except Revert as exc:
        raise_execution_error(exc, bytes(exc.args[0]) if exc.args else b"")
    except VMError as exc:
        raise ExecutionFailedError(f"gas required exceeds allowance ({cap}): {exc}") from exc
    except EthValidationError as exc:
        raise ExecutionFailedError(str(exc)) from exc
    if estimate > cap:
        raise ExecutionFailedError(f"gas required exceeds allowance ({cap})")
    return estimate


def revert_reason(data: bytes) -> str | None:
    """The reason of an Error(string) revert or the code of a Panic(uint256), if decodable."""
    try:
        if data[:4] == _ERROR_SELECTOR:
            return str(abi_decode(["string"], data[4:])[0])
        if data[:4] == _PANIC_SELECTOR:
            return f"panic code {hex(abi_decode(['uint256'], data[4:])[0])}"
    except Exception:  # a malformed revert payload just has no readable reason
        return None
    return None


def raise_execution_error(error: Exception | None, output: bytes) -> None:
    """Raise the JSON-RPC error for a failed execution (code 3 with data for a REVERT)."""
    if isinstance(error, Revert):
        reason = revert_reason(output)
        message = "execution reverted" + (f": {reason}" if reason else "")
        raise ExecutionRevertedError(message, data=to_data(output))
    raise ExecutionFailedError(f"execution failed: {error or 'unknown error'}")
