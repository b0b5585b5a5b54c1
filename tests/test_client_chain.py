"""The client's sending path against a real chain: retries after lost requests, nonce
resync, concurrent sends, mined reverts, out-of-gas and receipt timeouts."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from eth_tester import EthereumTester, PyEVMBackend
from web3 import HTTPProvider, Web3
from web3.providers.eth_tester import EthereumTesterProvider

from flchain.contracts import (
    ContractRevert,
    FLChainClient,
    NonceManager,
    RetryPolicy,
    RoundStatus,
    RPCError,
    TaskParams,
    TransactionTimeoutError,
)
from flchain.contracts.client import ROUND_CALL_GAS
from flchain.contracts.testing import LocalChain, open_chain

FAST_RETRY = RetryPolicy(attempts=4, base_delay=0.0, max_delay=0.0)


def digest(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


class FlakyProvider(EthereumTesterProvider):
    """eth-tester behind a network that drops requests on demand.

    fail_before[m]: requests of method m that fail before reaching the node;
    fail_after[m]: requests of method m that reach the node, whose answers are lost;
    fixed_gas: an eth_estimateGas answer that skips the node's pre-flight execution.

    Requests reach eth-tester one at a time, as a node's server takes them: eth-tester is
    not thread-safe, and under load two threads' requests interleaved inside it (an
    estimate filled in a nonce that another thread's send then used).
    """

    def __init__(self, tester: EthereumTester) -> None:
        super().__init__(tester)
        self._serial = threading.Lock()
        self.fail_before: dict[str, int] = {}
        self.fail_after: dict[str, int] = {}
        self.fixed_gas: int | None = None
        self.seen: dict[str, int] = {}

    def make_request(self, method: Any, params: Any) -> Any:
        self.seen[method] = self.seen.get(method, 0) + 1
        if self.fail_before.get(method, 0) > 0:
            self.fail_before[method] -= 1
            raise requests.exceptions.ConnectionError(f"{method}: connection reset")
        if method == "eth_estimateGas" and self.fixed_gas is not None:
            return {"jsonrpc": "2.0", "id": 1, "result": hex(self.fixed_gas)}
        with self._serial:
            response = super().make_request(method, params)
        if self.fail_after.get(method, 0) > 0:
            self.fail_after[method] -= 1
            raise requests.exceptions.ReadTimeout(f"{method}: answer lost")
        return response


@pytest.fixture
def flaky() -> Iterator[tuple[LocalChain, FlakyProvider, FLChainClient, FLChainClient]]:
    provider = FlakyProvider(EthereumTester(PyEVMBackend()))
    chain = LocalChain(Web3(provider), "eth-tester")
    owner_key, member_key = chain.new_accounts(2)
    owner = FLChainClient.deploy(chain.w3, owner_key, retry=FAST_RETRY)
    member = FLChainClient(chain.w3, owner.address, member_key, retry=FAST_RETRY)
    yield chain, provider, owner, member


def params(**overrides: Any) -> TaskParams:
    values: dict[str, Any] = {
        "config_digest": digest("config"),
        "initial_digest": digest("initial"),
        "min_members": 1,
        "max_members": 4,
        "submit_window": 600,
        "vote_window": 600,
    }
    values.update(overrides)
    return TaskParams(**values)


def test_dropped_requests_are_retried_and_the_transaction_lands_once(flaky: Any) -> None:
    chain, provider, owner, _ = flaky
    nonce_before = chain.w3.eth.get_transaction_count(owner.account)
    provider.seen.clear()
    provider.fail_before = {"eth_estimateGas": 2, "eth_getTransactionReceipt": 1}
    provider.fail_after = {"eth_sendRawTransaction": 1}  # it arrived; the answer did not
    task_id = owner.create_task(params())
    assert owner.get_task(task_id).config_digest == digest("config")
    assert chain.w3.eth.get_transaction_count(owner.account) == nonce_before + 1
    assert provider.seen["eth_sendRawTransaction"] == 2  # re-sent, recognised as ours


def test_a_node_that_stays_down_gives_rpc_error(flaky: Any) -> None:
    _, provider, owner, _ = flaky
    provider.fail_before = {"eth_call": 10}
    with pytest.raises(RPCError, match="after 4 attempts"):
        owner.task_count()


def test_a_transaction_that_reverts_when_mined_reports_the_reason(flaky: Any) -> None:
    chain, provider, owner, member = flaky
    task_id = owner.create_task(params())
    provider.fixed_gas = 200_000  # no pre-flight: the revert happens in the block
    with pytest.raises(ContractRevert) as info:
        member.close_task(task_id)
    assert info.value.reason == "not owner"
    assert info.value.tx_hash is not None
    receipt = chain.w3.eth.get_transaction_receipt(info.value.tx_hash)
    assert receipt["status"] == 0


def test_round_calls_skip_the_estimate_and_a_refused_one_still_says_why(flaky: Any) -> None:
    """Every member sends submit and vote every round: they go without eth_estimateGas (the
    chain would run each again, several times over in py-evm's search), under a gas limit
    that bounds them; a refused one is mined as failed and reads as the same revert."""
    chain, provider, owner, member = flaky
    task_id = owner.create_task(params(min_members=1, max_members=1))
    member.join(task_id, b"peer-zero", digest("x25519"))  # opens round 1
    info = member.get_round(task_id, 1)
    provider.seen.clear()
    args = (task_id, 1, digest("update"), 10, info.base_round, 0)
    submitted = member.submit(*args)
    assert submitted.gas_used <= ROUND_CALL_GAS
    member.vote(task_id, 1, digest("global"), 1)
    assert member.get_round(task_id, 1).status == RoundStatus.FINALIZED
    assert "eth_estimateGas" not in provider.seen
    with pytest.raises(ContractRevert) as refused:
        member.submit(task_id, 2, digest("update"), 10, 1, 0)  # that digest is taken
    assert refused.value.reason == "digest taken"
    assert chain.w3.eth.get_transaction_receipt(refused.value.tx_hash)["status"] == 0
    assert "eth_estimateGas" not in provider.seen


@pytest.mark.parametrize("entry", ["fund_task", "create_task"])
def test_out_of_gas_is_reported_as_such(flaky: Any, entry: str) -> None:
    """fund_task runs in FLChain itself; create_task runs FLChainSettlement's code by
    delegatecall, where the inner frame runs out and the outer one reverts with the
    sixty-fourth of the gas it kept: both must read as out of gas."""
    chain, provider, owner, _ = flaky
    task_id = owner.create_task(params())
    stingy = FLChainClient(
        chain.w3,
        owner.address,
        owner.sender.account,
        gas_multiplier=1.0,
        nonces=owner.sender.nonces,
    )
    provider.fixed_gas = 30_000
    with pytest.raises(ContractRevert, match="out of gas"):
        if entry == "fund_task":
            stingy.fund_task(task_id, 1)
        else:
            stingy.create_task(params())
    assert owner.task_count() == task_id  # nothing happened
    assert owner.get_task(task_id).reward_pool == 0


def test_a_transaction_never_mined_times_out(flaky: Any) -> None:
    chain, provider, owner, _ = flaky
    impatient = FLChainClient(
        chain.w3,
        owner.address,
        owner.sender.account,
        receipt_timeout=0.3,
        nonces=owner.sender.nonces,
    )
    provider.ethereum_tester.disable_auto_mine_transactions()
    with pytest.raises(TransactionTimeoutError, match="not mined"):
        impatient.create_task(params())
    provider.ethereum_tester.enable_auto_mine_transactions()
    assert owner.task_count() == 1  # mined once the chain moved on


def test_concurrent_sends_from_one_client_all_land(flaky: Any) -> None:
    chain, _, owner, _ = flaky
    task_id = owner.create_task(params(allowlist=True))
    start = chain.w3.eth.get_transaction_count(owner.account)
    accounts = [Web3.to_checksum_address(f"0x{i:040x}") for i in range(1, 9)]
    errors: list[BaseException] = []

    def allow(address: str) -> None:
        try:
            owner.set_allowed(task_id, address)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=allow, args=(a,)) for a in accounts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert chain.w3.eth.get_transaction_count(owner.account) == start + len(accounts)
    assert all(owner.is_allowed(task_id, a) for a in accounts)


@pytest.mark.parametrize("kind", ["eth-tester", "anvil"])
def test_a_stale_nonce_is_resynced_from_the_node(kind: str, request: pytest.FixtureRequest) -> None:
    anvil = request.getfixturevalue("anvil_bin") if kind == "anvil" else None
    with open_chain(kind, anvil) as chain:
        (key,) = chain.new_accounts(1)
        first = FLChainClient.deploy(chain.w3, key)
        # A second process with the same key: its own counter, so the first's goes stale.
        second = FLChainClient(
            chain.w3,
            first.address,
            key,
            nonces=NonceManager(lambda: chain.w3.eth.get_transaction_count(key.address, "pending")),
        )
        a = first.create_task(params())
        b = second.create_task(params())
        c = first.create_task(params())  # its local nonce was taken: rejected, resynced
        assert (a, b, c) == (1, 2, 3)
        assert chain.w3.eth.get_transaction_count(key.address) == 4


class _CountingProvider(HTTPProvider):
    """Counts single and batch requests; `refuse_batches` answers batches as an endpoint
    without batch support does."""

    def __init__(self, url: str, *, refuse_batches: bool = False) -> None:
        super().__init__(url)
        self.refuse_batches = refuse_batches
        self.single: list[str] = []
        self.batches: list[list[str]] = []

    def make_request(self, method: Any, params: Any) -> Any:
        self.single.append(method)
        return super().make_request(method, params)

    def make_batch_request(self, requests_: Any) -> Any:
        self.batches.append([method for method, _ in requests_])
        if self.refuse_batches:
            return {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "no batch"}}
        return super().make_batch_request(requests_)


@pytest.mark.parametrize("refuse_batches", [False, True])
def test_a_transaction_is_prepared_in_one_batch_and_without_batches_still_goes_through(
    anvil_bin: str, refuse_batches: bool
) -> None:
    with open_chain("anvil", anvil_bin) as chain:
        (key,) = chain.new_accounts(1)
        owner = FLChainClient.deploy(chain.w3, key)
        url = chain.w3.provider.endpoint_uri  # type: ignore[attr-defined]
        counting = _CountingProvider(url, refuse_batches=refuse_batches)
        w3 = Web3(counting)
        client = FLChainClient(w3, owner.address, key, nonces=owner.sender.nonces)
        task_id = client.create_task(params())
        with pytest.raises(ContractRevert) as refused:
            FLChainClient(w3, owner.address, chain.new_accounts(1)[0]).close_task(task_id)
        assert refused.value.reason == "not owner"  # read from the batch's answer
        assert client.get_task(task_id).config_digest == digest("config")
        prepared = ["eth_estimateGas", "eth_getBlockByNumber", "eth_maxPriorityFeePerGas"]
        assert counting.batches[0] == prepared
        if refuse_batches:  # each client asks once, then goes one by one for good
            assert len(counting.batches) == 2
            assert {"eth_estimateGas", "eth_getBlockByNumber"} <= set(counting.single)
        else:
            assert counting.batches == [prepared, prepared]
            assert "eth_estimateGas" not in counting.single
