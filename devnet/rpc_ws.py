"""JSON-RPC over WebSocket on the HTTP port, with `eth_subscribe` push notifications.

anvil and geth answer a WebSocket upgrade on their JSON-RPC port; so does `flchain chain
serve`: a node then learns of a block when it is mined instead of polling a filter. `wsproto`
does the handshake and the framing; this module runs the sessions.

One session per connection, on the HTTP server's handler thread for that connection: it reads
requests and answers them through the same dispatcher as HTTP (same message size and JSON depth
limits; the Host and Origin checks ran on the upgrade request), and it alone writes to the
socket. `eth_subscribe` takes `newHeads` (the block object without transaction bodies, as anvil
sends it) and `logs` (a filter's addresses and topics); notifications follow geth's
`eth_subscription` format.

Mining never waits on a client: the chain's block listener (`WsHub.on_block`) only appends the
block to each subscribed session's queue and wakes the session through a pipe. A queue holding
`WsLimits.max_queue` blocks, a write that takes longer than `send_timeout` and a client silent
through a ping and `pong_timeout` all end the connection. WebSocket connections hold a handler
thread each, so they count against the server's `MAX_CONNECTIONS`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eth.abc import BlockAPI
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Event,
    Message,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import ProtocolError, RemoteProtocolError

from flchain.devnet.chain import DevChain
from flchain.devnet.encoding import unpack_params
from flchain.devnet.errors import InvalidParamsError, RpcError
from flchain.devnet.filters import LogQuery, block_logs, parse_log_query
from flchain.devnet.jsonrpc import Handler, JsonRpcDispatcher
from flchain.devnet.policy import WsLimits
from flchain.devnet.serializers import block_to_json

RECV_BYTES = 65536
MESSAGE_TOO_BIG = 1009  # RFC 6455 close code
_NOTIFICATION = (
    '{"jsonrpc":"2.0","method":"eth_subscription","params":{"subscription":"%s","result":%s}}'
)

_log = logging.getLogger(__name__)


class WsHandshakeError(Exception):
    """An upgrade request that is not a valid WebSocket handshake; `status` is the HTTP
    status to answer with (426 for an unsupported protocol version)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class _Subscription:
    id: str
    query: LogQuery | None  # None: newHeads


@dataclass(frozen=True)
class _BlockItem:
    """A mined block queued for a session, with the subscriptions alive when it came."""

    block: BlockAPI
    subscriptions: tuple[_Subscription, ...]


class WsHub:
    """The WebSocket sessions of one server; `on_block` is the chain's block listener."""

    def __init__(
        self,
        chain: DevChain,
        handlers: Mapping[str, Handler],
        dispatcher: JsonRpcDispatcher,
        limits: WsLimits,
        *,
        max_body: int,
        max_depth: int,
    ) -> None:
        self.chain = chain
        self.limits = limits
        self.max_body = max_body
        self._handlers = dict(handlers)
        self._dispatcher = dispatcher
        self._max_depth = max_depth
        self._sessions: set[_Session] = set()
        self._lock = threading.Lock()
        self._closed = False

    @property
    def open_sessions(self) -> int:
        with self._lock:
            return len(self._sessions)

    def on_block(self, block: BlockAPI) -> None:
        """A block was mined (the mining thread, under the chain lock): queue it, never wait."""
        with self._lock:
            sessions = tuple(self._sessions)
        for session in sessions:
            session.on_block(block)

    def close_all(self, *, refuse_new: bool = True) -> None:
        """Cut every session off; with `refuse_new`, refuse new ones (the server stops)."""
        with self._lock:
            self._closed = self._closed or refuse_new
            sessions = tuple(self._sessions)
        for session in sessions:
            session.abort()

    def serve(self, sock: socket.socket, request_head: bytes, buffered: bytes) -> None:
        """Complete the upgrade of an HTTP request (its request line and headers, already
        read and checked against the policy) and serve the connection until it ends.

        `buffered` is what the client sent after the request that the HTTP reader already
        took off the socket. Raises `WsHandshakeError` before anything was written back."""
        ws = WSConnection(ConnectionType.SERVER)
        try:
            ws.receive_data(request_head)
            request = next((e for e in ws.events() if isinstance(e, Request)), None)
        except RemoteProtocolError as exc:
            hint = exc.event_hint
            status = hint.status_code if isinstance(hint, RejectConnection) else 400
            raise WsHandshakeError(f"invalid WebSocket handshake: {exc}", status) from exc
        if request is None:
            raise WsHandshakeError("invalid WebSocket handshake: incomplete request")
        with self._lock:
            if self._closed:
                raise WsHandshakeError("the server is stopping", 503)
            session = _Session(self, sock, ws)
            self._sessions.add(session)
        try:
            session.run(ws.send(AcceptConnection()), buffered)
        finally:
            with self._lock:
                self._sessions.discard(session)

    def session_dispatcher(self, extra: Mapping[str, Handler]) -> JsonRpcDispatcher:
        """The HTTP method table plus a session's own methods, with the same limits; refusals
        are counted with HTTP's."""
        dispatcher = JsonRpcDispatcher(
            {**self._handlers, **extra},
            lock=self.chain.lock,
            max_body=self.max_body,
            max_depth=self._max_depth,
        )
        dispatcher.refused = self._dispatcher.refused
        return dispatcher


class _Session:
    """One WebSocket connection: see the module docstring."""

    def __init__(self, hub: WsHub, sock: socket.socket, ws: WSConnection) -> None:
        self._hub = hub
        self._sock = sock
        self._ws = ws
        self._limits = hub.limits
        self._dispatcher = hub.session_dispatcher(
            {"eth_subscribe": self._subscribe, "eth_unsubscribe": self._unsubscribe}
        )
        # Shared with the mining thread: everything below up to the wake pipe.
        self._lock = threading.Lock()
        self._outbox: deque[str | Event | _BlockItem] = deque()
        self._blocks_queued = 0
        self._subscriptions: dict[str, _Subscription] = {}
        self._pending: dict[str, _Subscription] = {}  # answered once the reply is queued
        self._closed = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        # The session thread's own.
        self._parts: list[bytes] = []
        self._size = 0
        self._closing = False  # a close frame is queued: send it and what precedes it, stop
        self._last_heard = time.monotonic()
        self._ping_sent: float | None = None

    # ------------------------------------------------------------------ any thread

    def on_block(self, block: BlockAPI) -> None:
        with self._lock:
            if self._closed or not self._subscriptions:
                return
            overflow = self._blocks_queued >= self._limits.max_queue
            if not overflow:
                self._outbox.append(_BlockItem(block, tuple(self._subscriptions.values())))
                self._blocks_queued += 1
                with contextlib.suppress(OSError):  # full pipe: a wake-up is pending anyway
                    os.write(self._wake_w, b"\0")
        if overflow:
            _log.warning(
                "closing a WebSocket client that does not read: %d blocks queued",
                self._limits.max_queue,
            )
            self.abort()

    def abort(self) -> None:
        """End the connection now: the session thread sees its socket shut down."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._outbox.clear()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)

    # ------------------------------------------------------------------ JSON-RPC methods

    def _subscribe(self, params: list[Any]) -> str:
        if not params:
            raise InvalidParamsError("eth_subscribe: missing the subscription kind")
        kind, *rest = params
        query: LogQuery | None = None
        if kind == "newHeads":
            if rest:
                raise InvalidParamsError("eth_subscribe: newHeads takes no further parameters")
        elif kind == "logs":
            if len(rest) > 1:
                raise InvalidParamsError("eth_subscribe: logs takes one filter object")
            query = parse_log_query(rest[0] if rest else None, "eth_subscribe.filter")
            if query.block_hash is not None:
                raise InvalidParamsError("eth_subscribe: logs follow new blocks, not a blockHash")
        else:
            raise InvalidParamsError(
                f"eth_subscribe: unsupported subscription {kind!r} (newHeads or logs)"
            )
        with self._lock:
            limit = self._limits.max_subscriptions
            if len(self._subscriptions) + len(self._pending) >= limit:
                raise RpcError(f"too many subscriptions on this connection (limit {limit})")
            subscription_id = "0x" + secrets.token_hex(16)
            self._pending[subscription_id] = _Subscription(subscription_id, query)
        return subscription_id

    def _unsubscribe(self, params: list[Any]) -> bool:
        (subscription_id,) = unpack_params(params, "eth_unsubscribe", 1)
        if not isinstance(subscription_id, str):
            raise InvalidParamsError("eth_unsubscribe: the subscription id must be a string")
        with self._lock:
            removed = self._subscriptions.pop(subscription_id, None)
            removed = removed or self._pending.pop(subscription_id, None)
        return removed is not None

    # ------------------------------------------------------------------ the session thread

    def run(self, accept: bytes, buffered: bytes) -> None:
        """Send the handshake's answer, then serve until either side ends the connection."""
        selector = selectors.DefaultSelector()
        try:
            self._sock.settimeout(self._limits.send_timeout)  # every write, not the reads
            self._sock.sendall(accept)
            selector.register(self._sock, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            if buffered:
                self._received(buffered)
            while self._send_queued():
                for key, _ in selector.select(self._until_keepalive()):
                    if key.fileobj == self._wake_r:
                        with contextlib.suppress(OSError):
                            os.read(self._wake_r, 4096)
                        continue
                    data = self._sock.recv(RECV_BYTES)
                    if not data:
                        return
                    self._received(data)
                self._keepalive()
        except (OSError, ProtocolError) as exc:  # the client went away or broke the protocol
            _log.debug("WebSocket session ended: %r", exc)
        except Exception:  # a bug here must end this session only, and be seen
            _log.exception("WebSocket session failed")
        finally:
            with self._lock:
                self._closed = True
                self._outbox.clear()
                os.close(self._wake_w)
            os.close(self._wake_r)
            selector.close()

    def _send_queued(self) -> bool:
        """Write everything queued; False once the session should end."""
        while True:
            with self._lock:
                if self._closed:
                    return False
                if not self._outbox:
                    return True
                item = self._outbox.popleft()
                if isinstance(item, _BlockItem):
                    self._blocks_queued -= 1
            data = self._frame(item)
            if data:
                self._sock.sendall(data)  # bounded by the socket's timeout (send_timeout)
            if isinstance(item, CloseConnection):
                return False  # the close frame is the last thing we send

    def _frame(self, item: str | Event | _BlockItem) -> bytes:
        if not isinstance(item, CloseConnection) and self._ws.state is not ConnectionState.OPEN:
            return b""  # the closing handshake has begun: only the close frame goes out
        if isinstance(item, str):
            return self._ws.send(TextMessage(data=item))
        if isinstance(item, _BlockItem):
            return b"".join(
                self._ws.send(TextMessage(data=text)) for text in self._notifications(item)
            )
        return self._ws.send(item)

    def _notifications(self, item: _BlockItem) -> list[str]:
        block = item.block
        head: str | None = None
        texts: list[str] = []
        for subscription in item.subscriptions:
            query = subscription.query
            if query is None:
                if head is None:
                    head = _encode(block_to_json(block, full_transactions=False))
                texts.append(_NOTIFICATION % (subscription.id, head))
            elif query.may_match_bloom(block.header.bloom):
                texts.extend(
                    _NOTIFICATION % (subscription.id, _encode(log))
                    for log in block_logs(self._hub.chain, block, query)
                )
        return texts

    def _received(self, data: bytes) -> None:
        self._last_heard = time.monotonic()
        self._ping_sent = None
        self._ws.receive_data(data)
        for event in self._ws.events():
            if self._closing:
                continue
            if isinstance(event, Message):
                self._message_part(event)
            elif isinstance(event, Ping):
                self._queue(event.response())
            elif isinstance(event, CloseConnection):
                if self._ws.state is ConnectionState.REMOTE_CLOSING:
                    self._close(event.response())
                else:  # a protocol error wsproto reports as a close
                    self._close(CloseConnection(code=event.code, reason=event.reason))

    def _message_part(self, event: Message) -> None:
        data = event.data.encode() if isinstance(event, TextMessage) else bytes(event.data)
        self._size += len(data)
        if self._size > self._hub.max_body:
            limit = self._hub.max_body
            _log.info("closing a WebSocket that sent a message over %d bytes", limit)
            self._close(CloseConnection(MESSAGE_TOO_BIG, f"message over the {limit}-byte limit"))
            return
        self._parts.append(data)
        if not event.message_finished:
            return
        body = b"".join(self._parts)
        self._parts, self._size = [], 0
        response = self._dispatcher.handle_body(body)
        with self._lock:
            if response is not None:
                self._outbox.append(response.decode())
            # Notifications start after the reply that names the subscription.
            self._subscriptions.update(self._pending)
            self._pending.clear()

    def _queue(self, event: Event) -> None:
        with self._lock:
            self._outbox.append(event)

    def _close(self, event: CloseConnection) -> None:
        self._closing = True
        self._queue(event)

    def _until_keepalive(self) -> float:
        if self._ping_sent is None:
            deadline = self._last_heard + self._limits.ping_interval
        else:
            deadline = self._ping_sent + self._limits.pong_timeout
        return max(0.0, deadline - time.monotonic())

    def _keepalive(self) -> None:
        now = time.monotonic()
        if self._ping_sent is None:
            if now - self._last_heard >= self._limits.ping_interval:
                self._ping_sent = now
                self._queue(Ping(payload=b"flchain"))
        elif now - self._ping_sent >= self._limits.pong_timeout:
            _log.info("closing a WebSocket silent for %g s after a ping", self._limits.pong_timeout)
            self.abort()


def _encode(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def request_head(raw_requestline: bytes, headers: Any) -> bytes:
    """The request line and headers of an HTTP request as they came, for wsproto's handshake
    (the stdlib HTTP server has parsed them already)."""
    lines = b"".join(f"{name}: {value}\r\n".encode("latin-1") for name, value in headers.items())
    return raw_requestline.rstrip(b"\r\n") + b"\r\n" + lines + b"\r\n"


def wants_upgrade(headers: Any) -> bool:
    """Whether an HTTP request asks for a WebSocket (`Upgrade: websocket`)."""
    return any(
        part.strip().lower() == "websocket"
        for value in headers.get_all("Upgrade", [])
        for part in value.split(",")
    )


__all__ = ["WsHandshakeError", "WsHub", "request_head", "wants_upgrade"]
