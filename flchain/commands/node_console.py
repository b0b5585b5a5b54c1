"""What `flchain node run` prints: one line per round step, or one JSON object per line.

The engine reports `RoundEvent`s (node/events.py); this module turns them into text and sets
up logging for the daemon (`setup`):

* by default, one concise line per event on stdout (`round 3  committed 0x1a2b3c4d…  (605 KB,
  trained 1.2 s, 4 peers)`) and the node's own warnings and errors on stderr; libraries
  (libp2p, web3, urllib3) stay quiet: their dial failures and debug chatter are not the
  operator's business unless asked for;
* `-q` keeps warnings and errors only; `-v` adds the node's info log and the libraries'
  warnings, `-vv` debug and library info, `-vvv` library debug too;
* `--log-json` prints every record, events and log lines alike, as one JSON object per line
  on stdout ({"ts", "level", "event", "round", ...fields}) for machines;
* `--log-file PATH` appends everything at info level or more (debug with `-vv`), with
  timestamps, whatever the console shows.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

from flchain.node.events import RoundEvent, event_of
from flchain.units import format_eth

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_NEVER = logging.CRITICAL + 1
_MARK = "_flchain_console"  # set on the handlers `setup` installs, to replace them later


# ---------------------------------------------------------------- values


def short_digest(value: Any) -> str:
    """0x-hex shortened to its first four bytes (`0x1a2b3c4d…`); JSON keeps it whole."""
    text = str(value)
    if text.startswith("0x") and len(text) > 12:
        return text[:10] + "…"
    return text


def eth(wei: Any) -> str:
    """Wei as ETH: exact up to six decimals, else rounded to six."""
    if not isinstance(wei, int):
        return "-"
    text = format_eth(wei)
    if "." in text and len(text.split(".")[1]) > 6:
        rounded = round(Decimal(wei) / Decimal(10**18), 6)
        text = format(rounded.normalize(), "f") if rounded else "0.000000…"
    return text


def size(n: Any) -> str:
    """Bytes in decimal units (605 KB)."""
    if not isinstance(n, int):
        return "-"
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if n >= scale:
            value = n / scale
            return f"{value:.0f} {unit}" if value >= 10 else f"{value:.1f} {unit}"
    return f"{n} B"


def members(indices: Any) -> str:
    """Member indices as `0,1,3`; `none` for none."""
    if not isinstance(indices, list) or not indices:
        return "none"
    return ",".join(str(i) for i in indices)


def accuracy(value: Any) -> str:
    if isinstance(value, int | float) and math.isfinite(value):
        return f"{value:.4f}"
    return "-"


def seconds(value: Any) -> str:
    return f"{value:.1f} s" if isinstance(value, int | float) else "-"


# ---------------------------------------------------------------- one line per event


def _peers(n: Any) -> str:
    if not isinstance(n, int):
        return ""
    return f", {n} peer" if n == 1 else f", {n} peers"


def _started(f: dict[str, Any]) -> str:
    addrs = ", ".join(f.get("addrs") or []) or "-"
    return (
        f"node {f.get('address')}  task {f.get('task')} on {f.get('contract')}\n"
        f"  libp2p {addrs}\n"
        f"  status {f.get('status_url')}/status"
    )


def _unfunded(f: dict[str, Any]) -> str:
    purpose = "gas" if f.get("member") else "stake and gas"
    return (
        f"fund {f.get('address')} (balance {eth(f.get('balance_wei'))} ETH, needs about "
        f"{eth(f.get('needs_wei'))} ETH for {purpose}); waiting for it\n"
        f"  {f.get('command')}   (on a devnet: --dev-account 0 instead of --from-key)\n"
        f"  or: {f.get('cast')}"
    )


def _joined(f: dict[str, Any]) -> str:
    if f.get("fresh"):
        return f"joined task {f.get('task')} as member {f.get('index')}"
    return f"member {f.get('index')} of task {f.get('task')} (joined before)"


def _fetched(f: dict[str, Any]) -> str:
    missing = f.get("missing") or []
    extra = f"missing {members(missing)}; " if missing else ""
    return f"fetched {f.get('got')}/{f.get('of')} updates  ({extra}{seconds(f.get('seconds'))})"


def _voted(f: dict[str, Any]) -> str:
    quorum = f.get("quorum_bps")
    tail = f"  (quorum {quorum / 100:g}%)" if isinstance(quorum, int) else ""
    return (
        f"voted {short_digest(f.get('digest'))}  accepted {members(f.get('accepted'))} of "
        f"{f.get('submitted')}{tail}"
    )


def _finalized(f: dict[str, Any]) -> str:
    line = (
        f"finalized {short_digest(f.get('digest'))}  accuracy {accuracy(f.get('accuracy'))}  "
        f"(accepted {members(f.get('accepted'))}"
    )
    return line + ("; not our vote)" if f.get("ours") is False else ")")


def _done(f: dict[str, Any]) -> str:
    return (
        f"task {f.get('task')} {f.get('status')}  accuracy {accuracy(f.get('accuracy'))} after "
        f"{f.get('rounds')} round(s)  (model {short_digest(f.get('digest'))})"
    )


_LINES: dict[str, Callable[[dict[str, Any]], str]] = {
    "started": _started,
    "unfunded": _unfunded,
    "funded": lambda f: f"funded {f.get('address')}  balance {eth(f.get('balance_wei'))} ETH",
    "low_funds": lambda f: (
        f"balance {eth(f.get('balance_wei'))} ETH of {f.get('address')} may not last the "
        f"task: about {eth(f.get('enough_wei'))} ETH pays for its {f.get('rounds')} round(s)"
    ),
    "joined": _joined,
    "waiting": lambda f: f"waiting for members  ({f.get('members')}/{f.get('min_members')} joined)",
    "committed": lambda f: (
        f"committed {short_digest(f.get('digest'))}  ({size(f.get('size'))}, trained "
        f"{seconds(f.get('train_s'))}{_peers(f.get('peers'))})"
    ),
    "late": lambda f: "submit phase over: joining the vote",
    "fetched": _fetched,
    "voted": _voted,
    "finalized": _finalized,
    "ended": lambda f: f"{f.get('status')}",
    "refused": lambda f: f"{f.get('what')} refused: {f.get('reason')}",
    "alarm": lambda f: f"alarm raised against {short_digest(f.get('digest'))}",
    "done": _done,
    "lingering": lambda f: (
        f"task over: serving blobs {f.get('seconds'):g} s more for members a step behind"
    ),
}


def format_line(ev: RoundEvent) -> str:
    """The human line of one event (`round 3  committed 0x1a2b3c4d…  (605 KB, …)`)."""
    render = _LINES.get(ev.event)
    fields = dict(ev.fields)
    try:
        body = render(fields) if render is not None else None
    except (TypeError, ValueError):  # a field of an unexpected type: fall back below
        body = None
    if body is None:
        body = " ".join([ev.event, *(f"{k}={v}" for k, v in fields.items())])
    return body if ev.round is None else f"round {ev.round}  {body}"


def format_json(ev: RoundEvent) -> str:
    """One JSON object, one line: ts, level, event, round and the event's fields."""
    return json.dumps(ev.as_dict(), separators=(",", ":"), default=str)


def record_json(record: logging.LogRecord) -> str:
    """Any log record as one JSON line: its event, else `{"event": "log", ...}`."""
    ev = event_of(record)
    if ev is not None:
        return format_json(ev)
    data: dict[str, Any] = {
        "ts": round(record.created, 3),
        "level": record.levelname.lower(),
        "event": "log",
        "round": None,
        "logger": record.name,
        "message": record.getMessage(),
    }
    if record.exc_info:
        data["exception"] = logging.Formatter().formatException(record.exc_info)
    return json.dumps(data, separators=(",", ":"), default=str)


class LineFormatter(logging.Formatter):
    """Events as their line (after a timestamp when `timestamps`), other records as
    `time LEVEL logger: message`."""

    def __init__(self, timestamps: bool = False) -> None:
        super().__init__(_LOG_FORMAT)
        self.timestamps = timestamps

    def format(self, record: logging.LogRecord) -> str:
        ev = event_of(record)
        if ev is None:
            return super().format(record)
        line = format_line(ev)
        return f"{self.formatTime(record)} {line}" if self.timestamps else line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return record_json(record)


# ---------------------------------------------------------------- logging set-up


class _Levels(logging.Filter):
    """Lets a record through by its source: events, the node's own loggers, libraries."""

    def __init__(self, events: int, node: int, libraries: int) -> None:
        super().__init__()
        self.events, self.node, self.libraries = events, node, libraries

    def threshold(self, record: logging.LogRecord) -> int:
        if event_of(record) is not None:
            return self.events
        if record.name == "flchain" or record.name.startswith("flchain."):
            return self.node
        return self.libraries

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.threshold(record)


class _Only(logging.Filter):
    def __init__(self, events: bool) -> None:
        super().__init__()
        self.events = events

    def filter(self, record: logging.LogRecord) -> bool:
        return (event_of(record) is not None) == self.events


def console_levels(verbose: int, quiet: bool) -> _Levels:
    """What the console shows at this verbosity (see the module docstring)."""
    if quiet:
        return _Levels(logging.WARNING, logging.WARNING, _NEVER)
    node = (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    libraries = (_NEVER, logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 3)]
    return _Levels(logging.INFO, node, libraries)


def file_levels(verbose: int) -> _Levels:
    node = logging.DEBUG if verbose >= 2 else logging.INFO
    return _Levels(logging.INFO, node, logging.DEBUG if verbose >= 3 else logging.INFO)


def setup(
    *,
    verbose: int = 0,
    quiet: bool = False,
    as_json: bool = False,
    log_file: Path | None = None,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
) -> list[logging.Handler]:
    """Install the daemon's handlers on the root logger (replacing those of an earlier call)
    and set the loggers' levels to what they need; returns the handlers."""
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    shown = console_levels(verbose, quiet)
    handlers: list[logging.Handler] = []
    if as_json:
        handler: logging.Handler = logging.StreamHandler(out)
        handler.setFormatter(JsonFormatter())
        handler.addFilter(shown)
        handlers.append(handler)
    else:
        stamped = verbose > 0  # next to timestamped log lines, the events carry one too
        lines = logging.StreamHandler(out)
        lines.setFormatter(LineFormatter(timestamps=stamped))
        lines.addFilter(_Only(events=True))
        lines.addFilter(shown)
        logs = logging.StreamHandler(err)
        logs.setFormatter(LineFormatter())
        logs.addFilter(_Only(events=False))
        logs.addFilter(shown)
        handlers += [lines, logs]
    levels = [shown]
    if log_file is not None:
        written = file_levels(verbose)
        file = logging.FileHandler(log_file, encoding="utf-8")
        file.setFormatter(LineFormatter(timestamps=True))
        file.addFilter(written)
        handlers.append(file)
        levels.append(written)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _MARK, False)]:
        root.removeHandler(old)
        old.close()
    for handler in handlers:
        setattr(handler, _MARK, True)
        root.addHandler(handler)
    node_level = min(min(lv.events, lv.node) for lv in levels)
    library_level = min(lv.libraries for lv in levels)
    logging.getLogger("flchain").setLevel(node_level)
    root.setLevel(library_level)
    if not os.environ.get("LIBP2P_DEBUG"):
        # py-libp2p keeps its records to itself (no handler, no propagation: they fell to
        # logging's last resort, every dial failure an unformatted stderr line).
        libp2p = logging.getLogger("libp2p")
        libp2p.propagate = True
        libp2p.setLevel(library_level)
    return handlers
