"""The chain server against hostile clients: deep JSON, endless calls, foreign pages, replays.

Each test reproduces an attack against a running server and checks that the
server answers with an error and keeps serving everyone else.
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from eth_account import Account
from test_chain_server import ANVIL_ADDR0, ANVIL_KEY0, ServerProcess, call, rpc

from flchain import safe_json
from flchain.commands.chain import chain as chain_cli
from flchain.devnet import rpc_server
from flchain.devnet.chain import DevChain
from flchain.devnet.genesis import GenesisConfig
from flchain.devnet.policy import CallLimits, RpcPolicy, is_loopback
from flchain.devnet.rpc_server import DevnetServer

GAS_CAP = 300_000  # small, so a loop runs out of it in well under the default timeout
EVM_TIMEOUT = 1.0  # for the endless-call test
# Runtime code `JUMPDEST PUSH1 0 JUMP`: loops until it runs out of gas.
LOOP_RUNTIME = "5b600056"
# Init code that deploys the 4-byte runtime appended to it.
LOOP_INIT = "600480600b6000396000f3" + LOOP_RUNTIME
# Init code `GAS PUSH1 0 MSTORE PUSH1 32 PUSH1 0 RETURN`: returns the gas it was given.
GAS_PROBE = "0x5a60005260206000f3"


def nested(size: int) -> bytes:
    """A JSON array nested size/2 deep: the body that used to kill the server."""
    return b"[" * (size // 2) + b"]" * (size // 2)


def post(
    url: str, body: bytes, headers: dict[str, str], method: str = "POST"
) -> tuple[int, dict[str, str], Any]:
    """Send raw bytes with exactly these headers; the status, headers and decoded JSON body."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request(method, "/", body, headers)
        response = connection.getresponse()
        data = response.read()
        decoded = safe_json.loads(data, max_bytes=1 << 20, max_depth=8) if data else None
        return response.status, dict(response.headers), decoded
    finally:
        connection.close()


def request(method: str, params: list[Any]) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()


@pytest.fixture(scope="module")
def chain() -> Iterator[DevChain]:
    devchain = DevChain(GenesisConfig(accounts=3), call_limits=CallLimits(gas_cap=GAS_CAP))
    yield devchain
    devchain.close()


@pytest.fixture(scope="module")
def server(chain: DevChain) -> Iterator[DevnetServer]:
    with DevnetServer(chain, port=0) as running:
        yield running


@pytest.fixture(scope="module")
def loop_contract(server: DevnetServer) -> str:
    answer = call(
        server.rpc_url,
        "eth_sendTransaction",
        [{"from": ANVIL_ADDR0, "data": "0x" + LOOP_INIT, "gas": hex(100_000)}],
    )
    receipt = call(server.rpc_url, "eth_getTransactionReceipt", [answer["result"]])["result"]
    assert receipt["status"] == "0x1"
    address = receipt["contractAddress"]
    assert call(server.rpc_url, "eth_getCode", [address, "latest"])["result"] == "0x5b600056"
    return address


# --------------------------------------------------------------------------- bounded parsing


def test_nested_bodies_get_errors_and_the_cli_server_keeps_serving() -> None:
    """75 KB, 1 MB and 8 MB of brackets to `flchain chain serve` (which imports eth_account,
    whose py_ecc lifts the recursion limit so the C parser would overflow the stack)."""
    process = ServerProcess("--host", "0.0.0.0")
    try:
        url = process.url
        assert call(url, "eth_blockNumber")["result"] == "0x0"
        for size in (75_000, 1_000_000, 8_000_000):
            status, answer = rpc(url, None, raw=nested(size))
            assert status == 200 and answer["id"] is None
            assert answer["error"]["code"] == -32600 and "deep" in answer["error"]["message"]
            assert call(url, "eth_blockNumber")["result"] == "0x0"
        inner = {"jsonrpc": "2.0", "id": 3, "method": "eth_chainId", "params": []}
        wrapped: Any = inner
        for _ in range(100):
            wrapped = [wrapped]
        status, deep_batch = rpc(url, wrapped)
        assert status == 200 and deep_batch["error"]["code"] == -32600
        # A Content-Length over the limit is refused before the body is read.
        host, port = url.removeprefix("http://").rsplit(":", 1)
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        connection.putrequest("POST", "/")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(9 * 1024 * 1024))
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 413
        assert safe_json.loads(response.read(), max_depth=8)["error"]["code"] == -32600
        connection.close()
        assert call(url, "eth_chainId")["result"] == "0x7a69"
        assert process.process.poll() is None
    finally:
        process.process.send_signal(signal.SIGTERM)
        _, stderr = process.process.communicate(timeout=30)
    assert process.process.returncode == 0
    assert "WARNING: listening on 0.0.0.0" in stderr and "unlocked" in stderr


def test_typed_data_strings_are_bounded(server: DevnetServer) -> None:
    deep = "[" * 5000 + "]" * 5000
    answer = call(server.rpc_url, "eth_signTypedData_v4", [ANVIL_ADDR0, deep])
    assert answer["error"]["code"] == -32602 and "deep" in answer["error"]["message"]


# --------------------------------------------------------------------------- gas cap and timeout


def test_call_gas_is_clamped_to_the_cap(server: DevnetServer) -> None:
    answer = call(server.rpc_url, "eth_call", [{"data": GAS_PROBE, "gas": hex(2**62)}, "latest"])
    given = int(answer["result"], 16)
    assert GAS_CAP - 60_000 < given < GAS_CAP  # the cap less intrinsic gas, not 2**62
    small = call(server.rpc_url, "eth_call", [{"data": GAS_PROBE, "gas": hex(100_000)}])
    assert 40_000 < int(small["result"], 16) < 100_000  # below the cap the caller's gas stands


def test_estimate_gas_stays_under_the_cap(server: DevnetServer, loop_contract: str) -> None:
    start = time.monotonic()
    answer = call(server.rpc_url, "eth_estimateGas", [{"to": loop_contract, "gas": hex(2**62)}])
    assert answer["error"]["code"] == -32000
    assert f"gas required exceeds allowance ({GAS_CAP})" in answer["error"]["message"]
    assert time.monotonic() - start < 10
    transfer = call(server.rpc_url, "eth_estimateGas", [{"from": ANVIL_ADDR0, "to": ANVIL_ADDR0}])
    assert transfer["result"] == hex(21_000)


def test_endless_call_is_aborted_and_other_calls_go_on() -> None:
    devchain = DevChain(GenesisConfig(accounts=1), call_limits=CallLimits(timeout=EVM_TIMEOUT))
    with DevnetServer(devchain, port=0) as running:
        url = running.rpc_url
        deployed = call(
            url,
            "eth_sendTransaction",
            [{"from": ANVIL_ADDR0, "data": "0x" + LOOP_INIT, "gas": hex(100_000)}],
        )
        receipt = call(url, "eth_getTransactionReceipt", [deployed["result"]])["result"]
        target = receipt["contractAddress"]
        answers: dict[str, Any] = {}

        def endless(method: str) -> None:
            started = time.monotonic()
            answers[method] = (call(url, method, [{"to": target, "gas": hex(2**62)}]), started)

        threads = [
            threading.Thread(target=endless, args=(method,), daemon=True)
            for method in ("eth_call", "eth_estimateGas")
        ]
        for thread in threads:
            thread.start()
        time.sleep(0.2)  # both are now running or queued on the chain lock
        asked = time.monotonic()
        assert call(url, "eth_blockNumber")["result"] == "0x1"
        # Each endless call holds the lock for at most the bound; the head query waits on
        # at most both of them.
        assert time.monotonic() - asked < 2 * EVM_TIMEOUT + 3
        for thread in threads:
            thread.join(timeout=10)
            assert not thread.is_alive()
        for method, (answer, started) in answers.items():
            assert answer["error"]["code"] == -32000, method
            assert answer["error"]["message"] == "execution aborted (timeout = 1s)"
            assert time.monotonic() - started < 2 * EVM_TIMEOUT + 3
    devchain.close()


# --------------------------------------------------------------------------- who may call


def test_host_header_must_name_an_allowed_host(server: DevnetServer) -> None:
    port = server.port
    body = request("eth_chainId", [])
    json_type = {"Content-Type": "application/json"}
    for host in ("evil.example.com", f"evil.example.com:{port}", "localhost.evil.example"):
        status, _, answer = post(server.rpc_url, body, {**json_type, "Host": host})
        assert status == 403 and "invalid host" in answer["error"]["message"]
    for host in (f"localhost:{port}", "127.0.0.1", f"[::1]:{port}", f"192.168.7.7:{port}"):
        status, _, answer = post(server.rpc_url, body, {**json_type, "Host": host})
        assert status == 200 and answer["result"] == "0x7a69", host
    anyone = DevnetServer(server.chain, port=0, policy=RpcPolicy(vhosts=("*",)))
    with anyone:
        status, _, answer = post(anyone.rpc_url, body, {**json_type, "Host": "evil.example.com"})
        assert status == 200 and answer["result"] == "0x7a69"


def test_web_pages_cannot_spend_dev_funds(server: DevnetServer) -> None:
    """The cross-site POST that moved 1 ETH: refused for a foreign Origin and for text/plain."""
    victim = "0x000000000000000000000000000000000000c0de"
    steal = request("eth_sendTransaction", [{"from": ANVIL_ADDR0, "to": victim, "value": "0x1"}])
    evil = {"Origin": "https://evil.example"}
    status, headers, answer = post(
        server.rpc_url, steal, {**evil, "Content-Type": "application/json"}
    )
    assert status == 403 and "origin" in answer["error"]["message"]
    assert "Access-Control-Allow-Origin" not in headers
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers_sent = {} if content_type is None else {"Content-Type": content_type}
        status, _, answer = post(server.rpc_url, steal, headers_sent)
        assert status == 415 and "application/json" in answer["error"]["message"]
    status, _, _ = post(
        server.rpc_url, b"", {**evil, "Access-Control-Request-Method": "POST"}, "OPTIONS"
    )
    assert status == 403
    assert call(server.rpc_url, "eth_getBalance", [victim, "latest"])["result"] == "0x0"
    status, _, answer = post(
        server.rpc_url,
        request("eth_chainId", []),
        {"Content-Type": "application/json; charset=utf-8"},
    )
    assert status == 200 and answer["result"] == "0x7a69"


def test_allowed_origin_gets_cors_answers(chain: DevChain) -> None:
    app = "https://app.example"
    policy = RpcPolicy(cors_domains=(app,))
    with DevnetServer(chain, port=0, policy=policy) as running:
        preflight = {
            "Origin": app,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        }
        status, headers, _ = post(running.rpc_url, b"", preflight, "OPTIONS")
        assert status == 204
        assert headers["Access-Control-Allow-Origin"] == app
        assert "POST" in headers["Access-Control-Allow-Methods"]
        assert headers["Access-Control-Allow-Headers"] == "content-type"
        status, headers, answer = post(
            running.rpc_url,
            request("eth_chainId", []),
            {"Origin": app, "Content-Type": "application/json"},
        )
        assert status == 200 and answer["result"] == "0x7a69"
        assert headers["Access-Control-Allow-Origin"] == app
        status, _, _ = post(
            running.rpc_url,
            request("eth_chainId", []),
            {"Origin": "https://app.example.evil", "Content-Type": "application/json"},
        )
        assert status == 403


def test_slow_and_surplus_connections_are_cut_off(
    chain: DevChain, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rpc_server, "REQUEST_READ_S", 0.5)
    monkeypatch.setattr(rpc_server, "MAX_CONNECTIONS", 2)
    with DevnetServer(chain, port=0) as running:
        address = (running.host, running.port)
        trickler = socket.create_connection(address, timeout=10)
        idle = socket.create_connection(address, timeout=10)
        time.sleep(0.1)
        surplus = socket.create_connection(address, timeout=10)
        assert surplus.recv(1) == b""  # over the connection limit: closed at once
        surplus.close()
        started = time.monotonic()
        trickler.sendall(b"POST / HTTP/1.1\r\n")
        closed = False
        while time.monotonic() - started < 5 and not closed:
            try:
                trickler.sendall(b"X")  # one byte of a header line at a time, never finished
                trickler.settimeout(0.2)
                closed = trickler.recv(1) == b""
            except TimeoutError:
                continue
            except OSError:
                closed = True
        assert closed and time.monotonic() - started < 3
        trickler.close()
        idle.close()
        time.sleep(0.3)
        assert call(running.rpc_url, "eth_chainId")["result"] == "0x7a69"


# --------------------------------------------------------------------------- replayable txs


def test_unprotected_transactions_need_the_flag(chain: DevChain) -> None:
    sender = Account.from_key(ANVIL_KEY0)
    receiver = "0x000000000000000000000000000000000000bEEF"
    with DevnetServer(chain, port=0) as strict:
        nonce = int(
            call(strict.rpc_url, "eth_getTransactionCount", [sender.address, "pending"])["result"],
            16,
        )
        tx = {"nonce": nonce, "gasPrice": 10**10, "gas": 21_000, "to": receiver, "value": 5}
        signed = sender.sign_transaction(tx)
        assert signed.v in (27, 28)  # no chain id in the signature: valid on every chain
        raw = signed.raw_transaction
        refused = call(strict.rpc_url, "eth_sendRawTransaction", ["0x" + raw.hex()])
        assert refused["error"]["code"] == -32000
        assert "only replay-protected (EIP-155)" in refused["error"]["message"]
        assert call(strict.rpc_url, "eth_getBalance", [receiver, "latest"])["result"] == "0x0"
    lenient = RpcPolicy(allow_unprotected_txs=True)
    with DevnetServer(chain, port=0, policy=lenient) as allowing:
        accepted = call(allowing.rpc_url, "eth_sendRawTransaction", ["0x" + raw.hex()])
        receipt = call(allowing.rpc_url, "eth_getTransactionReceipt", [accepted["result"]])
        assert receipt["result"]["status"] == "0x1"
        assert call(allowing.rpc_url, "eth_getBalance", [receiver, "latest"])["result"] == "0x5"


# --------------------------------------------------------------------------- CLI and policy


def test_policy_helpers_follow_geth() -> None:
    policy = RpcPolicy()
    assert policy.host_allowed(None) and policy.host_allowed("LOCALHOST:8545")
    assert not policy.host_allowed("") and not policy.host_allowed("[::1")
    assert not policy.origin_allowed("null") and not policy.origin_allowed("http://localhost")
    assert RpcPolicy(cors_domains=("*",)).origin_allowed("null")
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2")
    with pytest.raises(ValueError, match="gas cap"):
        CallLimits(gas_cap=1)
    with pytest.raises(ValueError, match="timeout"):
        CallLimits(timeout=0)


def test_cli_refuses_pyevm_only_options_for_anvil() -> None:
    runner = CliRunner()
    result = runner.invoke(chain_cli, ["serve", "--chain", "anvil", "--rpc-gascap", "30000000"])
    assert result.exit_code == 2 and "--rpc-gascap" in result.output
    bad = runner.invoke(chain_cli, ["serve", "--rpc-evmtimeout", "0"])
    assert bad.exit_code == 2
