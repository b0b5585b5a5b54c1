"""Ethereum JSON-RPC value encoding: hex quantities, hex data, addresses, block tags.

Output follows the execution-apis spec exactly (quantities without leading zeros, "0x0" for
zero, data as even-length 0x-hex) because strict clients such as cast reject anything else.
Input is parsed leniently where clients differ in practice (leading zeros, upper-case hex, JSON
integers for quantities) and strictly everywhere else: every malformed value raises
`InvalidParamsError` naming the parameter, never a silent default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flchain.devnet.errors import InvalidParamsError

UINT256_MAX = 2**256 - 1
BLOCK_TAGS = frozenset({"latest", "earliest", "pending", "safe", "finalized"})
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


@dataclass(frozen=True)
class BlockHashRef:
    """A block named by hash (EIP-1898), optionally required to be on the canonical chain."""

    block_hash: bytes
    require_canonical: bool = False


BlockTag = int | str | BlockHashRef


def to_quantity(value: int) -> str:
    """Encode a non-negative integer as a JSON-RPC quantity ("0x0", "0x1a")."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"a quantity must be a non-negative int, got {value!r}")
    return hex(value)


def to_data(value: bytes) -> str:
    """Encode bytes as JSON-RPC data ("0x" for empty)."""
    return "0x" + bytes(value).hex()


def _is_hex(text: str) -> bool:
    return all(c in _HEX_DIGITS for c in text)


def parse_quantity(value: Any, name: str, *, maximum: int = UINT256_MAX) -> int:
    """Decode a quantity given as 0x-hex string or JSON integer."""
    if isinstance(value, bool):
        raise InvalidParamsError(f"{name}: expected a hex quantity, got a boolean")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str):
        if not value.startswith(("0x", "0X")) or len(value) == 2:
            raise InvalidParamsError(f"{name}: expected a 0x-prefixed hex quantity, got {value!r}")
        if not _is_hex(value[2:]) or len(value) > 2 + 64 + 64:
            raise InvalidParamsError(f"{name}: invalid hex quantity {value!r}")
        number = int(value[2:], 16)
    else:
        raise InvalidParamsError(f"{name}: expected a hex quantity, got {type(value).__name__}")
    if number < 0 or number > maximum:
        raise InvalidParamsError(f"{name}: quantity {number} is out of range [0, {maximum}]")
    return number


def parse_data(value: Any, name: str, *, size: int | None = None) -> bytes:
    """Decode 0x-hex data, optionally of an exact byte length."""
    if not isinstance(value, str):
        kind = type(value).__name__
        raise InvalidParamsError(f"{name}: expected 0x-prefixed hex data, got {kind}")
    if not value.startswith(("0x", "0X")):
        raise InvalidParamsError(f"{name}: hex data must start with 0x")
    body = value[2:]
    if not _is_hex(body):
        raise InvalidParamsError(f"{name}: invalid hex data")
    if len(body) % 2:
        raise InvalidParamsError(f"{name}: hex data has an odd number of digits")
    decoded = bytes.fromhex(body)
    if size is not None and len(decoded) != size:
        raise InvalidParamsError(f"{name}: expected {size} bytes, got {len(decoded)}")
    return decoded


def parse_address(value: Any, name: str) -> bytes:
    """Decode a 20-byte address (checksum case is accepted but not enforced, as geth does)."""
    return parse_data(value, name, size=20)


def parse_hash(value: Any, name: str) -> bytes:
    """Decode a 32-byte hash."""
    return parse_data(value, name, size=32)


def parse_bool(value: Any, name: str) -> bool:
    """Decode a JSON boolean."""
    if not isinstance(value, bool):
        raise InvalidParamsError(f"{name}: expected a boolean, got {type(value).__name__}")
    return value


def parse_block_tag(value: Any, name: str = "block", *, default: str = "latest") -> BlockTag:
    """Decode a block parameter: a tag, a number, or an EIP-1898 object."""
    if value is None:
        return default
    if isinstance(value, str) and value in BLOCK_TAGS:
        return value
    if isinstance(value, dict):
        return _parse_block_object(value, name)
    if isinstance(value, str) and not value.startswith(("0x", "0X")):
        tags = ", ".join(sorted(BLOCK_TAGS))
        raise InvalidParamsError(f"{name}: expected a block number or one of {tags}, got {value!r}")
    return parse_quantity(value, name, maximum=2**64 - 1)


def _parse_block_object(value: dict[str, Any], name: str) -> BlockTag:
    has_number = "blockNumber" in value
    has_hash = "blockHash" in value
    if has_number == has_hash:
        raise InvalidParamsError(f"{name}: give exactly one of blockNumber and blockHash")
    unknown = set(value) - {"blockNumber", "blockHash", "requireCanonical"}
    if unknown:
        raise InvalidParamsError(f"{name}: unknown block parameter fields {sorted(unknown)}")
    if has_number:
        if "requireCanonical" in value:
            raise InvalidParamsError(f"{name}: requireCanonical applies to blockHash only")
        return parse_block_tag(value["blockNumber"], name)
    require = parse_bool(value.get("requireCanonical", False), f"{name}.requireCanonical")
    return BlockHashRef(parse_hash(value["blockHash"], f"{name}.blockHash"), require)


def unpack_params(params: list[Any], method: str, required: int, optional: int = 0) -> list[Any]:
    """Check the positional parameter count and pad missing optional ones with None."""
    count = len(params)
    if count < required or count > required + optional:
        expected = str(required) if not optional else f"{required} to {required + optional}"
        raise InvalidParamsError(f"{method}: expected {expected} parameters, got {count}")
    return list(params) + [None] * (required + optional - count)
