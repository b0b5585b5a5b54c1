"""One node's view of one task on chain: reads cached per block, woken by new blocks.

The round engine used to poll: every wait re-read the round every 0.3 s, and each read ran EVM
code in the chain's one server, ten or sixteen nodes at once. Chain state only changes when a
block is mined, so a `ChainView`:

* follows the chain's head (`follow`, a task in the engine's nursery): pushed by
  `eth_subscribe("newHeads")` over a WebSocket where the endpoint offers one (anvil and the
  embedded chain serve it on their HTTP port, so the ws:// URL is derived from the RPC URL;
  `HeadFollowing.ws_url` names another), else through a block filter (`eth_newBlockFilter` +
  `eth_getFilterChanges`: empty answers cost the server no EVM work; anvil, geth and the
  embedded chain all serve them), else by `eth_blockNumber` on an endpoint without filters.
  A WebSocket that fails (refused, closed, silent through a ping) hands over to the filter at
  once and is tried again `ws_retry` seconds later; connect, subscribe and every receive run
  under cancel scopes, so a hung socket costs seconds, never the follower;
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

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import trio
import trio_websocket
from web3.exceptions import Web3RPCError

from flchain import safe_json
from flchain.contracts import ContractRevert, FLChainClient, FLChainError
from flchain.contracts.types import RoundInfo, TaskInfo
from flchain.node.status import redact_url

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


# Bounds on what a chain endpoint's WebSocket may send us: a newHeads notification is ~2 KB
# (anvil's carries the block's transaction hashes too).
WS_MAX_MESSAGE = 4 * 1024 * 1024
WS_MAX_DEPTH = 32


@dataclass(frozen=True)
class HeadFollowing:
    """How the head follower learns of new blocks: pushed over a WebSocket where the
    endpoint offers one, else by asking every `interval` seconds (an empty filter answer is a
    few hundred bytes and no EVM work)."""

    interval: float = 0.1
    # a filter the endpoint forgot (restart, expiry) is installed again after this many errors
    reinstall_after: int = 2
    websocket: bool = True  # try eth_subscribe("newHeads") first
    ws_url: str | None = None  # None: the HTTP endpoint's own URL as ws:// (wss:// for https)
    ws_timeout: float = 5.0  # connect and subscribe, and a ping's answer
    ws_idle: float = 20.0  # no message for this long: ping, to tell a quiet chain from a dead link
    ws_retry: float = 30.0  # after a WebSocket failure, follow by filter this long, then retry
    # Pushed heads wake the waiters at once, then at most once per `settle` seconds: a chain
    # that mines a block per transaction sends a burst of them as every member commits, and
    # each wake-up drops the read cache, so every waiter would read the chain again per block.
    settle: float = 0.1


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
        # how the follower learns of blocks now: "websocket", "filter" or "block_number"
        self.transport: str | None = None
        self._ws_failures = 0
        self._cache: dict[Hashable, Any] = {}
        self._round_hint = 0  # the task's current round when last read (0: none yet)
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
        key = _cache_key(fn, args)
        if key in self._cache:
            return self._cache[key]
        head = self.head
        value = await self.call(fn, *args)
        if head == self.head:  # a new head meanwhile: the value may be older than it
            self._cache[key] = value
        return value

    async def task(self) -> TaskInfo:
        """The task at this head. A head that needs the task nearly always needs its open
        round too (the engine waits on the round's bitmaps): on a head where neither was
        read yet, both come in one batch (`FLChainClient.task_and_round`), the round being
        the one the task last had open."""
        task_key = _cache_key(self.client.get_task, (self.task_id,))
        if self.following and task_key not in self._cache and self._round_hint:
            round_key = _cache_key(self.client.get_round, (self.task_id, self._round_hint))
            if round_key not in self._cache:
                head = self.head
                task, info = await self.call(
                    self.client.task_and_round, self.task_id, self._round_hint
                )
                if head == self.head:
                    self._cache[task_key], self._cache[round_key] = task, info
                self._round_hint = task.current_round
                return task
        task = await self.read(self.client.get_task, self.task_id)
        self._round_hint = task.current_round
        return task

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
        polling = _Polling()
        url = self.ws_endpoint()
        if url is None:
            await self._poll(polling)
            return
        while True:
            try:
                await self._follow_ws(url, polling)
            except Exception as exc:  # any failure of the push transport: poll instead
                self._ws_failures += 1
                level = logging.INFO if self._ws_failures == 1 else logging.DEBUG
                log.log(
                    level,
                    "head follower: WebSocket %s failed (%r); polling, trying again in %g s",
                    redact_url(url),
                    exc,
                    self.heads.ws_retry,
                )
            with trio.move_on_after(self.heads.ws_retry):
                await self._poll(polling)

    def ws_endpoint(self) -> str | None:
        """The WebSocket URL the follower subscribes at, or None to poll only."""
        if not self.heads.websocket:
            return None
        if self.heads.ws_url:
            return self.heads.ws_url
        provider = getattr(self.client.w3, "provider", None)
        endpoint = getattr(provider, "endpoint_uri", None)
        return websocket_url(str(endpoint)) if endpoint else None

    async def _follow_ws(self, url: str, polling: _Polling) -> None:
        """Follow heads by eth_subscribe("newHeads") until the connection fails (raises)."""
        heads = self.heads
        async with trio_websocket.open_websocket_url(
            url,
            connect_timeout=heads.ws_timeout,
            disconnect_timeout=heads.ws_timeout,
            max_message_size=WS_MAX_MESSAGE,
        ) as ws:
            with trio.fail_after(heads.ws_timeout):
                await ws.send_message(_request(1, "eth_subscribe", ["newHeads"]))
                subscription: Any = None
                while subscription is None:
                    subscription = _answer(_decode(await ws.get_message()), 1)
                if not isinstance(subscription, str):
                    raise ValueError(f"not a subscription id: {subscription!r}")
                # A block mined before the subscription took effect would go unseen until the
                # next: ask where the head is, on the same connection (answered in order).
                await ws.send_message(_request(2, "eth_blockNumber", []))
            if polling.filter_id is not None:  # not polled from now on: free it
                await self._uninstall(polling)
            self.transport = "websocket"
            log.info("following the chain's head over WebSocket at %s", redact_url(url))
            self._ws_failures = 0
            pending: int | None = None  # the newest head not advanced to yet
            last = -math.inf  # when we last advanced
            while True:
                now = trio.current_time()
                if pending is not None and now - last >= heads.settle:
                    self.advance(pending)
                    pending, last = None, now
                wait = heads.ws_idle if pending is None else last + heads.settle - now
                with trio.move_on_after(wait) as idle:
                    message = _decode(await ws.get_message())
                if idle.cancelled_caught:
                    if pending is None:  # silence: a quiet chain or a dead link?
                        with trio.fail_after(heads.ws_timeout):  # a dead link raises here
                            await ws.ping()
                    continue
                head = _head_of(message, subscription)
                if head is not None:
                    pending = head if pending is None else max(pending, head)

    async def _poll(self, state: _Polling) -> None:
        """Follow heads through a block filter (or eth_blockNumber) until cancelled."""
        w3 = self.client.w3
        self.transport = "filter" if state.use_filter else "block_number"
        while True:
            await trio.sleep(self.heads.interval)
            try:
                if state.use_filter and state.filter_id is None:
                    state.filter_id = await self._install_filter(w3)
                    state.use_filter = state.filter_id is not None
                    self.transport = "filter" if state.use_filter else "block_number"
                    # a filter reports the blocks after its own: one mined since our last
                    # look would go unseen until the next
                    self.advance(await self._attempt(self._block_number))
                if state.filter_id is not None:
                    changes = await self._attempt(
                        lambda f=state.filter_id: w3.eth.get_filter_changes(f)
                    )
                    if not changes:
                        state.failures = 0
                        continue
                self.advance(await self._attempt(self._block_number))
                state.failures = 0
            except (*TRANSIENT, ValueError, Web3RPCError) as exc:  # e.g. filter not found
                state.failures += 1
                if state.failures >= self.heads.reinstall_after:
                    state.filter_id, state.use_filter = None, True
                log.debug("head follower: %r", exc)
                await trio.sleep(min(self.retry.largest, self.retry.first * state.failures))

    async def _uninstall(self, state: _Polling) -> None:
        """Drop the polling filter, best effort (the endpoint expires it anyway)."""
        filter_id, state.filter_id = state.filter_id, None
        w3 = self.client.w3
        with contextlib.suppress(*TRANSIENT, ValueError, Web3RPCError):
            await self._attempt(lambda: w3.eth.uninstall_filter(filter_id))

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


@dataclass
class _Polling:
    """The polling follower's state, kept while the WebSocket follower runs in between."""

    filter_id: str | None = None
    use_filter: bool = True
    failures: int = 0


def websocket_url(rpc_url: str) -> str | None:
    """The ws:// (wss://) URL of an http:// (https://) JSON-RPC endpoint, path and query
    kept: anvil and `flchain chain serve` answer both on one port. None for other schemes."""
    parts = urlsplit(rpc_url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme.lower())
    if scheme is None or not parts.netloc:
        return None
    return urlunsplit((scheme, parts.netloc, parts.path or "/", parts.query, ""))


def _request(request_id: int, method: str, params: list[Any]) -> str:
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})


def _decode(message: str | bytes) -> dict[str, Any]:
    """One message from the endpoint, bounded like every peer input."""
    decoded = safe_json.loads(message, max_bytes=WS_MAX_MESSAGE, max_depth=WS_MAX_DEPTH)
    if not isinstance(decoded, dict):
        raise ValueError("expected a JSON-RPC object over the WebSocket")
    return decoded


def _answer(message: dict[str, Any], request_id: int) -> Any:
    """The result of our request `request_id`, None for any other message; raises on an
    error answer (an endpoint without subscriptions)."""
    if message.get("id") != request_id:
        return None
    if "error" in message or message.get("result") is None:
        raise ValueError(f"the endpoint refused: {message.get('error')!r}")
    return message["result"]


def _head_of(message: dict[str, Any], subscription: Any) -> int | None:
    """The block number a message tells of: a newHeads notification of our subscription or
    the answer to our eth_blockNumber (id 2)."""
    if message.get("method") == "eth_subscription":
        params = message.get("params")
        if not isinstance(params, dict) or params.get("subscription") != subscription:
            return None
        result = params.get("result")
        return _quantity(result.get("number") if isinstance(result, dict) else None)
    answer = _answer(message, 2)
    return None if answer is None else _quantity(answer)


def _quantity(value: Any) -> int:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise ValueError(f"not a block number: {value!r}")
    return int(value, 16)


def _cache_key(fn: Callable[..., Any], args: tuple[Any, ...]) -> Hashable:
    """A read's key in the per-head cache: the view's name and its arguments."""
    return (getattr(fn, "__name__", repr(fn)), args)
