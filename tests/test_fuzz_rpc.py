"""Property-based fuzzing of the devnet JSON-RPC server: whatever arrives gets an answer.

Generated inputs: arbitrary bytes, JSON values of random shape, well-formed requests naming
real methods with garbage (and almost-right) parameters, batches, and HTTP requests with
random headers. Every input must end in a well-formed JSON-RPC response (or, over HTTP, a
documented refusal: 403 host/origin, 405 GET, 413 too large, 415 not JSON, 501 other HTTP
methods); an exception escaping the dispatcher or a -32603 internal error counts as a crash.
The suite runs a few hundred inputs; `make fuzz` runs FLCHAIN_FUZZ_EXAMPLES=10000 of them.
"""

from __future__ import annotations

import http.client
import json
import string
from collections.abc import Iterator
from typing import Any

import pytest
from eth_account import Account
from fuzzkit import Tally, examples_for, fuzz_settings, json_scalars, json_values
from hypothesis import given
from hypothesis import strategies as st

from flchain import safe_json
from flchain.devnet.chain import DevChain
from flchain.devnet.genesis import GenesisConfig
from flchain.devnet.policy import CallLimits
from flchain.devnet.rpc_server import DevnetServer

INTERNAL_ERROR = -32603
ERROR_REASONS = {
    -32700: "parse_error",
    -32600: "invalid_request",
    -32601: "method_not_found",
    -32602: "invalid_params",
    -32000: "server_error",
    3: "reverted",
}
HTTP_REFUSALS = {
    403: "http_403",
    404: "http_404",
    411: "http_411",
    413: "http_413",
    415: "http_415",
}
ANVIL_KEY1 = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
# Methods that run the EVM or sign: drawn more often than the rest.
HOT_METHODS = [
    "eth_call",
    "eth_estimateGas",
    "eth_sendTransaction",
    "eth_sendRawTransaction",
    "eth_signTransaction",
    "eth_getLogs",
    "eth_signTypedData_v4",
]
# Shares of FLCHAIN_FUZZ_EXAMPLES per generator; together they make one surface's count.
SHARES = {"bytes": 0.15, "json": 0.15, "requests": 0.5, "batches": 0.1, "http": 0.1}

tally = Tally("rpc")


def examples(kind: str) -> int:
    return examples_for(SHARES, kind)


@pytest.fixture(scope="module")
def server() -> Iterator[DevnetServer]:
    chain = DevChain(
        GenesisConfig(accounts=2), call_limits=CallLimits(gas_cap=1_000_000, timeout=0.5)
    )
    with DevnetServer(chain, port=0) as running:
        yield running
    chain.close()


# --------------------------------------------------------------------------- strategies

HEX = "0123456789abcdef"
hex_strings = st.builds(
    lambda prefix, digits: prefix + digits,
    st.sampled_from(["0x", "0X", "", "0x0", "x"]),
    st.text(alphabet=HEX + "ABCDEFgxz_ -", max_size=140),
)
quantities = st.one_of(
    st.integers(min_value=-5, max_value=2**260).map(hex),
    st.integers(min_value=-5, max_value=2**70),
    st.sampled_from(["0x0", "0x", "0x00", "0x1", "0x3", "0xffffffffffffffff"]),
)
addresses = st.one_of(
    st.sampled_from(
        [
            "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
            "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
            "0x" + "00" * 20,
        ]
    ),
    st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex()),
    st.binary(min_size=19, max_size=21).map(lambda b: "0x" + b.hex()),
)
block_tags = st.one_of(
    st.sampled_from(["latest", "earliest", "pending", "safe", "finalized", "newest"]),
    quantities,
    st.fixed_dictionaries(
        {},
        optional={
            "blockNumber": quantities,
            "blockHash": st.binary(min_size=32, max_size=32).map(lambda b: "0x" + b.hex()),
            "requireCanonical": st.booleans() | json_scalars,
        },
    ),
)
code = st.one_of(
    st.binary(max_size=64).map(lambda b: "0x" + b.hex()),
    st.sampled_from(["0x5b600056", "0x5a60005260206000f3", "0x60006000fd", "0xfe"]),
)
small_quantities = st.integers(min_value=0, max_value=3_000_000).map(hex)
dev_addresses = st.sampled_from(
    ["0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266", "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"]
)
plausible_tx = st.fixed_dictionaries(
    {},
    optional={
        "from": dev_addresses,
        "to": addresses | st.none(),
        "data": code,
        "gas": small_quantities,
        "value": st.integers(min_value=0, max_value=10**18).map(hex),
    },
)
garbage_tx = st.fixed_dictionaries(
    {},
    optional={
        "from": addresses,
        "to": addresses | st.none(),
        "gas": quantities,
        "gasPrice": quantities,
        "maxFeePerGas": quantities,
        "maxPriorityFeePerGas": quantities,
        "value": quantities,
        "data": code | hex_strings,
        "input": code,
        "nonce": quantities,
        "type": st.sampled_from(["0x0", "0x1", "0x2", "0x3", "0x7f"]) | quantities,
        "chainId": st.sampled_from(["0x7a69", "0x1"]) | quantities,
        "accessList": st.lists(
            st.fixed_dictionaries(
                {"address": addresses},
                optional={"storageKeys": st.lists(hex_strings | json_scalars, max_size=3)},
            )
            | json_values,
            max_size=3,
        )
        | json_values,
    },
)
tx_objects = plausible_tx | garbage_tx
log_queries = st.fixed_dictionaries(
    {},
    optional={
        "fromBlock": block_tags,
        "toBlock": block_tags,
        "address": addresses | st.lists(addresses, max_size=3),
        "topics": st.lists(
            st.none() | hex_strings | st.lists(hex_strings | st.none(), max_size=3), max_size=6
        ),
        "blockHash": hex_strings,
    },
)


def _signed(fields: dict[str, Any]) -> str:
    base = {"to": "0x" + "11" * 20, "value": 1, "gas": 60_000, "nonce": 0, "data": "0x5b600056"}
    return (
        "0x"
        + Account.from_key(ANVIL_KEY1).sign_transaction({**base, **fields}).raw_transaction.hex()
    )


signed_txs = st.sampled_from(
    [
        _signed({"gasPrice": 10**10}),  # pre-EIP-155: refused
        _signed({"gasPrice": 10**10, "chainId": 31337}),
        _signed({"gasPrice": 10**10, "chainId": 1}),
        _signed({"maxFeePerGas": 10**10, "maxPriorityFeePerGas": 10**9, "chainId": 31337}),
        _signed({"maxFeePerGas": 10**10, "maxPriorityFeePerGas": 1, "chainId": 31337, "nonce": 1}),
        _signed({"gasPrice": 10**10, "chainId": 31337, "gas": 21_000, "to": None}),
    ]
)
hashes = st.binary(min_size=31, max_size=33).map(lambda b: "0x" + b.hex())
param_values = st.one_of(
    json_scalars, hex_strings, quantities, addresses, block_tags, tx_objects, log_queries, code
)
typed_data = st.fixed_dictionaries(
    {},
    optional={
        "types": st.dictionaries(
            st.sampled_from(["EIP712Domain", "Mail", "X"]),
            st.lists(
                st.fixed_dictionaries(
                    {
                        "name": st.text(max_size=5),
                        "type": st.sampled_from(["string", "uint256", "X"]),
                    }
                ),
                max_size=3,
            ),
            max_size=3,
        ),
        "primaryType": st.sampled_from(["Mail", "X", ""]),
        "domain": st.dictionaries(st.sampled_from(["name", "chainId"]), json_scalars, max_size=2),
        "message": st.dictionaries(st.text(max_size=5), json_scalars, max_size=3),
    },
)
# Almost-right parameters: the types each method expects, in order (extra or missing ones
# come from the list length). Methods not listed get generic parameters.
SHAPES: dict[str, list[st.SearchStrategy[Any]]] = {
    "eth_call": [tx_objects, block_tags, json_values],
    "eth_estimateGas": [tx_objects, block_tags],
    "eth_sendTransaction": [tx_objects],
    "eth_signTransaction": [tx_objects],
    "eth_sendRawTransaction": [signed_txs | code | hex_strings],
    "eth_getBalance": [addresses, block_tags],
    "eth_getCode": [addresses, block_tags],
    "eth_getTransactionCount": [addresses, block_tags],
    "eth_getStorageAt": [addresses, quantities, block_tags],
    "eth_getBlockByNumber": [block_tags, st.booleans()],
    "eth_getBlockByHash": [hashes, st.booleans()],
    "eth_getBlockReceipts": [block_tags | hashes],
    "eth_getTransactionByHash": [hashes],
    "eth_getTransactionReceipt": [hashes],
    "eth_getTransactionByBlockNumberAndIndex": [block_tags, quantities],
    "eth_getLogs": [log_queries],
    "eth_newFilter": [log_queries],
    "eth_getFilterChanges": [quantities],
    "eth_getFilterLogs": [quantities],
    "eth_feeHistory": [quantities, block_tags, st.lists(st.floats() | json_scalars, max_size=5)],
    "eth_sign": [addresses, code | hex_strings],
    "personal_sign": [code | hex_strings, addresses],
    "eth_signTypedData_v4": [addresses, typed_data | typed_data.map(json.dumps) | json_values],
    "web3_sha3": [code | hex_strings],
    "evm_mine": [
        quantities
        | st.fixed_dictionaries({}, optional={"timestamp": quantities, "blocks": quantities})
    ],
    "anvil_mine": [quantities, quantities],
    "evm_increaseTime": [quantities],
    "evm_setNextBlockTimestamp": [quantities],
    "evm_revert": [quantities],
    "evm_setAutomine": [st.booleans() | json_scalars],
}


@st.composite
def params_for(draw: st.DrawFn, method: Any) -> list[Any]:
    shape = SHAPES.get(method) if isinstance(method, str) else None
    if shape is None or not draw(st.sampled_from([True] * 3 + [False])):
        return draw(st.lists(param_values, max_size=4))
    count = mostly(draw, st.sampled_from(range(1, len(shape) + 1)), st.integers(0, len(shape) + 1))
    return [draw(shape[i] if i < len(shape) else param_values) for i in range(count)]


_NINE_IN_TEN = st.sampled_from([True] * 9 + [False])


def mostly(draw: st.DrawFn, usual: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> Any:
    """Nine in ten from `usual`, else from `odd` (one_of would split them evenly)."""
    # sampled_from draws uniformly; integers() would favour 0 and so the odd branch.
    return draw(usual if draw(_NINE_IN_TEN) else odd)


@st.composite
def requests(draw: st.DrawFn, methods: list[str]) -> dict[str, Any]:
    """A request object: mostly well-formed with a real method, params of the wrong kinds."""
    request: dict[str, Any] = {
        "jsonrpc": mostly(draw, st.just("2.0"), json_scalars),
        "method": mostly(
            draw, st.sampled_from(methods + HOT_METHODS * 4), st.text(max_size=30) | json_scalars
        ),
    }
    if draw(_NINE_IN_TEN):  # one in ten is a notification (no id)
        request["id"] = mostly(
            draw,
            st.integers(min_value=0, max_value=2**53) | st.text(max_size=10),
            json_values | st.floats() | st.integers(min_value=-(2**80), max_value=2**80),
        )
    if draw(_NINE_IN_TEN):
        request["params"] = mostly(
            draw, params_for(request["method"]), json_values | st.just({}) | st.none()
        )
    return request


# --------------------------------------------------------------------------- checking answers


def check_response(response: Any) -> str | None:
    """The rejection reason of one JSON-RPC response (None when it carries a result);
    raises AssertionError when it is not a well-formed response."""
    assert isinstance(response, dict), response
    assert response.get("jsonrpc") == "2.0" and "id" in response, response
    assert ("result" in response) != ("error" in response), response
    if "result" in response:
        return None
    error = response["error"]
    assert isinstance(error, dict) and isinstance(error.get("message"), str), response
    code = error.get("code")
    assert isinstance(code, int) and code != INTERNAL_ERROR, response
    assert code in ERROR_REASONS, response
    return ERROR_REASONS[code]


def classify(answer: bytes | None, sent: Any) -> str | None:
    """Check a dispatcher answer; its rejection reason or None for accepted."""
    if answer is None:
        # Only notifications (requests without an id) go unanswered.
        items = sent if isinstance(sent, list) else [sent]
        assert items and all(isinstance(i, dict) and "id" not in i for i in items), sent
        return None
    decoded = safe_json.loads(answer, max_bytes=64 << 20, max_depth=64)
    if isinstance(decoded, list):
        assert isinstance(sent, list) and 0 < len(decoded) <= len(sent), decoded
        reasons = [check_response(item) for item in decoded]
        return None if any(r is None for r in reasons) else reasons[0]
    return check_response(decoded)


def dispatch(server: DevnetServer, body: bytes, sent: Any) -> None:
    """Run one body through the dispatcher and count how it ended."""
    dispatcher = server.dispatcher
    before = dispatcher.refused.copy()
    try:
        answer = dispatcher.handle_body(body)
        reason = classify(answer, sent)
    except Exception as exc:
        tally.crash(f"{type(exc).__name__}: {exc} <- {body[:120]!r}")
        raise
    refused = dispatcher.refused - before
    if refused:
        reason = next(iter(refused))  # oversize, too_deep or malformed
    if reason is None:
        tally.accept()
    else:
        tally.reject(reason)


# --------------------------------------------------------------------------- properties


@fuzz_settings(examples("bytes"))
@given(body=st.binary(max_size=3000) | st.text(max_size=500).map(str.encode))
def test_arbitrary_bytes_get_an_answer(server: DevnetServer, body: bytes) -> None:
    dispatch(server, body, None)


@fuzz_settings(examples("json"))
@given(value=json_values)
def test_arbitrary_json_gets_an_answer(server: DevnetServer, value: Any) -> None:
    dispatch(server, json.dumps(value).encode(), value)


@pytest.fixture(scope="module")
def methods(server: DevnetServer) -> list[str]:
    return sorted(server.rpc.handlers())


@fuzz_settings(examples("requests"))
@given(data=st.data())
def test_requests_with_garbage_params_get_an_answer(
    server: DevnetServer, methods: list[str], data: st.DataObject
) -> None:
    request = data.draw(requests(methods))
    dispatch(server, json.dumps(request).encode(), request)


@fuzz_settings(examples("batches"))
@given(data=st.data())
def test_batches_get_an_answer(
    server: DevnetServer, methods: list[str], data: st.DataObject
) -> None:
    batch = data.draw(st.lists(requests(methods) | json_values, min_size=1, max_size=5))
    dispatch(server, json.dumps(batch).encode(), batch)


header_text = st.text(alphabet=string.ascii_letters + string.digits + ".:-[]/;= ", max_size=30)


@fuzz_settings(examples("http"))
@given(data=st.data())
def test_http_requests_get_an_answer_or_a_refusal(
    server: DevnetServer, methods: list[str], data: st.DataObject
) -> None:
    draw = data.draw
    method = mostly(draw, st.just("POST"), st.sampled_from(["GET", "OPTIONS", "PUT"]))
    content_type = mostly(
        draw,
        st.sampled_from(["application/json", "application/json; charset=utf-8"]),
        st.sampled_from(["text/plain", "", None]) | header_text,
    )
    host = mostly(
        draw,
        st.sampled_from([f"127.0.0.1:{server.port}", "localhost", "[::1]:1", "10.1.2.3", None]),
        st.sampled_from(["evil.example", "localhost.evil"]) | header_text,
    )
    origin = mostly(
        draw, st.none(), st.sampled_from(["https://evil.example", "null"]) | header_text
    )
    payload = data.draw(requests(methods) | json_values)
    body = data.draw(st.just(json.dumps(payload).encode()) | st.binary(max_size=200))
    headers = {"Content-Length": str(len(body))}
    if content_type is not None:
        headers["Content-Type"] = content_type
    if host is not None:
        headers["Host"] = host
    if origin is not None:
        headers["Origin"] = origin
    refused_before = server.dispatcher.refused.copy()
    connection = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        connection.request(method, "/", body, headers)
        response = connection.getresponse()
        status, answer = response.status, response.read()
    except Exception as exc:
        tally.crash(f"HTTP {type(exc).__name__}: {exc}")
        raise
    finally:
        connection.close()
    if status in HTTP_REFUSALS or (status == 405 and method != "POST"):
        assert "error" in safe_json.loads(answer, max_bytes=1 << 20, max_depth=8)
        tally.reject(HTTP_REFUSALS.get(status, "http_405"))
        return
    if method == "OPTIONS":
        assert status == 204 and answer == b"", (status, answer)
        tally.accept()
        return
    if status == 501:  # a method http.server has no handler for, e.g. PUT
        assert method not in ("POST", "GET", "OPTIONS")
        tally.reject("http_501")
        return
    assert method == "POST" and status in (200, 204), (status, answer)
    try:
        sent = safe_json.loads(body, max_bytes=1 << 20, max_depth=64)
    except ValueError:
        sent = None
    reason = classify(answer if status == 200 else None, sent)
    refused = server.dispatcher.refused - refused_before
    if refused:
        reason = next(iter(refused))  # oversize, too_deep or malformed
    if reason is None:
        tally.accept()
    else:
        tally.reject(reason)


def test_every_input_is_counted_and_nothing_crashed(server: DevnetServer) -> None:
    """Runs last: the tally of all the properties above (plus three known inputs) adds up."""
    before = tally.inputs
    known = [
        {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"},
        {"jsonrpc": "2.0", "id": 2, "method": "eth_getBalance", "params": ["0x12", "latest"]},
    ]
    for request in known:
        dispatch(server, json.dumps(request).encode(), request)
    dispatch(server, b"[" * 100 + b"]" * 100, None)
    assert tally.inputs == before + 3
    assert tally.accepted >= 1 and tally.rejected["invalid_params"] >= 1
    assert tally.rejected["too_deep"] >= 1
    assert tally.crashes == []
    assert tally.inputs == tally.accepted + sum(tally.rejected.values())
