"""Round events: what a node did at each step of a round, as structured records.

The engine and the daemon report their progress through `emit` only and never print: every
event is a log record on the `flchain.node.rounds` logger that carries a `RoundEvent`
(`record.round_event`). Whoever configures logging picks the presentation: `node run` prints
one line per event, or one JSON object with `--log-json` (`flchain.commands.node_console`); a
devnet node's lines land in its node.log; a test collects them with a handler. The record's
own message is a plain `key=value` rendering, for handlers that know nothing of events.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

LOGGER = "flchain.node.rounds"
# The attribute of a log record that holds its RoundEvent.
RECORD_ATTR = "round_event"

_log = logging.getLogger(LOGGER)


@dataclass(frozen=True)
class RoundEvent:
    """One step of one round (`round` None for events outside a round: start, funds, end).

    `fields` hold JSON values only (`emit` converts digests to 0x hex), so the JSON output
    is the event itself."""

    event: str
    round: int | None
    fields: Mapping[str, Any] = field(default_factory=dict)
    ts: float = 0.0
    level: int = logging.INFO

    def as_dict(self) -> dict[str, Any]:
        """The event as one flat JSON object: ts, level, event, round, then its fields."""
        return {
            "ts": round(self.ts, 3),
            "level": logging.getLevelName(self.level).lower(),
            "event": self.event,
            "round": self.round,
            **self.fields,
        }


_RESERVED = frozenset({"ts", "level", "event", "round"})


def json_value(value: Any) -> Any:
    """A field value as JSON: bytes as 0x hex (digests), enums by lower-case name, sets and
    tuples as lists; anything else unknown as its str."""
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, enum.Enum):
        return value.name.lower()
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value) if isinstance(value, set | frozenset) else value
        return [json_value(v) for v in items]
    return str(value)


def make_event(
    event: str, round_: int | None = None, *, level: int = logging.INFO, **fields: Any
) -> RoundEvent:
    """A RoundEvent stamped now, its fields made JSON values."""
    clash = _RESERVED & set(fields)
    if clash:
        raise ValueError(f"event field names {sorted(clash)} are reserved")
    values = {k: json_value(v) for k, v in fields.items()}
    return RoundEvent(event, round_, values, time.time(), level)


def emit(
    event: str, round_: int | None = None, *, level: int = logging.INFO, **fields: Any
) -> None:
    """Report one step (see the module docstring); cheap when nobody listens."""
    if not _log.isEnabledFor(level):
        return
    ev = make_event(event, round_, level=level, **fields)
    _log.log(level, "%s", plain_message(ev), extra={RECORD_ATTR: ev})


def plain_message(ev: RoundEvent) -> str:
    """`round 3 committed digest=0x... size=605123`: the record's message."""
    head = ev.event if ev.round is None else f"round {ev.round} {ev.event}"
    return " ".join([head, *(f"{k}={v}" for k, v in ev.fields.items())])


def event_of(record: logging.LogRecord) -> RoundEvent | None:
    """The RoundEvent a log record carries, if any."""
    ev = getattr(record, RECORD_ATTR, None)
    return ev if isinstance(ev, RoundEvent) else None
