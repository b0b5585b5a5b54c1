"""Message calls without a transaction: eth_call and gas estimation on a throwaway state.

The state comes from `DevChain`; this module builds the unsigned, sender-spoofed transaction,
runs it, and turns EVM failures into JSON-RPC errors. A REVERT keeps its raw payload (code 3,
`data`), which is how web3 and cast recover a reason string or a custom error.

Every run has a wall-clock deadline (geth's --rpc.evmtimeout): the state executes with a
computation class whose JUMPDEST, CALL-family and CREATE-family opcodes check the clock, so a
loop that would hold the chain lock for minutes is stopped inside the EVM and the lock is
released. Every loop passes a JUMPDEST and every frame boundary a call opcode (checked before
and after the child runs), so between two checks the EVM runs at most one stretch of
straight-line code, bounded by the code size (a few tens of milliseconds).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from eth.abc import ComputationAPI, StateAPI, TransactionBuilderAPI
from eth.exceptions import Revert
from eth.vm.spoof import SpoofTransaction
from eth_abi import decode as abi_decode
from eth_utils import ValidationError as EthValidationError

from flchain.devnet.encoding import to_data
from flchain.devnet.errors import (
    ExecutionFailedError,
    ExecutionRevertedError,
    ExecutionTimeoutError,
)
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


def run_call(state: StateAPI, tx: SpoofTransaction, *, timeout: float) -> bytes:
    """Execute and roll back; the return data, or an execution error.

    Raises `ExecutionTimeoutError` when the EVM runs longer than `timeout` seconds.
    """
    with evm_deadline(state, timeout):
        computation = _apply(state, tx)
    if computation.is_error:
        raise_execution_error(computation.error, bytes(computation.output))
    return bytes(computation.output)


# Gas estimation stops once its bracket is within this fraction of the answer, as geth's and
# anvil's do (1.5%): an exact search runs the transaction about 25 times, this one two or three.
ESTIMATE_ERROR_RATIO = 0.015
# What a CALL with value adds that the unconstrained run may have refunded (EIP-150's 63/64 is
# applied on top), as in geth's optimistic first guess.
_CALL_STIPEND = 2300


def estimate_gas(state: StateAPI, tx: SpoofTransaction, cap: int, *, timeout: float) -> int:
    """A gas limit (at most `cap`) with which `tx` succeeds, within ESTIMATE_ERROR_RATIO of the
    least one, found as geth finds it.

    One unconstrained run gives the gas used, which bounds the answer from below (a contract
    that reads its remaining gas aside); that exact amount is tried first, as it is the answer
    for any transaction without refunds or 63/64 effects, then geth's optimistic guess
    (used + refund + stipend) * 64/63; a binary search closes what is left. The whole search
    shares one deadline of `timeout` seconds.
    """
    with evm_deadline(state, timeout):
        low = tx.intrinsic_gas
        if low > cap:
            raise ExecutionFailedError(f"intrinsic gas {low} exceeds allowance ({cap})")
        highest = _apply(state, SpoofTransaction(tx, gas=cap))
        if highest.is_error:
            if isinstance(highest.error, Revert):
                raise_execution_error(highest.error, bytes(highest.output))
            raise ExecutionFailedError(f"gas required exceeds allowance ({cap}): {highest.error}")
        used = min(cap, max(low, cap - highest.get_gas_remaining()))
        refund = highest.get_gas_refund()
        if _succeeds(state, tx, used):
            return used
        low, high = used, cap
        optimistic = (used + refund + _CALL_STIPEND) * 64 // 63
        if optimistic < cap and _succeeds(state, tx, optimistic):
            high = optimistic
        while high - low > 1 and (high - low) / high >= ESTIMATE_ERROR_RATIO:
            middle = (low + high) // 2
            if _succeeds(state, tx, middle):
                high = middle
            else:
                low = middle
        return high


def _succeeds(state: StateAPI, tx: SpoofTransaction, gas: int) -> bool:
    return not _apply(state, SpoofTransaction(tx, gas=gas)).is_error


def _apply(state: StateAPI, tx: SpoofTransaction) -> ComputationAPI:
    """Run `tx` on `state` and roll every change back."""
    snapshot = state.snapshot()
    try:
        return state.apply_transaction(tx)
    except EthValidationError as exc:
        raise ExecutionFailedError(str(exc)) from exc
    finally:
        state.revert(snapshot)


class _OutOfTime(Exception):  # noqa: N818 - internal signal, not an error users see
    """Raised by an opcode past the deadline. Not a VMError, so no EVM frame catches it."""


_clock = threading.local()


@contextmanager
def evm_deadline(state: StateAPI, timeout: float) -> Iterator[None]:
    """Run everything inside on `state` with a wall-clock bound of `timeout` seconds."""
    base = type(state).computation_class
    state.computation_class = _timed_class(base)  # type: ignore[misc]
    outer = getattr(_clock, "deadline", None)
    _clock.deadline = time.monotonic() + timeout
    try:
        yield
    except _OutOfTime:
        raise ExecutionTimeoutError(f"execution aborted (timeout = {timeout:g}s)") from None
    finally:
        _clock.deadline = outer
        state.computation_class = base  # type: ignore[misc]


_JUMPDEST = 0x5B
# CREATE, CALL, CALLCODE, DELEGATECALL, CREATE2, STATICCALL: they run a child frame.
_FRAME_OPCODES = frozenset({0xF0, 0xF1, 0xF2, 0xF4, 0xF5, 0xFA})
_TIMED_CLASSES: dict[type[Any], type[Any]] = {}


def _timed_class(base: type[Any]) -> type[Any]:
    """`base` whose loop and frame opcodes check this thread's deadline (built once per fork)."""
    timed = _TIMED_CLASSES.get(base)
    if timed is None:
        opcodes = dict(base.opcodes)
        for code, opcode in base.opcodes.items():
            if code == _JUMPDEST:
                opcodes[code] = _timed_opcode(opcode, after=False)
            elif code in _FRAME_OPCODES:
                opcodes[code] = _timed_opcode(opcode, after=True)
        timed = type(f"Timed{base.__name__}", (base,), {"opcodes": opcodes})
        _TIMED_CLASSES[base] = timed
    return timed


def _check_deadline() -> None:
    deadline = getattr(_clock, "deadline", None)
    if deadline is not None and time.monotonic() > deadline:
        raise _OutOfTime


def _timed_opcode(opcode: Any, *, after: bool) -> Any:
    def timed(computation: ComputationAPI) -> None:
        _check_deadline()
        opcode(computation=computation)
        if after:
            _check_deadline()

    timed.__wrapped__ = opcode  # type: ignore[attr-defined]  # py-evm's debug log reads it
    return timed


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
