"""The node's local status endpoint: JSON on /status, Prometheus text on /metrics."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from flchain.node.metrics import Metrics
from flchain.node.status import StatusServer


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
