"""The chain view follows heads pushed over a WebSocket (eth_subscribe newHeads), against the
embedded chain and real anvil, and falls back to its block filter when the socket fails.

The polling interval is set far above the test's bounds, so a wait that ends in time was
woken by a pushed head, not by a poll."""

from __future__ import annotations

import json
import socket
import threading
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import trio
from web3 import Web3
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

from flchain.devnet.anvil import spawn_anvil
from flchain.devnet.chain import DevChain
from flchain.devnet.genesis import GenesisConfig
from flchain.devnet.rpc_server import DevnetServer
from flchain.node.chainview import ChainView, HeadFollowing, RetryPolicy, websocket_url

FAST_RETRY = RetryPolicy(first=0.01, largest=0.05, read_timeout=2.0)
PUSHED = HeadFollowing(interval=30.0, ws_timeout=2.0)  # polling would be far too slow


@pytest.fixture(scope="module")
def server() -> Iterator[DevnetServer]:
    chain = DevChain(GenesisConfig(accounts=1))
    with DevnetServer(chain, port=0) as running:
        yield running
    chain.close()


def follow(
    url: str, heads: HeadFollowing, scenario: Callable[[ChainView], Awaitable[None]]
) -> None:
    client = SimpleNamespace(w3=Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 5})))

    async def main() -> None:
        view = ChainView(client, 1, retry=FAST_RETRY, heads=heads)  # type: ignore[arg-type]
        async with trio.open_nursery() as nursery:
            await nursery.start(view.follow)
            with trio.fail_after(10):
                await scenario(view)
            nursery.cancel_scope.cancel()

    trio.run(main)


async def until(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


async def mined_and_seen(view: ChainView, mine: Callable[[], Any], timeout: float = 1.0) -> None:
    """Mine a block; the view's waiters wake within `timeout`."""
    seen = view.head
    await trio.to_thread.run_sync(mine)
    with trio.fail_after(timeout):
        await view.wait(after=seen)
    assert view.head == seen + 1


def post(url: str, method: str, params: list[Any] | None = None) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []})
    request = urllib.request.Request(
        url, data=body.encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["result"]


def test_websocket_urls_come_from_the_rpc_url() -> None:
    assert websocket_url("http://127.0.0.1:8545") == "ws://127.0.0.1:8545/"
    assert websocket_url("https://user:pw@rpc.example/v3/key?x=1") == (
        "wss://user:pw@rpc.example/v3/key?x=1"
    )
    assert websocket_url("ws://h:1/p") == "ws://h:1/p"
    assert websocket_url("/tmp/geth.ipc") is None


def test_the_view_follows_heads_pushed_by_the_embedded_chain(server: DevnetServer) -> None:
    async def scenario(view: ChainView) -> None:
        await until(lambda: view.transport == "websocket")
        assert view.ws_endpoint() == server.ws_url + "/"
        for _ in range(3):
            await mined_and_seen(view, server.chain.mine)
        await trio.to_thread.run_sync(lambda: server.chain.mine(4))
        await until(lambda: view.head == server.chain.block_number, timeout=1.0)

    follow(server.rpc_url, PUSHED, scenario)


def test_the_view_follows_heads_pushed_by_anvil(anvil_bin: str) -> None:
    with spawn_anvil(accounts=1, binary=anvil_bin) as anvil:

        async def scenario(view: ChainView) -> None:
            await until(lambda: view.transport == "websocket")
            for _ in range(2):
                await mined_and_seen(view, lambda: post(anvil.rpc_url, "evm_mine"))

        follow(anvil.rpc_url, PUSHED, scenario)


def test_a_refused_websocket_falls_back_to_the_block_filter(server: DevnetServer) -> None:
    heads = HeadFollowing(interval=0.02, ws_url=server.ws_url + "/elsewhere", ws_timeout=2.0)

    async def scenario(view: ChainView) -> None:
        await until(lambda: view.transport == "filter")
        await mined_and_seen(view, server.chain.mine)

    follow(server.rpc_url, heads, scenario)


def test_a_dropped_websocket_hands_over_to_the_filter_and_comes_back(
    server: DevnetServer,
) -> None:
    heads = HeadFollowing(interval=0.02, ws_timeout=2.0, ws_retry=0.5)

    async def scenario(view: ChainView) -> None:
        await until(lambda: view.transport == "websocket")
        server.ws.close_all(refuse_new=False)  # every WebSocket client is cut off
        await until(lambda: view.transport == "filter")
        await mined_and_seen(view, server.chain.mine)
        await until(lambda: view.transport == "websocket")
        assert server.ws.open_sessions == 1
        await mined_and_seen(view, server.chain.mine, timeout=0.5)

    follow(server.rpc_url, heads, scenario)


def test_a_quiet_chain_keeps_the_websocket(server: DevnetServer) -> None:
    """No blocks for a while: the follower pings, the server answers, nothing changes."""
    heads = HeadFollowing(interval=30.0, ws_timeout=1.0, ws_idle=0.1)

    async def scenario(view: ChainView) -> None:
        await until(lambda: view.transport == "websocket")
        await trio.sleep(0.5)  # several idle periods, each ended by a ping and its pong
        assert view.transport == "websocket" and server.ws.open_sessions == 1
        await mined_and_seen(view, server.chain.mine)

    follow(server.rpc_url, heads, scenario)


@pytest.fixture
def mute_endpoint() -> Iterator[str]:
    """A WebSocket endpoint that subscribes us, then neither sends nor reads: a dead link
    that TCP alone would not report."""
    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve() -> None:
        connection, _ = listener.accept()
        ws = WSConnection(ConnectionType.SERVER)
        events: list[Any] = []
        while not any(isinstance(e, TextMessage) for e in events):
            ws.receive_data(connection.recv(65536))
            for event in ws.events():
                events.append(event)
                if isinstance(event, Request):
                    connection.sendall(ws.send(AcceptConnection()))
        answer = {"jsonrpc": "2.0", "id": 1, "result": "0x1"}
        connection.sendall(ws.send(TextMessage(data=json.dumps(answer))))
        done.wait(10)
        connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"ws://127.0.0.1:{listener.getsockname()[1]}/"
    done.set()
    thread.join(5)
    listener.close()


def test_a_dead_link_is_noticed_by_an_unanswered_ping(
    server: DevnetServer, mute_endpoint: str
) -> None:
    heads = HeadFollowing(interval=0.02, ws_url=mute_endpoint, ws_timeout=0.5, ws_idle=0.1)

    async def scenario(view: ChainView) -> None:
        await until(lambda: view.transport == "websocket")
        await until(lambda: view.transport == "filter", timeout=2.0)
        await mined_and_seen(view, server.chain.mine)

    follow(server.rpc_url, heads, scenario)
