"""Run foundry's anvil as the chain instead of the py-evm devnet.

anvil is much faster than py-evm and is the reference that the devnet imitates, so everything
that runs against one runs against the other. The binary is looked up in $FLCHAIN_ANVIL, then
in the repository's npm install (`make tools`), then on PATH.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import IO

from flchain import safe_json
from flchain.devnet.ports import free_listen_port

_NPM_BINARY = Path(".tools/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil")
ANVIL_STATE_FILE = "anvil-state.json"
_OUTPUT_TAIL = 2000


class AnvilError(RuntimeError):
    """anvil could not be found, or did not start answering JSON-RPC."""


def find_anvil() -> str:
    """Path of the anvil binary: $FLCHAIN_ANVIL, the repo's npm install, or PATH."""
    from_env = os.environ.get("FLCHAIN_ANVIL")
    if from_env:
        if not Path(from_env).is_file():
            raise AnvilError(f"FLCHAIN_ANVIL={from_env} is not a file")
        return from_env
    repo_root = Path(__file__).resolve().parents[1]
    for root in (repo_root, Path.cwd()):
        candidate = root / _NPM_BINARY
        if candidate.is_file():
            return str(candidate)
    on_path = shutil.which("anvil")
    if on_path:
        return on_path
    raise AnvilError(
        "anvil not found: set FLCHAIN_ANVIL, run `make tools` "
        "(npm package @foundry-rs/anvil-linux-amd64) or put anvil on PATH"
    )


def anvil_arguments(
    port: int,
    *,
    host: str = "127.0.0.1",
    block_time: float | None = None,
    accounts: int = 10,
    chain_id: int = 31337,
    balance_eth: Decimal | int | None = None,
    mnemonic: str | None = None,
    state_dir: Path | None = None,
) -> list[str]:
    """anvil's command-line flags for the `flchain chain serve` options."""
    args = ["--host", host, "--port", str(port), "--accounts", str(accounts)]
    args += ["--chain-id", str(chain_id)]
    if block_time:
        args += ["--block-time", _plain_number(block_time)]
    if balance_eth is not None:
        args += ["--balance", _plain_number(balance_eth)]
    if mnemonic:
        args += ["--mnemonic", mnemonic]
    if state_dir is not None:
        # --state loads the file at start-up and dumps on exit; the interval dump is what
        # survives a kill -9 (anvil has no per-transaction journal).
        args += ["--state", str(Path(state_dir) / ANVIL_STATE_FILE), "--state-interval", "1"]
    return args


def _plain_number(value: float | Decimal | int) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class AnvilProcess:
    """A running anvil child process; a context manager that stops it on exit."""

    def __init__(self, process: subprocess.Popen[bytes], rpc_url: str, output: IO[bytes]) -> None:
        self.process = process
        self.rpc_url = rpc_url
        self._output = output

    @property
    def pid(self) -> int:
        return self.process.pid

    def poll(self) -> int | None:
        """The exit status if anvil has exited, else None."""
        return self.process.poll()

    def output_tail(self) -> str:
        """The last lines anvil printed (for error messages)."""
        self._output.flush()
        self._output.seek(0, os.SEEK_END)
        size = self._output.tell()
        self._output.seek(max(0, size - _OUTPUT_TAIL))
        return self._output.read().decode(errors="replace")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if anvil has not exited within `timeout`."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        self._output.close()

    def __enter__(self) -> AnvilProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def spawn_anvil(
    port: int | None = None,
    *,
    block_time: float | None = None,
    accounts: int = 10,
    chain_id: int = 31337,
    state_dir: Path | None = None,
    host: str = "127.0.0.1",
    balance_eth: Decimal | int | None = None,
    mnemonic: str | None = None,
    binary: str | None = None,
    startup_timeout: float = 30.0,
) -> AnvilProcess:
    """Start anvil and return once it answers eth_chainId (port None: a free one)."""
    executable = binary or find_anvil()
    chosen_port = port if port else free_listen_port(host)
    if state_dir is not None:
        Path(state_dir).mkdir(parents=True, exist_ok=True)
    args = anvil_arguments(
        chosen_port,
        host=host,
        block_time=block_time,
        accounts=accounts,
        chain_id=chain_id,
        balance_eth=balance_eth,
        mnemonic=mnemonic,
        state_dir=state_dir,
    )
    output = tempfile.TemporaryFile()  # noqa: SIM115 - owned by AnvilProcess until stop()
    process = subprocess.Popen(
        [executable, *args], stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    shown = f"[{host}]" if ":" in host else host
    anvil = AnvilProcess(process, f"http://{shown}:{chosen_port}", output)
    try:
        _wait_until_ready(anvil, chain_id, startup_timeout)
    except BaseException:
        anvil.stop()
        raise
    return anvil


def _wait_until_ready(anvil: AnvilProcess, chain_id: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    request = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}).encode()
    while time.monotonic() < deadline:
        status = anvil.poll()
        if status is not None:
            raise AnvilError(f"anvil exited with status {status}:\n{anvil.output_tail()}")
        try:
            answer = _post(anvil.rpc_url, request)
        except (OSError, ValueError):
            time.sleep(0.1)
            continue
        if answer.get("result") != hex(chain_id):
            raise AnvilError(f"anvil answered eth_chainId with {answer!r}, expected {chain_id}")
        return
    raise AnvilError(f"anvil did not answer within {timeout} s:\n{anvil.output_tail()}")


def _post(url: str, body: bytes) -> dict[str, object]:
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=2) as response:
        answer = safe_json.loads(response.read(1 << 20), max_bytes=1 << 20)
    if not isinstance(answer, dict):
        raise ValueError("not a JSON-RPC response object")
    return answer
