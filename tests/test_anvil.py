"""Tests of the anvil adapter: locating the binary, option mapping, spawn and stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from flchain.devnet.accounts import derive_accounts
from flchain.devnet.anvil import (
    ANVIL_STATE_FILE,
    AnvilError,
    anvil_arguments,
    find_anvil,
    spawn_anvil,
)

REPO = Path(__file__).resolve().parents[1]


def post(url: str, method: str, params: list[Any] | None = None) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []})
    request = urllib.request.Request(
        url, data=body.encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["result"]


def test_anvil_arguments_map_the_serve_options(tmp_path: Path) -> None:
    args = anvil_arguments(
        9000,
        block_time=2.0,
        accounts=3,
        chain_id=5,
        balance_eth=Decimal("1.5"),
        mnemonic="a b c",
        state_dir=tmp_path,
    )
    assert args == [
        "--host", "127.0.0.1", "--port", "9000", "--accounts", "3", "--chain-id", "5",
        "--block-time", "2", "--balance", "1.5", "--mnemonic", "a b c",
        "--state", str(tmp_path / ANVIL_STATE_FILE), "--state-interval", "1",
    ]  # fmt: skip
    assert "--block-time" not in anvil_arguments(9000, block_time=None)


def test_find_anvil_prefers_the_environment(
    monkeypatch: pytest.MonkeyPatch, anvil_bin: str
) -> None:
    monkeypatch.setenv("FLCHAIN_ANVIL", anvil_bin)
    assert find_anvil() == anvil_bin
    monkeypatch.setenv("FLCHAIN_ANVIL", "/nonexistent/anvil")
    with pytest.raises(AnvilError, match="not a file"):
        find_anvil()


def test_spawn_anvil_serves_the_requested_chain(anvil_bin: str, tmp_path: Path) -> None:
    with spawn_anvil(accounts=2, chain_id=4242, binary=anvil_bin, state_dir=tmp_path) as anvil:
        assert anvil.poll() is None
        assert post(anvil.rpc_url, "eth_chainId") == hex(4242)
        accounts = post(anvil.rpc_url, "eth_accounts")
        expected = [a.address.lower() for a in derive_accounts(count=2)]
        assert [a.lower() for a in accounts] == expected
    assert anvil.poll() is not None  # stopped on leaving the context


def test_spawn_anvil_reports_a_failed_start(anvil_bin: str) -> None:
    with pytest.raises(AnvilError, match="exited"):
        spawn_anvil(binary=anvil_bin, mnemonic="not a valid mnemonic at all", startup_timeout=20)


def test_serve_with_chain_anvil(anvil_bin: str) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "flchain.devnet.rpc_server", "--chain", "anvil", "--port", "0",
         "--json", "--accounts", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "FLCHAIN_ANVIL": anvil_bin},
    )  # fmt: skip
    try:
        assert process.stdout is not None
        info = json.loads(process.stdout.readline())
        assert info["chain_id"] == 31337 and len(info["accounts"]) == 2
        assert post(info["rpc_url"], "eth_chainId") == "0x7a69"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        with pytest.raises(OSError):
            post(info["rpc_url"], "eth_chainId")  # anvil went away with the command
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)


def test_keep_time_moves_an_automine_chains_clock_up_to_the_wall_clock(anvil_bin: str) -> None:
    # anvil's automine makes a block only for a transaction: with nothing sent, its clock
    # stands still and a phase the wall clock says is over never opens on chain.
    import time

    from eth_account import Account
    from web3 import Web3

    from flchain.contracts import FLChainClient

    with spawn_anvil(accounts=1, binary=anvil_bin) as anvil:
        w3 = Web3(Web3.HTTPProvider(anvil.rpc_url))
        owner = Account.from_key(derive_accounts(count=1)[0].private_key)
        client = FLChainClient.deploy(w3, owner)
        before = w3.eth.get_block("latest")
        assert not client.keep_time(time.time())  # the deploy's block is current
        later = before["timestamp"] + 30  # the wall clock runs 30 s ahead of the chain
        assert client.keep_time(later)
        after = w3.eth.get_block("latest")
        assert after["number"] == before["number"] + 1
        assert not client.keep_time(after["timestamp"] + 1)  # within CLOCK_LAG: no block
        assert w3.eth.block_number == after["number"]
