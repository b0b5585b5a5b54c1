"""Sign, send and confirm transactions for one local account, the way a node must.

The node's key never leaves the process: transactions are signed with eth-account and
sent raw (`eth_sendRawTransaction`), so any JSON-RPC endpoint works, including ones that
manage no accounts. Transient RPC failures are retried, nonces come from a thread-safe
manager, and a revert (at estimation or in a mined receipt) becomes ContractRevert with
the contract's reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from web3 import Web3
from web3.exceptions import TimeExhausted, TransactionNotFound
from web3.types import TxReceipt

from flchain.contracts.errors import (
    ContractRevert,
    FLChainError,
    InvalidArgumentError,
    RPCError,
    TransactionTimeoutError,
    revert_reason,
)
from flchain.contracts.nonce import NonceManager
from flchain.contracts.rpc import RetryPolicy, call_with_retries, is_nonce_error

if TYPE_CHECKING:  # eth_account loads with the first key, not with every reader
    from eth_account.signers.local import LocalAccount

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_PRIORITY_FEE = 10**9  # 1 gwei, when the node cannot suggest one
_NONCE_ATTEMPTS = 3


class _NonceRejectedError(Exception):
    """The node refused the nonce; the reservation is dropped and the send retried."""


class TransactionSender:
    """Sends contract transactions from `account` through `w3` (see module docstring).

    gas_multiplier pads the node's estimate: the state may change between estimation and
    inclusion. Callers pass a gas_floor for calls whose cost depends on that state.
    """

    def __init__(
        self,
        w3: Web3,
        account: LocalAccount,
        *,
        retry: RetryPolicy | None = None,
        nonces: NonceManager | None = None,
        receipt_timeout: float = 120.0,
        poll_interval: float = 0.1,
        gas_multiplier: float = 1.25,
        priority_fee: int | None = None,
    ) -> None:
        if gas_multiplier < 1.0:
            raise InvalidArgumentError(f"gas_multiplier must be >= 1, got {gas_multiplier}")
        if receipt_timeout <= 0 or poll_interval <= 0:
            raise InvalidArgumentError("receipt_timeout and poll_interval must be positive")
        self.w3 = w3
        self.account = account
        self.address: str = account.address
        self.retry = retry or RetryPolicy()
        self.nonces = nonces or NonceManager(self._pending_count)
        self.receipt_timeout = receipt_timeout
        self.poll_interval = poll_interval
        self.gas_multiplier = gas_multiplier
        self.priority_fee = priority_fee
        self._batches = True  # until the endpoint refuses a batch request
        self._chain_id: int | None = None

    # ------------------------------------------------------------------ plumbing

    def rpc(self, fn: Callable[[], T], what: str) -> T:
        """Run a read-only RPC with retries; reverts become ContractRevert, the rest RPCError."""
        try:
            return call_with_retries(fn, self.retry, what=what)
        except FLChainError:
            raise
        except Exception as exc:
            reason = revert_reason(exc)
            if reason is not None:
                raise ContractRevert(reason) from exc
            raise RPCError(f"{what} failed: {exc}") from exc

    def _pending_count(self) -> int:
        return self.rpc(
            lambda: self.w3.eth.get_transaction_count(self.address, "pending"), "get nonce"
        )

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = int(self.rpc(lambda: self.w3.eth.chain_id, "eth_chainId"))
        return self._chain_id

    def _prepare(
        self, call: dict[str, Any], what: str, *, estimate: bool = True
    ) -> tuple[int, Any, dict[str, int]]:
        """The gas estimate (0 without `estimate`), the latest block and the fees, in one
        JSON-RPC batch where the endpoint takes batches (anvil, geth and the devnet all do):
        one round trip instead of three for every transaction. An endpoint that refuses the
        batch gets the calls one by one; a revert is a revert either way."""
        if self._batches:
            try:
                return call_with_retries(
                    lambda: self._prepare_batch(call, estimate),
                    self.retry,
                    what=f"{what}: estimate gas" if estimate else f"{what}: fees",
                )
            except FLChainError:
                raise  # the endpoint is down: not the batch's fault
            except Exception as exc:
                reason = revert_reason(exc)
                if reason is not None:
                    raise ContractRevert(reason) from exc
                log.info("batch request refused (%s); sending calls one by one", exc)
                self._batches = False
        gas = 0
        if estimate:
            gas = self.rpc(lambda: self.w3.eth.estimate_gas(call), f"{what}: estimate gas")
        block = self.rpc(lambda: self.w3.eth.get_block("latest"), "get latest block")
        return gas, block, self._fees(block)

    def _prepare_batch(
        self, call: dict[str, Any], estimate: bool
    ) -> tuple[int, Any, dict[str, int]]:
        with self.w3.batch_requests() as batch:
            if estimate:
                batch.add(self.w3.eth.estimate_gas(call))  # type: ignore[arg-type]
            batch.add(self.w3.eth.get_block("latest"))  # type: ignore[arg-type]
            if self.priority_fee is None:
                batch.add(self.w3.eth.max_priority_fee)  # type: ignore[arg-type]
            answers = batch.execute()
        gas = int(answers.pop(0)) if estimate else 0
        tip = self.priority_fee if self.priority_fee is not None else int(answers[1])
        return gas, answers[0], self._fees(answers[0], tip)

    def _fees(self, block: Any, tip: int | None = None) -> dict[str, int]:
        base_fee = block.get("baseFeePerGas")
        if base_fee is None:  # a chain before London: a legacy gas price
            return {"gasPrice": int(self.rpc(lambda: self.w3.eth.gas_price, "eth_gasPrice"))}
        tip = self.priority_fee if tip is None else tip
        if tip is None:
            try:
                tip = int(self.rpc(lambda: self.w3.eth.max_priority_fee, "max priority fee"))
            except RPCError:
                tip = DEFAULT_PRIORITY_FEE
        return {"maxFeePerGas": 2 * int(base_fee) + tip, "maxPriorityFeePerGas": tip}

    # ------------------------------------------------------------------ sending

    def send(
        self,
        to: str | None,
        data: str,
        *,
        value: int = 0,
        gas_floor: int = 0,
        gas_limit: int | None = None,
        what: str = "tx",
    ) -> TxReceipt:
        """Estimate, sign, send and wait for one transaction; returns its (successful) receipt.

        `to=None` deploys a contract. A `gas_limit` (a known bound on the call's cost) skips
        the estimate: the chain does not execute the call an extra time (a search of several
        runs on some servers), and a call that would revert is sent and mined as failed
        rather than held back. Raises ContractRevert when estimation reverts or the mined
        transaction failed, TransactionTimeoutError when no receipt came in time.
        """
        call: dict[str, Any] = {"from": self.address, "data": data, "value": value}
        if to is not None:
            call["to"] = to
        if gas_limit is not None and gas_limit <= 0:
            raise InvalidArgumentError(f"gas_limit must be positive, got {gas_limit}")
        estimate, block, fees = self._prepare(call, what, estimate=gas_limit is None)
        gas = gas_limit or max(int(estimate * self.gas_multiplier), gas_floor)
        gas = min(gas, int(block["gasLimit"]))
        unsigned = {k: v for k, v in call.items() if k != "from"}
        unsigned.update(fees, gas=gas, chainId=self.chain_id)
        tx_hash = self._sign_and_send(unsigned, what)
        receipt = self._wait(tx_hash, what)
        if receipt["status"] != 1:
            raise ContractRevert(self._failure_reason(call, receipt, gas), tx_hash=tx_hash)
        return receipt

    def _sign_and_send(self, unsigned: dict[str, Any], what: str) -> str:
        for _ in range(_NONCE_ATTEMPTS):
            try:
                with self.nonces.reserve() as nonce:
                    signed = self.account.sign_transaction({**unsigned, "nonce": nonce})
                    return self._send_raw(signed.raw_transaction, signed.hash, what)
            except _NonceRejectedError:
                continue
        raise RPCError(f"{what}: the node rejected the nonce {_NONCE_ATTEMPTS} times")

    def _send_raw(self, raw: bytes, tx_hash: bytes, what: str) -> str:
        hex_hash = "0x" + bytes(tx_hash).hex()
        try:
            call_with_retries(
                lambda: self.w3.eth.send_raw_transaction(raw), self.retry, what=f"{what}: send"
            )
        except FLChainError:
            raise
        except Exception as exc:
            if is_nonce_error(exc):
                # A retried send may have arrived the first time: then it is ours, not a clash.
                if self._known(hex_hash):
                    return hex_hash
                raise _NonceRejectedError(str(exc)) from exc
            reason = revert_reason(exc)
            if reason is not None:
                raise ContractRevert(reason) from exc
            raise RPCError(f"{what}: send failed: {exc}") from exc
        return hex_hash

    def _known(self, tx_hash: str) -> bool:
        try:
            self.rpc(lambda: self.w3.eth.get_transaction(tx_hash), "get transaction")
        except RPCError:  # includes web3's TransactionNotFound, wrapped by rpc()
            return False
        return True

    def _wait(self, tx_hash: str, what: str) -> TxReceipt:
        try:
            return call_with_retries(
                lambda: self._poll_receipt(tx_hash), self.retry, what=f"{what}: receipt"
            )
        except TimeExhausted as exc:
            raise TransactionTimeoutError(
                f"{what}: {tx_hash} not mined within {self.receipt_timeout} s"
            ) from exc
        except FLChainError:
            raise
        except Exception as exc:
            raise RPCError(f"{what}: waiting for {tx_hash} failed: {exc}") from exc

    def _poll_receipt(self, tx_hash: str) -> TxReceipt:
        """The receipt, polled from 2 ms up to `poll_interval`: an automining chain (anvil,
        the py-evm devnet) has it within milliseconds, a public one within a block time, so
        a fixed 100 ms first wait would add a tenth of a second to every local transaction."""
        deadline = time.monotonic() + self.receipt_timeout
        delay = 0.002
        while True:
            try:
                return self.w3.eth.get_transaction_receipt(tx_hash)
            except TransactionNotFound:
                pass
            if time.monotonic() >= deadline:
                raise TimeExhausted(f"{tx_hash} not mined within {self.receipt_timeout} s")
            time.sleep(delay)
            delay = min(delay * 2, self.poll_interval)

    def _failure_reason(self, call: dict[str, Any], receipt: TxReceipt, gas: int) -> str:
        """Why a mined transaction failed: replay it on the state before its block."""
        if int(receipt["gasUsed"]) >= gas:
            return f"out of gas (limit {gas})"
        block = int(receipt["blockNumber"]) - 1
        try:
            self.rpc(lambda: self.w3.eth.call(call, block_identifier=block), "replay")
        except ContractRevert as exc:
            return exc.reason
        except RPCError as exc:
            return f"reason unavailable: replay failed ({exc})"
        # An inner call (FLChain runs FLChainSettlement by delegatecall) that ran out of gas
        # leaves its caller 1/64 of the gas, with which it reverts without data: the
        # receipt shows nearly all the gas used and an uncapped replay succeeds.
        if int(receipt["gasUsed"]) * 64 >= gas * 63:
            return f"out of gas (limit {gas}, in a delegated call)"
        return "reason unavailable: the replay did not revert"
