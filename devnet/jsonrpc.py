"""JSON-RPC 2.0 request handling: parsing, batches, error objects, one lock around the chain
(except for handlers marked `lock_free`).

`JsonRpcDispatcher.handle_body` never raises: whatever arrives (bad JSON, wrong shapes, a
handler bug) becomes a JSON-RPC error response and is logged, so one bad client cannot stop
the server. Bodies are parsed by `flchain.safe_json` with a size and a nesting bound: the C
JSON parser would otherwise overflow the stack on a 75 KB body of brackets.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from flchain import safe_json
from flchain.devnet.errors import (
    INTERNAL_ERROR,
    InvalidParamsError,
    InvalidRequestError,
    MethodNotFoundError,
    ParseError,
    RpcError,
)
from flchain.devnet.policy import DEFAULT_MAX_BODY, DEFAULT_MAX_DEPTH

Handler = Callable[[list[Any]], Any]
MAX_BATCH = 1000
_MISSING = object()

_log = logging.getLogger(__name__)


def lock_free(handler: Handler) -> Handler:
    """Mark a handler that takes whatever chain locks it needs itself, so the dispatcher
    runs it without the chain lock (eth_call on a mined block: `DevChain.call`)."""
    handler.lock_free = True  # type: ignore[attr-defined]
    return handler


class JsonRpcDispatcher:
    """Maps request bodies to response bodies using a method table.

    `refused` counts the bodies turned away before dispatch, by reason ("oversize",
    "too_deep", "malformed"); each refusal is also logged.
    """

    def __init__(
        self,
        handlers: Mapping[str, Handler],
        *,
        lock: AbstractContextManager[Any] | None = None,
        max_batch: int = MAX_BATCH,
        max_body: int = DEFAULT_MAX_BODY,
        max_depth: int = DEFAULT_MAX_DEPTH,
    ) -> None:
        self._handlers = dict(handlers)
        self._lock = lock
        self._max_batch = max_batch
        self._max_body = max_body
        self._max_depth = max_depth
        self.refused: Counter[str] = Counter()

    def handle_body(self, body: bytes) -> bytes | None:
        """The response body for a request body; None when only notifications were sent."""
        try:
            payload = safe_json.loads(body, max_bytes=self._max_body, max_depth=self._max_depth)
        except safe_json.JsonLimitError as exc:
            return self._refuse(exc.reason, InvalidRequestError(f"invalid request: {exc}"))
        except (ValueError, RecursionError) as exc:  # also int literals over 4300 digits
            return self._refuse("malformed", ParseError(f"parse error: {exc}"))
        response = self.handle_payload(payload)
        if response is None:
            return None
        try:
            return _encode(response)
        except (TypeError, ValueError) as exc:
            _log.exception("unencodable response")
            error = RpcError(f"internal error: unencodable result ({exc})", code=INTERNAL_ERROR)
            return _encode(_error_response(None, error))

    def _refuse(self, reason: str, error: RpcError) -> bytes:
        self.refused[reason] += 1
        _log.info("refused a request body (%s): %s", reason, error.message[:200])
        return _encode(_error_response(None, error))

    @staticmethod
    def error_body(error: RpcError) -> bytes:
        """A response body carrying only an error (for failures before dispatch)."""
        return _encode(_error_response(None, error))

    def handle_payload(self, payload: Any) -> Any:
        """The response object (or list, for a batch) for an already-parsed payload."""
        if isinstance(payload, list):
            if not payload:
                return _error_response(None, InvalidRequestError("invalid request: empty batch"))
            if len(payload) > self._max_batch:
                error = InvalidRequestError(f"invalid request: batch larger than {self._max_batch}")
                return _error_response(None, error)
            responses = [self.handle_request(item) for item in payload]
            answered = [response for response in responses if response is not None]
            return answered or None
        return self.handle_request(payload)

    def handle_request(self, request: Any) -> dict[str, Any] | None:
        """Answer one request object; None for a valid notification (no id)."""
        if not isinstance(request, dict):
            return _error_response(None, InvalidRequestError("invalid request: expected an object"))
        request_id = request.get("id", _MISSING)
        if not _valid_id(request_id):
            return _error_response(None, InvalidRequestError("invalid request: bad id"))
        reply_id = None if request_id is _MISSING else request_id
        if request.get("jsonrpc") != "2.0":
            error = InvalidRequestError('invalid request: jsonrpc must be "2.0"')
            return _error_response(reply_id, error)
        method = request.get("method")
        if not isinstance(method, str):
            error = InvalidRequestError("invalid request: method must be a string")
            return _error_response(reply_id, error)
        params = request.get("params", [])
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("call %s %s", method, _shorten(params))
        try:
            result = self._call(method, params)
        except RpcError as exc:
            _log.debug("%s failed: %s", method, exc.message)
            response = _error_response(reply_id, exc)
        except Exception as exc:  # a handler bug must not take the server down
            _log.exception("internal error in %s", method)
            response = _error_response(
                reply_id, RpcError(f"internal error: {exc}", code=INTERNAL_ERROR)
            )
        else:
            response = {"jsonrpc": "2.0", "id": reply_id, "result": result}
        return None if request_id is _MISSING else response

    def _call(self, method: str, params: Any) -> Any:
        handler = self._handlers.get(method)
        if handler is None:
            raise MethodNotFoundError(f"the method {method} does not exist/is not available")
        if params is None:
            params = []
        if isinstance(params, dict):
            raise InvalidParamsError(f"{method}: parameters must be given by position, not by name")
        if not isinstance(params, list):
            raise InvalidParamsError(f"{method}: params must be an array")
        unlocked = self._lock is None or getattr(handler, "lock_free", False)
        guard = nullcontext() if unlocked else self._lock
        with guard:
            return handler(params)


def _valid_id(value: Any) -> bool:
    if value is _MISSING or value is None:
        return True
    if isinstance(value, float):
        return math.isfinite(value)  # 1e999 parses to inf, which JSON cannot echo back
    return isinstance(value, str | int) and not isinstance(value, bool)


def _error_response(request_id: Any, error: RpcError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": error.to_json()}


def _encode(response: Any) -> bytes:
    return json.dumps(response, separators=(",", ":"), allow_nan=False).encode()


def _shorten(params: Any, limit: int = 300) -> str:
    text = json.dumps(params, default=str)
    return text if len(text) <= limit else text[:limit] + "..."
