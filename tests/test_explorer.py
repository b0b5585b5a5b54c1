"""The ledger explorer without a browser: its JSON API and the limits of its server.

One journaled py-evm chain in this process (no chain server, no node process): FLChain, a
task of three members named by a devnet.json (node-2 Byzantine), and two rounds:

    round 1  finalized  members 0 and 1 accepted, 2 (node-2, byzantine) rejected; 2 votes
                        late
    round 2  open       members 0 and 1 committed

The explorer serves it on port 0 with tight limits; the CLI is run once as a process against
the same journal, as a stopped devnet.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner
from eth_account import Account
from web3 import Web3

from flchain.commands.ledger import ledger
from flchain.contracts import FLChainClient, TaskParams, bitmap, encode_loss
from flchain.contracts.ledger import plain, rebuild_ledger, verify_blobs
from flchain.contracts.names import MemberNames
from flchain.devnet.accounts import DEFAULT_MNEMONIC, derive_accounts
from flchain.devnet.chain import DevChain
from flchain.devnet.genesis import GenesisConfig
from flchain.devnet.manifest import write_manifest
from flchain.devnet.replay import ReplayProvider
from flchain.explorer import ExplorerServer, ExplorerSource, LedgerViews, ServerLimits

STAKE = 10**15
REWARD = 10**18
LIMITS = ServerLimits(
    max_connections=6, max_streams=2, socket_timeout=2.0, keepalive_s=0.5, poll_s=0.1
)


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


@dataclass
class Net:
    directory: Path  # the devnet dir: devnet.json, chain/, node-*/
    chain: DevChain
    owner: FLChainClient
    members: list[FLChainClient]
    manifest: dict[str, Any]
    source: ExplorerSource

    def client(self) -> FLChainClient:
        return FLChainClient(self.owner.w3, self.owner.address, Account.create())


def _blob(store: Path, data: bytes, *, corrupt: bool = False) -> bytes:
    store.mkdir(parents=True, exist_ok=True)
    (store / sha(data).hex()).write_bytes(data + b"!" if corrupt else data)
    return sha(data)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    directory = tmp_path_factory.mktemp("explorer") / "dn"
    chain = DevChain.open(directory / "chain", GenesisConfig(accounts=4))
    w3 = Web3(ReplayProvider(chain))  # the devnet's own JSON-RPC handlers, in process
    keys = [Account.from_key(a.private_key) for a in derive_accounts(DEFAULT_MNEMONIC, 4)]
    owner = FLChainClient.deploy(w3, keys[0])
    members = [FLChainClient(w3, owner.address, k) for k in keys[1:]]
    stores = [directory / f"node-{i}" / "blobs" for i in range(3)]
    initial = _blob(stores[0], b"initial model")
    params = TaskParams(
        config_digest=sha(b"config"),
        initial_digest=initial,
        min_members=3,
        max_members=3,
        submit_window=600,
        vote_window=600,
        stake=STAKE,
        max_rounds=3,
        reward=REWARD,
    )
    task_id = owner.create_task(params)
    for i, member in enumerate(members):
        member.join(task_id, f"peer-{i}".encode(), sha(f"x25519 {i}".encode()))
    digests = [_blob(stores[i], f"update r1 m{i}".encode()) for i in range(3)]
    for i, member in enumerate(members):
        member.submit(task_id, 1, digests[i], 100 + i, 0, encode_loss(1.5 - 0.25 * i))
    g1 = _blob(stores[0], b"global r1")
    _blob(stores[1], b"global r1", corrupt=True)  # a copy that does not hash to its digest
    for member in members[:2]:
        member.vote(task_id, 1, g1, bitmap([0, 1]))
    members[2].vote(task_id, 1, g1, bitmap([0, 1]))  # after finalization: a late vote
    for i in (0, 1):
        members[i].submit(task_id, 2, sha(f"update r2 m{i}".encode()), 100, 1, encode_loss(0.5))
    nodes = [
        {
            "name": f"node-{i}",
            "dir": str(directory / f"node-{i}"),
            "address": keys[i + 1].address,
            "attack": "signflip" if i == 2 else None,
        }
        for i in range(3)
    ]
    (directory / "node-0" / "status.json").write_text(
        json.dumps({"accuracy_history": {"1": 0.75}, "phase": "done"})
    )
    manifest = {
        "rpc_url": "http://127.0.0.1:9",
        "chain": "pyevm",
        "chain_pid": _dead_pid(),
        "contract": owner.address,
        "task_id": task_id,
        "nodes": nodes,
    }
    write_manifest(directory, manifest)
    source = ExplorerSource(
        client=FLChainClient(w3, owner.address, Account.create()),
        origin="in-process chain",
        default_task=task_id,
        devnet_dir=directory,
        devnet_task=task_id,
        names=MemberNames.from_manifest(manifest),
        nodes=tuple(nodes),
        blob_dirs=tuple(stores),
    )
    try:
        yield Net(directory, chain, owner, members, manifest, source)
    finally:
        chain.close()


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.fixture
def server(net: Net) -> Iterator[ExplorerServer]:
    views = LedgerViews(net.source, volatile_s=60)  # round 2 is open: no re-read by the clock
    with ExplorerServer(views, limits=LIMITS) as running:
        yield running


def request(
    server: ExplorerServer,
    path: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> tuple[int, dict[str, str], bytes]:
    url = urlsplit(server.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        answer = conn.getresponse()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
    finally:
        conn.close()


def get_json(server: ExplorerServer, path: str, status: int = 200) -> Any:
    code, headers, body = request(server, path)
    assert code == status, body
    assert headers["content-type"].startswith("application/json")
    return json.loads(body)


# ---------------------------------------------------------------- the JSON API


def test_tasks_task_and_rounds_timeline(server: ExplorerServer, net: Net) -> None:
    (task,) = get_json(server, "/api/tasks")["tasks"]
    assert (task["task_id"], task["status"], task["n_members"]) == (1, "running", 3)
    one = get_json(server, "/api/tasks/1")
    assert one["task"]["stake"] == STAKE and one["task"]["funded_wei"] == REWARD
    assert one["round_statuses"] == {"finalized": 1, "open": 1}
    assert one["byzantine"] == [2] and one["default_task"] == 1
    timeline = get_json(server, "/api/tasks/1/rounds")
    first, second = timeline["rounds"]
    assert (first["status"], first["accepted_members"], first["rejected_members"]) == (
        "finalized",
        [0, 1],
        [2],
    )
    assert first["tally_list"][0]["won"] and first["tally_list"][0]["quorum"]
    assert first["final_tally"] >= first["quorum_weight"]
    assert (second["status"], second["submitted_members"]) == ("open", [0, 1])
    labels = [m["label"] for m in timeline["members"]]
    assert labels[2].startswith("#2 node-2 0x") and labels[2].endswith("(byzantine: signflip)")
    states = {m["index"]: [c["state"] for c in m["cells"]] for m in timeline["matrix"]}
    assert states == {
        0: ["accepted", "committed"],
        1: ["accepted", "committed"],
        2: ["rejected", "missed"],
    }
    late = timeline["matrix"][2]["cells"][0]
    assert late["voted"] and late["late_vote"]


def test_round_members_history_curves_events(server: ExplorerServer) -> None:
    detail = get_json(server, "/api/tasks/1/rounds/1")
    verdicts = {m["member"]: (m["verdict"], m["node"]) for m in detail["members"]}
    assert verdicts == {
        0: ("accepted", "node-0"),
        1: ("accepted", "node-1"),
        2: ("rejected", "node-2"),
    }
    members = get_json(server, "/api/tasks/1/members")["members"]
    assert [(m["node"], m["attack"], m["stake_wei"]) for m in members] == [
        ("node-0", None, STAKE),
        ("node-1", None, STAKE),
        ("node-2", "signflip", STAKE),
    ]
    assert all(m["peer_id"] == f"peer-{m['index']}" for m in members)
    history = get_json(server, "/api/tasks/1/history")
    assert history["rounds"] == [0, 1, 2]
    rep = {m["index"]: m["reputation"] for m in history["members"]}
    assert rep[0][:2] == [1.0, 1.02] and rep[2][:2] == [1.0, 0.95]
    paid = {m["index"]: m["rewards_wei"][1] for m in history["members"]}
    assert paid[0] == paid[1] > 0 and paid[2] == 0
    curves = get_json(server, "/api/tasks/1/curves")
    loss = {c["index"]: c["points"] for c in curves["loss"]}
    assert loss[2] == [[1, 1.0]] and loss[0] == [[1, 1.5], [2, 0.5]]
    accuracy = {c["node"]: c["points"] for c in curves["accuracy"]}
    assert accuracy == {"node-0": [[1, 0.75]], "node-1": [], "node-2": []}
    votes = get_json(server, "/api/tasks/1/events?name=VoteCast&round=1")
    assert votes["total"] == 3 and {e["event"] for e in votes["events"]} == {"VoteCast"}
    assert votes["events"][2]["member_label"] == "#2 node-2 (byzantine: signflip)"
    page = get_json(server, "/api/tasks/1/events?offset=1&limit=2")
    assert page["offset"] == 1 and len(page["events"]) == 2 and page["total"] > 3
    endpoints = [e["path"] for e in get_json(server, "/api")["endpoints"]]
    assert "/api/stream" in endpoints and "/api/tasks" in endpoints


def test_verify_is_what_ledger_verify_computes(server: ExplorerServer, net: Net) -> None:
    answer = get_json(server, "/api/tasks/1/verify")
    book = rebuild_ledger(net.client(), 1)
    expected = [plain(c) for c in verify_blobs(book, list(net.source.blob_dirs))]
    assert [{k: c[k] for k in expected[0]} for c in answer["checks"]] == expected
    assert (answer["ok"], answer["mismatch"]) == (4, 1)  # global r1 corrupt on node-1
    assert answer["missing"] == 2  # round 2's updates: no node kept them here
    cli = CliRunner().invoke(ledger, ["verify", "--devnet", str(net.directory), "--json"])
    assert json.loads(cli.output)["mismatch"] == 1  # the CLI says the same (and exits 1)


# ---------------------------------------------------------------- the server's limits


def test_unknown_paths_bad_queries_and_missing_things(server: ExplorerServer) -> None:
    assert "no task 9" in get_json(server, "/api/tasks/9", 404)["error"]
    assert "no round 5" in get_json(server, "/api/tasks/1/rounds/5", 404)["error"]
    get_json(server, "/api/nothing", 404)
    get_json(server, "/api/tasks/1/members?x=1", 400)
    assert "unknown event" in get_json(server, "/api/tasks/1/events?name=Nope", 400)["error"]
    get_json(server, "/api/tasks/1/events?round=-1", 400)
    code, _, _ = request(server, "/etc/passwd")
    assert code == 404
    code, _, _ = request(server, "/static/../server.py")
    assert code == 404


def test_only_get_and_head_and_the_right_host(server: ExplorerServer) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        code, headers, _ = request(server, "/api/tasks", method=method, body=b"{}")
        assert (code, headers["allow"]) == (405, "GET, HEAD"), method
    code, headers, body = request(server, "/api/tasks", method="HEAD")
    assert code == 200 and body == b"" and int(headers["content-length"]) > 0
    code, _, _ = request(server, "/api/tasks", headers={"Content-Length": "2"}, body=b"{}")
    assert code == 400  # a GET with a body is not read, and not kept alive
    # DNS rebinding: a page from evil.example resolving to 127.0.0.1 names its own host.
    for host in ("evil.example", "evil.example:80", "localhost.evil.example"):
        code, _, _ = request(server, "/api/tasks", headers={"Host": host})
        assert code == 403, host
    port = urlsplit(server.url).port
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
        code, _, _ = request(server, "/api/tasks", headers={"Host": host})
        assert code == 200, host


def test_page_headers_forbid_inline_script_and_cross_origin_reads(server: ExplorerServer) -> None:
    code, headers, page = request(server, "/", headers={"Origin": "https://evil.example"})
    assert code == 200 and headers["content-type"].startswith("text/html")
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert not any(k.startswith("access-control-") for k in headers)
    assert b'<script src="/static/app.js"' in page and b"<script>" not in page
    assert b"onclick" not in page and b"http" not in page.replace(b'"http-equiv', b"")
    for path, kind in [("/static/app.js", "text/javascript"), ("/static/style.css", "text/css")]:
        code, headers, body = request(server, path)
        assert code == 200 and headers["content-type"].startswith(kind) and body
        assert b"https://" not in body and b"http://" not in body.replace(b"http://www.w3", b"")
    code, headers, _ = request(server, "/static/favicon.svg")
    assert code == 200 and headers["content-type"] == "image/svg+xml"


def test_ledger_reads_are_shared_per_block(server: ExplorerServer, net: Net) -> None:
    views = server.views
    get_json(server, "/api/tasks/1/rounds")
    before = views.reads
    answers: list[int] = []

    def ask() -> None:
        answers.append(request(server, "/api/tasks/1/rounds")[0])

    threads = [threading.Thread(target=ask) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for path in ("/api/tasks/1", "/api/tasks/1/members", "/api/tasks/1/events"):
        get_json(server, path)
    assert answers == [200] * 5 and views.reads == before  # nine answers, no new read
    head = views.head
    net.owner.fund_task(1, 1)  # a new block
    _until(lambda: views.head > head, "the follower to see the new block")
    assert get_json(server, "/api/tasks/1")["task"]["reward_pool"] > 0
    assert views.reads == before + 1
    get_json(server, "/api/tasks/1/rounds")
    assert views.reads == before + 1


def _until(predicate: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class _Stream:
    """A raw SSE client: the response head, then one event (or comment) at a time."""

    def __init__(self, server: ExplorerServer) -> None:
        url = urlsplit(server.url)
        self.sock = socket.create_connection((url.hostname, url.port), timeout=5)
        self.sock.sendall(b"GET /api/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        self.buffer = b""

    def _until(self, separator: bytes) -> bytes:
        while separator not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise EOFError(self.buffer)
            self.buffer += chunk
        end = self.buffer.index(separator) + len(separator)
        out, self.buffer = self.buffer[:end], self.buffer[end:]
        return out

    def head(self) -> bytes:
        return self._until(b"\r\n\r\n")

    def block(self) -> bytes:
        return self._until(b"\n\n")

    def event(self, name: str) -> dict[str, Any]:
        """The data of the next `name` event (comments and other events skipped)."""
        while True:
            lines = self.block().decode().splitlines()
            if f"event: {name}" in lines:
                return json.loads(next(x[6:] for x in lines if x.startswith("data: ")))

    def close(self) -> None:
        self.sock.close()


def test_stream_says_hello_then_each_new_block(server: ExplorerServer, net: Net) -> None:
    stream = _Stream(server)
    try:
        head = stream.head()
        assert head.startswith(b"HTTP/1.1 200") and b"text/event-stream" in head
        assert stream.block() == b"retry: 3000\n\n"
        hello = stream.event("hello")
        assert hello["contract"] == net.owner.address and hello["live"] is True
        assert stream.block() == b": keepalive\n\n"  # nothing happened for keepalive_s
        block = server.views.head
        net.owner.fund_task(1, 1)
        assert stream.event("head")["head_block"] > block
    finally:
        stream.close()


def test_streams_are_capped_and_slots_come_back(server: ExplorerServer) -> None:
    streams = [_Stream(server) for _ in range(LIMITS.max_streams)]
    try:
        for stream in streams:
            assert stream.head().startswith(b"HTTP/1.1 200")
        code, headers, body = request(server, "/api/stream")
        assert (code, headers["retry-after"]) == (503, "10") and b"too many" in body
        streams.pop().close()
        _until(lambda: server.hub.streams < LIMITS.max_streams, "the stream to be let go")
        again = _Stream(server)
        streams.append(again)
        assert again.head().startswith(b"HTTP/1.1 200")
    finally:
        for stream in streams:
            stream.close()


def test_idle_and_surplus_connections_are_closed(server: ExplorerServer) -> None:
    url = urlsplit(server.url)
    idle = [socket.create_connection((url.hostname, url.port), timeout=5) for _ in range(6)]
    try:
        # Past max_connections a connection is closed at once, before any timeout.
        extra = socket.create_connection((url.hostname, url.port), timeout=5)
        started = time.monotonic()
        assert extra.recv(1) == b"" and time.monotonic() - started < 1.5
        extra.close()
        # One that says nothing is dropped after socket_timeout (2 s), freeing its slot.
        started = time.monotonic()
        assert idle[0].recv(1) == b""
        assert 1.0 < time.monotonic() - started < 4.0
    finally:
        for sock in idle:
            sock.close()
    _until(lambda: _answers(server), "a free slot", timeout=5)


def _answers(server: ExplorerServer) -> bool:
    try:
        return request(server, "/api/info")[0] == 200
    except (OSError, http.client.HTTPException):  # closed at once while the slots are full
        return False


# ---------------------------------------------------------------- a stopped devnet


def test_switch_to_the_journal_once_the_chain_has_gone(net: Net) -> None:
    views = LedgerViews(net.source)
    live_rounds = views.rounds(1)["rounds"]
    assert views.switch_to_journal()  # devnet.json's chain pid is a dead one
    assert views.source.live is False and views.source.origin.startswith("journal ")
    assert views.rounds(1)["rounds"] == live_rounds
    assert not views.switch_to_journal()  # already reading it


def test_serve_command_on_a_stopped_devnet(net: Net) -> None:
    """`flchain ledger serve --devnet DIR --port 0 --json` as a user runs it: the URL on
    stdout once listening, the journal read (the chain of devnet.json is not running)."""
    command = [sys.executable, "-m", "flchain.cli", "ledger", "serve", "--devnet"]
    proc = subprocess.Popen(
        [*command, str(net.directory), "--port", "0", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        url = json.loads(proc.stdout.readline())["url"]
        assert url.startswith("http://127.0.0.1:")
        host, port = urlsplit(url).hostname, urlsplit(url).port
        conn = http.client.HTTPConnection(host, port, timeout=30)
        conn.request("GET", "/api/tasks/1/rounds")
        rounds = json.loads(conn.getresponse().read())["rounds"]
        conn.request("GET", "/api/info")
        info = json.loads(conn.getresponse().read())
        conn.close()
        assert [r["status"] for r in rounds] == ["finalized", "open"]
        assert info["live"] is False and info["origin"] == f"journal {net.directory / 'chain'}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_serve_needs_a_reachable_chain() -> None:
    result = CliRunner().invoke(
        ledger, ["serve", "--rpc", "http://127.0.0.1:9", "--contract", "0x" + "11" * 20]
    )
    assert result.exit_code == 1 and "cannot reach RPC" in result.output
