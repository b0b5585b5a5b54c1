"""Errors of the devnet chain server, each carrying its JSON-RPC error code.

The chain core raises these directly so that the RPC layer maps an exception to a JSON-RPC error
object in one place, without guessing codes from messages. All are `ValueError` subclasses: they
describe bad input (a malformed request, an invalid transaction) rather than a server fault.
"""

from __future__ import annotations

from typing import Any

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SERVER_ERROR = -32000
EXECUTION_REVERTED = 3


class RpcError(ValueError):
    """A failure reported to the client as a JSON-RPC error object."""

    code: int = SERVER_ERROR

    def __init__(self, message: str, *, data: Any = None, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data
        if code is not None:
            self.code = code

    def to_json(self) -> dict[str, Any]:
        """The `error` member of a JSON-RPC response."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


class ParseError(RpcError):
    """The request body is not valid JSON."""

    code = PARSE_ERROR


class InvalidRequestError(RpcError):
    """The JSON is not a valid JSON-RPC 2.0 request object."""

    code = INVALID_REQUEST


class MethodNotFoundError(RpcError):
    """No handler is registered for the requested method."""

    code = METHOD_NOT_FOUND


class InvalidParamsError(RpcError):
    """The method exists but its parameters are missing, extra or malformed."""

    code = INVALID_PARAMS


class TransactionRejectedError(RpcError):
    """A transaction that cannot enter a block: bad nonce, funds, signature, chain id, gas."""

    code = SERVER_ERROR


class ExecutionRevertedError(RpcError):
    """A call or gas estimate hit REVERT; `data` carries the raw revert bytes as 0x-hex.

    Geth and anvil use code 3 with the revert payload in `data`, which is what web3 and cast
    decode into a reason string or a custom error.
    """

    code = EXECUTION_REVERTED


class ExecutionFailedError(RpcError):
    """A call or gas estimate failed for a reason other than REVERT (out of gas, bad opcode)."""

    code = SERVER_ERROR


class ResourceNotFoundError(RpcError):
    """A block, filter or snapshot named by the request does not exist."""

    code = SERVER_ERROR


class ExecutionTimeoutError(ExecutionFailedError):
    """A call or gas estimate ran past the RPC's wall-clock bound and was stopped (geth's
    --rpc.evmtimeout); the chain lock is free again when this is raised."""
