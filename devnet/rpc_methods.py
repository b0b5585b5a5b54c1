"""The Ethereum JSON-RPC methods the devnet serves, as a name -> handler table.

Each handler takes the positional `params` list, validates it (raising `InvalidParamsError` with the
parameter's name), calls the chain and returns a JSON-ready value. The dispatcher runs every
handler under the chain lock, so handlers see one consistent chain state, except those marked
`lock_free` (eth_call, eth_blockNumber), which lock only what they need: a call on a mined block
runs on that block's state while transactions are applied and mined.
"""

from __future__ import annotations

from typing import Any

from eth_utils import keccak

from flchain import __version__, safe_json
from flchain.devnet.chain import DevChain
from flchain.devnet.encoding import (
    BlockTag,
    parse_address,
    parse_block_tag,
    parse_bool,
    parse_data,
    parse_hash,
    parse_quantity,
    to_data,
    to_quantity,
    unpack_params,
)
from flchain.devnet.errors import InvalidParamsError
from flchain.devnet.fees import SUGGESTED_PRIORITY_FEE, fee_history, suggested_gas_price
from flchain.devnet.filters import FilterRegistry, get_logs, parse_log_query
from flchain.devnet.jsonrpc import Handler, lock_free
from flchain.devnet.policy import RpcPolicy
from flchain.devnet.serializers import block_to_json, receipt_to_json, transaction_to_json
from flchain.devnet.signer import send_transaction, sign_message, sign_transaction, sign_typed_data
from flchain.devnet.txargs import parse_tx_args

CLIENT_VERSION = f"flchain-devnet/v{__version__}/py-evm"


class EthRpc:
    """Handlers bound to one chain, its filter registry and the server's policy."""

    def __init__(self, chain: DevChain, policy: RpcPolicy | None = None) -> None:
        self.chain = chain
        self.policy = policy or RpcPolicy()
        self.filters = FilterRegistry(chain)

    def handlers(self) -> dict[str, Handler]:
        """The method table, aliases included."""
        table: dict[str, Handler] = {
            "web3_clientVersion": self.web3_client_version,
            "web3_sha3": self.web3_sha3,
            "net_version": self.net_version,
            "net_listening": lambda params: _no_params(params, "net_listening", True),
            "net_peerCount": lambda params: _no_params(params, "net_peerCount", "0x0"),
            "eth_chainId": self.eth_chain_id,
            "eth_blockNumber": self.eth_block_number,
            "eth_syncing": lambda params: _no_params(params, "eth_syncing", False),
            "eth_mining": lambda params: _no_params(params, "eth_mining", True),
            "eth_hashrate": lambda params: _no_params(params, "eth_hashrate", "0x0"),
            "eth_coinbase": lambda params: _no_params(params, "eth_coinbase", "0x" + "00" * 20),
            "eth_accounts": self.eth_accounts,
            "eth_requestAccounts": self.eth_accounts,
            "eth_getBalance": self.eth_get_balance,
            "eth_getTransactionCount": self.eth_get_transaction_count,
            "eth_getCode": self.eth_get_code,
            "eth_getStorageAt": self.eth_get_storage_at,
            "eth_call": self.eth_call,
            "eth_estimateGas": self.eth_estimate_gas,
            "eth_sendRawTransaction": self.eth_send_raw_transaction,
            "eth_sendTransaction": self.eth_send_transaction,
            "eth_signTransaction": self.eth_sign_transaction,
            "eth_sign": self.eth_sign,
            "personal_sign": self.personal_sign,
            "eth_signTypedData_v4": self.eth_sign_typed_data,
            "eth_getTransactionByHash": self.eth_get_transaction_by_hash,
            "eth_getTransactionReceipt": self.eth_get_transaction_receipt,
            "eth_getBlockByNumber": self.eth_get_block_by_number,
            "eth_getBlockByHash": self.eth_get_block_by_hash,
            "eth_getBlockReceipts": self.eth_get_block_receipts,
            "eth_getBlockTransactionCountByNumber": self.eth_block_tx_count_by_number,
            "eth_getBlockTransactionCountByHash": self.eth_block_tx_count_by_hash,
            "eth_getTransactionByBlockNumberAndIndex": self.eth_tx_by_number_and_index,
            "eth_getTransactionByBlockHashAndIndex": self.eth_tx_by_hash_and_index,
            "eth_getUncleCountByBlockNumber": self.eth_uncle_count_by_number,
            "eth_getUncleCountByBlockHash": self.eth_uncle_count_by_hash,
            "eth_getLogs": self.eth_get_logs,
            "eth_gasPrice": self.eth_gas_price,
            "eth_maxPriorityFeePerGas": self.eth_max_priority_fee,
            "eth_feeHistory": self.eth_fee_history,
            "eth_newFilter": self.eth_new_filter,
            "eth_newBlockFilter": self.eth_new_block_filter,
            "eth_getFilterChanges": self.eth_get_filter_changes,
            "eth_getFilterLogs": self.eth_get_filter_logs,
            "eth_uninstallFilter": self.eth_uninstall_filter,
            "evm_mine": self.evm_mine,
            "evm_increaseTime": self.evm_increase_time,
            "evm_setNextBlockTimestamp": self.evm_set_next_block_timestamp,
            "evm_snapshot": self.evm_snapshot,
            "evm_revert": self.evm_revert,
            "evm_setAutomine": self.evm_set_automine,
            "anvil_mine": self.anvil_mine,
            "hardhat_mine": self.anvil_mine,
            "anvil_getAutomine": self.anvil_get_automine,
        }
        for alias in ("increaseTime", "setNextBlockTimestamp", "snapshot", "revert", "setAutomine"):
            table[f"anvil_{alias}"] = table[f"evm_{alias}"]
        return table

    # ------------------------------------------------------------------ node info

    def web3_client_version(self, params: list[Any]) -> str:
        return _no_params(params, "web3_clientVersion", CLIENT_VERSION)

    def web3_sha3(self, params: list[Any]) -> str:
        (data,) = unpack_params(params, "web3_sha3", 1)
        return to_data(keccak(parse_data(data, "data")))

    def net_version(self, params: list[Any]) -> str:
        return _no_params(params, "net_version", str(self.chain.chain_id))

    def eth_chain_id(self, params: list[Any]) -> str:
        return _no_params(params, "eth_chainId", to_quantity(self.chain.chain_id))

    @lock_free
    def eth_block_number(self, params: list[Any]) -> str:
        _no_params(params, "eth_blockNumber", None)
        return to_quantity(self.chain.block_number)

    def eth_accounts(self, params: list[Any]) -> list[str]:
        _no_params(params, "eth_accounts", None)
        return [account.address for account in self.chain.accounts]

    # ------------------------------------------------------------------ state

    def eth_get_balance(self, params: list[Any]) -> str:
        address, block = unpack_params(params, "eth_getBalance", 1, 1)
        return to_quantity(
            self.chain.get_balance(parse_address(address, "address"), parse_block_tag(block))
        )

    def eth_get_transaction_count(self, params: list[Any]) -> str:
        address, block = unpack_params(params, "eth_getTransactionCount", 1, 1)
        return to_quantity(
            self.chain.get_nonce(parse_address(address, "address"), parse_block_tag(block))
        )

    def eth_get_code(self, params: list[Any]) -> str:
        address, block = unpack_params(params, "eth_getCode", 1, 1)
        return to_data(
            self.chain.get_code(parse_address(address, "address"), parse_block_tag(block))
        )

    def eth_get_storage_at(self, params: list[Any]) -> str:
        address, slot, block = unpack_params(params, "eth_getStorageAt", 2, 1)
        value = self.chain.get_storage(
            parse_address(address, "address"), parse_quantity(slot, "slot"), parse_block_tag(block)
        )
        return to_data(value.to_bytes(32, "big"))

    # ------------------------------------------------------------------ execution

    @lock_free
    def eth_call(self, params: list[Any]) -> str:
        tx, block, state_overrides, block_overrides = unpack_params(params, "eth_call", 1, 3)
        if state_overrides is not None or block_overrides is not None:
            raise InvalidParamsError("eth_call: state and block overrides are not supported")
        return to_data(self.chain.call(parse_tx_args(tx), parse_block_tag(block)))

    def eth_estimate_gas(self, params: list[Any]) -> str:
        tx, block, state_overrides = unpack_params(params, "eth_estimateGas", 1, 2)
        if state_overrides is not None:
            raise InvalidParamsError("eth_estimateGas: state overrides are not supported")
        tag = parse_block_tag(block, default="pending")
        return to_quantity(self.chain.estimate_gas(parse_tx_args(tx), tag))

    def eth_send_raw_transaction(self, params: list[Any]) -> str:
        (raw,) = unpack_params(params, "eth_sendRawTransaction", 1)
        tx_hash = self.chain.send_raw_transaction(
            parse_data(raw, "transaction"), allow_unprotected=self.policy.allow_unprotected_txs
        )
        return to_data(tx_hash)

    def eth_send_transaction(self, params: list[Any]) -> str:
        (tx,) = unpack_params(params, "eth_sendTransaction", 1)
        return to_data(send_transaction(self.chain, parse_tx_args(tx)))

    def eth_sign_transaction(self, params: list[Any]) -> str:
        (tx,) = unpack_params(params, "eth_signTransaction", 1)
        return to_data(sign_transaction(self.chain, parse_tx_args(tx)))

    def eth_sign(self, params: list[Any]) -> str:
        address, message = unpack_params(params, "eth_sign", 2)
        return sign_message(
            self.chain, parse_address(address, "address"), parse_data(message, "message")
        )

    def personal_sign(self, params: list[Any]) -> str:
        message, address, _password = unpack_params(params, "personal_sign", 2, 1)
        return sign_message(
            self.chain, parse_address(address, "address"), parse_data(message, "message")
        )

    def eth_sign_typed_data(self, params: list[Any]) -> str:
        address, typed = unpack_params(params, "eth_signTypedData_v4", 2)
        if isinstance(typed, str):
            try:
                typed = safe_json.loads(
                    typed, max_bytes=self.policy.max_body, max_depth=self.policy.max_depth
                )
            except ValueError as exc:
                raise InvalidParamsError(f"typed data is not valid JSON: {exc}") from exc
        return sign_typed_data(self.chain, parse_address(address, "address"), typed)

    # ------------------------------------------------------------------ transactions and blocks

    def eth_get_transaction_by_hash(self, params: list[Any]) -> dict[str, Any] | None:
        (tx_hash,) = unpack_params(params, "eth_getTransactionByHash", 1)
        location = self.chain.find_transaction(parse_hash(tx_hash, "hash"))
        if location is None:
            return None
        return transaction_to_json(
            location.transaction,
            block=location.block,
            index=location.index,
            pending=location.pending,
        )

    def eth_get_transaction_receipt(self, params: list[Any]) -> dict[str, Any] | None:
        (tx_hash,) = unpack_params(params, "eth_getTransactionReceipt", 1)
        location = self.chain.find_transaction(parse_hash(tx_hash, "hash"))
        if location is None or location.pending:
            return None
        receipts = self.chain.get_receipts(location.block)
        return receipt_to_json(location.block, receipts, location.index)

    def eth_get_block_by_number(self, params: list[Any]) -> dict[str, Any] | None:
        block, full = unpack_params(params, "eth_getBlockByNumber", 1, 1)
        return self._block_json(parse_block_tag(block), _full_flag(full))

    def eth_get_block_by_hash(self, params: list[Any]) -> dict[str, Any] | None:
        block_hash, full = unpack_params(params, "eth_getBlockByHash", 1, 1)
        block = self.chain.get_block_by_hash(parse_hash(block_hash, "hash"))
        return None if block is None else block_to_json(block, full_transactions=_full_flag(full))

    def _block_json(self, tag: BlockTag, full: bool) -> dict[str, Any] | None:
        block = self.chain.get_block(tag)
        if block is None:
            return None
        return block_to_json(block, full_transactions=full, pending=self.chain.is_pending(block))

    def eth_get_block_receipts(self, params: list[Any]) -> list[dict[str, Any]] | None:
        (block_param,) = unpack_params(params, "eth_getBlockReceipts", 1)
        if isinstance(block_param, str) and len(block_param) == 66:
            block = self.chain.get_block_by_hash(parse_hash(block_param, "block"))
        else:
            block = self.chain.get_block(parse_block_tag(block_param))
        if block is None or self.chain.is_pending(block):
            return None
        receipts = self.chain.get_receipts(block)
        return [receipt_to_json(block, receipts, i) for i in range(len(block.transactions))]

    def eth_block_tx_count_by_number(self, params: list[Any]) -> str | None:
        (block_param,) = unpack_params(params, "eth_getBlockTransactionCountByNumber", 1)
        block = self.chain.get_block(parse_block_tag(block_param))
        return None if block is None else to_quantity(len(block.transactions))

    def eth_block_tx_count_by_hash(self, params: list[Any]) -> str | None:
        (block_hash,) = unpack_params(params, "eth_getBlockTransactionCountByHash", 1)
        block = self.chain.get_block_by_hash(parse_hash(block_hash, "hash"))
        return None if block is None else to_quantity(len(block.transactions))

    def eth_tx_by_number_and_index(self, params: list[Any]) -> dict[str, Any] | None:
        block_param, index = unpack_params(params, "eth_getTransactionByBlockNumberAndIndex", 2)
        block = self.chain.get_block(parse_block_tag(block_param))
        return self._tx_at(block, parse_quantity(index, "index"))

    def eth_tx_by_hash_and_index(self, params: list[Any]) -> dict[str, Any] | None:
        block_hash, index = unpack_params(params, "eth_getTransactionByBlockHashAndIndex", 2)
        block = self.chain.get_block_by_hash(parse_hash(block_hash, "hash"))
        return self._tx_at(block, parse_quantity(index, "index"))

    def _tx_at(self, block: Any, index: int) -> dict[str, Any] | None:
        if block is None or index >= len(block.transactions):
            return None
        return transaction_to_json(
            block.transactions[index],
            block=block,
            index=index,
            pending=self.chain.is_pending(block),
        )

    def eth_uncle_count_by_number(self, params: list[Any]) -> str | None:
        (block_param,) = unpack_params(params, "eth_getUncleCountByBlockNumber", 1)
        return None if self.chain.get_block(parse_block_tag(block_param)) is None else "0x0"

    def eth_uncle_count_by_hash(self, params: list[Any]) -> str | None:
        (block_hash,) = unpack_params(params, "eth_getUncleCountByBlockHash", 1)
        block = self.chain.get_block_by_hash(parse_hash(block_hash, "hash"))
        return None if block is None else "0x0"

    # ------------------------------------------------------------------ logs and filters

    def eth_get_logs(self, params: list[Any]) -> list[dict[str, Any]]:
        (query,) = unpack_params(params, "eth_getLogs", 1)
        return get_logs(self.chain, parse_log_query(query))

    def eth_new_filter(self, params: list[Any]) -> str:
        (query,) = unpack_params(params, "eth_newFilter", 1)
        return self.filters.new_log_filter(parse_log_query(query))

    def eth_new_block_filter(self, params: list[Any]) -> str:
        _no_params(params, "eth_newBlockFilter", None)
        return self.filters.new_block_filter()

    def eth_get_filter_changes(self, params: list[Any]) -> list[Any]:
        (filter_id,) = unpack_params(params, "eth_getFilterChanges", 1)
        return self.filters.changes(_filter_id(filter_id))

    def eth_get_filter_logs(self, params: list[Any]) -> list[dict[str, Any]]:
        (filter_id,) = unpack_params(params, "eth_getFilterLogs", 1)
        return self.filters.logs(_filter_id(filter_id))

    def eth_uninstall_filter(self, params: list[Any]) -> bool:
        (filter_id,) = unpack_params(params, "eth_uninstallFilter", 1)
        return self.filters.uninstall(_filter_id(filter_id))

    # ------------------------------------------------------------------ fees

    def eth_gas_price(self, params: list[Any]) -> str:
        _no_params(params, "eth_gasPrice", None)
        return to_quantity(suggested_gas_price(self.chain))

    def eth_max_priority_fee(self, params: list[Any]) -> str:
        return _no_params(params, "eth_maxPriorityFeePerGas", to_quantity(SUGGESTED_PRIORITY_FEE))

    def eth_fee_history(self, params: list[Any]) -> dict[str, Any]:
        count, newest, percentiles = unpack_params(params, "eth_feeHistory", 2, 1)
        if percentiles is not None and not isinstance(percentiles, list):
            raise InvalidParamsError("rewardPercentiles: expected a list of numbers")
        return fee_history(
            self.chain,
            parse_quantity(count, "blockCount", maximum=2**32),
            parse_block_tag(newest, "newestBlock"),
            percentiles,
        )

    # ------------------------------------------------------------------ dev controls

    def evm_mine(self, params: list[Any]) -> str:
        (options,) = unpack_params(params, "evm_mine", 0, 1)
        timestamp, blocks = None, 1
        if isinstance(options, dict):
            unknown = set(options) - {"timestamp", "blocks"}
            if unknown:
                raise InvalidParamsError(f"evm_mine: unknown options {sorted(unknown)}")
            if options.get("timestamp") is not None:
                timestamp = parse_quantity(options["timestamp"], "timestamp", maximum=2**63 - 1)
            if options.get("blocks") is not None:
                blocks = parse_quantity(options["blocks"], "blocks", maximum=2**32)
        elif options is not None:
            timestamp = parse_quantity(options, "timestamp", maximum=2**63 - 1)
        self.chain.mine(blocks, timestamp=timestamp)
        return "0x0"

    def anvil_mine(self, params: list[Any]) -> None:
        blocks, interval = unpack_params(params, "anvil_mine", 0, 2)
        count = 1 if blocks is None else parse_quantity(blocks, "blocks", maximum=2**32)
        spacing = None if interval is None else parse_quantity(interval, "interval", maximum=2**32)
        self.chain.mine(count, interval=spacing)

    def evm_increase_time(self, params: list[Any]) -> str:
        (seconds,) = unpack_params(params, "evm_increaseTime", 1)
        return to_quantity(
            self.chain.increase_time(parse_quantity(seconds, "seconds", maximum=2**40))
        )

    def evm_set_next_block_timestamp(self, params: list[Any]) -> None:
        (timestamp,) = unpack_params(params, "evm_setNextBlockTimestamp", 1)
        self.chain.set_next_block_timestamp(
            parse_quantity(timestamp, "timestamp", maximum=2**63 - 1)
        )

    def evm_snapshot(self, params: list[Any]) -> str:
        _no_params(params, "evm_snapshot", None)
        return to_quantity(self.chain.snapshot())

    def evm_revert(self, params: list[Any]) -> bool:
        (snapshot_id,) = unpack_params(params, "evm_revert", 1)
        return self.chain.revert(parse_quantity(snapshot_id, "snapshot id", maximum=2**63 - 1))

    def evm_set_automine(self, params: list[Any]) -> None:
        (enabled,) = unpack_params(params, "evm_setAutomine", 1)
        self.chain.set_automine(parse_bool(enabled, "enabled"))

    def anvil_get_automine(self, params: list[Any]) -> bool:
        _no_params(params, "anvil_getAutomine", None)
        return self.chain.automine


def _no_params(params: list[Any], method: str, result: Any) -> Any:
    unpack_params(params, method, 0)
    return result


def _full_flag(value: Any) -> bool:
    return False if value is None else parse_bool(value, "fullTransactions")


def _filter_id(value: Any) -> str:
    return hex(parse_quantity(value, "filter id", maximum=2**64))
