"""Counters and gauges: values, errors, thread safety and the Prometheus text format."""

from __future__ import annotations

import threading

import pytest
from prometheus_client.parser import text_string_to_metric_families

from flchain.node.metrics import DEFAULT_METRICS, Metrics, MetricSpec


def _small() -> Metrics:
    return Metrics(
        (
            MetricSpec("drops_total", "counter", "Dropped things, by reason.", ("reason",)),
            MetricSpec("peers", "gauge", "Connected peers."),
        )
    )


def test_prometheus_text_is_exactly_the_exposition_format() -> None:
    metrics = _small()
    metrics.inc("drops_total", reason="oversize")
    metrics.inc("drops_total", 2, reason="malformed")
    metrics.set("peers", 3)
    assert metrics.to_prometheus() == (
        "# HELP flchain_drops_total Dropped things, by reason.\n"
        "# TYPE flchain_drops_total counter\n"
        'flchain_drops_total{reason="malformed"} 2\n'
        'flchain_drops_total{reason="oversize"} 1\n'
        "# HELP flchain_peers Connected peers.\n"
        "# TYPE flchain_peers gauge\n"
        "flchain_peers 3\n"
    )


def test_default_metrics_parse_with_the_reference_parser() -> None:
    metrics = Metrics()
    metrics.inc("messages_rejected_total", reason="not_member")
    metrics.inc("messages_rejected_total", reason='we"ird\\label\nvalue')
    metrics.inc("bytes_in_total", 1024, channel="blob")
    metrics.set("peers_connected", 2.5)
    families = {f.name: f for f in text_string_to_metric_families(metrics.to_prometheus())}
    # the parser strips _total from counter family names
    assert set(families) == {f"flchain_{s.name.removesuffix('_total')}" for s in DEFAULT_METRICS}
    rejected = {s.labels["reason"]: s.value for s in families["flchain_messages_rejected"].samples}
    assert rejected == {"not_member": 1.0, 'we"ird\\label\nvalue': 1.0}
    assert families["flchain_peers_connected"].samples[0].value == 2.5
    assert families["flchain_bytes_in"].type == "counter"


def test_snapshot_is_json_ready() -> None:
    metrics = _small()
    assert metrics.snapshot() == {"drops_total": {}, "peers": 0}
    metrics.inc("drops_total", reason="a")
    metrics.inc("drops_total", reason="a")
    metrics.set("peers", 7)
    assert metrics.snapshot() == {"drops_total": {"a": 2}, "peers": 7}
    assert metrics.get("drops_total", reason="a") == 2
    assert metrics.get("drops_total", reason="never") == 0


def test_counters_are_exact_under_threads() -> None:
    metrics = _small()

    def work() -> None:
        for _ in range(5000):
            metrics.inc("drops_total", reason="x")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert metrics.get("drops_total", reason="x") == 20000


def test_misuse_is_a_clear_error() -> None:
    metrics = _small()
    with pytest.raises(ValueError, match="unknown metric"):
        metrics.inc("nope_total")
    with pytest.raises(ValueError, match="labels"):
        metrics.inc("drops_total")
    with pytest.raises(ValueError, match="labels"):
        metrics.inc("drops_total", reason="a", extra="b")
    with pytest.raises(ValueError, match="not a gauge"):
        metrics.set("drops_total", 1, reason="a")
    with pytest.raises(ValueError, match="not a counter"):
        metrics.inc("peers")
    with pytest.raises(ValueError, match=">= 0"):
        metrics.inc("drops_total", -1, reason="a")
    with pytest.raises(ValueError, match="_total"):
        metrics.register(MetricSpec("requests", "counter", "no suffix"))
    with pytest.raises(ValueError, match="bad metric name"):
        metrics.register(MetricSpec("flchain_x_total", "counter", "double prefix"))
    with pytest.raises(ValueError, match="bad label"):
        metrics.register(MetricSpec("y_total", "counter", "h", ("bad-label",)))
    with pytest.raises(ValueError, match="already registered"):
        metrics.register(MetricSpec("peers", "gauge", "different help"))
    metrics.register(MetricSpec("peers", "gauge", "Connected peers."))  # same spec: fine


def test_other_components_can_register_metrics() -> None:
    metrics = Metrics()
    metrics.register(MetricSpec("rounds_finalized_total", "counter", "Rounds finalized."))
    metrics.inc("rounds_finalized_total")
    assert "flchain_rounds_finalized_total 1\n" in metrics.to_prometheus()
