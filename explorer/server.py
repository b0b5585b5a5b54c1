"""The explorer's HTTP server: a JSON API, a static page and server-sent events.

Read-only and local by design: only GET and HEAD; the Host header is checked against the
names this server answers to (as the chain server does against DNS rebinding, see
`flchain.devnet.policy`); no CORS headers, so another site's page cannot read the answers;
a Content-Security-Policy that allows only this origin's script, style and connections (no
inline script: the page's JS is a file). Every socket has a timeout, connections and live
streams are capped, and a stream that the browser stops reading is dropped.

One thread follows the chain's head (`eth_blockNumber` every `poll_s`; anvil, geth and the
devnet all answer it) and tells every open stream about each new block; the page then asks
the API again, whose answers come from `LedgerViews`' per-block cache.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import socket
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from flchain.contracts.errors import FLChainError
from flchain.contracts.ledger import UnknownRoundError, UnknownTaskError
from flchain.devnet.policy import DEFAULT_VHOSTS, RpcPolicy
from flchain.explorer.model import BadRequestError, ExplorerSource, LedgerViews, NotFoundError

log = logging.getLogger(__name__)

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}
_STATIC = {  # URL path -> (file in the package's static/, content type)
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
    "/static/favicon.svg": ("favicon.svg", "image/svg+xml"),
}
_TASK = r"/api/tasks/(\d{1,9})"
API_ROUTES: tuple[tuple[str, str], ...] = (  # (pattern, what it answers): /api lists them
    (r"/api", "this list"),
    (r"/api/info", "contract, chain id, head block, live or journal, default task"),
    (r"/api/tasks", "every task: status, members, rounds, money (wei)"),
    (_TASK, "one task: parameters, money, privacy settings, round counts"),
    (_TASK + r"/rounds", "rounds timeline and the members x rounds matrix"),
    (_TASK + r"/rounds/(\d{1,9})", "one round: each member's commitment, verdict, vote"),
    (_TASK + r"/members", "members: address, peer id, node, stake, status, epsilon, money"),
    (_TASK + r"/history", "reputation and rewards of every member after each round"),
    (_TASK + r"/curves", "accuracy per node (devnet) and on-chain loss per member and round"),
    (_TASK + r"/events", "decoded event log; ?name=VoteCast&round=2&offset=0&limit=1000"),
    (_TASK + r"/verify", "blob files re-hashed against the on-chain digests"),
    (r"/api/stream", "server-sent events: hello, then head (a new block) and status"),
)


@dataclass(frozen=True)
class ServerLimits:
    """What one explorer serves at most, and how long it waits for a client."""

    max_connections: int = 64  # open connections (a thread each); more are closed at once
    max_streams: int = 16  # live SSE streams; more get 503
    socket_timeout: float = 10.0  # one read or write on a client socket
    keepalive_s: float = 15.0  # an SSE comment when nothing happened for this long
    poll_s: float = 0.5  # how often the head block is asked for
    journal_after: int = 3  # failed polls before a stopped --devnet is read from its journal

    def __post_init__(self) -> None:
        if self.max_streams < 1 or self.max_connections <= self.max_streams:
            raise ValueError(f"need 1 <= max_streams < max_connections: {self}")
        if min(self.socket_timeout, self.keepalive_s, self.poll_s) <= 0:
            raise ValueError(f"timeouts must be positive: {self}")


class _Hub:
    """The latest event for every open stream: a stream that misses some only needs the
    newest (each says "look again"), so nothing queues up behind a slow reader."""

    def __init__(self, max_streams: int) -> None:
        self.max_streams = max_streams
        self._cond = threading.Condition()
        self.seq = 0
        self._message = b""
        self.streams = 0
        self.closed = False

    @staticmethod
    def encode(event: str, data: dict[str, Any], seq: int | None = None) -> bytes:
        head = f"id: {seq}\n" if seq is not None else ""
        return f"{head}event: {event}\ndata: {_json_text(data)}\n\n".encode()

    def publish(self, event: str, data: dict[str, Any]) -> None:
        with self._cond:
            self.seq += 1
            self._message = self.encode(event, data, self.seq)
            self._cond.notify_all()

    def join(self) -> bool:
        with self._cond:
            if self.closed or self.streams >= self.max_streams:
                return False
            self.streams += 1
            return True

    def leave(self) -> None:
        with self._cond:
            self.streams -= 1

    def wait(self, after: int, timeout: float) -> tuple[int, bytes | None]:
        """The next event after `after`, or None at the timeout or on close."""
        with self._cond:
            self._cond.wait_for(lambda: self.seq != after or self.closed, timeout)
            if self.closed or self.seq == after:
                return after, None
            return self.seq, self._message

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()


class ExplorerServer:
    """Serves one `LedgerViews` at http://HOST:PORT/ until `stop()` (or the `with` ends)."""

    def __init__(
        self,
        source: ExplorerSource | LedgerViews,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        limits: ServerLimits | None = None,
        vhosts: tuple[str, ...] = (),
    ) -> None:
        self.views = source if isinstance(source, LedgerViews) else LedgerViews(source)
        self.limits = limits or ServerLimits()
        names = (*DEFAULT_VHOSTS, *vhosts, host.strip("[]"))
        self.policy = RpcPolicy(vhosts=names)
        self.hub = _Hub(self.limits.max_streams)
        self.static = {
            path: (resources.files("flchain.explorer").joinpath("static", name).read_bytes(), kind)
            for path, (name, kind) in _STATIC.items()
        }
        self._routes = _routes(self.views)
        self._address = (host.strip("[]"), port)
        self._httpd: _HttpServer | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the explorer is not started")
        host, port = self._httpd.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else str(host)
        return f"http://{shown}:{port}/"

    def start(self) -> ExplorerServer:
        """Bind, serve in a thread, and follow the chain's head (a live source)."""
        family = socket.AF_INET6 if ":" in self._address[0] else socket.AF_INET
        server_class = type("_Bound", (_HttpServer,), {"address_family": family})
        try:
            self._httpd = server_class(self._address, _Handler, self)
        except OSError as exc:  # one line for the CLI: which address, and why
            host, port = self._address
            raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
        serve = threading.Thread(
            target=self._httpd.serve_forever, args=(0.1,), name="explorer-http", daemon=True
        )
        follow = threading.Thread(target=self._follow, name="explorer-head", daemon=True)
        self._threads = [serve, follow]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.hub.close()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> ExplorerServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait(self) -> None:
        """Block until `stop()` (Ctrl-C in the CLI)."""
        while not self._stop.wait(0.5):
            pass

    # ------------------------------------------------------------ following the chain

    def _follow(self) -> None:
        """Poll the head; publish `head` on each new block, `status` when the chain stops
        answering, and read a stopped devnet's journal once its chain has gone."""
        views, failures = self.views, 0
        with contextlib.suppress(Exception):
            views.note_head(views.read_head())
        while not self._stop.wait(self.limits.poll_s):
            if not views.source.live:
                continue
            try:
                head = views.read_head()
            except Exception as exc:  # the chain is down or restarting: say so, keep trying
                failures += 1
                if failures == 1:
                    views.error = f"chain not answering: {type(exc).__name__}: {exc}"[:300]
                    self.hub.publish("status", views.info())
                if failures >= self.limits.journal_after and _switched(views):
                    with contextlib.suppress(Exception):
                        views.note_head(views.read_head())
                    self.hub.publish("head", views.info())
                continue
            recovered = failures > 0
            failures = 0
            if recovered:
                views.error = None
            if views.note_head(head) or recovered:
                self.hub.publish("head", views.info())

    # ------------------------------------------------------------ the API

    def api(self, path: str, query: str) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body) for an /api path."""
        for pattern, handler in self._routes:
            match = pattern.fullmatch(path.rstrip("/") or "/")
            if match is None:
                continue
            try:
                params = urllib.parse.parse_qs(query, max_num_fields=8, strict_parsing=False)
                return 200, handler(*(int(g) for g in match.groups()), **_query(params))
            except (NotFoundError, UnknownTaskError, UnknownRoundError) as exc:
                return 404, {"error": str(exc)}
            except BadRequestError as exc:
                return 400, {"error": str(exc)}
            except (FLChainError, OSError) as exc:
                return 503, {"error": f"cannot read the chain: {exc}"[:500]}
            except Exception:
                log.exception("explorer: %s failed", path)
                return 500, {"error": "internal error (see the explorer's log)"}
        return 404, {"error": f"no such API path: {path[:200]} (GET /api lists them)"}


def _switched(views: LedgerViews) -> bool:
    """`switch_to_journal`, never raising: the follower thread must outlive any failure."""
    try:
        return views.switch_to_journal()
    except Exception as exc:
        views.error = f"cannot switch to the chain journal: {exc}"[:300]
        return False


def _query(params: dict[str, list[str]]) -> dict[str, Any]:
    """The events view's query parameters, checked; BadRequestError for anything else."""
    out: dict[str, Any] = {}
    for key, values in params.items():
        value = values[-1]
        if key == "name":
            if len(value) > 64:
                raise BadRequestError("name: an event name is at most 64 characters")
            out["name"] = value or None
        elif key in ("round", "offset", "limit"):
            if not value.isdigit() or len(value) > 9:
                raise BadRequestError(f"{key} must be a non-negative integer")
            out["round_number" if key == "round" else key] = int(value)
        else:
            raise BadRequestError(f"unknown query parameter {key[:40]!r}")
    return out


def _routes(views: LedgerViews) -> list[tuple[re.Pattern[str], Callable[..., dict[str, Any]]]]:
    def index(**query: Any) -> dict[str, Any]:
        _no_query(query)
        return {"endpoints": [{"path": p, "answers": what} for p, what in API_ROUTES]}

    def plain_view(fn: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        def run(*args: int, **query: Any) -> dict[str, Any]:
            _no_query(query)
            return fn(*args)

        return run

    handlers: dict[str, Callable[..., dict[str, Any]]] = {
        r"/api": index,
        r"/api/info": plain_view(views.info),
        r"/api/tasks": plain_view(views.tasks),
        _TASK: plain_view(views.task),
        _TASK + r"/rounds": plain_view(views.rounds),
        _TASK + r"/rounds/(\d{1,9})": plain_view(views.round),
        _TASK + r"/members": plain_view(views.members),
        _TASK + r"/history": plain_view(views.history),
        _TASK + r"/curves": plain_view(views.curves),
        _TASK + r"/events": views.events,
        _TASK + r"/verify": plain_view(views.verify),
    }
    return [(re.compile(p), fn) for p, fn in handlers.items()]


def _no_query(query: dict[str, Any]) -> None:
    if query:
        raise BadRequestError("this path takes no query parameters")


def _finite(value: Any) -> Any:
    """NaN and infinities as null: JSON has neither, and browsers refuse them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _json_text(data: Any) -> str:
    try:
        return json.dumps(data, separators=(",", ":"), allow_nan=False)
    except ValueError:
        return json.dumps(_finite(data), separators=(",", ":"))


# ---------------------------------------------------------------- HTTP plumbing


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], handler: type, app: ExplorerServer) -> None:
        self.app = app
        self._slots = threading.BoundedSemaphore(app.limits.max_connections)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        # Each connection holds a thread: past the cap, close new ones at once.
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("explorer: connection from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "flchain-explorer"
    sys_version = ""

    def version_string(self) -> str:
        return self.server_version

    server: _HttpServer

    def setup(self) -> None:
        self.timeout = self.server.app.limits.socket_timeout  # every read and write
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("explorer: %s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._serve(send_body=True)

    def do_HEAD(self) -> None:
        self._serve(send_body=False)

    def __getattr__(self, name: str) -> Any:
        # http.server looks up do_<METHOD>: every method but GET and HEAD is refused (405).
        if name.startswith("do_"):
            return self._refuse_method
        raise AttributeError(name)

    def _refuse_method(self) -> None:
        self.close_connection = True  # its body, if any, is never read
        body = _json_text({"error": "read-only: GET and HEAD only"}).encode()
        self._send(405, body, "json", extra={"Allow": "GET, HEAD"})

    def _serve(self, *, send_body: bool) -> None:
        app = self.server.app
        if self.headers.get("Content-Length") or self.headers.get("Transfer-Encoding"):
            self.close_connection = True  # a GET with a body: never read, never reused
            self._error(400, "GET and HEAD take no body", send_body)
            return
        if not app.policy.host_allowed(self.headers.get("Host")):
            self.close_connection = True
            self._error(403, "invalid host specified", send_body)
            return
        url = urllib.parse.urlsplit(self.path)
        path = url.path
        if path == "/api/stream":
            self._stream(send_body)
        elif path in app.static:
            body, kind = app.static[path]
            self._send(200, body, kind, send_body=send_body, cache="no-cache")
        elif path == "/api" or path.startswith("/api/"):
            status, data = app.api(path, url.query)
            self._send(status, _json_text(data).encode(), "json", send_body=send_body)
        else:
            self._error(404, f"not found: {path[:200]}", send_body)

    def _error(self, status: int, message: str, send_body: bool = True) -> None:
        self._send(status, _json_text({"error": message}).encode(), "json", send_body=send_body)

    def _send(
        self,
        status: int,
        body: bytes,
        kind: str,
        *,
        send_body: bool = True,
        cache: str = "no-store",
        extra: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        ctype = "application/json; charset=utf-8" if kind == "json" else kind
        headers = {
            **_SECURITY_HEADERS,
            "Content-Type": ctype,
            "Content-Length": str(len(body)),
            "Cache-Control": cache,
            **(extra or {}),
        }
        if self.close_connection:
            headers["Connection"] = "close"
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def _stream(self, send_body: bool) -> None:
        """Server-sent events: `hello` with the source's info, then `head` on each new
        block and `status` when the chain stops answering; a comment every keepalive_s."""
        app = self.server.app
        hub = app.hub
        if not hub.join():
            self.close_connection = True
            self._send(
                503,
                _json_text({"error": "too many live streams; try again later"}).encode(),
                "json",
                send_body=send_body,
                extra={"Retry-After": "10"},
            )
            return
        try:
            self.close_connection = True  # the stream ends with the connection
            self.send_response(200)
            headers = {
                **_SECURITY_HEADERS,
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
                "Connection": "close",
            }
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            if not send_body:
                return
            seq = hub.seq
            self.wfile.write(b"retry: 3000\n\n" + hub.encode("hello", app.views.info()))
            while True:
                seq_now, message = hub.wait(seq, app.limits.keepalive_s)
                if hub.closed:
                    return
                self.wfile.write(message if message is not None else b": keepalive\n\n")
                seq = seq_now
        except (OSError, ValueError):
            return  # the browser left, or stopped reading for socket_timeout
        finally:
            hub.leave()
