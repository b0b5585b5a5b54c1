"""JSON-RPC bodies go out through urllib3's pool (`contracts.rpc.DirectPost`) where nothing in
the environment needs requests, and its failures keep the meaning the retries rely on."""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from flchain.contracts import RPCError, rpc
from flchain.contracts.rpc import DirectPost, http_web3, is_transient


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a JSON-RPC endpoint speaks it

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        behaviour = self.server.behaviour  # type: ignore[attr-defined]
        if behaviour == "silent":
            time.sleep(1.0)
        status, body = 200, json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": "0x7"})
        if behaviour in (503, 400):
            status, body = behaviour, "no"
        elif behaviour == "huge":
            body = json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": "0x" + "0" * 5000})
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.server.connections.add(self.client_address)  # type: ignore[attr-defined]

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def _endpoint() -> Iterator[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.behaviour = "ok"  # type: ignore[attr-defined]
    server.connections = set()  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _url(server: http.server.ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def test_web3_reads_over_one_kept_connection_without_requests() -> None:
    with _endpoint() as server:
        w3 = http_web3(_url(server), timeout=5)
        assert isinstance(w3.provider._request_session_manager, DirectPost)
        assert [w3.eth.block_number for _ in range(5)] == [7] * 5
        assert len(server.connections) == 1  # one keep-alive connection carried them all


def test_an_endpoint_behind_a_proxy_keeps_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    remote = http_web3("https://rpc.example/v1")
    assert not isinstance(remote.provider._request_session_manager, DirectPost)
    assert isinstance(
        http_web3("http://127.0.0.1:8545").provider._request_session_manager, DirectPost
    )


def test_failures_keep_their_meaning_for_the_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    post = DirectPost()
    body = b'{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}'
    with _endpoint() as server:
        url = _url(server)
        server.behaviour = 503  # type: ignore[attr-defined]
        with pytest.raises(requests.exceptions.HTTPError) as busy:
            post.make_post_request(url, body, timeout=5)
        assert is_transient(busy.value)
        server.behaviour = 400  # type: ignore[attr-defined]
        with pytest.raises(requests.exceptions.HTTPError) as bad:
            post.make_post_request(url, body, timeout=5)
        assert not is_transient(bad.value)
        server.behaviour = "silent"  # type: ignore[attr-defined]
        started = time.monotonic()
        with pytest.raises(TimeoutError) as slow:
            post.make_post_request(url, body, timeout=0.3)
        assert time.monotonic() - started < 0.9 and is_transient(slow.value)
        # an answer over the size limit is refused, and the connection it came on is not
        # handed to the next request with the rest of it unread
        monkeypatch.setattr(rpc, "MAX_RESPONSE_BYTES", 1000)
        server.behaviour = "huge"  # type: ignore[attr-defined]
        with pytest.raises(RPCError, match="over 1000 bytes"):
            post.make_post_request(url, body, timeout=5)
        server.behaviour = "ok"  # type: ignore[attr-defined]
        assert json.loads(post.make_post_request(url, body, timeout=5))["result"] == "0x7"
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with pytest.raises(ConnectionError) as refused:
        post.make_post_request(closed, body, timeout=5)
    assert is_transient(refused.value)
