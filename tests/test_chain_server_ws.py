"""The embedded chain's WebSocket endpoint: JSON-RPC and eth_subscribe on the HTTP port.

A small blocking client built on wsproto drives the server byte by byte, so the tests can be
a client that never reads, never answers a ping, or sends a request head the server refuses.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from test_chain_server import call, rpc
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.frame_protocol import FrameProtocol
from wsproto.utilities import RemoteProtocolError

from flchain.devnet import rpc_server
from flchain.devnet.chain import DevChain
from flchain.devnet.genesis import GenesisConfig
from flchain.devnet.policy import RpcPolicy, WsLimits
from flchain.devnet.rpc_server import DevnetServer

# Init code that logs LOG0 with no data and deploys nothing: a block with one log.
EMIT_LOG0 = "0x60006000a000"


class WsClient:
    """A blocking WebSocket client that does only what the test tells it to."""

    def __init__(
        self,
        server: DevnetServer,
        *,
        host: str | None = None,
        origin: str | None = None,
        path: str = "/",
        rcvbuf: int | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(5)
        self.sock.connect((server.host, server.port))
        self.ws = WSConnection(ConnectionType.CLIENT)
        extra = [("Origin", origin)] if origin else []
        extra += headers or []
        request = Request(host=host or f"127.0.0.1:{server.port}", target=path, extra_headers=extra)
        self.sock.sendall(self.ws.send(request))
        self.pending: list[Any] = []
        self.rejected: int | None = None
        self.rejection = b""
        self.closed: CloseConnection | None = None
        self.pings = 0
        self.answer_pings = True
        while True:
            event = self._next_event()
            if isinstance(event, AcceptConnection):
                return
            if isinstance(event, RejectConnection):
                self.rejected = event.status_code
                if not event.has_body:
                    return
            if isinstance(event, RejectData):
                self.rejection += event.data
                if event.body_finished:
                    return

    def _next_event(self) -> Any:
        while not self.pending:
            data = self.sock.recv(65536)
            self.ws.receive_data(data or None)
            self.pending.extend(self.ws.events())
        return self.pending.pop(0)

    def send(self, payload: Any) -> None:
        text = payload if isinstance(payload, str) else json.dumps(payload)
        self.sock.sendall(self.ws.send(TextMessage(data=text)))

    def recv(self) -> Any:
        """The next whole message, decoded; answers pings on the way unless told not to."""
        parts: list[str] = []
        while True:
            event = self._next_event()
            if isinstance(event, Ping):
                self.pings += 1
                if self.answer_pings:
                    self.sock.sendall(self.ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                self.closed = event
                raise ConnectionError(f"closed: {event.code} {event.reason}")
            elif isinstance(event, TextMessage):
                parts.append(event.data)
                if event.message_finished:
                    return json.loads("".join(parts))

    def call(self, method: str, params: list[Any] | None = None, request_id: int = 1) -> Any:
        self.send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or []})
        return self.recv()

    def subscribe(self, *params: Any) -> str:
        answer = self.call("eth_subscribe", list(params))
        assert "result" in answer, answer
        return answer["result"]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def chain() -> Iterator[DevChain]:
    devchain = DevChain(GenesisConfig(accounts=2))
    yield devchain
    devchain.close()


@pytest.fixture(scope="module")
def server(chain: DevChain) -> Iterator[DevnetServer]:
    with DevnetServer(chain, port=0) as running:
        yield running


@pytest.fixture
def client(server: DevnetServer) -> Iterator[WsClient]:
    ws = WsClient(server)
    yield ws
    ws.close()


def wait_for(predicate: Any, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_new_heads_notifies_every_mined_block_in_order(
    server: DevnetServer, client: WsClient
) -> None:
    subscription = client.subscribe("newHeads")
    assert subscription.startswith("0x") and len(subscription) == 34
    first = server.chain.block_number + 1
    server.chain.mine(3)
    notes = [client.recv() for _ in range(3)]
    for number, note in enumerate(notes, start=first):
        assert note["method"] == "eth_subscription"
        assert note["params"]["subscription"] == subscription
        head = note["params"]["result"]
        block = call(server.rpc_url, "eth_getBlockByNumber", [hex(number), False])["result"]
        assert head == block  # anvil's newHeads: the block without transaction bodies
    assert client.call("eth_unsubscribe", [subscription])["result"] is True
    assert client.call("eth_unsubscribe", [subscription])["result"] is False
    server.chain.mine()
    # nothing more for the dropped subscription: the next message is this answer
    assert client.call("eth_blockNumber", request_id=7) == {
        "jsonrpc": "2.0",
        "id": 7,
        "result": hex(server.chain.block_number),
    }


def test_json_rpc_over_ws_answers_as_http_does(server: DevnetServer, client: WsClient) -> None:
    for method, params in [
        ("eth_chainId", []),
        ("eth_getBlockByNumber", ["0x0", True]),
        ("eth_getBalance", [server.chain.accounts[0].address, "latest"]),
        ("eth_getBalance", ["not an address"]),
        ("no_suchMethod", []),
    ]:
        body = {"jsonrpc": "2.0", "id": 3, "method": method, "params": params}
        http_status, http_answer = rpc(server.rpc_url, body)
        assert http_status == 200
        assert client.call(method, params, request_id=3) == http_answer
    batch = [{"jsonrpc": "2.0", "id": i, "method": "eth_blockNumber"} for i in range(3)]
    client.send(batch)
    assert [answer["id"] for answer in client.recv()] == [0, 1, 2]
    client.send("{not json")
    assert client.recv()["error"]["code"] == -32700
    client.send("[" * 200 + "]" * 200)  # deeper than the policy's JSON depth
    assert "nested" in client.recv()["error"]["message"]
    client.send({"jsonrpc": "2.0", "method": "eth_chainId"})  # a notification: no answer
    assert client.call("net_version")["result"] == str(server.chain.chain_id)
    # over HTTP, eth_subscribe says where to go
    _, answer = rpc(server.rpc_url, {"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe"})
    assert "WebSocket" in answer["error"]["message"]


def test_logs_subscription_sends_matching_logs(server: DevnetServer, client: WsClient) -> None:
    everything = client.subscribe("logs", {})
    elsewhere = client.subscribe("logs", {"address": "0x" + "11" * 20})
    sender = server.chain.accounts[0].address
    client.send(
        {
            "jsonrpc": "2.0",
            "id": 5,
            "method": "eth_sendTransaction",
            "params": [{"from": sender, "data": EMIT_LOG0}],
        }
    )
    notes = [client.recv(), client.recv()]  # the log (mined at once) and the answer
    tx = next(note for note in notes if note.get("id") == 5)
    logs = [n["params"] for n in notes if n.get("method") == "eth_subscription"]
    assert [entry["subscription"] for entry in logs] == [everything]
    assert logs[0]["result"]["transactionHash"] == tx["result"]
    server.chain.mine()  # a block without logs: nothing
    assert client.call("eth_blockNumber", request_id=6)["id"] == 6
    assert elsewhere != everything
    answer = client.call("eth_subscribe", ["logs", {"blockHash": "0x" + "00" * 32}])
    assert answer["error"]["code"] == -32602
    answer = client.call("eth_subscribe", ["newPendingTransactions"])
    assert "unsupported subscription" in answer["error"]["message"]


def test_subscriptions_per_connection_are_budgeted(chain: DevChain) -> None:
    with DevnetServer(chain, port=0, ws_limits=WsLimits(max_subscriptions=2)) as small:
        client = WsClient(small)
        first = client.subscribe("newHeads")
        client.subscribe("newHeads")
        refused = client.call("eth_subscribe", ["newHeads"])
        assert "too many subscriptions" in refused["error"]["message"]
        assert client.call("eth_unsubscribe", [first])["result"] is True
        client.subscribe("newHeads")
        other = WsClient(small)  # the budget is per connection
        other.subscribe("newHeads")
        client.close()
        other.close()


def test_a_client_that_never_reads_is_cut_off_and_mining_goes_on(chain: DevChain) -> None:
    limits = WsLimits(max_queue=16, send_timeout=0.5)
    with DevnetServer(chain, port=0, ws_limits=limits) as server:
        reader = WsClient(server)
        reader.subscribe("newHeads")
        stuck = WsClient(server, rcvbuf=4096)
        stuck.subscribe("newHeads")
        start = time.monotonic()
        slowest = 0.0
        for _ in range(2000):  # ~2 KB a notification: the stuck socket's buffers fill
            began = time.monotonic()
            server.chain.mine()
            slowest = max(slowest, time.monotonic() - began)
            assert reader.recv()["params"]["result"]["number"] == hex(chain.block_number)
            if server.ws.open_sessions == 1:
                break
        wait_for(lambda: server.ws.open_sessions == 1)
        assert slowest < 0.5 and time.monotonic() - start < 5
        stuck.sock.settimeout(2)
        with pytest.raises((ConnectionError, OSError)):
            while True:
                stuck.recv()  # what was sent before the cut, then the end
        server.chain.mine()
        assert reader.recv()["params"]["result"]["number"] == hex(chain.block_number)
        reader.close()


def test_a_client_silent_after_a_ping_is_closed(chain: DevChain) -> None:
    limits = WsLimits(ping_interval=0.2, pong_timeout=0.3)
    with DevnetServer(chain, port=0, ws_limits=limits) as server:
        silent = WsClient(server)
        silent.answer_pings = False
        silent.sock.settimeout(3)
        with pytest.raises((ConnectionError, OSError)):
            silent.recv()
        assert silent.pings == 1
        # a quiet client that answers the server's pings keeps its connection
        quiet = WsClient(server)
        quiet.sock.settimeout(0.1)
        listen_until = time.monotonic() + 0.8
        while time.monotonic() < listen_until:
            with pytest.raises(TimeoutError):
                quiet.recv()  # no message comes, but pings do: answered on the way
        assert quiet.pings >= 2
        quiet.sock.settimeout(5)
        assert quiet.call("eth_chainId")["result"] == hex(chain.chain_id)
        assert server.ws.open_sessions == 1
        quiet.close()


def test_oversize_messages_close_the_connection(chain: DevChain) -> None:
    with DevnetServer(chain, port=0, max_body=256) as small:
        client = WsClient(small)
        assert client.call("eth_chainId")["result"] == hex(chain.chain_id)
        client.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "x" * 300}))
        with pytest.raises(ConnectionError):
            client.recv()
        assert client.closed is not None and client.closed.code == 1009
        client.close()


def test_upgrades_follow_the_http_host_and_origin_rules(chain: DevChain) -> None:
    app = "http://app.example"
    with DevnetServer(chain, port=0, policy=RpcPolicy(cors_domains=(app,))) as server:
        assert WsClient(server, host=f"evil.example:{server.port}").rejected == 403
        assert WsClient(server, host=f"localhost:{server.port}").rejected is None
        refused = WsClient(server, origin="http://evil.example")
        assert refused.rejected == 403 and b"not allowed" in refused.rejection
        allowed = WsClient(server, origin=app)
        assert allowed.rejected is None
        assert allowed.call("eth_chainId")["result"] == hex(chain.chain_id)
        assert WsClient(server, path="/elsewhere").rejected == 404
        allowed.close()


def test_bad_handshakes_are_refused(server: DevnetServer) -> None:
    def head(*lines: str) -> bytes:
        with socket.create_connection((server.host, server.port), timeout=5) as sock:
            sock.sendall(("\r\n".join(["GET / HTTP/1.1", *lines, "", ""])).encode())
            return sock.recv(4096)

    host = f"Host: 127.0.0.1:{server.port}"
    upgrade = ["Upgrade: websocket", "Connection: Upgrade"]
    assert head(host, *upgrade, "Sec-WebSocket-Version: 13").startswith(b"HTTP/1.1 400")
    key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="
    answer = head(host, *upgrade, key, "Sec-WebSocket-Version: 8")
    assert answer.startswith(b"HTTP/1.1 426") and b"Sec-WebSocket-Version: 13" in answer
    assert head(host, "Connection: close").startswith(b"HTTP/1.1 405")  # a plain GET


def test_websocket_connections_count_against_the_connection_limit(
    chain: DevChain, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rpc_server, "MAX_CONNECTIONS", 2)
    with DevnetServer(chain, port=0) as server:
        first, second = WsClient(server), WsClient(server)
        with pytest.raises((OSError, RemoteProtocolError)):
            WsClient(server)  # closed at once: the handshake gets no answer
        first.close()
        wait_for(lambda: server.ws.open_sessions == 1)
        time.sleep(0.05)  # the closed connection's slot is freed after its session ends
        third = WsClient(server)
        assert third.call("eth_chainId")["result"] == hex(chain.chain_id)
        second.close()
        third.close()


def test_stopping_the_server_ends_its_sessions(chain: DevChain) -> None:
    server = DevnetServer(chain, port=0)
    server.start()
    client = WsClient(server)
    client.subscribe("newHeads")
    server.stop()
    client.sock.settimeout(2)
    with pytest.raises((ConnectionError, OSError)):
        client.recv()
    chain.mine()  # no listener left behind
    assert server.ws.open_sessions == 0


def test_frames_sent_with_the_upgrade_request_are_answered(server: DevnetServer) -> None:
    """A client may send its first message before the handshake's answer arrives; the
    HTTP reader may have buffered it already, and it must still reach the session."""
    ws = WSConnection(ConnectionType.CLIENT)
    head = ws.send(Request(host=f"127.0.0.1:{server.port}", target="/"))
    request = json.dumps({"jsonrpc": "2.0", "id": 9, "method": "eth_chainId"})
    frame = FrameProtocol(client=True, extensions=[]).send_data(request, True)
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(head + frame)
        events: list[Any] = []
        while not any(isinstance(e, TextMessage) for e in events):
            ws.receive_data(sock.recv(65536))
            events.extend(ws.events())
    assert isinstance(events[0], AcceptConnection)
    answer = json.loads(next(e.data for e in events if isinstance(e, TextMessage)))
    assert answer == {"jsonrpc": "2.0", "id": 9, "result": hex(server.chain.chain_id)}
