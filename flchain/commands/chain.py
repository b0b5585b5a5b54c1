"""`flchain chain ...`: run a local Ethereum JSON-RPC chain (py-evm devnet or anvil).

Heavy imports (py-evm, eth-tester) happen inside the command so that `flchain --help` stays fast.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from flchain.devnet.accounts import (
    DEFAULT_DERIVATION_PATH,
    DEFAULT_MNEMONIC,
    DevAccount,
    derive_accounts,
    mnemonic_from_seed,
)
from flchain.devnet.policy import (
    DEFAULT_CORS_DOMAINS,
    DEFAULT_EVM_TIMEOUT,
    DEFAULT_GAS_CAP,
    DEFAULT_VHOSTS,
    is_loopback,
    split_list,
)

_WEI_PER_ETH = 10**18
# CLI option -> GenesisConfig field, to check explicit options against an existing --state DIR.
_GENESIS_OPTIONS = {
    "chain_id": "chain_id",
    "accounts": "accounts",
    "balance": "balance_wei",
    "mnemonic": "mnemonic",
    "seed": "mnemonic",
}
# Options the py-evm server enforces itself; anvil has no equivalent for them.
_PYEVM_ONLY_OPTIONS = {
    "vhosts": "--http-vhosts",
    "cors": "--http-corsdomain",
    "gas_cap": "--rpc-gascap",
    "evm_timeout": "--rpc-evmtimeout",
    "allow_unprotected_txs": "--allow-unprotected-txs",
}


class _EthAmount(click.ParamType):
    """An ether amount ("10000", "0.5") converted to an exact number of wei."""

    name = "ETH"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value * _WEI_PER_ETH
        try:
            amount = Decimal(str(value))
        except InvalidOperation:
            self.fail(f"{value!r} is not a number of ETH", param, ctx)
        wei = amount * _WEI_PER_ETH
        if not amount.is_finite() or wei < 0 or wei != wei.to_integral_value():
            self.fail(f"{value!r} is not a non-negative whole number of wei", param, ctx)
        return int(wei)


_log = logging.getLogger("flchain.devnet.chain_serve")


@click.group("chain")
def chain() -> None:
    """Run a local Ethereum JSON-RPC chain for flchain (py-evm devnet or anvil)."""


@chain.command("serve")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Anything but loopback exposes the unlocked dev keys to the "
    "network (a warning is printed).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8545,
    show_default=True,
    help="Port to listen on; 0 picks a free one (printed at start-up).",
)
@click.option(
    "--block-time",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Seconds between blocks; 0 mines a block for every transaction.",
)
@click.option(
    "--state",
    "state_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for the crash-safe journal; restarting with it restores the chain.",
)
@click.option(
    "--accounts",
    type=click.IntRange(1, 1000),
    default=10,
    show_default=True,
    help="Number of funded dev accounts.",
)
@click.option(
    "--chain-id",
    type=click.IntRange(1, 2**53 - 1),
    default=31337,
    show_default=True,
    help="EIP-155 chain id.",
)
@click.option(
    "--balance",
    type=_EthAmount(),
    default="10000",
    show_default=True,
    help="Genesis balance of each dev account, in ETH.",
)
@click.option("--mnemonic", help="BIP-39 mnemonic for the dev keys (default: anvil's).")
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    help="Derive the mnemonic from this integer instead (reproducible, not secret).",
)
@click.option(
    "--chain",
    "chain_kind",
    type=click.Choice(["pyevm", "anvil"]),
    default="pyevm",
    show_default=True,
    help="Serve the py-evm devnet, or spawn an installed anvil with the same options.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON line {rpc_url, chain_id, accounts} at start-up instead of the banner.",
)
@click.option(
    "--http-vhosts",
    "vhosts",
    multiple=True,
    default=[",".join(DEFAULT_VHOSTS)],
    show_default=True,
    help="Comma-separated host names accepted in the Host header (geth's --http.vhosts; "
    "'*' accepts any). IP addresses always pass; other names get 403 (DNS rebinding).",
)
@click.option(
    "--http-corsdomain",
    "cors",
    multiple=True,
    default=[",".join(DEFAULT_CORS_DOMAINS)],
    help="Comma-separated browser origins allowed to call the RPC (geth's --http.corsdomain; "
    "'*' allows any). Default: none, so a request carrying an Origin header gets 403.",
)
@click.option(
    "--rpc-gascap",
    "gas_cap",
    type=click.IntRange(min=21_000),
    default=DEFAULT_GAS_CAP,
    show_default=True,
    help="Most gas one eth_call/eth_estimateGas may use; more is clamped (geth's --rpc.gascap).",
)
@click.option(
    "--rpc-evmtimeout",
    "evm_timeout",
    type=click.FloatRange(min=0, max=3600, min_open=True),
    default=DEFAULT_EVM_TIMEOUT,
    show_default=True,
    help="Seconds one eth_call/eth_estimateGas may run before it is aborted with an error "
    "(geth's --rpc.evmtimeout).",
)
@click.option(
    "--allow-unprotected-txs",
    is_flag=True,
    help="Accept pre-EIP-155 raw transactions (no chain id, so replayable on any chain); "
    "refused by default (geth's --rpc.allow-unprotected-txs).",
)
@click.option("-v", "--verbose", count=True, help="Log more: -v info, -vv every request.")
@click.pass_context
def serve_command(
    ctx: click.Context,
    host: str,
    port: int,
    block_time: float,
    state_dir: Path | None,
    accounts: int,
    chain_id: int,
    balance: int,
    mnemonic: str | None,
    seed: int | None,
    chain_kind: str,
    as_json: bool,
    vhosts: tuple[str, ...],
    cors: tuple[str, ...],
    gas_cap: int,
    evm_timeout: float,
    allow_unprotected_txs: bool,
    verbose: int,
) -> None:
    """Serve Ethereum JSON-RPC over HTTP and WebSocket (same port, eth_subscribe) with funded
    dev accounts, like anvil.

    Callers are checked as geth checks them: loopback host names only, no browser origins,
    application/json bodies, capped and time-bounded calls, EIP-155 transactions only.
    """
    _configure_logging(verbose)
    if mnemonic is not None and seed is not None:
        raise click.UsageError("give --mnemonic or --seed, not both")
    phrase = mnemonic_from_seed(seed) if seed is not None else (mnemonic or DEFAULT_MNEMONIC)
    if not is_loopback(host):
        click.echo(
            f"WARNING: listening on {host}, not loopback: anyone who can reach this port can "
            "use the dev accounts, whose keys are unlocked (eth_sendTransaction signs for them).",
            err=True,
        )
    if chain_kind == "anvil":
        given = [
            flag
            for option, flag in _PYEVM_ONLY_OPTIONS.items()
            if ctx.get_parameter_source(option) == ParameterSource.COMMANDLINE
        ]
        if given:
            names = ", ".join(given)
            raise click.UsageError(f"{names}: only for --chain pyevm (anvil has no equivalent)")
        _serve_anvil(
            host=host,
            port=port,
            block_time=block_time,
            state_dir=state_dir,
            accounts=accounts,
            chain_id=chain_id,
            balance_wei=balance,
            mnemonic=phrase,
            as_json=as_json,
        )
        return
    explicit = sorted(
        {
            field
            for option, field in _GENESIS_OPTIONS.items()
            if ctx.get_parameter_source(option)
            in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
        }
    )
    _serve_pyevm(
        host=host,
        port=port,
        block_time=block_time,
        state_dir=state_dir,
        explicit=explicit,
        genesis_args={
            "chain_id": chain_id,
            "accounts": accounts,
            "balance_wei": balance,
            "mnemonic": phrase,
        },
        as_json=as_json,
        call_limits_args={"gas_cap": gas_cap, "timeout": evm_timeout},
        policy_args={
            "vhosts": split_list(vhosts),
            "cors_domains": split_list(cors),
            "allow_unprotected_txs": allow_unprotected_txs,
        },
    )


def _serve_pyevm(
    *,
    host: str,
    port: int,
    block_time: float,
    state_dir: Path | None,
    explicit: list[str],
    genesis_args: dict[str, Any],
    as_json: bool,
    call_limits_args: dict[str, Any],
    policy_args: dict[str, Any],
) -> None:
    from flchain.devnet.accounts import AccountConfigError
    from flchain.devnet.chain import DevChain
    from flchain.devnet.genesis import GenesisConfig, GenesisError
    from flchain.devnet.journal import JournalError
    from flchain.devnet.policy import CallLimits, RpcPolicy
    from flchain.devnet.rpc_server import DevnetServer

    automine = block_time == 0
    limits = CallLimits(**call_limits_args)
    try:
        genesis = GenesisConfig(**genesis_args)
        if state_dir is not None:
            devchain = DevChain.open(
                state_dir, genesis, must_match=explicit, automine=automine, call_limits=limits
            )
        else:
            devchain = DevChain(genesis, automine=automine, call_limits=limits)
    except (AccountConfigError, GenesisError, JournalError) as exc:
        raise click.ClickException(str(exc)) from exc
    policy = RpcPolicy(**policy_args)
    server = DevnetServer(devchain, host, port, block_time=block_time, policy=policy)
    try:
        try:
            server.start()
        except OSError as exc:
            raise click.ClickException(f"cannot listen on {host}:{port}: {exc}") from exc
        with _StopSignals() as signals:
            balances = {
                a.address: devchain.get_balance(a.canonical_address) for a in devchain.accounts
            }
            _announce(
                server.rpc_url,
                f"{server.host}:{server.port}",
                devchain.chain_id,
                devchain.accounts,
                balances,
                devchain.genesis.mnemonic,
                as_json,
                extra=_state_line(state_dir, devchain.block_number),
            )
            _log.info(
                "chain %d serving %s (HTTP and WebSocket), head #%d, state %s",
                devchain.chain_id,
                server.rpc_url,
                devchain.block_number,
                state_dir or "in memory",
            )
            signals.wait()
            _log.info("stopping at head #%d", devchain.block_number)
    finally:
        server.stop()
        devchain.close()
    if not as_json:
        click.echo("Shut down cleanly.", err=True)


def _serve_anvil(
    *,
    host: str,
    port: int,
    block_time: float,
    state_dir: Path | None,
    accounts: int,
    chain_id: int,
    balance_wei: int,
    mnemonic: str,
    as_json: bool,
) -> None:
    from flchain.devnet.anvil import AnvilError, spawn_anvil

    try:
        process = spawn_anvil(
            port or None,
            host=host,
            block_time=block_time or None,
            accounts=accounts,
            chain_id=chain_id,
            state_dir=state_dir,
            balance_eth=Decimal(balance_wei) / _WEI_PER_ETH,
            mnemonic=mnemonic,
        )
    except AnvilError as exc:
        raise click.ClickException(str(exc)) from exc
    with process, _StopSignals() as signals:
        keys = derive_accounts(mnemonic, accounts, DEFAULT_DERIVATION_PATH)
        address = process.rpc_url.removeprefix("http://")
        _announce(
            process.rpc_url,
            address,
            chain_id,
            keys,
            dict.fromkeys((a.address for a in keys), balance_wei),
            mnemonic,
            as_json,
            extra=f"anvil pid {process.pid}",
        )
        signals.wait(lambda: process.poll() is not None)
        status = process.poll()
    if status is not None and status != 0:
        raise click.ClickException(f"anvil exited with status {status}")


def _announce(
    rpc_url: str,
    listen: str,
    chain_id: int,
    accounts: list[DevAccount],
    balances: dict[str, int],
    mnemonic: str,
    as_json: bool,
    extra: str | None = None,
) -> None:
    if as_json:
        line = {
            "rpc_url": rpc_url,
            "chain_id": chain_id,
            "accounts": [
                {"address": a.address, "private_key": a.private_key_hex} for a in accounts
            ],
        }
        click.echo(json.dumps(line))
        sys.stdout.flush()
        return
    out = ["", "Available Accounts", "==================", ""]
    for index, account in enumerate(accounts):
        ether = Decimal(balances[account.address]) / _WEI_PER_ETH
        out.append(f"({index}) {account.address} ({ether:.6f} ETH)")
    out += ["", "Private Keys", "==================", ""]
    out += [f"({index}) {a.private_key_hex}" for index, a in enumerate(accounts)]
    out += ["", "Wallet", "==================", f"Mnemonic:          {mnemonic}"]
    out += [f"Derivation path:   {DEFAULT_DERIVATION_PATH}<index>", ""]
    out += ["Chain ID", "==================", "", str(chain_id), ""]
    if extra:
        out += [extra, ""]
    out.append(f"Listening on {listen}")
    click.echo("\n".join(out))
    sys.stdout.flush()


def _state_line(state_dir: Path | None, head: int) -> str | None:
    if state_dir is None:
        return None
    return f"State journal: {state_dir} (head block #{head})"


class _StopSignals:
    """Turns SIGINT/SIGTERM into a flag while installed, so shutdown runs our cleanup."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        self._stop.set()

    def wait(self, finished: Callable[[], bool] = lambda: False) -> None:
        """Block until a stop signal arrives or `finished()` turns true."""
        while not self._stop.wait(0.5):
            if finished():
                return


def _configure_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
