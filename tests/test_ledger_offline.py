"""A ledger that outlives the network, with names people can read.

Once a devnet has stopped, `flchain ledger ... --devnet DIR` and `flchain devnet status` read
its chain journal, replayed read-only inside the command (no process started, no lock taken,
the file untouched), and show the same rounds and members as while it ran. Members are shown
as `#3 node-2 0x1234…abcd (byzantine: signflip)`. Expected failures print one `Error:` line.

The unit tests need no network; the end-to-end ones share one small devnet (module fixture).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from eth_account import Account
from web3 import Web3

from flchain.commands.devnet import devnet
from flchain.commands.ledger import ledger
from flchain.contracts import FLChainClient, TaskStatus
from flchain.contracts.names import MemberNames, short_address
from flchain.devnet.chain import DevChain
from flchain.devnet.errors import RpcError
from flchain.devnet.genesis import GenesisConfig
from flchain.devnet.journal import JOURNAL_FILE, LOCK_FILE, JournalError
from flchain.devnet.launcher import node_status
from flchain.devnet.manifest import (
    SUMMARY_FILE,
    DevnetError,
    chain_stopped,
    process_alive,
    read_manifest,
    stopped_journal,
    write_manifest,
)
from flchain.devnet.replay import replay_web3

FLCHAIN = [sys.executable, "-m", "flchain.cli"]
ADDRESS = "0x5b5bAB0775D95E341a7Ed63a4C96a5B4799974da"
OTHER = "0xfc2d1f9b3f683360C01354f76CC9887064903e01"


def run(group: Any, args: list[str]) -> Result:
    return CliRunner().invoke(group, args)


def one_error_line(result: Result, code: int = 1) -> str:
    """The single `Error:` line of a failed command (no traceback, no exception)."""
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    return errors[0]


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# ---------------------------------------------------------------- names


def test_member_labels_with_and_without_a_devnet() -> None:
    assert short_address(ADDRESS) == "0x5b5b…74da"
    manifest = {
        "nodes": [
            {"name": "node-0", "address": ADDRESS, "attack": None},
            {"name": "node-2", "address": OTHER.lower(), "attack": "signflip"},
        ]
    }
    names = MemberNames.from_manifest(manifest).with_accounts([ADDRESS, "0x" + "ab" * 20, OTHER])
    assert names.label(0) == "#0 node-0 0x5b5b…74da"
    assert names.label(1) == "#1 0xabab…abab"  # a member the devnet does not know
    assert names.label(2) == "#2 node-2 0xfc2d…3e01 (byzantine: signflip)"
    assert names.brief(2) == "#2 node-2 (byzantine: signflip)"
    assert names.briefs([0, 2], mark=False) == "#0 node-0, #2 node-2"
    assert names.briefs([]) == "none"
    assert names.byzantine() == [2]
    assert names.fields(2) == {"node": "node-2", "attack": "signflip"}
    assert names.label(None, OTHER) == "node-2 0xfc2d…3e01 (byzantine: signflip)"  # not joined
    plain = MemberNames().with_accounts([ADDRESS])
    assert (plain.label(0), plain.brief(0), plain.knows_nodes) == ("#0 0x5b5b…74da", "#0", False)
    rows = [{"index": 2, "account": OTHER, "node": "node-2", "attack": "signflip"}]
    assert MemberNames.from_rows(rows).label(2) == names.label(2)


# ---------------------------------------------------------------- devnet.json


def test_one_reader_of_devnet_json(tmp_path: Path) -> None:
    with pytest.raises(DevnetError, match=r"devnet\.json not found"):
        read_manifest(tmp_path)
    (tmp_path / "devnet.json").write_text("{bad")
    with pytest.raises(DevnetError, match="not valid JSON"):
        read_manifest(tmp_path)
    (tmp_path / "devnet.json").write_text('{"rpc_url": "http://x", "contract": "0x1"}')
    with pytest.raises(DevnetError, match="task_id must be a positive integer"):
        read_manifest(tmp_path)
    spec = {"rpc_url": "http://x", "contract": "0x1", "task_id": 1, "nodes": [{"dir": "a"}]}
    write_manifest(tmp_path, spec)
    assert read_manifest(tmp_path)["nodes"][0]["name"] == "node-0"
    # No chain pid (a hand-written file): only its RPC reaches the chain.
    assert not chain_stopped(spec)
    assert chain_stopped({**spec, "chain_pid": dead_pid()})
    assert not chain_stopped({**spec, "chain_pid": os.getpid()})
    with pytest.raises(DevnetError, match=r"journal\.jsonl is missing"):
        stopped_journal(tmp_path, spec)
    with pytest.raises(DevnetError, match="anvil chain keeps no state"):
        stopped_journal(tmp_path, {**spec, "chain": "anvil"})


def test_expected_failures_print_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    one_error_line(run(ledger, ["rounds", "--devnet", str(missing)]), code=2)
    one_error_line(run(devnet, ["status", "--dir", str(missing)]), code=2)
    one_error_line(run(devnet, ["down", "--dir", str(missing)]), code=2)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "devnet.json not found" in one_error_line(run(devnet, ["status", "--dir", str(empty)]))
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "devnet.json").write_text('{"nodes": [')
    for group, args in [
        (ledger, ["members", "--devnet", str(corrupt)]),
        (devnet, ["status", "--dir", str(corrupt)]),
        (devnet, ["down", "--dir", str(corrupt)]),
    ]:
        assert "not valid JSON" in one_error_line(run(group, args))
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    spec = {"rpc_url": "http://127.0.0.1:9", "contract": ADDRESS, "task_id": 1}
    write_manifest(stopped, {**spec, "chain_pid": dead_pid(), "nodes": []})
    for group, args in [
        (ledger, ["rounds", "--devnet", str(stopped)]),
        (devnet, ["status", "--dir", str(stopped)]),
    ]:
        assert "left no chain journal" in one_error_line(run(group, args))
    (stopped / "chain").mkdir()
    (stopped / "chain" / JOURNAL_FILE).write_text('{"op": "genesis"}\nnot json\n{"op": "x"}\n')
    assert "line 2 is corrupt" in one_error_line(run(ledger, ["rounds", "--devnet", str(stopped)]))
    assert "line 2 is corrupt" in one_error_line(run(devnet, ["status", "--dir", str(stopped)]))
    # Running (its chain pid alive) but not answering: the RPC's failure, in one line.
    running = tmp_path / "running"
    running.mkdir()
    write_manifest(running, {**spec, "chain_pid": os.getpid(), "nodes": []})
    result = run(ledger, ["tasks", "--devnet", str(running)])
    assert "cannot reach RPC at http://127.0.0.1:9" in one_error_line(result)


# ---------------------------------------------------------------- read-only replay


def _transfer(chain: DevChain, nonce: int) -> bytes:
    sender = chain.accounts[0]
    tx = {
        "to": chain.accounts[1].address,
        "value": 1,
        "gas": 21000,
        "gasPrice": 10**10,
        "nonce": nonce,
        "chainId": chain.chain_id,
    }
    return bytes(Account.sign_transaction(tx, sender.private_key_hex).raw_transaction)


def test_read_only_replay_leaves_the_journal_and_a_running_chain_alone(tmp_path: Path) -> None:
    chain = DevChain.open(tmp_path, GenesisConfig(accounts=2))
    chain.send_raw_transaction(_transfer(chain, 0))
    path = tmp_path / JOURNAL_FILE
    with path.open("ab") as handle:  # a write cut short: the chain would cut it off on open
        handle.write(b'{"op": "tx", "raw": "0x12')
    before = path.read_bytes()
    # The chain still holds the journal's lock: the replay takes none.
    copy = DevChain.open_read_only(tmp_path)
    assert copy.get_block("latest").hash == chain.get_block("latest").hash
    receiver = chain.accounts[1].canonical_address
    assert copy.get_balance(receiver) == chain.get_balance(receiver)
    with pytest.raises(RpcError, match="read-only"):
        copy.mine()
    assert path.read_bytes() == before  # not truncated, not appended to
    w3 = replay_web3(tmp_path)
    assert w3.eth.block_number == chain.block_number
    with w3.batch_requests() as batch:  # the ledger's views arrive in JSON-RPC batches
        batch.add(w3.eth.get_balance(chain.accounts[1].address))
        batch.add(w3.eth.get_block("latest"))
        balance, block = batch.execute()
    assert balance == chain.get_balance(receiver) and block["number"] == chain.block_number
    chain.close()
    # Stopped now: the replay still reads it, and the next owner still opens it for writing.
    assert DevChain.open_read_only(tmp_path).block_number == 1
    again = DevChain.open(tmp_path)
    again.send_raw_transaction(_transfer(again, 1))
    assert again.block_number == 2
    again.close()
    with pytest.raises(JournalError, match="no chain journal"):
        DevChain.open_read_only(tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()


# ---------------------------------------------------------------- one devnet, end to end


@dataclass
class Net:
    directory: Path
    manifest: dict[str, Any]
    live: dict[str, Any]  # what the ledger said while the devnet ran


def _flchain(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}  # wide tables: labels stay on one line
    return subprocess.run(
        [*FLCHAIN, *args], capture_output=True, text=True, timeout=timeout, check=False, env=env
    )


def _json(*args: str) -> Any:
    result = _flchain(*args, "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return json.loads(result.stdout)


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _processes_mentioning(text: str) -> list[int]:
    """Pids of processes whose command line names `text` (the devnet's directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    directory = tmp_path_factory.mktemp("offline") / "dn"
    args = ["--nodes", "4", "--rounds", "2", "--byzantine", "1", "--attack", "signflip"]
    args += ["--model", "mlp", "--submit-window", "30", "--vote-window", "30"]
    result = _flchain("devnet", "up", "--dir", str(directory), *args, "--detach", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    try:
        manifest = read_manifest(directory)
        w3 = Web3(Web3.HTTPProvider(manifest["rpc_url"]))
        client = FLChainClient(w3, manifest["contract"], Account.create())
        finished = (TaskStatus.FINISHED, TaskStatus.CLOSED)
        _wait(lambda: client.get_task(manifest["task_id"]).status in finished, 300, "task end")
        _wait(
            lambda: all((node_status(n) or {}).get("phase") == "done" for n in manifest["nodes"]),
            90,
            "nodes done",
        )
        dn = str(directory)
        live = {
            "rounds": _json("ledger", "rounds", "--devnet", dn),
            "members": _json("ledger", "members", "--devnet", dn),
            "status": _json("devnet", "status", "--dir", dn),
        }
    finally:
        stopped = _flchain("devnet", "down", "--dir", str(directory))
    assert stopped.returncode == 0, stopped.stderr
    yield Net(directory, manifest, live)


def _digest(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


@pytest.mark.slow
def test_the_ledger_of_a_stopped_devnet_reads_as_while_it_ran(net: Net) -> None:
    assert net.live["status"]["running"] is True
    assert all(not process_alive(n.get("pid")) for n in net.manifest["nodes"])
    assert not process_alive(net.manifest["chain_pid"])
    journal = net.directory / "chain" / JOURNAL_FILE
    before = _digest(journal)
    dn = str(net.directory)
    assert _json("ledger", "rounds", "--devnet", dn) == net.live["rounds"]
    assert _json("ledger", "members", "--devnet", dn) == net.live["members"]
    assert [r["status"] for r in net.live["rounds"]] == ["finalized"] * 2
    # Read, not written, and no lock left held; no process started for it stays behind.
    assert _digest(journal) == before
    fd = os.open(net.directory / "chain" / LOCK_FILE, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)
    assert _processes_mentioning(dn) == []


@pytest.mark.slow
def test_members_are_named_by_index_node_and_address(net: Net) -> None:
    dn = str(net.directory)
    rows = net.live["members"]
    by_name = {n["name"]: n for n in net.manifest["nodes"]}
    byzantine = [n["name"] for n in net.manifest["nodes"] if n["attack"]]
    assert len(byzantine) == 1
    for row in rows:
        node = by_name[row["node"]]
        assert node["address"] == row["account"]
        assert row["attack"] == node["attack"]
    table = _flchain("ledger", "members", "--devnet", dn)
    assert table.returncode == 0, table.stderr
    assert "reading its chain journal" in table.stderr and "Traceback" not in table.stderr
    for row in rows:
        label = f"#{row['index']} {row['node']} {short_address(row['account'])}"
        if row["attack"]:
            label += f" (byzantine: {row['attack']})"
        assert label in table.stdout
    # Without the devnet (only --rpc/--contract), a member is its index and short address.
    names = MemberNames().with_accounts([r["account"] for r in rows])
    assert names.label(0) == f"#0 {short_address(rows[0]['account'])}"


@pytest.mark.slow
def test_status_of_a_stopped_devnet_shows_its_final_summary(net: Net) -> None:
    dn = str(net.directory)
    result = _flchain("devnet", "status", "--dir", dn)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "is stopped" in text and "Traceback" not in result.stderr
    status = _json("devnet", "status", "--dir", dn)
    summary = status["summary"]
    assert (status["running"], status["status"], status["round"]) == (False, "finished", 2)
    assert [r["status"] for r in summary["rounds"]] == ["finalized"] * 2
    assert summary["final_digest"] == net.live["rounds"][-1]["global_digest"]
    assert f"final digest: {summary['final_digest']}" in " ".join(text.split())
    assert all(n["accuracy"] is not None for n in summary["nodes"])  # from status.json
    (bad,) = [m for m in summary["members"] if m["attack"]]
    assert summary["byzantine_members"] == [bad["index"]]
    assert bad["label"] == (
        f"#{bad['index']} {bad['node']} {short_address(bad['account'])} (byzantine: signflip)"
    )
    assert bad["label"] in text
    assert _processes_mentioning(dn) == []


@pytest.mark.slow
def test_devnet_down_saves_the_summary_that_replaying_the_journal_gives(net: Net) -> None:
    """`devnet down` read the final summary while the chain still answered; `devnet status`
    shows it without a replay, and it is what the journal's replay gives."""
    dn, saved = str(net.directory), net.directory / SUMMARY_FILE
    assert saved.is_file()
    shown = _flchain("devnet", "status", "--dir", dn)
    assert "as saved when it stopped" in " ".join(shown.stdout.split())
    from_saved = _json("devnet", "status", "--dir", dn)
    kept = saved.read_bytes()
    try:
        # A summary saved for another chain is not shown: the journal is replayed instead.
        other = json.loads(kept)
        other["key"]["chain_pid"] = -1
        saved.write_text(json.dumps(other))
        replayed = _flchain("devnet", "status", "--dir", dn)
        assert "from the chain journal" in " ".join(replayed.stdout.split())
        assert _json("devnet", "status", "--dir", dn) == from_saved
        saved.unlink()
        assert _json("devnet", "status", "--dir", dn) == from_saved
        assert saved.read_bytes() == kept  # the replay saved it again, for the next command
    finally:
        saved.write_bytes(kept)
