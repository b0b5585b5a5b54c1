"""FLChain's views read with eth_abi (`contracts/views.py: ViewCodec`) give what web3's own
contract calls give, on eth-tester and anvil, batched or not; `ViewReader` (the views over plain
JSON-RPC, for `devnet status`) reads what `FLChainClient` reads and turns a bad endpoint into
one `ViewError`."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from chainkit import INITIAL, deployed, digest, reverts
from httpkit import QuietHandler, serving

from flchain.contracts import ContractRevert, FLChainClient, TaskParams
from flchain.contracts.errors import revert_reason
from flchain.contracts.views import ViewError, ViewReader, view_codecs


def _params() -> TaskParams:
    return TaskParams(
        config_digest=digest("config"),
        initial_digest=INITIAL,
        min_members=3,
        max_members=3,
        submit_window=1000,
        vote_window=1000,
        alarm_window=1000,
        quorum_bps=6000,
        alarm_bps=6000,
        stake=10**15,
        max_rounds=5,
        rep_floor=0,
    )


@pytest.fixture(scope="module", params=["eth-tester", "anvil"])
def task(
    request: pytest.FixtureRequest,
) -> Iterator[tuple[FLChainClient, list[FLChainClient], int]]:
    """A task of three members in round 1, member 0's update committed."""
    with deployed(request, 3) as (_chain, owner, members, _outsider):
        task_id = owner.create_task(_params())
        for i, member in enumerate(members):
            member.join(task_id, f"peer-{i}".encode(), digest(f"x25519-{i}"))
        members[0].submit(task_id, 1, digest("update-0"), 100, 0, -5)
        yield owner, members, task_id


def _outcome(read: Callable[[], Any]) -> tuple[str, Any]:
    """("value", what a read returned) or ("revert", the contract's reason)."""
    try:
        return "value", read()
    except Exception as exc:
        reason = revert_reason(exc) if not isinstance(exc, ContractRevert) else exc.reason
        if reason is None:
            raise
        return "revert", reason


def test_every_view_reads_as_web3s_own_call_reads_it(task: tuple) -> None:
    owner, members, task_id = task
    args = {
        "task_count": (),
        "get_task": (task_id,),
        "get_round": (task_id, 1),
        "get_member": (task_id, 1),
        "member_index": (task_id, members[2].account),
        "is_allowed": (task_id, members[0].account),
        "get_update": (task_id, 1, 0),
        "get_vote": (task_id, 1, 0),
        "get_remask": (task_id, 1, 0),
        "decryptor": (task_id, 1),
        "get_tally": (task_id, 1, digest("g"), 1),
        "reputation": (task_id, 2),
        "reputations": (task_id,),
        "consensus_weights": (task_id, 1),
        "SETTLEMENT": (),
    }
    assert set(args) == set(view_codecs())  # a new view gets a case here
    for fn, fn_args in args.items():
        web3s = _outcome(lambda fn=fn, a=fn_args: owner._contract.functions[fn](*a).call())
        assert _outcome(lambda fn=fn, a=fn_args: owner._view(fn, *a)) == web3s, fn
        batched = _outcome(lambda c=(fn, fn_args): owner._batch_calls([("task_count", ()), c]))
        assert batched == (web3s if web3s[0] == "revert" else ("value", [1, web3s[1]])), fn
    assert owner.get_update(task_id, 1, 0).loss == -5  # a signed field, decoded signed
    assert owner.get_member(task_id, 1).account == members[1].account  # checksummed


def test_a_view_that_reverts_says_why_alone_and_in_a_batch(task: tuple) -> None:
    owner, _, task_id = task
    with reverts("no task"):
        owner.get_task(task_id + 7)
    with reverts("no task"):
        owner.task_and_round(task_id + 7, 1)
    assert owner.task_and_round(task_id, 1) == (
        owner.get_task(task_id),
        owner.get_round(task_id, 1),
    )


@pytest.fixture(scope="module", params=["anvil"])
def reader_and_client(request: pytest.FixtureRequest) -> Iterator[tuple[ViewReader, object, int]]:
    with deployed(request, 3) as (chain, owner, members, _outsider):
        task_id = owner.create_task(_params())
        for i, member in enumerate(members):
            member.join(task_id, f"peer-{i}".encode(), digest(f"x25519-{i}"))
        url = chain.w3.provider.endpoint_uri  # type: ignore[union-attr]
        yield ViewReader(url, owner.address.lower()), owner, task_id


def test_views_read_as_the_client_reads_them(reader_and_client: tuple) -> None:
    reader, client, task_id = reader_and_client
    assert reader.get_task(task_id) == client.get_task(task_id)
    assert reader.get_task(task_id).current_round == 1  # the third join opened round 1
    members = reader.members(task_id)
    assert members == client.members(task_id)
    assert [m.peer_id for m in members] == [b"peer-0", b"peer-1", b"peer-2"]
    assert all(m.account == client.w3.to_checksum_address(m.account) for m in members)
    assert reader.call("task_count") == client.task_count()
    # The node's per-block read: the task and a round in one batch, as the two views give.
    assert client.task_and_round(task_id, 1) == (
        client.get_task(task_id),
        client.get_round(task_id, 1),
    )
    assert reader.calls("get_round", [(task_id, 1)])[0] == tuple(
        client._view("get_round", task_id, 1)
    )


def test_a_view_the_contract_lacks_is_refused(reader_and_client: tuple) -> None:
    reader, _, _ = reader_and_client
    with pytest.raises(ViewError, match="no view 'join'"):
        reader.call("join", 1)


@pytest.fixture
def endpoint() -> Iterator[tuple[str, list[bytes]]]:
    """An HTTP endpoint that answers each POST with the next of its queued bodies."""
    answers: list[bytes] = []

    class Handler(QuietHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            self.rfile.read(int(self.headers["Content-Length"]))
            self.answer(answers.pop(0))

    with serving(Handler) as url:
        yield url, answers


BAD_ANSWERS = {
    "not JSON": (b"<html>", "no JSON within limits"),
    "too deep": (b"[" * 100 + b"]" * 100, "no JSON within limits"),
    "not a batch": (b'{"id": 0, "result": "0x"}', "wrongly"),
    "short batch": (b"[]", "wrongly"),
    "an error": (b'[{"id": 0, "error": {"code": -32000, "message": "boom"}}]', "boom"),
    "bad hex": (b'[{"id": 0, "result": "0xzz"}]', "bad hex"),
    "undecodable": (b'[{"id": 0, "result": "0x12"}]', "cannot decode"),
}


@pytest.mark.parametrize("case", BAD_ANSWERS)
def test_a_bad_answer_is_one_view_error(endpoint: tuple[str, list[bytes]], case: str) -> None:
    url, answers = endpoint
    body, message = BAD_ANSWERS[case]
    answers.append(body)
    with pytest.raises(ViewError, match=message):
        ViewReader(url, "0x" + "11" * 20).call("task_count")


def test_an_endpoint_that_does_not_answer_is_a_view_error() -> None:
    with pytest.raises(ViewError, match="did not answer"):
        ViewReader("http://127.0.0.1:9", "0x" + "11" * 20, timeout=2).call("task_count")


def test_an_oversized_answer_is_refused(
    endpoint: tuple[str, list[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, answers = endpoint
    monkeypatch.setattr("flchain.contracts.views.MAX_RESPONSE_BYTES", 1000)
    answers.append(json.dumps([{"id": 0, "result": "0x" + "00" * 2000}]).encode())
    with pytest.raises(ViewError, match="no JSON within limits"):
        ViewReader(url, "0x" + "11" * 20).call("task_count")
