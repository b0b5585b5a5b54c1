"""The node's local status endpoint: JSON on /status, Prometheus text on /metrics."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from flchain.commands.node import node as node_cli
from flchain.node.metrics import Metrics
from flchain.node.status import StatusServer, redact_url


def _get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def test_status_and_metrics_are_served_on_loopback() -> None:
    metrics = Metrics()
    metrics.inc("messages_rejected_total", 3, reason="oversize")
    state = {"round": 4, "phase": "voting"}
    with StatusServer(lambda: state, metrics.to_prometheus) as server:
        assert server.url.startswith("http://127.0.0.1:")
        code, kind, body = _get(server.url + "/status")
        assert (code, kind) == (200, "application/json")
        assert json.loads(body) == state
        state["round"] = 5  # live values, not a snapshot taken at start
        assert json.loads(_get(server.url + "/status")[2])["round"] == 5
        code, kind, body = _get(server.url + "/metrics")
        assert code == 200 and kind.startswith("text/plain")
        assert 'flchain_messages_rejected_total{reason="oversize"} 3' in body.decode()
        assert _get(server.url + "/nope")[0] == 404


def test_a_failing_provider_gives_500_and_the_endpoint_keeps_answering() -> None:
    calls = {"n": 0}

    def flaky() -> dict:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("engine not ready")
        return {"ok": True}

    with StatusServer(flaky, lambda: "") as server:
        code, _, body = _get(server.url + "/status")
        assert code == 500
        assert "engine not ready" in json.loads(body)["error"]
        assert json.loads(_get(server.url + "/status")[2]) == {"ok": True}


@pytest.mark.parametrize("path", ["/status?x=1", "/status/"])
def test_query_strings_and_trailing_slashes_are_tolerated(path: str) -> None:
    with StatusServer(lambda: {"a": 1}, lambda: "") as server:
        assert json.loads(_get(server.url + path)[2]) == {"a": 1}


def test_credentials_in_urls_are_redacted_from_status() -> None:
    state = {
        "rpc": "https://alice:hunter2@rpc.example.org:8545/path?apikey=SECRET1&chain=1",
        "nested": {"errors": ["chain: cannot reach http://bob:pw2@10.0.0.1:8545/ (timeout)"]},
        "infura": "https://mainnet.infura.io/v3/0123456789abcdef0123456789abcdef",
        "plain": "http://127.0.0.1:8545",
        "round": 3,
    }
    with StatusServer(lambda: state, Metrics().to_prometheus) as server:
        body = _get(server.url + "/status")[2].decode()
    for secret in ("alice", "hunter2", "SECRET1", "bob", "pw2", "0123456789abcdef0123"):
        assert secret not in body
    served = json.loads(body)
    assert served["rpc"] == "https://REDACTED@rpc.example.org:8545/path?apikey=REDACTED&chain=1"
    assert served["nested"]["errors"] == [
        "chain: cannot reach http://REDACTED@10.0.0.1:8545/ (timeout)"
    ]
    assert served["infura"] == "https://mainnet.infura.io/v3/REDACTED"
    assert served["plain"] == "http://127.0.0.1:8545"  # nothing secret: unchanged
    assert served["round"] == 3


def test_redact_url_leaves_harmless_text_alone() -> None:
    assert redact_url("not a url") == "not a url"
    assert redact_url("http://h:1/?token=t&x=1") == "http://h:1/?token=REDACTED&x=1"
    assert redact_url("ws://u@h/") == "ws://REDACTED@h/"


def test_a_silent_client_is_dropped_and_others_are_served() -> None:
    with StatusServer(lambda: {"ok": True}, Metrics().to_prometheus, socket_timeout=0.5) as server:
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=5) as silent:
            assert json.loads(_get(server.url + "/status")[2]) == {"ok": True}
            started = time.monotonic()
            assert silent.recv(1024) == b""  # the server closed the idle connection
            assert time.monotonic() - started < 4
        with socket.create_connection((host, int(port)), timeout=5) as slow:
            slow.sendall(b"GET /status HTTP/1.1\r\n")  # ... and never finishes the headers
            assert slow.recv(1024) == b""
    with pytest.raises(ValueError, match="socket_timeout"):
        StatusServer(lambda: {}, Metrics().to_prometheus, socket_timeout=0)


def test_node_status_refuses_nested_runtime_and_status_documents(tmp_path: Path) -> None:
    runner = CliRunner()
    (tmp_path / "runtime.json").write_bytes(b"[" * 500_000 + b"]" * 500_000)
    result = runner.invoke(node_cli, ["status", "--dir", str(tmp_path)])
    assert result.exit_code == 1 and "no running node found" in result.output
    deep: dict[str, Any] = {"round": 1}
    for _ in range(200):
        deep = {"x": deep}
    with StatusServer(lambda: deep, Metrics().to_prometheus) as server:
        result = runner.invoke(node_cli, ["status", "--url", server.url])
    assert result.exit_code == 1 and "does not answer" in result.output
    assert "nested" in result.output
