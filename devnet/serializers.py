"""JSON-RPC objects for blocks, transactions, receipts and logs, in the standard encoding.

Field names and presence follow the execution-apis spec as geth and anvil emit them; alloy
(cast) refuses objects with missing fields such as a receipt's `logsBloom`, so every field is
always written. Log indexes count across the whole block, as the spec requires.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import rlp
from eth.abc import BlockAPI, ReceiptAPI, SignedTransactionAPI
from eth.vm.forks.berlin.transactions import TypedTransaction
from eth_tester.utils.address import generate_contract_address

from flchain.devnet.encoding import to_data, to_quantity
from flchain.devnet.txargs import access_list_to_json

_EMPTY_NONCE = b"\x00" * 8


def _address(value: bytes) -> str | None:
    return None if not value else to_data(value)


def _topic(value: int) -> str:
    return to_data(value.to_bytes(32, "big"))


def _bloom(value: int) -> str:
    return to_data(value.to_bytes(256, "big"))


def transaction_type(tx: SignedTransactionAPI) -> int:
    """EIP-2718 type: 0 for legacy transactions."""
    return tx.type_id if isinstance(tx, TypedTransaction) else 0


def effective_gas_price(tx: SignedTransactionAPI, base_fee: int) -> int:
    """What the sender paid per gas in a block with this base fee."""
    if transaction_type(tx) >= 2:
        return min(tx.max_fee_per_gas, tx.max_priority_fee_per_gas + base_fee)
    return tx.gas_price


def block_to_json(
    block: BlockAPI, *, full_transactions: bool, pending: bool = False
) -> dict[str, Any]:
    """A block object; `transactions` holds hashes or full transaction objects."""
    header = block.header
    if full_transactions:
        transactions: list[Any] = [
            transaction_to_json(tx, block=block, index=index, pending=pending)
            for index, tx in enumerate(block.transactions)
        ]
    else:
        transactions = [to_data(tx.hash) for tx in block.transactions]
    result: dict[str, Any] = {
        "number": to_quantity(header.block_number),
        "hash": to_data(header.hash),
        "parentHash": to_data(header.parent_hash),
        "nonce": to_data(getattr(header, "nonce", _EMPTY_NONCE)),
        "sha3Uncles": to_data(header.uncles_hash),
        "logsBloom": _bloom(header.bloom),
        "transactionsRoot": to_data(header.transaction_root),
        "stateRoot": to_data(header.state_root),
        "receiptsRoot": to_data(header.receipt_root),
        "miner": to_data(header.coinbase),
        "difficulty": to_quantity(header.difficulty),
        "totalDifficulty": to_quantity(header.difficulty),
        "extraData": to_data(header.extra_data),
        "size": to_quantity(len(rlp.encode(block))),
        "gasLimit": to_quantity(header.gas_limit),
        "gasUsed": to_quantity(header.gas_used),
        "timestamp": to_quantity(header.timestamp),
        "mixHash": to_data(header.mix_hash),
        "transactions": transactions,
        "uncles": [to_data(uncle.hash) for uncle in block.uncles],
    }
    optional = {
        "baseFeePerGas": ("base_fee_per_gas", to_quantity),
        "withdrawalsRoot": ("withdrawals_root", to_data),
        "blobGasUsed": ("blob_gas_used", to_quantity),
        "excessBlobGas": ("excess_blob_gas", to_quantity),
        "parentBeaconBlockRoot": ("parent_beacon_block_root", to_data),
        "requestsHash": ("requests_hash", to_data),
    }
    for key, (attribute, encode) in optional.items():
        value = getattr(header, attribute, None)
        if value is not None:
            result[key] = encode(value)
    if hasattr(header, "withdrawals_root"):
        result["withdrawals"] = [
            {
                "index": to_quantity(w.index),
                "validatorIndex": to_quantity(w.validator_index),
                "address": to_data(w.address),
                "amount": to_quantity(w.amount),
            }
            for w in getattr(block, "withdrawals", ())
        ]
    return result


def transaction_to_json(
    tx: SignedTransactionAPI, *, block: BlockAPI, index: int, pending: bool
) -> dict[str, Any]:
    """A transaction object; block fields are null while it is pending."""
    tx_type = transaction_type(tx)
    base_fee = getattr(block.header, "base_fee_per_gas", 0) or 0
    result: dict[str, Any] = {
        "type": to_quantity(tx_type),
        "hash": to_data(tx.hash),
        "nonce": to_quantity(tx.nonce),
        "blockHash": None if pending else to_data(block.hash),
        "blockNumber": None if pending else to_quantity(block.number),
        "transactionIndex": None if pending else to_quantity(index),
        "from": to_data(tx.sender),
        "to": _address(tx.to),
        "value": to_quantity(tx.value),
        "gas": to_quantity(tx.gas),
        "input": to_data(tx.data),
    }
    if tx_type >= 2:
        result["maxFeePerGas"] = to_quantity(tx.max_fee_per_gas)
        result["maxPriorityFeePerGas"] = to_quantity(tx.max_priority_fee_per_gas)
        price = tx.max_fee_per_gas if pending else effective_gas_price(tx, base_fee)
        result["gasPrice"] = to_quantity(price)
    else:
        result["gasPrice"] = to_quantity(tx.gas_price)
    if tx_type >= 1:
        result["chainId"] = to_quantity(tx.chain_id)
        result["accessList"] = access_list_to_json(tuple(tx.access_list or ()))
        result["yParity"] = to_quantity(tx.y_parity)
        result["v"] = to_quantity(tx.y_parity)
    else:
        result["v"] = to_quantity(tx.v)
        if tx.v >= 35:
            result["chainId"] = to_quantity((tx.v - 35) // 2)
    if tx_type == 4:
        result["authorizationList"] = [
            {
                "chainId": to_quantity(item.chain_id),
                "address": to_data(item.address),
                "nonce": to_quantity(item.nonce),
                "yParity": to_quantity(item.y_parity),
                "r": to_quantity(item.r),
                "s": to_quantity(item.s),
            }
            for item in tx.authorization_list
        ]
    result["r"] = to_quantity(tx.r)
    result["s"] = to_quantity(tx.s)
    return result


@dataclass(frozen=True)
class LogRecord:
    """A log with its position, as needed for receipts, eth_getLogs and filters."""

    address: bytes
    topics: tuple[bytes, ...]
    data: bytes
    log_index: int
    tx_index: int
    tx_hash: bytes


def block_log_records(block: BlockAPI, receipts: tuple[ReceiptAPI, ...]) -> list[LogRecord]:
    """Every log of a block in order, numbered across the block."""
    records = []
    for tx_index, (tx, receipt) in enumerate(zip(block.transactions, receipts, strict=True)):
        for log in receipt.logs:
            records.append(
                LogRecord(
                    address=log.address,
                    topics=tuple(topic.to_bytes(32, "big") for topic in log.topics),
                    data=log.data,
                    log_index=len(records),
                    tx_index=tx_index,
                    tx_hash=tx.hash,
                )
            )
    return records


def log_to_json(record: LogRecord, block: BlockAPI) -> dict[str, Any]:
    """A log object as in receipts and eth_getLogs results."""
    return {
        "address": to_data(record.address),
        "topics": [to_data(topic) for topic in record.topics],
        "data": to_data(record.data),
        "blockNumber": to_quantity(block.number),
        "blockHash": to_data(block.hash),
        "blockTimestamp": to_quantity(block.header.timestamp),
        "transactionHash": to_data(record.tx_hash),
        "transactionIndex": to_quantity(record.tx_index),
        "logIndex": to_quantity(record.log_index),
        "removed": False,
    }


def receipt_to_json(
    block: BlockAPI, receipts: tuple[ReceiptAPI, ...], index: int
) -> dict[str, Any]:
    """The receipt of the `index`-th transaction of a mined block."""
    tx = block.transactions[index]
    receipt = receipts[index]
    previous_cumulative = receipts[index - 1].gas_used if index else 0
    base_fee = getattr(block.header, "base_fee_per_gas", 0) or 0
    logs = [
        log_to_json(record, block)
        for record in block_log_records(block, receipts)
        if record.tx_index == index
    ]
    created = generate_contract_address(tx.sender, tx.nonce) if not tx.to else None
    return {
        "type": to_quantity(transaction_type(tx)),
        "transactionHash": to_data(tx.hash),
        "transactionIndex": to_quantity(index),
        "blockHash": to_data(block.hash),
        "blockNumber": to_quantity(block.number),
        "from": to_data(tx.sender),
        "to": _address(tx.to),
        "cumulativeGasUsed": to_quantity(receipt.gas_used),
        "gasUsed": to_quantity(receipt.gas_used - previous_cumulative),
        "effectiveGasPrice": to_quantity(effective_gas_price(tx, base_fee)),
        "contractAddress": None if created is None else to_data(created),
        "logs": logs,
        "logsBloom": _bloom(receipt.bloom),
        "status": to_quantity(1 if _succeeded(receipt) else 0),
    }


def _succeeded(receipt: ReceiptAPI) -> bool:
    # Post-Byzantium receipts store the status code (b"\x01" or b"") in state_root.
    return receipt.state_root == b"\x01"
