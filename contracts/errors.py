"""Exceptions of the FLChain client and a decoder for revert reasons.

Every failure the client reports is an `FLChainError`, so callers can catch one type; a
contract revert carries the contract's short reason string ("not member", "wrong phase")
whichever node produced it (eth-tester in process, the devnet server, anvil, geth).
"""

from __future__ import annotations

import re

_ERROR_SELECTOR = bytes.fromhex("08c379a0")  # Error(string)
_PANIC_SELECTOR = bytes.fromhex("4e487b71")  # Panic(uint256)
_REVERTED = re.compile(r"execution reverted(?::\s*(?P<reason>.*))?", re.IGNORECASE | re.DOTALL)


class FLChainError(Exception):
    """Base class of every error raised by `flchain.contracts`."""


class InvalidArgumentError(FLChainError, ValueError):
    """An argument cannot be sent to the contract (wrong length, negative, out of range)."""


class ContractRevert(FLChainError):  # noqa: N818 (the name the project documents)
    """The contract rejected a call or a mined transaction; `reason` is its revert string."""

    def __init__(self, reason: str, *, tx_hash: str | None = None) -> None:
        self.reason = reason
        self.tx_hash = tx_hash
        where = f" (tx {tx_hash})" if tx_hash else ""
        super().__init__(f"contract reverted: {reason or 'no reason given'}{where}")


class RPCError(FLChainError):
    """The node failed in a way that retrying did not fix (or that is not transient)."""


class TransactionTimeoutError(FLChainError):
    """A sent transaction was not mined within the client's receipt timeout."""


class ArtifactError(FLChainError):
    """The compiled artifact is missing, malformed, or does not match the Vyper source."""


def decode_revert_data(data: bytes) -> str:
    """Reason string from raw revert data: Error(string), Panic(uint256), or empty."""
    if data[:4] == _ERROR_SELECTOR:
        from eth_abi import decode as abi_decode

        try:
            (reason,) = abi_decode(["string"], data[4:])
        except Exception:  # malformed payload: report it rather than hide the revert
            return f"undecodable revert data 0x{data.hex()}"
        return str(reason)
    if data[:4] == _PANIC_SELECTOR and len(data) == 36:
        return f"panic 0x{int.from_bytes(data[4:], 'big'):02x}"
    if not data:
        return ""
    return f"custom error 0x{data.hex()}"


def _as_bytes(data: object) -> bytes | None:
    if isinstance(data, bytes | bytearray):
        return bytes(data)
    if isinstance(data, str) and data.startswith("0x"):
        try:
            return bytes.fromhex(data[2:])
        except ValueError:
            return None
    if isinstance(data, dict):
        return _as_bytes(data.get("data"))
    return None


def revert_reason(exc: BaseException) -> str | None:
    """The revert reason carried by `exc`, or None when `exc` is not a revert.

    Nodes report reverts differently: web3 raises ContractLogicError with the revert data
    (anvil, geth, the devnet server); eth-tester raises its own TransactionFailed whose
    message is "execution reverted: <reason>". Revert data wins over message text.
    """
    from web3.exceptions import ContractLogicError  # web3: only once there is a failure

    if isinstance(exc, ContractLogicError):
        raw = _as_bytes(exc.data)
        if raw is not None:
            return decode_revert_data(raw)
        match = _REVERTED.search(exc.message or "")
        return (match.group("reason") or "").strip() if match else (exc.message or "")
    for arg in exc.args:
        raw = _as_bytes(arg)
        if raw is not None and raw[:4] in (_ERROR_SELECTOR, _PANIC_SELECTOR):
            return decode_revert_data(raw)
    match = _REVERTED.search(str(exc))
    if match:
        return (match.group("reason") or "").strip().strip("'\"")
    return None


def error_object_revert(error: object) -> str | None:
    """The revert reason of a JSON-RPC error object (`{"code", "message", "data"}`), or
    None when it is not a revert: what web3 reads into ContractLogicError, for answers read
    off the provider directly. Revert data (geth, anvil, the devnet) wins over the message
    (code 3, or "execution reverted" in it)."""
    if not isinstance(error, dict):
        return None
    message = str(error.get("message") or "")
    raw = _as_bytes(error.get("data"))
    if raw is not None and raw:
        return decode_revert_data(raw)
    match = _REVERTED.search(message)
    if match:
        return (match.group("reason") or "").strip()
    if error.get("code") == 3:
        return message
    return None
