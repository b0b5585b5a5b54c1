"""Client pieces without a chain: revert decoding, retries, nonces, argument checks, types."""

from __future__ import annotations

import threading
from dataclasses import fields

import pytest
import requests
from eth_abi import encode as abi_encode
from eth_account import Account
from web3 import Web3
from web3.exceptions import ContractLogicError, Web3RPCError

from flchain.contracts import (
    REP_UNIT,
    ContractRevert,
    FLChainClient,
    InvalidArgumentError,
    MemberInfo,
    NonceManager,
    RetryPolicy,
    RoundInfo,
    RPCError,
    TaskInfo,
    TaskParams,
    UpdateCommit,
    Vote,
    bitmap,
    bitmap_indices,
    decode_loss,
    encode_loss,
    load_artifact,
)
from flchain.contracts.errors import decode_revert_data, revert_reason
from flchain.contracts.rpc import (
    call_with_retries,
    environment_session,
    is_nonce_error,
    is_transient,
)


def error_data(reason: str) -> bytes:
    return bytes.fromhex("08c379a0") + abi_encode(["string"], [reason])


# ---------------------------------------------------------------- revert reasons


def test_revert_reason_reads_the_revert_data_of_contract_logic_errors() -> None:
    data = "0x" + error_data("not member").hex()
    exc = ContractLogicError("execution reverted: whatever", data=data)
    assert revert_reason(exc) == "not member"


def test_revert_reason_falls_back_to_the_message() -> None:
    assert revert_reason(ContractLogicError("execution reverted: wrong phase")) == "wrong phase"
    # eth-tester's TransactionFailed carries only a message
    assert revert_reason(RuntimeError("execution reverted: already voted")) == "already voted"
    assert revert_reason(RuntimeError("execution reverted")) == ""
    assert revert_reason(RuntimeError(error_data("bad bitmap"))) == "bad bitmap"


def test_revert_reason_is_none_for_other_failures() -> None:
    assert revert_reason(requests.exceptions.ConnectionError("refused")) is None
    assert revert_reason(ValueError("nonce too low")) is None


def test_decode_revert_data_handles_panics_empty_and_custom_errors() -> None:
    panic = bytes.fromhex("4e487b71") + (0x11).to_bytes(32, "big")
    assert decode_revert_data(panic) == "panic 0x11"
    assert decode_revert_data(b"") == ""
    assert decode_revert_data(bytes.fromhex("deadbeef")) == "custom error 0xdeadbeef"
    assert decode_revert_data(bytes.fromhex("08c379a0") + b"\x01").startswith("undecodable")


def test_contract_revert_message_names_reason_and_transaction() -> None:
    exc = ContractRevert("wrong round", tx_hash="0xabc")
    assert (exc.reason, exc.tx_hash) == ("wrong round", "0xabc")
    assert str(exc) == "contract reverted: wrong round (tx 0xabc)"
    assert str(ContractRevert("")) == "contract reverted: no reason given"


# ---------------------------------------------------------------- retries


def http_error(status: int) -> requests.exceptions.HTTPError:
    response = requests.Response()
    response.status_code = status
    return requests.exceptions.HTTPError(f"{status}", response=response)


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (requests.exceptions.ConnectionError("reset"), True),
        (requests.exceptions.ReadTimeout("slow"), True),
        (TimeoutError(), True),
        (http_error(429), True),
        (http_error(503), True),
        (http_error(400), False),
        (Web3RPCError("limit", rpc_response={"error": {"code": -32005, "message": "x"}}), True),
        (Web3RPCError("rate limit reached"), True),
        (Web3RPCError("nonce too low", rpc_response={"error": {"code": -32003}}), False),
        (ContractLogicError("execution reverted: no task"), False),
        (ValueError("bad"), False),
    ],
)
def test_transient_failures_are_told_apart(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient


def test_transient_failures_are_retried_with_growing_delays() -> None:
    calls: list[int] = []
    sleeps: list[float] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 4:
            raise requests.exceptions.ConnectionError("connection reset")
        return "ok"

    policy = RetryPolicy(attempts=5, base_delay=0.1, max_delay=0.3, multiplier=2.0, jitter=0.0)
    assert call_with_retries(flaky, policy, sleep=sleeps.append) == "ok"
    assert len(calls) == 4
    assert sleeps == pytest.approx([0.1, 0.2, 0.3])


def test_retries_stop_at_the_first_permanent_error_and_after_the_last_attempt() -> None:
    calls: list[int] = []

    def revert() -> None:
        calls.append(1)
        raise ContractLogicError("execution reverted: not owner")

    with pytest.raises(ContractLogicError):
        call_with_retries(revert, RetryPolicy(), sleep=lambda _: None)
    assert len(calls) == 1

    def down() -> None:
        raise requests.exceptions.ConnectionError("refused")

    with pytest.raises(RPCError, match="after 3 attempts") as info:
        call_with_retries(down, RetryPolicy(attempts=3), what="eth_call", sleep=lambda _: None)
    assert isinstance(info.value.__cause__, requests.exceptions.ConnectionError)


def test_the_rpc_session_takes_the_environment_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    remote = environment_session("https://rpc.example/v1")
    assert remote.proxies.get("https") == "http://proxy.example:3128"
    assert not remote.trust_env  # requests does not walk the environment per call
    local = environment_session("http://127.0.0.1:8545")
    assert "http" not in local.proxies and "https" not in local.proxies  # NO_PROXY holds
    monkeypatch.setenv("HTTPS_PROXY", "http://elsewhere.example:8080")  # later changes
    assert remote.proxies.get("https") == "http://proxy.example:3128"  # are not looked up


@pytest.mark.parametrize(
    "kwargs", [{"attempts": 0}, {"base_delay": -1}, {"multiplier": 0.5}, {"jitter": 1.0}]
)
def test_retry_policy_rejects_nonsense(kwargs: dict) -> None:
    with pytest.raises(InvalidArgumentError):
        RetryPolicy(**kwargs)


@pytest.mark.parametrize(
    ("message", "is_nonce"),
    [
        ("nonce too low", True),
        ("Invalid transaction nonce: Expected 1, but got 0", True),
        ("already known", True),
        ("replacement transaction underpriced", True),
        ("insufficient funds for gas * price + value", False),
    ],
)
def test_nonce_errors_are_recognised(message: str, is_nonce: bool) -> None:
    assert is_nonce_error(ValueError(message)) is is_nonce


# ---------------------------------------------------------------- nonces


def test_concurrent_reservations_get_distinct_consecutive_nonces() -> None:
    fetches: list[int] = []

    def fetch() -> int:
        fetches.append(1)
        return 7

    nonces = NonceManager(fetch)
    seen: list[int] = []

    def worker() -> None:
        for _ in range(50):
            with nonces.reserve() as nonce:
                seen.append(nonce)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(seen) == list(range(7, 7 + 400))
    assert len(fetches) == 1
    assert nonces.peek == 407


def test_a_failed_send_resyncs_the_nonce_from_the_node() -> None:
    pending = iter([3, 3, 9])
    nonces = NonceManager(lambda: next(pending))
    with nonces.reserve() as nonce:
        assert nonce == 3
    with pytest.raises(RuntimeError), nonces.reserve() as nonce:
        assert nonce == 4
        raise RuntimeError("send failed")
    assert nonces.peek is None
    with nonces.reserve() as nonce:
        assert nonce == 3  # the node's pending count: the failed nonce is reused
    nonces.resync()
    with nonces.reserve() as nonce:
        assert nonce == 9


# ---------------------------------------------------------------- arguments and types


def test_task_params_are_checked_before_sending() -> None:
    params = TaskParams(b"\x01" * 32, b"\x02" * 32, 2, 4, 60, 60, reward=5)
    args = params.as_args()
    assert args[:6] == [b"\x01" * 32, b"\x02" * 32, 2, 4, 60, 60]
    assert args[-2:] == [False, 10_000]  # allowlist off; claims capped at 10,000 samples
    assert args[-2] is False
    # The reward travels as the call's value: create_task's inputs are the rest, in order.
    (fn,) = [i for i in load_artifact().abi if i.get("name") == "create_task"]
    assert [i["name"] for i in fn["inputs"]] == [
        f.name for f in fields(TaskParams) if f.name != "reward"
    ]
    assert len(args) == len(fn["inputs"])
    # The defaults make a task the contract accepts: the alarm threshold is not below the
    # quorum, and the floor is below the reputation a member joins with.
    assert params.quorum_bps <= params.alarm_bps <= 10_000
    assert params.rep_floor < REP_UNIT
    with pytest.raises(InvalidArgumentError, match="reward"):
        TaskParams(b"\x01" * 32, b"\x02" * 32, 2, 4, 60, 60, reward=-1).as_args()
    with pytest.raises(InvalidArgumentError, match="config_digest must be 32 bytes"):
        TaskParams(b"\x01" * 31, b"\x02" * 32, 2, 4, 60, 60).as_args()
    with pytest.raises(InvalidArgumentError, match="min_members"):
        TaskParams(b"\x01" * 32, b"\x02" * 32, -1, 4, 60, 60).as_args()
    with pytest.raises(InvalidArgumentError, match="stake"):
        TaskParams(b"\x01" * 32, b"\x02" * 32, 1, 4, 60, 60, stake=True).as_args()  # type: ignore[arg-type]


def test_losses_are_fixed_point_millionths() -> None:
    assert encode_loss(0.6931472) == 693147
    assert encode_loss(-2.5) == -2_500_000
    assert decode_loss(encode_loss(1.234567)) == pytest.approx(1.234567)
    for bad in (float("nan"), float("inf"), 1e13):
        with pytest.raises(InvalidArgumentError):
            encode_loss(bad)


def test_bitmaps_round_trip_member_indices() -> None:
    assert bitmap([0, 2, 255]) == 1 | 4 | 1 << 255
    assert bitmap_indices(bitmap([0, 2, 255])) == [0, 2, 255]
    assert bitmap([]) == 0
    with pytest.raises(InvalidArgumentError, match="outside"):
        bitmap([256])


def test_client_rejects_unencodable_arguments_before_any_rpc() -> None:
    client = FLChainClient(Web3(), "0x" + "11" * 20, Account.create())  # no provider at all
    with pytest.raises(InvalidArgumentError, match="at most 64 bytes"):
        client.join(1, b"p" * 65, b"\x01" * 32, value=0)
    with pytest.raises(InvalidArgumentError, match="x25519"):
        client.join(1, b"peer", b"\x01" * 31, value=0)
    with pytest.raises(InvalidArgumentError, match="he_key"):
        client.join(1, b"peer", b"\x01" * 32, b"\x02" * 33, value=0)
    with pytest.raises(InvalidArgumentError, match="peer_proof"):
        client.join(1, b"peer", b"\x01" * 32, peer_proof=b"s" * 65, value=0)
    with pytest.raises(InvalidArgumentError, match="digest"):
        client.remask(1, 1, bytes(31))
    with pytest.raises(InvalidArgumentError, match="digest"):
        client.publish_sum(1, 1, "00" * 32)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="round"):
        client.decryptor(1, -1)
    with pytest.raises(InvalidArgumentError, match="index"):
        client.get_remask(1, 1, 257)
    with pytest.raises(InvalidArgumentError, match="int64"):
        client.submit(1, 1, b"\x01" * 32, 1, 0, 2**63)
    with pytest.raises(InvalidArgumentError, match="digest"):
        client.vote(1, 1, b"short", 0)
    with pytest.raises(InvalidArgumentError, match="round"):
        client.close_round(1, -1)
    with pytest.raises(InvalidArgumentError, match="not an address"):
        client.set_allowed(1, "0x1234")
    with pytest.raises(InvalidArgumentError, match="amount"):
        client.fund_task(1, 0)
    with pytest.raises(InvalidArgumentError, match="amount"):
        client.fund_task(1, -5)
    with pytest.raises(InvalidArgumentError, match="task_id"):
        client.claim_refund(-1)
    with pytest.raises(InvalidArgumentError, match="task_id"):
        client.withdraw(-1)
    with pytest.raises(InvalidArgumentError, match="not an address"):
        FLChainClient(Web3(), "nowhere", Account.create())


@pytest.mark.parametrize(
    ("cls", "view"),
    [
        (TaskInfo, "get_task"),
        (RoundInfo, "get_round"),
        (MemberInfo, "get_member"),
        (UpdateCommit, "get_update"),
        (Vote, "get_vote"),
    ],
)
def test_view_dataclasses_follow_the_contract_structs(cls: type, view: str) -> None:
    (fn,) = [i for i in load_artifact().abi if i.get("name") == view]
    (output,) = fn["outputs"]
    assert [c["name"] for c in output["components"]] == [f.name for f in fields(cls)]
