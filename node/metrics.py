"""Thread-safe counters and gauges for a node, exposed as JSON and as Prometheus text.

The p2p layer counts what it sees here: bytes in and out, gossip messages received,
accepted and dropped (by reason), blobs served and fetched, connected peers. Every drop of
hostile input is counted rather than raised, so `/metrics` is where an operator sees a
misbehaving peer. Other components (the round engine) may `register` their own metrics.
Counters are updated from trio tasks and from worker threads, hence the lock.
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass
from typing import Final, Literal

PREFIX: Final = "flchain_"
_NAME_RE: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_LABEL_RE: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

Kind = Literal["counter", "gauge"]


@dataclass(frozen=True)
class MetricSpec:
    """A metric's name (without prefix), type, help text and label names."""

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()


DEFAULT_METRICS: Final = (
    MetricSpec("bytes_in_total", "counter", "Bytes received from peers.", ("channel",)),
    MetricSpec("bytes_out_total", "counter", "Bytes sent to peers.", ("channel",)),
    MetricSpec("messages_received_total", "counter", "Gossip messages received from peers."),
    MetricSpec("messages_accepted_total", "counter", "Gossip messages that passed validation."),
    MetricSpec(
        "messages_duplicate_total",
        "counter",
        "Gossip messages received again (from another peer) after the first copy.",
    ),
    MetricSpec(
        "messages_rejected_total",
        "counter",
        "Gossip messages dropped, by reason (too_deep: nested JSON refused before parsing).",
        ("reason",),
    ),
    MetricSpec("messages_published_total", "counter", "Gossip messages this node published."),
    MetricSpec("blobs_served_total", "counter", "Blobs sent to peers that asked for them."),
    MetricSpec("blobs_fetched_total", "counter", "Blobs fetched from peers and verified."),
    MetricSpec(
        "blob_hedges_total",
        "counter",
        "Fetches that also asked another provider after `hedge_after` seconds without an answer.",
    ),
    MetricSpec(
        "blob_sessions_reused_total",
        "counter",
        "Fetches sent on a blob session stream kept from an earlier fetch from that provider.",
    ),
    MetricSpec(
        "blob_sessions_ended_total",
        "counter",
        "Kept blob session streams the provider had closed; the fetch was asked again on a "
        "new stream.",
    ),
    MetricSpec(
        "blob_failures_total",
        "counter",
        "Blob exchanges that failed, by reason: requests this node refused (busy, "
        "peer_slots: the peer holds its share of serve slots, peer_bytes: the peer spent its "
        "byte budget for the round, not_committed: a digest this node does not serve, "
        "not_revealed: this node's own update before its round's submit phase closed) and "
        "responses it discarded or did not get (bad_key: a Paillier key blob that does not "
        "parse; stalled: no progress for `stall_timeout`).",
        ("reason",),
    ),
    MetricSpec("peers_connected", "gauge", "Peers with an open libp2p connection."),
    MetricSpec("dial_failures_total", "counter", "Connection attempts that failed."),
    MetricSpec(
        "connections_dropped_total",
        "counter",
        "Connections this node closed because a blob transfer on them stalled (no stream "
        "opened, or no byte for `stall_timeout`); the next transfer dials afresh.",
    ),
    MetricSpec(
        "stream_errors_total",
        "counter",
        "Inbound libp2p streams that ended in an unexpected error, by protocol.",
        ("protocol",),
    ),
    MetricSpec(
        "announcements_dropped_total",
        "counter",
        "Announced blobs this node did not fetch, by reason: uncommitted (not committed on "
        "chain before its round ended), quarantine_full (too many early announcements "
        "waiting), not_update (a kind that is never fetched early).",
        ("reason",),
    ),
    MetricSpec(
        "blobs_pruned_total",
        "counter",
        "Blobs deleted by the store's retention policy (rounds older than the last K, "
        "finalized global models kept).",
    ),
    MetricSpec(
        "store_errors_total",
        "counter",
        "Blobs the store could not keep, by reason: disk_full (ENOSPC/EDQUOT), store_full "
        "(a peer's blob over the store's byte budget), io_error.",
        ("reason",),
    ),
    MetricSpec(
        "peers_evicted_total",
        "counter",
        "Connections closed because the peer is not a member of any joined task.",
    ),
)

_Key = tuple[str, ...]


class Metrics:
    """A small registry of counters and gauges; all methods are safe from any thread."""

    def __init__(self, specs: tuple[MetricSpec, ...] = DEFAULT_METRICS) -> None:
        self._lock = threading.Lock()
        self._specs: dict[str, MetricSpec] = {}
        self._values: dict[str, dict[_Key, float]] = {}
        for spec in specs:
            self.register(spec)

    def register(self, spec: MetricSpec) -> None:
        """Add a metric; registering the same spec twice is harmless, a conflict is not."""
        if not _NAME_RE.fullmatch(spec.name) or spec.name.startswith(PREFIX):
            raise ValueError(f"bad metric name {spec.name!r} (letters, digits, _; no prefix)")
        if spec.kind not in ("counter", "gauge"):
            raise ValueError(f"metric {spec.name}: kind must be counter or gauge")
        if spec.kind == "counter" and not spec.name.endswith("_total"):
            raise ValueError(f"counter {spec.name!r} must end in _total")
        for label in spec.labels:
            if not _LABEL_RE.fullmatch(label) or label.startswith("__"):
                raise ValueError(f"metric {spec.name}: bad label name {label!r}")
        with self._lock:
            known = self._specs.get(spec.name)
            if known is not None and known != spec:
                raise ValueError(f"metric {spec.name} is already registered as {known}")
            self._specs[spec.name] = spec
            self._values.setdefault(spec.name, {})

    def inc(self, name: str, value: float = 1, **labels: str) -> None:
        """Add `value` (>= 0) to counter `name` with the given labels."""
        spec = self._spec(name, "counter")
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"counter {name} can only grow by a finite amount >= 0")
        key = _label_key(spec, labels)
        with self._lock:
            series = self._values[name]
            series[key] = series.get(key, 0) + value

    def set(self, name: str, value: float, **labels: str) -> None:
        """Set gauge `name` to `value`."""
        spec = self._spec(name, "gauge")
        key = _label_key(spec, labels)
        with self._lock:
            self._values[name][key] = value

    def get(self, name: str, **labels: str) -> float:
        """Current value of one series (0 when it was never touched)."""
        spec = self._spec(name, None)
        key = _label_key(spec, labels)
        with self._lock:
            return self._values[name].get(key, 0)

    def snapshot(self) -> dict[str, float | dict[str, float]]:
        """A JSON-ready copy: unlabelled metrics map to a number, labelled ones to a
        dict keyed by the label value (values joined by "," for several labels)."""
        with self._lock:
            specs = dict(self._specs)
            values = {name: dict(series) for name, series in self._values.items()}
        out: dict[str, float | dict[str, float]] = {}
        for name, spec in specs.items():
            series = values[name]
            if spec.labels:
                out[name] = {",".join(key): series[key] for key in sorted(series)}
            else:
                out[name] = series.get((), 0)
        return out

    def to_prometheus(self) -> str:
        """The Prometheus text exposition format (version 0.0.4), names prefixed flchain_."""
        with self._lock:
            specs = dict(self._specs)
            values = {name: dict(series) for name, series in self._values.items()}
        lines: list[str] = []
        for name in sorted(specs):
            spec = specs[name]
            full = PREFIX + name
            lines.append(f"# HELP {full} {_escape_help(spec.help)}")
            lines.append(f"# TYPE {full} {spec.kind}")
            series = values[name]
            if not spec.labels:
                lines.append(f"{full} {_format_value(series.get((), 0))}")
                continue
            for key in sorted(series):
                pairs = ",".join(
                    f'{label}="{_escape_label(value)}"'
                    for label, value in zip(spec.labels, key, strict=True)
                )
                lines.append(f"{full}{{{pairs}}} {_format_value(series[key])}")
        return "\n".join(lines) + "\n"

    def _spec(self, name: str, kind: Kind | None) -> MetricSpec:
        spec = self._specs.get(name)
        if spec is None:
            raise ValueError(f"unknown metric {name!r}; register it first")
        if kind is not None and spec.kind != kind:
            raise ValueError(f"metric {name} is a {spec.kind}, not a {kind}")
        return spec


def _label_key(spec: MetricSpec, labels: dict[str, str]) -> _Key:
    if set(labels) != set(spec.labels):
        raise ValueError(
            f"metric {spec.name} takes labels {list(spec.labels)}, got {sorted(labels)}"
        )
    return tuple(str(labels[label]) for label in spec.labels)


def _format_value(value: float) -> str:
    if isinstance(value, int) or (math.isfinite(value) and value == int(value)):
        return str(int(value))
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
