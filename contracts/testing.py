"""Throwaway local chains for tests and benchmarks: eth-tester in process, or anvil.

Both give a Web3 with funded, locally held keys (the client never uses node-managed
accounts) and a clock that tests can move forward, so round windows can be crossed
without waiting. eth-tester is imported lazily: it is a test dependency only.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from flchain.contracts.errors import FLChainError, InvalidArgumentError

DEFAULT_FUNDS = 10**21  # 1000 ether


@dataclass
class LocalChain:
    """A running local chain: `w3`, its kind ("eth-tester" or "anvil") and helpers."""

    w3: Web3
    kind: str
    _stop: Callable[[], None] | None = None
    _key_counter: int = field(default=0, repr=False)

    def new_accounts(self, n: int, wei: int = DEFAULT_FUNDS) -> list[LocalAccount]:
        """`n` fresh local keys (deterministic per chain), each funded with `wei`."""
        if n < 0:
            raise InvalidArgumentError(f"n must be >= 0, got {n}")
        accounts = []
        for _ in range(n):
            self._key_counter += 1
            key = Web3.keccak(text=f"flchain-local-chain-{self._key_counter}")
            accounts.append(Account.from_key(key))
        self.fund((a.address for a in accounts), wei)
        return accounts

    def fund(self, addresses: Iterable[str], wei: int) -> None:
        """Give each address `wei` (anvil sets balances; eth-tester transfers)."""
        if self.kind == "anvil":
            for address in addresses:
                self.w3.provider.make_request("anvil_setBalance", [address, hex(wei)])
            return
        funder = self.w3.eth.accounts[0]
        hashes = [
            self.w3.eth.send_transaction({"from": funder, "to": address, "value": wei})
            for address in addresses
        ]
        for tx_hash in hashes:
            self.w3.eth.wait_for_transaction_receipt(tx_hash)

    def timestamp(self) -> int:
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def advance(self, seconds: int) -> None:
        """Move the chain clock forward by `seconds` and mine a block at the new time."""
        if seconds < 0:
            raise InvalidArgumentError(f"cannot move time back ({seconds} s)")
        if self.kind == "anvil":
            self.w3.provider.make_request("evm_increaseTime", [seconds])
            self.w3.provider.make_request("evm_mine", [])
        else:
            self.w3.testing.timeTravel(self.timestamp() + seconds)
            self.w3.testing.mine()

    def close(self) -> None:
        if self._stop is not None:
            self._stop()
            self._stop = None

    def __enter__(self) -> LocalChain:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _single_run_gas_estimate(state: Any, transaction: Any) -> int:
    """Gas a transaction uses when run once with the block gas limit.

    py-evm's default estimator binary-searches (about 13 runs per estimate), which makes
    suites of thousands of calls slow; one run plus the client's gas multiplier suffices
    for a contract without external calls. A failure raises the VM error, as py-evm does.
    """
    from eth.vm.spoof import SpoofTransaction

    snapshot = state.snapshot()
    try:
        spoofed = SpoofTransaction(transaction, gas=state.gas_limit, gas_price=0)
        computation = state.apply_transaction(spoofed)
        if computation.is_error:
            raise computation.error
        return int(transaction.intrinsic_gas + computation.get_gas_used())
    finally:
        state.revert(snapshot)


def eth_tester_chain(*, fast_gas_estimate: bool = True) -> LocalChain:
    """An in-process py-evm chain (eth-tester); every transaction mines its own block.

    fast_gas_estimate swaps py-evm's binary-search estimator for a single run.
    """
    from eth_tester import EthereumTester, PyEVMBackend
    from web3.providers.eth_tester import EthereumTesterProvider

    backend = PyEVMBackend()
    if fast_gas_estimate:
        backend.chain.gas_estimator = _single_run_gas_estimate
    return LocalChain(Web3(EthereumTesterProvider(EthereumTester(backend))), "eth-tester")


def open_chain(kind: str, anvil_bin: str | None = None) -> LocalChain:
    """A fresh chain of `kind`: "eth-tester", or "anvil" (which needs `anvil_bin`)."""
    if kind == "eth-tester":
        return eth_tester_chain()
    if kind == "anvil":
        if not anvil_bin:
            raise InvalidArgumentError("an anvil chain needs the anvil binary's path")
        return anvil_chain(anvil_bin)
    raise InvalidArgumentError(f"unknown chain kind {kind!r} (eth-tester or anvil)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop_process(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()


def anvil_chain(anvil_bin: str, *, startup_timeout: float = 20.0, attempts: int = 3) -> LocalChain:
    """Spawn anvil on a free 127.0.0.1 port (`--silent`), wait until it answers, and return
    the chain; `close()` stops the process. Retries on another port if the first is taken."""
    last_error = "no attempt made"
    for _ in range(attempts):
        port = _free_port()
        proc = subprocess.Popen(
            [anvil_bin, "--silent", "--host", "127.0.0.1", "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        w3 = Web3(Web3.HTTPProvider(f"http://127.0.0.1:{port}", request_kwargs={"timeout": 30}))
        deadline = time.monotonic() + startup_timeout
        while time.monotonic() < deadline and proc.poll() is None:
            if w3.is_connected():
                return LocalChain(w3, "anvil", lambda proc=proc: _stop_process(proc))
            time.sleep(0.05)
        if proc.poll() is None:
            _stop_process(proc)
            last_error = f"no answer on port {port} within {startup_timeout} s"
        else:
            stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            last_error = f"exited with {proc.returncode}: {stderr.strip()[-500:]}"
    raise FLChainError(f"anvil did not start ({anvil_bin}): {last_error}")
