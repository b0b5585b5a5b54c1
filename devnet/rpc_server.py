"""HTTP transport of the devnet JSON-RPC server, plus the block timer for `--block-time`.

Stdlib `ThreadingHTTPServer` with HTTP/1.1 keep-alive: clients such as web3 and cast reuse one
connection for many calls. Requests run on their own threads but the dispatcher serializes all
chain access through the chain's lock. Run as `python -m flchain.devnet.rpc_server` for the same
options as `flchain chain serve`.
"""

from __future__ import annotations

import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from flchain.devnet.chain import DevChain
from flchain.devnet.errors import InvalidRequestError, RpcError
from flchain.devnet.jsonrpc import JsonRpcDispatcher
from flchain.devnet.rpc_methods import EthRpc

DEFAULT_MAX_BODY = 8 * 1024 * 1024
_REQUEST_TIMEOUT_S = 60

_log = logging.getLogger(__name__)


class DevnetServer:
    """Serves one `DevChain` over HTTP JSON-RPC until `stop()`."""

    def __init__(
        self,
        chain: DevChain,
        host: str = "127.0.0.1",
        port: int = 8545,
        *,
        block_time: float = 0.0,
        max_body: int = DEFAULT_MAX_BODY,
    ) -> None:
        if block_time < 0:
            raise ValueError(f"block time must be >= 0 seconds, got {block_time}")
        if max_body < 1:
            raise ValueError(f"max body size must be positive, got {max_body}")
        self.chain = chain
        self.block_time = block_time
        self.rpc = EthRpc(chain)
        self.dispatcher = JsonRpcDispatcher(self.rpc.handlers(), lock=chain.lock)
        self._address = (host, port)
        self._max_body = max_body
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

    def _bound(self) -> tuple[str, int]:
        if self._httpd is None:
            raise RuntimeError("the server is not started")
        address = self._httpd.server_address
        return str(address[0]), int(address[1])

    def start(self) -> None:
        """Bind the port and serve (and mine, with a block time) on background threads."""
        if self._httpd is not None:
            raise RuntimeError("the server is already started")
        self._httpd = _RpcHttpServer(self._address, self.dispatcher, self._max_body)
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
        self, address: tuple[str, int], dispatcher: JsonRpcDispatcher, max_body: int
    ) -> None:
        self.dispatcher = dispatcher
        self.max_body = max_body
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _RpcRequestHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Broken connections are the client's business; note them without a stderr traceback.
        _log.debug("connection from %s failed", client_address, exc_info=True)


class _RpcRequestHandler(BaseHTTPRequestHandler):
    # Small JSON-RPC answers otherwise wait on Nagle's algorithm against delayed ACKs
    # (~45 ms a request); every node and client pays that on every call.
    disable_nagle_algorithm = True
    protocol_version = "HTTP/1.1"
    server_version = "flchain-devnet"
    timeout = _REQUEST_TIMEOUT_S
    server: _RpcHttpServer

    def do_POST(self) -> None:
        if urlsplit(self.path).path not in ("", "/"):
            self.close_connection = True  # the unread body must not be taken for a request
            error = InvalidRequestError(f"no JSON-RPC endpoint at {self.path}; use /")
            self._send_error(404, error)
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
        response = self.server.dispatcher.handle_body(body)
        if response is None:
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._send_json(200, response)

    def do_GET(self) -> None:
        self.close_connection = True
        self._send_error(405, InvalidRequestError("use POST with a JSON-RPC body"), allow="POST")

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

    def _send_error(self, status: int, error: RpcError, allow: str | None = None) -> None:
        body = JsonRpcDispatcher.error_body(error)
        self._send_json(status, body, allow=allow)

    def _send_json(self, status: int, body: bytes, allow: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if allow:
            self.send_header("Allow", allow)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("%s - %s", self.address_string(), format % args)


def main() -> None:
    """`python -m flchain.devnet.rpc_server`: the `flchain chain serve` command."""
    from flchain.devnet.cli import serve_command

    serve_command(prog_name="python -m flchain.devnet.rpc_server")


if __name__ == "__main__":
    main()
