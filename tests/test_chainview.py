"""The node's chain view against a fake chain: reads cached per block, waits woken by new
blocks or wall-clock deadlines, one retry policy. Runs in milliseconds."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest
import trio
from web3.exceptions import Web3RPCError

from flchain.contracts import ContractRevert, FLChainError
from flchain.node.chainview import ChainView, HeadFollowing, RetryPolicy

FAST_RETRY = RetryPolicy(first=0.01, largest=0.02, read_timeout=1.0)
FAST_HEADS = HeadFollowing(interval=0.01)


class FakeEth:
    """Blocks and a block filter, as web3's `w3.eth` offers them."""

    def __init__(self, *, filters: bool = True) -> None:
        self.block_number = 7
        self.filters = filters
        self.installed = 0
        self.pending: list[bytes] = []
        self.on_install: Any = None  # runs as a filter is installed (a block may come then)

    def filter(self, kind: str) -> Any:
        assert kind == "latest"
        if not self.filters:
            raise ValueError(
                {"code": -32601, "message": "the method eth_newBlockFilter does not exist"}
            )
        self.installed += 1
        if self.on_install is not None:
            self.on_install()
        self.pending = []  # a new filter reports only the blocks after it
        return SimpleNamespace(filter_id=f"0x{self.installed}")

    def get_filter_changes(self, filter_id: str) -> list[bytes]:
        if filter_id != f"0x{self.installed}":  # the endpoint restarted: filters are gone
            raise Web3RPCError("filter not found")
        changes, self.pending = self.pending, []
        return changes

    def mine(self) -> None:
        self.block_number += 1
        self.pending.append(bytes(32))


class FakeClient:
    def __init__(self, eth: FakeEth | None = None) -> None:
        self.w3 = SimpleNamespace(eth=eth or FakeEth())
        self.reads = 0
        self.rounds: dict[int, str] = {1: "open"}
        self.failures = 0

    def get_round(self, task_id: int, r: int) -> str:
        self.reads += 1
        if self.failures:
            self.failures -= 1
            raise FLChainError("connection refused")
        return self.rounds[r]

    def vote(self, task_id: int, r: int) -> str:
        self.rounds[r] = "voted"
        return "tx"

    def refuse(self) -> None:
        raise ContractRevert("wrong phase")


def _run(scenario: Any, client: FakeClient, *, follow: bool = True) -> None:
    async def main() -> None:
        view = ChainView(client, 1, retry=FAST_RETRY, heads=FAST_HEADS)  # type: ignore[arg-type]
        async with trio.open_nursery() as nursery:
            if follow:
                await nursery.start(view.follow)
            await scenario(view)
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_reads_are_cached_for_one_block_and_renewed_by_the_next() -> None:
    client = FakeClient()

    async def scenario(view: ChainView) -> None:
        assert view.head == 7
        assert await view.round(1) == "open"
        assert await view.round(1) == "open"
        assert client.reads == 1  # the same block: one read
        client.rounds[1] = "finalized"
        client.w3.eth.mine()
        with trio.fail_after(1):
            await view.wait(after=7)
        assert view.head == 8
        assert await view.round(1) == "finalized"
        assert client.reads == 2

    _run(scenario, client)


def test_a_head_reads_the_task_and_its_open_round_in_one_call() -> None:
    """On a new head the task and the round it last had open come in one batch, and the
    round is then read from the cache; a new round opened at that head is read on its own."""
    client = FakeClient()
    batches: list[int] = []
    task = SimpleNamespace(current_round=1)

    def get_task(task_id: int) -> Any:
        client.reads += 1
        return task

    def task_and_round(task_id: int, r: int) -> tuple[Any, str]:
        batches.append(r)
        return task, client.rounds[r]

    client.get_task = get_task  # type: ignore[attr-defined]
    client.task_and_round = task_and_round  # type: ignore[attr-defined]

    async def scenario(view: ChainView) -> None:
        assert (await view.task()).current_round == 1  # no round known yet: the task alone
        assert client.reads == 1 and batches == []
        client.w3.eth.mine()
        with trio.fail_after(1):
            await view.wait(after=7)
        assert (await view.task()).current_round == 1
        assert await view.round(1) == "open"
        assert batches == [1] and client.reads == 1  # one batch, nothing else
        client.rounds[2] = "open"
        task.current_round = 2
        client.w3.eth.mine()
        with trio.fail_after(1):
            await view.wait(after=8)
        assert (await view.task()).current_round == 2
        assert await view.round(2) == "open"  # round 2 was not in that batch: read alone
        assert batches == [1, 1] and client.reads == 2

    _run(scenario, client)


def test_without_the_follower_nothing_is_cached() -> None:
    client = FakeClient()

    async def scenario(view: ChainView) -> None:
        await view.round(1)
        client.rounds[1] = "finalized"
        assert await view.round(1) == "finalized"
        assert client.reads == 2

    _run(scenario, client, follow=False)


def test_our_own_transaction_drops_the_cache() -> None:
    client = FakeClient()

    async def scenario(view: ChainView) -> None:
        assert await view.round(1) == "open"
        assert await view.send(client.vote, 1, 1) == "tx"
        assert await view.round(1) == "voted"  # before the follower sees the block

    _run(scenario, client)


def test_a_block_that_came_during_the_reads_is_not_slept_through() -> None:
    """The waiter names the head it read at: a block mined between its read and its wait
    must wake it, or it would sleep until the phase deadline."""
    client = FakeClient()

    async def scenario(view: ChainView) -> None:
        seen = view.head
        await view.round(1)
        client.w3.eth.mine()
        with trio.fail_after(1):
            while view.head == seen:  # the follower saw the block: the event fired
                await trio.sleep(0.01)
        with trio.fail_after(0.5):
            await view.wait(seen)  # returns at once, though no further block comes

    _run(scenario, client)


def test_waits_end_at_their_wall_clock_deadline_without_a_block() -> None:
    client = FakeClient()

    async def scenario(view: ChainView) -> None:
        start = time.time()
        await view.wait(view.head, until=start + 0.2)
        assert 0.15 <= time.time() - start < 1.0
        start = time.time()
        await view.wait(view.head, until=start - 5)  # already past: at once
        assert time.time() - start < 0.05

    _run(scenario, client)


def test_transient_errors_are_retried_and_reverts_are_raised() -> None:
    client = FakeClient()
    errors: list[str] = []

    async def main() -> None:
        view = ChainView(client, 1, retry=FAST_RETRY, on_error=errors.append)  # type: ignore[arg-type]
        client.failures = 3
        assert await view.call(client.get_round, 1, 1) == "open"
        assert client.reads == 4
        assert len(errors) == 3 and "connection refused" in errors[0]
        with pytest.raises(ContractRevert):
            await view.send(client.refuse)

    trio.run(main)


def test_a_hung_call_is_abandoned_at_the_attempt_deadline_and_retried() -> None:
    calls = []

    def slow_then_fast() -> str:
        calls.append(time.time())
        if len(calls) == 1:
            time.sleep(0.5)
        return "answer"

    async def main() -> None:
        view = ChainView(FakeClient(), 1, retry=RetryPolicy(0.01, 0.02, read_timeout=0.1))  # type: ignore[arg-type]
        assert await view.call(slow_then_fast) == "answer"
        assert len(calls) == 2

    trio.run(main)


def test_an_endpoint_without_filters_is_followed_by_block_number() -> None:
    client = FakeClient(FakeEth(filters=False))

    async def scenario(view: ChainView) -> None:
        client.w3.eth.block_number = 9
        with trio.fail_after(1):
            await view.wait(after=7)
        assert view.head == 9

    _run(scenario, client)


def test_retry_policy_is_checked() -> None:
    with pytest.raises(ValueError, match="retry policy"):
        RetryPolicy(first=2.0, largest=1.0)


def test_without_the_follower_waits_return_soon_so_callers_look_again() -> None:
    client = FakeClient()

    async def scenario(view: ChainView) -> None:
        start = time.time()
        await view.wait(view.head, until=start + 30)
        assert time.time() - start < 1.0

    _run(scenario, client, follow=False)


def test_a_block_mined_as_the_filter_is_installed_is_not_missed() -> None:
    """A filter reports the blocks after its own install; the block that came between the
    follower's first look and the install must still wake the waiters."""
    eth = FakeEth()
    eth.on_install = eth.mine
    client = FakeClient(eth)

    async def scenario(view: ChainView) -> None:
        with trio.fail_after(1):
            await view.wait(after=7)
        assert view.head == 8

    _run(scenario, client)


def test_a_forgotten_filter_is_installed_again() -> None:
    """An endpoint that restarted forgets its filters ("filter not found"): the follower
    installs a new one and goes on, never dies."""
    client = FakeClient()

    async def scenario(view: ChainView) -> None:
        with trio.fail_after(1):
            while client.w3.eth.installed == 0:
                await trio.sleep(0.005)
        client.w3.eth.installed += 1  # the follower's filter id is no longer known
        client.w3.eth.mine()
        with trio.fail_after(2):
            await view.wait(after=7)
        assert view.head == 8 and client.w3.eth.installed == 3

    _run(scenario, client)
