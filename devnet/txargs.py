"""The transaction-arguments object of eth_call, eth_estimateGas and eth_sendTransaction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flchain.devnet.encoding import parse_address, parse_data, parse_hash, parse_quantity
from flchain.devnet.errors import InvalidParamsError

AccessList = tuple[tuple[bytes, tuple[int, ...]], ...]
SUPPORTED_TYPES = (0, 1, 2)


@dataclass(frozen=True)
class TxArgs:
    """Decoded transaction fields; None means "let the node choose"."""

    sender: bytes | None = None
    to: bytes | None = None
    gas: int | None = None
    gas_price: int | None = None
    max_fee_per_gas: int | None = None
    max_priority_fee_per_gas: int | None = None
    value: int = 0
    data: bytes = b""
    nonce: int | None = None
    access_list: AccessList | None = None
    tx_type: int | None = None
    chain_id: int | None = None


def parse_tx_args(obj: Any, name: str = "transaction") -> TxArgs:
    """Decode a JSON transaction object; unknown fields are ignored, as geth does."""
    if not isinstance(obj, dict):
        raise InvalidParamsError(f"{name}: expected a transaction object")

    def quantity(key: str, maximum: int = 2**256 - 1) -> int | None:
        value = obj.get(key)
        return None if value is None else parse_quantity(value, f"{name}.{key}", maximum=maximum)

    data = _parse_input(obj, name)
    gas_price = quantity("gasPrice")
    max_fee = quantity("maxFeePerGas")
    max_priority = quantity("maxPriorityFeePerGas")
    if gas_price is not None and (max_fee is not None or max_priority is not None):
        message = f"{name}: give either gasPrice or maxFeePerGas/maxPriorityFeePerGas"
        raise InvalidParamsError(message)
    if max_fee is not None and max_priority is not None and max_priority > max_fee:
        raise InvalidParamsError(f"{name}: maxPriorityFeePerGas is larger than maxFeePerGas")
    tx_type = quantity("type", maximum=255)
    if tx_type is not None and tx_type not in SUPPORTED_TYPES:
        raise InvalidParamsError(f"{name}: transaction type {tx_type} is not supported")
    to = obj.get("to")
    sender = obj.get("from")
    access_list = obj.get("accessList")
    return TxArgs(
        sender=None if sender is None else parse_address(sender, f"{name}.from"),
        to=None if to is None else parse_address(to, f"{name}.to"),
        gas=quantity("gas", maximum=2**63 - 1),
        gas_price=gas_price,
        max_fee_per_gas=max_fee,
        max_priority_fee_per_gas=max_priority,
        value=quantity("value") or 0,
        data=data,
        nonce=quantity("nonce", maximum=2**64 - 2),
        access_list=None if access_list is None else _parse_access_list(access_list, name),
        tx_type=tx_type,
        chain_id=quantity("chainId", maximum=2**64 - 1),
    )


def _parse_input(obj: dict[str, Any], name: str) -> bytes:
    data = obj.get("data")
    given_input = obj.get("input")
    if (
        data is not None
        and given_input is not None
        and parse_data(data, f"{name}.data") != parse_data(given_input, f"{name}.input")
    ):
        raise InvalidParamsError(f"{name}: both data and input are given and they differ")
    value = given_input if given_input is not None else data
    return b"" if value is None else parse_data(value, f"{name}.input")


def _parse_access_list(value: Any, name: str) -> AccessList:
    if not isinstance(value, list):
        raise InvalidParamsError(f"{name}.accessList: expected a list")
    entries = []
    for position, item in enumerate(value):
        where = f"{name}.accessList[{position}]"
        if not isinstance(item, dict) or not isinstance(item.get("storageKeys", []), list):
            raise InvalidParamsError(f"{where}: expected {{address, storageKeys}}")
        address = parse_address(item.get("address"), f"{where}.address")
        slots = tuple(
            int.from_bytes(parse_hash(key, f"{where}.storageKeys"), "big")
            for key in item.get("storageKeys", [])
        )
        entries.append((address, slots))
    return tuple(entries)


def access_list_to_json(access_list: AccessList) -> list[dict[str, Any]]:
    """The JSON form of an access list (used in transaction objects and for signing)."""
    return [
        {
            "address": "0x" + address.hex(),
            "storageKeys": ["0x" + slot.to_bytes(32, "big").hex() for slot in slots],
        }
        for address, slots in access_list
    ]
