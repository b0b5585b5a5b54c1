"""HTTP transport of the devnet JSON-RPC server, plus the block timer for `--block-time`.

Stdlib `ThreadingHTTPServer` with HTTP/1.1 keep-alive: clients such as web3 and cast reuse one
connection for many calls. Requests run on their own threads but the dispatcher serializes all
chain access through the chain's lock. Run as `python -m flchain.devnet.rpc_server` for the same
options as `flchain chain serve`.

The dev keys are unlocked, so the transport follows geth's rules for who may call
(`RpcPolicy`): the Host header must name an allowed virtual host (DNS rebinding), a request
from a web page (an Origin header) must come from an allowed CORS origin, and POST bodies must
be `application/json`, which a cross-site "simple request" cannot send. Slow clients are cut
off: every socket operation has a timeout, a request must arrive whole within
`REQUEST_READ_S`, and at most `MAX_CONNECTIONS` connections are served at once.

A GET with `Upgrade: websocket` on the same port, like anvil's, becomes a WebSocket JSON-RPC
session with `eth_subscribe` (`flchain.devnet.rpc_ws`), after the same Host and Origin checks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from flchain.devnet.chain import DevChain
from flchain.devnet.errors import InvalidRequestError, MethodNotFoundError, RpcError
from flchain.devnet.jsonrpc import JsonRpcDispatcher
from flchain.devnet.policy import (
    MAX_CONNECTIONS,
    REQUEST_READ_S,
    SOCKET_TIMEOUT_S,
    RpcPolicy,
    WsLimits,
)
from flchain.devnet.rpc_methods import EthRpc
from flchain.devnet.rpc_ws import WsHandshakeError, WsHub, request_head, wants_upgrade

JSON_CONTENT_TYPES = frozenset(
    {"application/json", "application/json-rpc", "application/jsonrequest"}
)

_log = logging.getLogger(__name__)


class DevnetServer:
    """Serves one `DevChain` over HTTP and WebSocket JSON-RPC until `stop()`."""

    def __init__(
        self,
        chain: DevChain,
        host: str = "127.0.0.1",
        port: int = 8545,
        *,
        block_time: float = 0.0,
        policy: RpcPolicy | None = None,
        max_body: int | None = None,
        ws_limits: WsLimits | None = None,
    ) -> None:
        if block_time < 0:
            raise ValueError(f"block time must be >= 0 seconds, got {block_time}")
        policy = policy or RpcPolicy()
        if max_body is not None:
            policy = dataclasses.replace(policy, max_body=max_body)
        self.chain = chain
        self.block_time = block_time
        self.policy = policy
        self.rpc = EthRpc(chain, policy)
        handlers = self.rpc.handlers()
        self.dispatcher = JsonRpcDispatcher(
            {"eth_subscribe": _needs_websocket, "eth_unsubscribe": _needs_websocket, **handlers},
            lock=chain.lock,
            max_body=policy.max_body,
            max_depth=policy.max_depth,
        )
        self.ws = WsHub(
            chain,
            handlers,
            self.dispatcher,
            ws_limits or WsLimits(),
            max_body=policy.max_body,
            max_depth=policy.max_depth,
        )
        self._address = (host, port)
        self._httpd: _RpcHttpServer | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    @property
    def host(self) -> str:
        return self._bound()[0]

    @property
    def port(self) -> int:
        """The bound port (the one the OS picked when constructed with port 0)."""
        return self._bound()[1]

    @property
    def rpc_url(self) -> str:
        host, port = self._bound()
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}"

    @property
    def ws_url(self) -> str:
        """The same endpoint for WebSocket clients (`eth_subscribe`)."""
        return "ws://" + self.rpc_url.removeprefix("http://")

    def _bound(self) -> tuple[str, int]:
        if self._httpd is None:
            raise RuntimeError("the server is not started")
        address = self._httpd.server_address
        return str(address[0]), int(address[1])

    def start(self) -> None:
        """Bind the port and serve (and mine, with a block time) on background threads."""
        if self._httpd is not None:
            raise RuntimeError("the server is already started")
        self._httpd = _RpcHttpServer(self._address, self.dispatcher, self.policy, self.ws)
        self.chain.add_block_listener(self.ws.on_block)
        serve = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="devnet-http",
            daemon=True,
        )
        self._threads.append(serve)
        if self.block_time > 0:
            self._threads.append(
                threading.Thread(target=self._mine_forever, name="devnet-miner", daemon=True)
            )
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop serving and mining; in-flight requests finish first. Safe to call twice."""
        self._stopping.set()
        self.chain.remove_block_listener(self.ws.on_block)
        self.ws.close_all()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads.clear()

    def __enter__(self) -> DevnetServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _mine_forever(self) -> None:
        while not self._stopping.wait(self.block_time):
            try:
                self.chain.mine()
            except Exception:  # keep the chain ticking; the failure is logged
                _log.exception("mining a timed block failed")


class _RpcHttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        dispatcher: JsonRpcDispatcher,
        policy: RpcPolicy,
        ws: WsHub,
    ) -> None:
        self.dispatcher = dispatcher
        self.ws = ws
        self.policy = policy
        self.max_body = policy.max_body
        # Open connections -> when the request being read must have arrived (None: the
        # request is being answered). `service_actions` cuts off the late ones.
        self._deadlines: dict[socket.socket, float | None] = {}
        self._deadlines_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _RpcRequestHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._deadlines_lock:
            full = len(self._deadlines) >= MAX_CONNECTIONS
            if not full:
                self._deadlines[request] = time.monotonic() + REQUEST_READ_S
        if full:
            _log.warning("refused a connection from %s: %d open", client_address, MAX_CONNECTIONS)
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._deadlines_lock:
            self._deadlines.pop(request, None)
        super().shutdown_request(request)

    def reading(self, request: socket.socket, reading: bool) -> None:
        """Mark a connection as waiting for (or reading) a request, or as being answered."""
        deadline = time.monotonic() + REQUEST_READ_S if reading else None
        with self._deadlines_lock:
            if request in self._deadlines:
                self._deadlines[request] = deadline

    def service_actions(self) -> None:
        """Called by `serve_forever` between polls: disconnect clients too slow to send."""
        now = time.monotonic()
        with self._deadlines_lock:
            late = [s for s, deadline in self._deadlines.items() if deadline and deadline < now]
            for request in late:
                self._deadlines[request] = None  # shut down once
        for request in late:
            _log.info("closing a connection that sent no whole request in %g s", REQUEST_READ_S)
            with contextlib.suppress(OSError):
                request.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Broken connections are the client's business; note them without a stderr traceback.
        _log.debug("connection from %s failed", client_address, exc_info=True)


class _RpcRequestHandler(BaseHTTPRequestHandler):
    # Small JSON-RPC answers otherwise wait on Nagle's algorithm against delayed ACKs
    # (~45 ms a request); every node and client pays that on every call.
    disable_nagle_algorithm = True
    protocol_version = "HTTP/1.1"
    server_version = "flchain-devnet"
    timeout = SOCKET_TIMEOUT_S
    server: _RpcHttpServer
    _cors_origin: str | None = None

    def handle_one_request(self) -> None:
        self.server.reading(self.connection, True)
        super().handle_one_request()

    def do_POST(self) -> None:
        self._cors_origin = None
        if urlsplit(self.path).path not in ("", "/"):
            self.close_connection = True  # the unread body must not be taken for a request
            error = InvalidRequestError(f"no JSON-RPC endpoint at {self.path}; use /")
            self._send_error(404, error)
            return
        if not self._caller_allowed():
            return
        media_type = self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if media_type not in JSON_CONTENT_TYPES:
            self.close_connection = True
            shown = media_type or "none"
            error = InvalidRequestError(f"invalid content type {shown!r}: use application/json")
            self._send_error(415, error)
            return
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            self._send_error(411, InvalidRequestError("chunked bodies are not supported"))
            return
        length = self._content_length()
        if length is None:
            return
        body = self.rfile.read(length)
        if len(body) < length:
            self.close_connection = True
            return
        self.server.reading(self.connection, False)
        response = self.server.dispatcher.handle_body(body)
        if response is None:
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._send_json(200, response)

    def do_GET(self) -> None:
        self.close_connection = True
        self._cors_origin = None
        if not self._caller_allowed():
            return
        if wants_upgrade(self.headers):
            self._serve_websocket()
            return
        self._send_error(405, InvalidRequestError("use POST with a JSON-RPC body"), allow="POST")

    def _serve_websocket(self) -> None:
        """Hand the connection to a WebSocket session for as long as it lasts."""
        if urlsplit(self.path).path not in ("", "/"):
            self._send_error(404, InvalidRequestError(f"no JSON-RPC endpoint at {self.path}"))
            return
        self.server.reading(self.connection, False)  # no request deadline: sessions keep alive
        head = request_head(self.raw_requestline, self.headers)
        try:
            self.server.ws.serve(self.connection, head, self._buffered())
        except WsHandshakeError as exc:
            headers = {"Sec-WebSocket-Version": "13"} if exc.status == 426 else None
            self._send_error(exc.status, InvalidRequestError(str(exc)), headers=headers)

    def _buffered(self) -> bytes:
        """What the client sent after its request that the request reader already took off
        the socket (clients may send frames before the handshake's answer arrives)."""
        self.connection.setblocking(False)  # an empty buffer must not wait for the client
        try:
            data = self.rfile.peek()
            return self.rfile.read(len(data)) if data else b""
        finally:
            self.connection.settimeout(self.timeout)

    def do_OPTIONS(self) -> None:
        """CORS preflight: allowed origins may POST JSON; everyone else gets 403."""
        self._cors_origin = None
        if not self._caller_allowed():
            return
        self.send_response(204)
        self.send_header("Allow", "POST, OPTIONS")
        if self._cors_origin is not None:
            self.send_header("Access-Control-Allow-Origin", self._cors_origin)
            self.send_header("Vary", "Origin")
            self.send_header("Access-Control-Allow-Methods", "POST, OPTIONS")
            requested = self.headers.get("Access-Control-Request-Headers")
            self.send_header("Access-Control-Allow-Headers", requested or "Content-Type")
            self.send_header("Access-Control-Max-Age", "600")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _caller_allowed(self) -> bool:
        """geth's vhosts and CORS checks; answers 403 (and returns False) when they fail."""
        policy = self.server.policy
        host = self.headers.get("Host")
        if not policy.host_allowed(host):
            self.close_connection = True
            self._send_error(403, InvalidRequestError(f"invalid host specified: {host!r}"))
            return False
        origin = self.headers.get("Origin")
        if origin is not None:
            if not policy.origin_allowed(origin):
                self.close_connection = True
                error = InvalidRequestError(f"origin {origin!r} is not allowed (--http-corsdomain)")
                self._send_error(403, error)
                return False
            self._cors_origin = origin
        return True

    def _content_length(self) -> int | None:
        raw = self.headers.get("Content-Length")
        if raw is None:
            self.close_connection = True
            self._send_error(411, InvalidRequestError("a Content-Length header is required"))
            return None
        try:
            length = int(raw)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            self._send_error(400, InvalidRequestError(f"bad Content-Length {raw!r}"))
            return None
        if length > self.server.max_body:
            self.close_connection = True
            limit = self.server.max_body
            self._send_error(413, InvalidRequestError(f"request body over the {limit}-byte limit"))
            return None
        return length

    def _send_error(
        self,
        status: int,
        error: RpcError,
        allow: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        body = JsonRpcDispatcher.error_body(error)
        self._send_json(status, body, allow=allow, headers=headers)

    def _send_json(
        self,
        status: int,
        body: bytes,
        allow: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if allow:
            self.send_header("Allow", allow)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self._cors_origin is not None:
            self.send_header("Access-Control-Allow-Origin", self._cors_origin)
            self.send_header("Vary", "Origin")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("%s - %s", self.address_string(), format % args)


def _needs_websocket(params: list[Any]) -> Any:
    """eth_subscribe over HTTP: notifications need a connection that stays open."""
    raise MethodNotFoundError("notifications need a WebSocket: connect to ws:// on this port")


def main() -> None:
    """`python -m flchain.devnet.rpc_server`: the `flchain chain serve` command."""
    from flchain.commands.chain import serve_command

    serve_command(prog_name="python -m flchain.devnet.rpc_server")


if __name__ == "__main__":
    main()
