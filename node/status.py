"""The node's local status endpoint: `/status` (JSON) and `/metrics` (Prometheus text).

A stdlib threaded HTTP server on 127.0.0.1 by default: it must keep answering while the trio
loop is busy training, and it serves only what the providers hand it (never request data).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class StatusServer:
    """Serve `status()` as JSON on /status and `metrics()` as Prometheus text on /metrics."""

    def __init__(
        self,
        status: Callable[[], dict[str, Any]],
        metrics: Callable[[], str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        handler = _make_handler(status, metrics)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="flchain-status", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> StatusServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> StatusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _make_handler(
    status: Callable[[], dict[str, Any]], metrics: Callable[[], str]
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "flchain-status"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0].rstrip("/") or "/"
            try:
                if path in ("/", "/status"):
                    body = json.dumps(status(), sort_keys=True, default=str).encode()
                    self._send(200, "application/json", body)
                elif path == "/metrics":
                    self._send(200, "text/plain; version=0.0.4; charset=utf-8", metrics().encode())
                else:
                    self._send(404, "application/json", b'{"error": "not found"}')
            except Exception as exc:  # a broken provider must not take the endpoint down
                body = json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode()
                self._send(500, "application/json", body)

        def _send(self, code: int, content_type: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler
