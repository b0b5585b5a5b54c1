"""End-to-end tests of the devnet JSON-RPC server with real clients: web3, cast and raw HTTP."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import vyper
from web3 import Web3
from web3.exceptions import ContractLogicError, Web3RPCError

from flchain.devnet.accounts import DEFAULT_MNEMONIC, derive_accounts, mnemonic_from_seed
from flchain.devnet.chain import DevChain
from flchain.devnet.genesis import GenesisConfig
from flchain.devnet.rpc_server import DevnetServer

REPO = Path(__file__).resolve().parents[1]
ANVIL_KEY0 = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
ANVIL_ADDR0 = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
ETH = 10**18
QUANTITY = re.compile(r"^0x(0|[1-9a-f][0-9a-f]*)$")

STORE_SOURCE = """
# pragma version ~=0.4.3
value: public(uint256)
owner: public(address)

event Stored:
    who: indexed(address)
    new_value: uint256

@deploy
def __init__():
    self.owner = msg.sender

@external
def store(new_value: uint256):
    assert new_value != 13, "unlucky number"
    self.value = new_value
    log Stored(who=msg.sender, new_value=new_value)
"""


@pytest.fixture(scope="module")
def store_contract() -> dict[str, Any]:
    return vyper.compile_code(STORE_SOURCE, output_formats=["abi", "bytecode", "bytecode_runtime"])


@pytest.fixture(scope="module")
def server() -> Iterator[DevnetServer]:
    chain = DevChain(GenesisConfig(accounts=5))
    with DevnetServer(chain, port=0) as running:
        yield running
    chain.close()


@pytest.fixture(scope="module")
def w3(server: DevnetServer) -> Web3:
    web3 = Web3(Web3.HTTPProvider(server.rpc_url, request_kwargs={"timeout": 30}))
    web3.eth.default_account = web3.eth.accounts[0]
    return web3


def rpc(url: str, body: Any, *, raw: bytes | None = None) -> tuple[int, Any]:
    """POST a JSON-RPC body (or raw bytes); return the HTTP status and decoded JSON (or None)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        payload = raw if raw is not None else json.dumps(body).encode()
        connection.request("POST", "/", payload, {"Content-Type": "application/json"})
        response = connection.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else None
    finally:
        connection.close()


def call(url: str, method: str, params: list[Any] | None = None) -> Any:
    status, answer = rpc(url, {"jsonrpc": "2.0", "id": 7, "method": method, "params": params or []})
    assert status == 200
    return answer


# --------------------------------------------------------------------------- web3


def test_web3_sees_chain_id_and_funded_anvil_accounts(w3: Web3) -> None:
    assert w3.eth.chain_id == 31337
    assert w3.eth.accounts[0] == ANVIL_ADDR0
    assert len(w3.eth.accounts) == 5
    assert w3.eth.get_balance(w3.eth.accounts[4]) == 10_000 * ETH
    assert w3.net.version == "31337"


def test_web3_value_transfer_moves_exactly_value_plus_fee(w3: Web3) -> None:
    sender, receiver = w3.eth.accounts[1], w3.eth.accounts[2]
    before_sender = w3.eth.get_balance(sender)
    before_receiver = w3.eth.get_balance(receiver)
    height = w3.eth.block_number
    tx_hash = w3.eth.send_transaction({"from": sender, "to": receiver, "value": 3 * ETH})
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=10)
    assert receipt.status == 1
    assert receipt.blockNumber == height + 1  # automine: one block per transaction
    assert receipt.gasUsed == 21000
    fee = receipt.gasUsed * receipt.effectiveGasPrice
    assert w3.eth.get_balance(receiver) == before_receiver + 3 * ETH
    assert w3.eth.get_balance(sender) == before_sender - 3 * ETH - fee
    block = w3.eth.get_block(receipt.blockNumber)
    assert receipt.effectiveGasPrice == block.baseFeePerGas + 10**9  # base fee + 1 gwei tip


def test_web3_signed_raw_transaction_and_nonces(w3: Web3) -> None:
    account = w3.eth.account.from_key(derive_accounts(DEFAULT_MNEMONIC, 4)[3].private_key)
    nonce = w3.eth.get_transaction_count(account.address)
    tx = {
        "to": "0x000000000000000000000000000000000000dEaD",
        "value": 12345,
        "gas": 21000,
        "maxFeePerGas": 10**11,
        "maxPriorityFeePerGas": 10**9,
        "nonce": nonce,
        "chainId": 31337,
    }
    signed = account.sign_transaction(tx)
    tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    assert tx_hash == signed.hash
    assert w3.eth.get_transaction_receipt(tx_hash).status == 1
    assert w3.eth.get_transaction_count(account.address) == nonce + 1
    assert w3.eth.get_transaction_count(account.address, "pending") == nonce + 1
    fetched = w3.eth.get_transaction(tx_hash)
    assert fetched["from"] == account.address
    assert fetched["value"] == 12345 and fetched["nonce"] == nonce and fetched["type"] == 2
    with pytest.raises(Web3RPCError, match="nonce"):
        w3.eth.send_raw_transaction(signed.raw_transaction)  # replay: nonce already used


def test_web3_deploy_call_estimate_logs_and_revert_reason(
    w3: Web3, store_contract: dict[str, Any]
) -> None:
    factory = w3.eth.contract(abi=store_contract["abi"], bytecode=store_contract["bytecode"])
    deploy = w3.eth.wait_for_transaction_receipt(factory.constructor().transact(), timeout=10)
    assert deploy.status == 1 and deploy.contractAddress is not None
    assert deploy.to is None
    contract = w3.eth.contract(address=deploy.contractAddress, abi=store_contract["abi"])
    runtime = bytes.fromhex(store_contract["bytecode_runtime"].removeprefix("0x"))
    assert w3.eth.get_code(deploy.contractAddress) == runtime
    assert contract.functions.owner().call() == w3.eth.accounts[0]

    estimate = contract.functions.store(42).estimate_gas()
    receipt = w3.eth.wait_for_transaction_receipt(
        contract.functions.store(42).transact({"gas": estimate}), timeout=10
    )
    assert receipt.status == 1
    assert receipt.gasUsed == estimate  # exact estimate: first write of the slot, no refund
    assert contract.functions.value().call() == 42
    assert int.from_bytes(w3.eth.get_storage_at(deploy.contractAddress, 0), "big") == 42

    (event,) = contract.events.Stored().process_receipt(receipt)
    assert event.args.who == w3.eth.accounts[0] and event.args.new_value == 42
    assert receipt.logs[0].logIndex == 0 and receipt.logs[0].transactionIndex == 0
    logs = contract.events.Stored.get_logs(from_block=deploy.blockNumber)
    assert [log.args.new_value for log in logs] == [42]
    topic_filtered = w3.eth.get_logs(
        {
            "fromBlock": 0,
            "toBlock": "latest",
            "address": deploy.contractAddress,
            "topics": [None, "0x" + "00" * 12 + w3.eth.accounts[1][2:].lower()],
        }
    )
    assert topic_filtered == []  # the sender topic is account 0, not account 1

    by_hash = w3.eth.get_logs({"blockHash": receipt.blockHash, "address": deploy.contractAddress})
    assert [log.transactionHash for log in by_hash] == [receipt.transactionHash]

    with pytest.raises(ContractLogicError, match="unlucky number"):
        contract.functions.store(13).call()
    with pytest.raises(ContractLogicError, match="unlucky number"):
        contract.functions.store(13).transact()
    assert contract.functions.value().call() == 42


def test_web3_event_filter_polling(w3: Web3, store_contract: dict[str, Any]) -> None:
    factory = w3.eth.contract(abi=store_contract["abi"], bytecode=store_contract["bytecode"])
    address = w3.eth.wait_for_transaction_receipt(factory.constructor().transact()).contractAddress
    contract = w3.eth.contract(address=address, abi=store_contract["abi"])
    log_filter = contract.events.Stored.create_filter(from_block="latest")
    block_filter = w3.eth.filter("latest")
    assert log_filter.get_new_entries() == []
    contract.functions.store(7).transact()
    contract.functions.store(8).transact()
    assert [entry.args.new_value for entry in log_filter.get_new_entries()] == [7, 8]
    assert log_filter.get_new_entries() == []
    assert len(block_filter.get_new_entries()) == 2
    assert w3.eth.uninstall_filter(log_filter.filter_id) is True
    assert w3.eth.uninstall_filter(log_filter.filter_id) is False


def test_reverted_transaction_is_mined_with_status_zero(
    w3: Web3, store_contract: dict[str, Any]
) -> None:
    factory = w3.eth.contract(abi=store_contract["abi"], bytecode=store_contract["bytecode"])
    address = w3.eth.wait_for_transaction_receipt(factory.constructor().transact()).contractAddress
    contract = w3.eth.contract(address=address, abi=store_contract["abi"])
    # An explicit gas limit skips estimation, so the failing call reaches the chain.
    tx_hash = contract.functions.store(13).transact({"gas": 100_000})
    receipt = w3.eth.get_transaction_receipt(tx_hash)
    assert receipt.status == 0
    assert receipt.logs == []


def test_fee_endpoints(w3: Web3) -> None:
    for _ in range(2):  # two blocks past genesis whatever ran before (history is truncated there)
        w3.provider.make_request("evm_mine", [])
    latest = w3.eth.get_block("latest")
    assert w3.eth.max_priority_fee == 10**9
    assert w3.eth.gas_price >= 10**9
    history = w3.eth.fee_history(2, "latest", [25, 75])
    assert history.oldestBlock == latest.number - 1
    assert len(history.baseFeePerGas) == 3  # one more than the block count
    assert history.baseFeePerGas[1] == latest.baseFeePerGas
    assert len(history.reward) == 2 and all(len(r) == 2 for r in history.reward)


def test_block_and_receipt_encoding_follow_the_spec(server: DevnetServer, w3: Web3) -> None:
    tx_hash = w3.eth.send_transaction({"to": w3.eth.accounts[3], "value": 1})
    receipt = call(server.rpc_url, "eth_getTransactionReceipt", [tx_hash.to_0x_hex()])["result"]
    number = receipt["blockNumber"]
    block = call(server.rpc_url, "eth_getBlockByNumber", [number, True])["result"]
    for key in (
        "number", "gasLimit", "gasUsed", "timestamp", "baseFeePerGas", "difficulty", "size",
    ):  # fmt: skip
        assert QUANTITY.match(block[key]), (key, block[key])
    assert len(block["logsBloom"]) == 2 + 512
    assert block["transactions"][0]["hash"] == tx_hash.to_0x_hex()
    assert block["transactions"][0]["blockHash"] == block["hash"]
    for key in ("status", "type", "cumulativeGasUsed", "gasUsed", "effectiveGasPrice"):
        assert QUANTITY.match(receipt[key]), (key, receipt[key])
    assert receipt["status"] == "0x1" and receipt["type"] == "0x2"
    assert receipt["contractAddress"] is None and receipt["logs"] == []
    hashes_only = call(server.rpc_url, "eth_getBlockByHash", [block["hash"], False])["result"]
    assert hashes_only["transactions"] == [tx_hash.to_0x_hex()]
    assert call(server.rpc_url, "eth_getBlockByNumber", ["0x0", False])["result"]["number"] == "0x0"
    assert call(server.rpc_url, "eth_getBlockByNumber", ["0xffffff", False])["result"] is None
    unknown = "0x" + "ab" * 32
    assert call(server.rpc_url, "eth_getTransactionReceipt", [unknown])["result"] is None


def test_dev_controls_over_rpc() -> None:
    chain = DevChain(GenesisConfig(accounts=2))
    with DevnetServer(chain, port=0) as running:
        url = running.rpc_url
        sender, receiver = (a.address for a in chain.accounts)
        snapshot = call(url, "evm_snapshot")["result"]
        assert call(url, "evm_setAutomine", [False])["result"] is None
        assert call(url, "anvil_getAutomine")["result"] is False
        tx_hash = call(url, "eth_sendTransaction", [{"from": sender, "to": receiver}])["result"]
        pending = call(url, "eth_getTransactionByHash", [tx_hash])["result"]
        assert pending["blockHash"] is None and pending["blockNumber"] is None
        assert call(url, "eth_getTransactionReceipt", [tx_hash])["result"] is None
        pending_block = call(url, "eth_getBlockByNumber", ["pending", False])["result"]
        assert pending_block["number"] == "0x1" and pending_block["transactions"] == [tx_hash]
        assert call(url, "eth_getTransactionCount", [sender, "pending"])["result"] == "0x1"
        assert call(url, "eth_getTransactionCount", [sender, "latest"])["result"] == "0x0"

        def timestamp(block: str) -> int:
            return int(call(url, "eth_getBlockByNumber", [block, False])["result"]["timestamp"], 16)

        latest = timestamp("latest")
        assert call(url, "evm_setNextBlockTimestamp", [hex(latest + 1000)])["result"] is None
        assert call(url, "evm_mine")["result"] == "0x0"
        mined = call(url, "eth_getTransactionReceipt", [tx_hash])["result"]
        assert mined["blockNumber"] == "0x1"
        assert timestamp("0x1") == latest + 1000
        # The reply is the total shift: 3600 on top of the jump the set timestamp caused.
        assert int(call(url, "evm_increaseTime", ["0xe10"])["result"], 16) >= 3600 + 990
        assert call(url, "anvil_mine", ["0x3"])["result"] is None
        assert call(url, "eth_blockNumber")["result"] == "0x4"
        assert timestamp("0x2") >= latest + 1000 + 3600
        assert call(url, "evm_revert", [snapshot])["result"] is True
        assert call(url, "eth_blockNumber")["result"] == "0x0"
        assert call(url, "eth_getTransactionByHash", [tx_hash])["result"] is None
        assert call(url, "evm_revert", [snapshot])["result"] is False
        bad = call(url, "evm_setNextBlockTimestamp", ["0x1"])
        assert bad["error"]["code"] == -32602
    chain.close()


# --------------------------------------------------------------------------- malformed input


def test_malformed_json_is_a_parse_error(server: DevnetServer) -> None:
    status, answer = rpc(server.rpc_url, None, raw=b'{"jsonrpc": "2.0", "method": ')
    assert status == 200
    assert answer["error"]["code"] == -32700 and answer["id"] is None
    assert call(server.rpc_url, "eth_chainId")["result"] == "0x7a69"


def test_unknown_method_and_invalid_params(server: DevnetServer) -> None:
    answer = call(server.rpc_url, "eth_noSuchMethod")
    assert answer["id"] == 7 and answer["error"]["code"] == -32601
    bad_address = call(server.rpc_url, "eth_getBalance", ["0x1234", "latest"])
    assert bad_address["error"]["code"] == -32602 and "20 bytes" in bad_address["error"]["message"]
    too_many = call(server.rpc_url, "eth_blockNumber", [1])
    assert too_many["error"]["code"] == -32602
    bad_tag = call(server.rpc_url, "eth_getBalance", [ANVIL_ADDR0, "newest"])
    assert bad_tag["error"]["code"] == -32602
    _, by_name = rpc(
        server.rpc_url, {"jsonrpc": "2.0", "id": 1, "method": "eth_getBalance", "params": {}}
    )
    assert by_name["error"]["code"] == -32602
    _, no_version = rpc(server.rpc_url, {"id": 1, "method": "eth_chainId"})
    assert no_version["error"]["code"] == -32600
    _, not_object = rpc(server.rpc_url, 42)
    assert not_object["error"]["code"] == -32600
    assert call(server.rpc_url, "eth_chainId")["result"] == "0x7a69"


def test_batches(server: DevnetServer) -> None:
    _, empty = rpc(server.rpc_url, [])
    assert isinstance(empty, dict) and empty["error"]["code"] == -32600
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"},
        {"jsonrpc": "2.0", "id": 2, "method": "eth_bogus"},
        "not a request",
        {"jsonrpc": "2.0", "method": "eth_chainId"},  # notification: no answer
        {"jsonrpc": "2.0", "id": "four", "method": "net_version"},
    ]
    status, answers = rpc(server.rpc_url, batch)
    assert status == 200 and isinstance(answers, list) and len(answers) == 4
    assert answers[0] == {"jsonrpc": "2.0", "id": 1, "result": "0x7a69"}
    assert answers[1]["id"] == 2 and answers[1]["error"]["code"] == -32601
    assert answers[2]["id"] is None and answers[2]["error"]["code"] == -32600
    assert answers[3] == {"jsonrpc": "2.0", "id": "four", "result": "31337"}
    status, nothing = rpc(server.rpc_url, {"jsonrpc": "2.0", "method": "eth_chainId"})
    assert status == 204 and nothing is None


def test_invalid_transactions_get_json_rpc_errors(server: DevnetServer, w3: Web3) -> None:
    account = w3.eth.account.from_key(ANVIL_KEY0)
    nonce = w3.eth.get_transaction_count(account.address, "pending")
    base = {"to": account.address, "value": 1, "gas": 21000, "chainId": 31337}
    fees = {"maxFeePerGas": 10**11, "maxPriorityFeePerGas": 10**9}

    def send(tx: dict[str, Any]) -> dict[str, Any]:
        raw = account.sign_transaction(tx).raw_transaction.to_0x_hex()
        return call(server.rpc_url, "eth_sendRawTransaction", [raw])

    future_nonce = send({**base, **fees, "nonce": nonce + 5})
    assert future_nonce["error"]["code"] == -32000 and "nonce" in future_nonce["error"]["message"]
    broke = send({**base, **fees, "nonce": nonce, "value": 10**30})
    assert broke["error"]["code"] == -32000 and "balance" in broke["error"]["message"]
    other_chain = send({**base, **fees, "nonce": nonce, "chainId": 1})
    assert other_chain["error"]["code"] == -32000 and "chain id" in other_chain["error"]["message"]
    garbage = call(server.rpc_url, "eth_sendRawTransaction", ["0x02c0ffee"])
    assert garbage["error"]["code"] == -32000
    signed = bytearray(account.sign_transaction({**base, **fees, "nonce": nonce}).raw_transaction)
    signed[-40] ^= 0xFF  # corrupt s: the signature no longer recovers to a valid key
    corrupt = call(server.rpc_url, "eth_sendRawTransaction", ["0x" + signed.hex()])
    assert "error" in corrupt and corrupt["error"]["code"] == -32000
    not_hex = call(server.rpc_url, "eth_sendRawTransaction", ["0xnothex"])
    assert not_hex["error"]["code"] == -32602
    unknown_sender = call(
        server.rpc_url, "eth_sendTransaction", [{"from": "0x" + "11" * 20, "to": ANVIL_ADDR0}]
    )
    assert unknown_sender["error"]["code"] == -32000
    assert w3.eth.get_transaction_count(account.address, "pending") == nonce  # nothing got in


def test_revert_error_carries_revert_data(
    server: DevnetServer, w3: Web3, store_contract: dict[str, Any]
) -> None:
    factory = w3.eth.contract(abi=store_contract["abi"], bytecode=store_contract["bytecode"])
    address = w3.eth.wait_for_transaction_receipt(factory.constructor().transact()).contractAddress
    data = w3.eth.contract(address=address, abi=store_contract["abi"]).encode_abi(
        "store", args=[13]
    )
    answer = call(server.rpc_url, "eth_call", [{"to": address, "data": data}, "latest"])
    assert answer["error"]["code"] == 3
    assert answer["error"]["message"] == "execution reverted: unlucky number"
    assert answer["error"]["data"].startswith("0x08c379a0")
    estimate = call(server.rpc_url, "eth_estimateGas", [{"to": address, "data": data}])
    assert estimate["error"]["code"] == 3 and estimate["error"]["data"] == answer["error"]["data"]


def test_http_limits_and_methods(server: DevnetServer) -> None:
    host, port = server.rpc_url.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.request("GET", "/")
    response = connection.getresponse()
    assert response.status == 405
    assert json.loads(response.read())["error"]["code"] == -32600
    connection.close()
    chain = DevChain()
    with DevnetServer(chain, port=0, max_body=256) as small:
        status, answer = rpc(small.rpc_url, None, raw=b"[" + b" " * 300 + b"]")
        assert status == 413 and answer["error"]["code"] == -32600
        assert call(small.rpc_url, "eth_chainId")["result"] == "0x7a69"


# --------------------------------------------------------------------------- cast


def run_cast(cast_bin: str, *args: str) -> str:
    done = subprocess.run(
        [cast_bin, *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_cast_client(cast_bin: str, server: DevnetServer, w3: Web3) -> None:
    url = ["--rpc-url", server.rpc_url]
    assert run_cast(cast_bin, "chain-id", *url) == "31337"
    assert int(run_cast(cast_bin, "block-number", *url)) == w3.eth.block_number
    receiver = "0x000000000000000000000000000000000000bEEF"
    before = int(run_cast(cast_bin, "balance", receiver, *url))
    assert before == w3.eth.get_balance(receiver)
    sent = json.loads(
        run_cast(
            cast_bin,
            "send",
            "--private-key",
            ANVIL_KEY0,
            "--value",
            "1.5ether",
            "--json",
            receiver,
            *url,
        )
    )
    assert sent["status"] == "0x1"
    assert int(run_cast(cast_bin, "balance", receiver, *url)) == before + 15 * ETH // 10
    receipt = json.loads(run_cast(cast_bin, "receipt", sent["transactionHash"], "--json", *url))
    assert receipt["blockNumber"] == sent["blockNumber"] and receipt["status"] == "0x1"
    assert run_cast(cast_bin, "receipt", sent["transactionHash"], "status", *url) == "true"
    unlocked = json.loads(
        run_cast(
            cast_bin,
            "send",
            "--unlocked",
            "--from",
            w3.eth.accounts[2],
            "--value",
            "1wei",
            "--json",
            receiver,
            *url,
        )
    )
    assert unlocked["status"] == "0x1" and unlocked["from"].lower() == w3.eth.accounts[2].lower()
    assert int(run_cast(cast_bin, "block-number", *url)) == w3.eth.block_number
    failing = subprocess.run(
        [cast_bin, "rpc", "eth_noSuchMethod", *url], capture_output=True, text=True, timeout=60
    )
    assert failing.returncode != 0 and "-32601" in failing.stderr


# --------------------------------------------------------------------------- subprocess + journal


class ServerProcess:
    """`python -m flchain.devnet.rpc_server --json ...` with its start-up line parsed."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "flchain.devnet.rpc_server", "--port", "0", "--json", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise AssertionError(f"server did not start: {self.process.stderr.read()}")
        self.info = json.loads(line)
        self.url: str = self.info["rpc_url"]

    def kill9(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self._close_pipes()

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=30)
        self._close_pipes()
        return code

    def _close_pipes(self) -> None:
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


def snapshot_state(w3: Web3, addresses: list[str], contract: str) -> dict[str, Any]:
    return {
        "block": w3.eth.block_number,
        "head": w3.eth.get_block("latest").hash,
        "balances": [w3.eth.get_balance(a) for a in addresses],
        "nonces": [w3.eth.get_transaction_count(a) for a in addresses],
        "code": w3.eth.get_code(contract),
        "slots": [w3.eth.get_storage_at(contract, slot) for slot in range(2)],
    }


def test_journal_survives_kill_9(tmp_path: Path, store_contract: dict[str, Any]) -> None:
    state_dir = tmp_path / "chain"
    first = ServerProcess("--state", str(state_dir), "--accounts", "3", "--chain-id", "1337")
    try:
        assert first.info["chain_id"] == 1337 and len(first.info["accounts"]) == 3
        w3 = Web3(Web3.HTTPProvider(first.url))
        accounts = w3.eth.accounts
        w3.eth.default_account = accounts[0]
        factory = w3.eth.contract(abi=store_contract["abi"], bytecode=store_contract["bytecode"])
        address = w3.eth.wait_for_transaction_receipt(
            factory.constructor().transact()
        ).contractAddress
        contract = w3.eth.contract(address=address, abi=store_contract["abi"])
        w3.eth.send_transaction({"to": accounts[1], "value": 5 * ETH})
        w3.eth.send_transaction({"from": accounts[2], "to": accounts[0], "value": 7})
        contract.functions.store(2024).transact()
        w3.provider.make_request("evm_increaseTime", [3600])
        w3.provider.make_request("evm_mine", [])
        before = snapshot_state(w3, [*accounts, address], address)
        assert before["block"] == 5 and int.from_bytes(before["slots"][0], "big") == 2024
    finally:
        first.kill9()

    second = ServerProcess("--state", str(state_dir))
    try:
        w3 = Web3(Web3.HTTPProvider(second.url))
        assert w3.eth.chain_id == 1337 and len(w3.eth.accounts) == 3
        after = snapshot_state(w3, [*accounts, address], address)
        assert after == before
        # The restarted chain keeps going from the same state.
        w3.eth.default_account = accounts[0]
        w3.eth.contract(address=address, abi=store_contract["abi"]).functions.store(5).transact()
        assert w3.eth.block_number == before["block"] + 1
        assert second.terminate() == 0
    finally:
        if second.process.poll() is None:
            second.kill9()
    journal = (state_dir / "journal.jsonl").read_bytes()
    assert journal.endswith(b"\n") and journal.count(b'"op":"mine"') == 6


def test_block_time_mines_on_a_timer() -> None:
    chain = DevChain(automine=False)
    with DevnetServer(chain, port=0, block_time=0.2) as running:
        w3 = Web3(Web3.HTTPProvider(running.rpc_url))
        tx_hash = w3.eth.send_transaction(
            {"from": w3.eth.accounts[0], "to": w3.eth.accounts[1], "value": 1}
        )
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=10, poll_latency=0.05)
        assert receipt.status == 1
        height = w3.eth.block_number
        deadline = time.monotonic() + 10
        while w3.eth.block_number < height + 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert w3.eth.block_number >= height + 2  # empty blocks keep coming, as on anvil
    chain.close()


def test_serve_prints_an_anvil_style_banner_and_stops_on_sigint() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "flchain.devnet.rpc_server", "--port", "0", "--accounts", "2",
         "--seed", "3", "--balance", "2.5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line.rstrip())
            if line.startswith("Listening on"):
                break
        text = "\n".join(lines)
        accounts = derive_accounts(mnemonic_from_seed(3), 2)
        assert "Available Accounts" in text and "Private Keys" in text
        assert f"(1) {accounts[1].address} (2.500000 ETH)" in text
        assert f"(0) {accounts[0].private_key_hex}" in text
        listen = lines[-1].removeprefix("Listening on ")
        assert listen.startswith("127.0.0.1:")
        assert call(f"http://{listen}", "eth_chainId")["result"] == "0x7a69"
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 0 and "Shut down cleanly." in stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=30)
