"""Reaching a chain and signing for it: --rpc, --key/--key-file/$FLCHAIN_KEY, parsed values.

Transactions are signed locally; a key is never printed. Failures are one line (unreachable
RPC, no contract, bad key).
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from flchain import safe_json
from flchain.contracts.errors import FLChainError

if TYPE_CHECKING:  # web3 and eth_account load when a command reaches a chain or a key
    from eth_account.signers.local import LocalAccount
    from web3 import Web3

    from flchain.contracts.client import FLChainClient

DEFAULT_RPC = "http://127.0.0.1:8545"
_RPC_TIMEOUT_S = 30
_HEX_DIGITS = set("0123456789abcdefABCDEF")


# ---------------------------------------------------------------- parsing values


def parse_digest(value: str, what: str) -> bytes:
    text = value.strip().removeprefix("0x").removeprefix("0X")
    if len(text) != 64 or not set(text) <= _HEX_DIGITS:
        raise click.BadParameter(
            f"{value!r} is not a 32-byte digest (64 hex digits)", param_hint=what
        )
    return bytes.fromhex(text)


def check_address(value: str, what: str) -> str:
    from web3 import Web3

    if not Web3.is_address(value):
        raise click.BadParameter(
            f"{value!r} is not an address (0x + 40 hex digits, checksummed if mixed case)",
            param_hint=what,
        )
    return Web3.to_checksum_address(value)


# ---------------------------------------------------------------- keys


def key_from_hex(text: str, source: str) -> LocalAccount:
    """An account from a hex private key; errors name the source, never the key."""
    from eth_account import Account

    raw = text.strip().removeprefix("0x").removeprefix("0X")
    if len(raw) != 64 or not set(raw) <= _HEX_DIGITS:
        raise click.BadParameter(
            f"bad private key from {source}: expected 32 bytes as 64 hex digits (0x optional)"
        )
    try:
        return Account.from_key(bytes.fromhex(raw))
    except ValueError as exc:
        raise click.BadParameter(
            f"bad private key from {source}: not a valid secp256k1 key"
        ) from exc


def _keystore_password(password_file: Path | None, keystore: Path) -> str:
    if password_file is not None:
        return password_file.read_text("utf-8").rstrip("\r\n")
    from_env = os.environ.get("FLCHAIN_PASSWORD")
    if from_env is not None:
        return from_env
    if sys.stdin.isatty():
        return str(click.prompt(f"Password for {keystore}", hide_input=True))
    raise click.UsageError(
        f"{keystore} is an encrypted keystore: pass --password-file or set FLCHAIN_PASSWORD"
    )


def _warn_if_readable(path: Path) -> None:
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        click.echo(f"warning: {path} is readable by other users (chmod 600 it)", err=True)


# A hex key or an eth keystore is well under a kilobyte.
_MAX_KEY_FILE_BYTES = 64 * 1024


def load_account(
    key: str | None, key_file: Path | None, password_file: Path | None = None
) -> LocalAccount:
    """The signing account from --key, --key-file (hex key or eth keystore JSON, with
    --password-file or $FLCHAIN_PASSWORD) or $FLCHAIN_KEY, in that order of precedence."""
    from eth_account import Account

    if key is not None and key_file is not None:
        raise click.UsageError("give --key or --key-file, not both")
    if key is not None:
        return key_from_hex(key, "--key")
    if key_file is not None:
        _warn_if_readable(key_file)
        with key_file.open("rb") as file:
            raw = file.read(_MAX_KEY_FILE_BYTES + 1)
        if len(raw) > _MAX_KEY_FILE_BYTES:
            raise click.BadParameter(
                f"{key_file} is larger than {_MAX_KEY_FILE_BYTES} bytes: not a key or keystore"
            )
        if not raw.lstrip().startswith(b"{"):
            return key_from_hex(raw.decode("utf-8", errors="replace"), str(key_file))
        try:
            keystore = safe_json.loads(raw, max_bytes=_MAX_KEY_FILE_BYTES, max_depth=8)
        except ValueError as exc:
            raise click.BadParameter(f"{key_file} is not a valid keystore JSON: {exc}") from exc
        password = _keystore_password(password_file, key_file)
        try:
            return Account.from_key(Account.decrypt(keystore, password))
        except (ValueError, KeyError, TypeError) as exc:
            raise click.BadParameter(
                f"cannot decrypt keystore {key_file}: wrong password or damaged file"
            ) from exc
    from_env = os.environ.get("FLCHAIN_KEY")
    if from_env:
        return key_from_hex(from_env, "FLCHAIN_KEY")
    raise click.UsageError("no signing key: pass --key, --key-file, or set FLCHAIN_KEY")


# ---------------------------------------------------------------- chain access


def reason(exc: Exception) -> str:
    text = str(exc)
    if "refused" in text.lower():
        return "connection refused"
    if "timed out" in text.lower() or "timeout" in type(exc).__name__.lower():
        return "timed out"
    return f"{type(exc).__name__}: {text[:200]}"


def connect(rpc_url: str) -> Web3:
    """A Web3 for `rpc_url` that answered eth_chainId (the client retries later calls)."""
    from flchain.contracts.rpc import http_web3

    if not rpc_url.startswith(("http://", "https://")):
        raise click.BadParameter(f"{rpc_url!r} is not an http(s):// URL", param_hint="--rpc")
    w3 = http_web3(rpc_url, _RPC_TIMEOUT_S)
    try:
        int(w3.eth.chain_id)
    except Exception as exc:
        raise click.ClickException(f"cannot reach RPC at {rpc_url}: {reason(exc)}") from exc
    return w3


def open_flchain(w3: Web3, address: str, account: LocalAccount | None = None) -> FLChainClient:
    """A client for FLChain at `address`, after checking that code answering as FLChain is
    there. Read-only callers pass no account: a random one stands in and never signs."""

    from flchain.contracts.client import FLChainClient

    checksum = check_address(address, "--contract")
    code = w3.eth.get_code(checksum)
    if not code:
        raise click.ClickException(
            f"no contract code at {checksum} on chain {w3.eth.chain_id} "
            "(wrong --contract, or a chain restarted without its state?)"
        )
    client = (
        FLChainClient(w3, checksum, account)
        if account is not None
        else FLChainClient.read_only(w3, checksum)
    )
    try:
        client.task_count()
    except FLChainError as exc:
        raise click.ClickException(
            f"the contract at {checksum} does not answer as FLChain: {exc}"
        ) from exc
    return client


# ---------------------------------------------------------------- shared options


def rpc_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--rpc",
        envvar="FLCHAIN_RPC",
        default=DEFAULT_RPC,
        show_default=True,
        help="Ethereum JSON-RPC URL (env FLCHAIN_RPC).",
    )(fn)


def key_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--key", help="Hex private key (prefer --key-file or env FLCHAIN_KEY)."),
        click.option(
            "--key-file",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="File holding the hex key, or an eth keystore JSON.",
        ),
        click.option(
            "--password-file",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="Keystore password file (or env FLCHAIN_PASSWORD).",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(fn)
