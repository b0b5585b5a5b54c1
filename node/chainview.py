"""One node's view of one task on chain: reads cached per block, woken by new blocks.

The round engine used to poll: every wait re-read the round every 0.3 s, and each read ran EVM
code in the chain's one server, ten or sixteen nodes at once. Chain state only changes when a
block is mined, so a `ChainView`:

* follows the chain's head (`follow`, a task in the engine's nursery) through a block filter
  (`eth_newBlockFilter` + `eth_getFilterChanges`: empty answers cost the server no EVM work;
  anvil, geth and the embedded chain all serve them), falling back to `eth_blockNumber` on an
  endpoint without filters;
* answers reads from a cache that lives for one head (`read`, `task`, `round`): the engine's
  waits re-read only when a block came, however many times they wake;
* wakes waiters (`wait`) on a head past the one they read at, or at a wall-clock moment (a
  phase deadline: on a chain that mines only on transactions, no block marks it), never on a
  fixed tick;
* runs every chain call under one `RetryPolicy`: transient trouble (chain down, timeouts) is
  retried with capped backoff, each attempt bounded by a cancel scope; reverts go to the
  caller. Our own transactions drop the cache, so the next read sees their effect.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar

import trio
from web3.exceptions import Web3RPCError

from flchain.contracts import ContractRevert, FLChainClient, FLChainError
from flchain.contracts.types import RoundInfo, TaskInfo

log = logging.getLogger("flchain.node.chainview")
T = TypeVar("T")

# Errors worth retrying: the chain is down, slow or restarting. Anything else is a bug or a
# revert and goes to the caller.
TRANSIENT = (FLChainError, OSError, ConnectionError, TimeoutError, trio.TooSlowError)


@dataclass(frozen=True)
class RetryPolicy:
    """How chain calls are retried: backoff from `first` doubling up to `largest` seconds; a
    read is given at most `read_timeout` seconds per attempt, a transaction (mined, receipt
    read) `send_timeout`: a hung HTTP call is abandoned and tried afresh.

    The bounds are short so that a node whose host was cut off notices within seconds that
    its link is back: a call stuck in a TCP connect made during the cut would wait for the
    kernel's next SYN retry, up to tens of seconds, and the rounds go on without it."""

    first: float = 0.5
    largest: float = 2.0
    read_timeout: float = 10.0
    send_timeout: float = 120.0

    def __post_init__(self) -> None:
        if not 0 < self.first <= self.largest or not 0 < self.read_timeout <= self.send_timeout:
            raise ValueError(f"bad retry policy: {self}")


DEFAULT_RETRY = RetryPolicy()
# A view whose head nobody follows (before `follow` starts, or an engine driven by hand) has
# its waiters look again this often.
UNFOLLOWED_RECHECK = 0.3


@dataclass(frozen=True)
class HeadFollowing:
    """How often the head follower asks the endpoint for new blocks: an empty filter answer
    is a few hundred bytes and no EVM work."""

    interval: float = 0.1
    # a filter the endpoint forgot (restart, expiry) is installed again after this many errors
    reinstall_after: int = 2


class ChainView:
    """The task's chain state for one node; see the module docstring."""

    def __init__(
        self,
        client: FLChainClient,
        task_id: int,
        *,
        retry: RetryPolicy = RetryPolicy(),
        heads: HeadFollowing = HeadFollowing(),
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.client = client
        self.task_id = task_id
        self.retry = retry
        self.heads = heads
        self._on_error = on_error
        self.head = -1  # the latest block number seen; -1 before the first
        self.following = False  # whether `follow` runs (reads are cached only then)
        self._cache: dict[Hashable, Any] = {}
        self._changed = trio.Event()

    # ------------------------------------------------------------------ calls
    async def call(self, fn: Callable[..., T], *args: Any, timeout: float | None = None) -> T:
        """`fn(*args)` in a worker thread under the retry policy, each attempt bounded by
        `timeout` (default: the policy's read timeout); never cached."""
        delay = self.retry.first
        limit = self.retry.read_timeout if timeout is None else timeout
        while True:
            try:
                with trio.fail_after(limit):
                    return await trio.to_thread.run_sync(lambda: fn(*args), abandon_on_cancel=True)
            except ContractRevert:
                raise
            except TRANSIENT as exc:
                name = getattr(fn, "__name__", "call")
                if self._on_error is not None:
                    self._on_error(f"chain: {name}: {exc!r}")
                log.warning("chain call %s failed (%r); retrying in %.1fs", name, exc, delay)
                await trio.sleep(delay)
                delay = min(delay * 2, self.retry.largest)

    async def send(self, fn: Callable[..., T], *args: Any) -> T:
        """A transaction (`call`), after which cached reads are dropped: the block that
        holds it may reach us before the head follower sees it."""
        try:
            return await self.call(fn, *args, timeout=self.retry.send_timeout)
        finally:
            self._cache.clear()

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)`, read at most once per head (`args` must be hashable). Only while
        `follow` runs: without it no new head would ever drop the cache."""
        if not self.following:
            return await self.call(fn, *args)
        key = (getattr(fn, "__name__", repr(fn)), args)
        if key in self._cache:
            return self._cache[key]
        head = self.head
        value = await self.call(fn, *args)
        if head == self.head:  # a new head meanwhile: the value may be older than it
            self._cache[key] = value
        return value

    async def task(self) -> TaskInfo:
        return await self.read(self.client.get_task, self.task_id)

    async def round(self, r: int) -> RoundInfo:
        return await self.read(self.client.get_round, self.task_id, r)

    # ------------------------------------------------------------------ waiting
    async def wait(self, after: int, until: float | None = None) -> None:
        """Return once the head is past block `after`, or at wall-clock time `until`
        (`time.time()`) if that comes first; at once when either has happened.

        `after` is the head a caller saw before its reads (`self.head`): a block that came
        while it was reading would otherwise wake nobody, and the caller would sleep through
        the last block of a phase until the phase's deadline. While `follow` does not run,
        this returns after UNFOLLOWED_RECHECK seconds at most (callers read again)."""
        while self.head <= after:
            timeout = math.inf if until is None else until - time.time()
            if timeout <= 0:
                return
            if not self.following:  # nobody would wake us: look again after a moment
                await trio.sleep(min(timeout, UNFOLLOWED_RECHECK))
                return
            changed = self._changed
            with trio.move_on_after(timeout):
                await changed.wait()

    def advance(self, head: int) -> None:
        """A new head: drop the cache and wake the waiters (the follower calls this)."""
        if head <= self.head:
            return
        self.head = head
        self._cache.clear()
        self._changed.set()
        self._changed = trio.Event()

    # ------------------------------------------------------------------ following the head
    async def follow(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Follow the chain's head for good: the engine's nursery runs this beside the rounds.
        Started once the first head is known."""
        self.advance(await self.call(self._block_number))
        self.following = True
        task_status.started()
        try:
            await self._follow()
        finally:
            self.following = False
            self._cache.clear()

    async def _follow(self) -> None:
        w3 = self.client.w3
        filter_id: str | None = None
        failures = 0
        use_filter = True
        while True:
            await trio.sleep(self.heads.interval)
            try:
                if use_filter and filter_id is None:
                    filter_id = await self._install_filter(w3)
                    use_filter = filter_id is not None
                    # a filter reports the blocks after its own: one mined since our last
                    # look would go unseen until the next
                    self.advance(await self._attempt(self._block_number))
                if filter_id is not None:
                    changes = await self._attempt(lambda f=filter_id: w3.eth.get_filter_changes(f))
                    if not changes:
                        failures = 0
                        continue
                self.advance(await self._attempt(self._block_number))
                failures = 0
            except (*TRANSIENT, ValueError, Web3RPCError) as exc:  # e.g. filter not found
                failures += 1
                if failures >= self.heads.reinstall_after:
                    filter_id, use_filter = None, True
                log.debug("head follower: %r", exc)
                await trio.sleep(min(self.retry.largest, self.retry.first * failures))

    async def _install_filter(self, w3: Any) -> str | None:
        """A new block filter, or None when the endpoint has no filters (then the follower
        asks for the block number each time)."""
        try:
            installed = await self._attempt(lambda: w3.eth.filter("latest"))
        except (Web3RPCError, ValueError) as exc:  # the method does not exist there
            log.info("no block filters at the endpoint (%r); following eth_blockNumber", exc)
            return None
        return installed.filter_id

    async def _attempt(self, fn: Callable[[], T]) -> T:
        """One try of a follower call, bounded like any read."""
        with trio.fail_after(self.retry.read_timeout):
            return await trio.to_thread.run_sync(fn, abandon_on_cancel=True)

    def _block_number(self) -> int:
        return int(self.client.w3.eth.block_number)
