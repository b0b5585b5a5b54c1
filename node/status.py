"""The node's local status endpoint: `/status` (JSON) and `/metrics` (Prometheus text).

A stdlib threaded HTTP server on 127.0.0.1 by default: it must keep answering while the trio
loop is busy training, and it serves only what the providers hand it (never request data).
Credentials never leave through it: every URL in the status (an RPC endpoint such as
`https://user:secret@host/?apikey=...`) is redacted before it is served. Each connection has
a socket timeout, so a client that connects and sends nothing holds a thread for a few
seconds, not forever.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

SOCKET_TIMEOUT: Final = 5.0  # seconds a connection may sit idle (headers included)
REDACTED: Final = "REDACTED"
# Query parameters that carry credentials in RPC URLs (Infura, Alchemy, QuickNode, ...).
_SECRET_PARAM: Final = re.compile(
    r"(?i)(key|token|secret|pass|pwd|auth|credential|signature|sig|session|jwt)"
)
_URL: Final = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s\"'<>]+")
# A path segment that looks like an API key (e.g. Infura's /v3/<32 hex>, Alchemy's /v2/<key>).
_KEYLIKE_SEGMENT: Final = re.compile(r"[A-Za-z0-9_\-]{20,}")


def redact_url(url: str) -> str:
    """`url` without credentials: user info, secret-looking query values and key-like path
    segments become REDACTED. Text that is not a URL comes back unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    if not parts.scheme or not parts.netloc:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        host = netloc.rsplit("@", 1)[1]
        netloc = f"{REDACTED}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, REDACTED if _SECRET_PARAM.search(k) else v) for k, v in pairs], safe=REDACTED
        )
    path = "/".join(
        REDACTED if _KEYLIKE_SEGMENT.fullmatch(seg) else seg for seg in parts.path.split("/")
    )
    return urlunsplit((parts.scheme, netloc, path, query, REDACTED if parts.fragment else ""))


def redact(value: Any) -> Any:
    """A copy of a JSON-ready status with every URL inside any string redacted."""
    if isinstance(value, str):
        return _URL.sub(lambda m: redact_url(m.group(0)), value) if "://" in value else value
    if isinstance(value, dict):
        return {key: redact(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact(item) for item in value]
    return value


class StatusServer:
    """Serve `status()` as JSON on /status and `metrics()` as Prometheus text on /metrics."""

    def __init__(
        self,
        status: Callable[[], dict[str, Any]],
        metrics: Callable[[], str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        socket_timeout: float = SOCKET_TIMEOUT,
    ) -> None:
        if not socket_timeout > 0:
            raise ValueError(f"socket_timeout must be positive, got {socket_timeout!r}")
        handler = _make_handler(status, metrics)
        handler.timeout = socket_timeout  # StreamRequestHandler sets it on each connection
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
                    body = json.dumps(redact(status()), sort_keys=True, default=str).encode()
                    self._send(200, "application/json", body)
                elif path == "/metrics":
                    self._send(200, "text/plain; version=0.0.4; charset=utf-8", metrics().encode())
                else:
                    self._send(404, "application/json", b'{"error": "not found"}')
            except Exception as exc:  # a broken provider must not take the endpoint down
                body = json.dumps(redact({"error": f"{type(exc).__name__}: {exc}"})).encode()
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
