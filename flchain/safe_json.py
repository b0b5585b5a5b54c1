"""Bounded JSON parsing: the one way flchain reads JSON that came from outside.

CPython's C JSON decoder recurses once per nesting level and never checks the recursion limit
itself, and `eth_account` (through py_ecc) raises that limit to 100,000; a 75 KB body of
nested brackets then overflows the C stack and kills the process. So every parser of bytes a
peer, a client or a file can hand us checks the size first, then the nesting depth with a
linear scan that does not recurse, and only then calls `json.loads`.

Limits are per call site (a gossip message is tiny, a JSON-RPC body is not); the defaults
suit small documents. Errors are `JsonLimitError` (over a limit) or `JsonFormatError` (not
JSON), both `ValueError`s, so callers that already treat `ValueError` as "reject" keep working.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, NoReturn

import numpy as np

DEFAULT_MAX_BYTES: Final = 1 << 20  # 1 MiB
DEFAULT_MAX_DEPTH: Final = 32

# A JSON string literal (escapes included); brackets inside it are not structure.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_DEPTH_TABLE = np.zeros(256, dtype=np.int8)
for _ch in b"[{":
    _DEPTH_TABLE[_ch] = 1
for _ch in b"]}":
    _DEPTH_TABLE[_ch] = -1


class JsonLimitError(ValueError):
    """The document is larger or deeper than the caller allows."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason  # "oversize" or "too_deep": a metric label


class JsonFormatError(ValueError):
    """The document is not valid JSON (or not UTF-8, or uses NaN/Infinity)."""

    reason = "malformed"


def nesting_depth(data: bytes) -> int:
    """The deepest bracket nesting of a JSON text, in linear time and without recursion.

    Brackets inside string literals do not count. Unbalanced text gives some finite number;
    the parser reports the syntax error afterwards.
    """
    if not (b"[" in data or b"{" in data):
        return 0
    stripped = _STRING.sub(b'""', data) if b'"' in data else data
    steps = _DEPTH_TABLE[np.frombuffer(stripped, dtype=np.uint8)]
    if not steps.any():
        return 0
    return int(np.cumsum(steps, dtype=np.int64).max())


def check_limits(
    data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, max_depth: int = DEFAULT_MAX_DEPTH
) -> None:
    """Raise `JsonLimitError` unless `data` is within `max_bytes` and `max_depth`."""
    if len(data) > max_bytes:
        raise JsonLimitError("oversize", f"JSON of {len(data)} bytes exceeds {max_bytes}")
    depth = nesting_depth(data)
    if depth > max_depth:
        raise JsonLimitError("too_deep", f"JSON nested {depth} deep exceeds {max_depth}")


def loads(
    data: bytes | bytearray | memoryview | str,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
    object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None,
    parse_float: Callable[[str], Any] | None = None,
) -> Any:
    """Parse JSON after checking size and depth; NaN and Infinity are refused.

    Raises `JsonLimitError` or `JsonFormatError` (both `ValueError`).
    """
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    check_limits(raw, max_bytes=max_bytes, max_depth=max_depth)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JsonFormatError(f"not UTF-8: {exc}") from None
    try:
        return json.loads(
            text,
            object_pairs_hook=object_pairs_hook,
            parse_float=parse_float,
            parse_constant=_reject_constant,
        )
    except JsonFormatError:
        raise
    except (ValueError, RecursionError) as exc:  # ValueError also: ints over 4,300 digits
        raise JsonFormatError(f"not JSON: {exc}") from None


def load_file(
    path: str | Path,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
    object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None,
) -> Any:
    """Read and parse a JSON file, refusing one over `max_bytes` before reading it whole."""
    path = Path(path)
    with path.open("rb") as file:
        raw = file.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise JsonLimitError("oversize", f"{path} is larger than {max_bytes} bytes")
    return loads(raw, max_bytes=max_bytes, max_depth=max_depth, object_pairs_hook=object_pairs_hook)


def _reject_constant(token: str) -> NoReturn:
    raise JsonFormatError(f"{token} is not JSON")


__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_DEPTH",
    "JsonFormatError",
    "JsonLimitError",
    "check_limits",
    "load_file",
    "loads",
    "nesting_depth",
]
