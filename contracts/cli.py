"""`flchain contract deploy`, `flchain task create` and `flchain ledger ...` against any chain.

Every command talks JSON-RPC to `--rpc` (default http://127.0.0.1:8545): the py-evm devnet,
anvil, geth or a public testnet. Transactions are signed locally with `--key`, `--key-file`
(hex key or eth keystore) or $FLCHAIN_KEY; the key is never printed. Ledger commands only read,
need no key, and take `--devnet DIR` for the RPC URL, contract, task and blob stores that
`flchain devnet up` records in DIR/devnet.json (and the task config its nodes hold, for the
privacy budget); once that devnet has stopped they read its chain journal instead
(`flchain.devnet.replay`). Tables by default, `--json`/`--csv` for scripts; members are named
by `flchain.contracts.names` (`#3 node-2 0x1234…abcd`).
Failures print one line (unreachable RPC, no contract, unknown task, bad key, revert reason).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
import os
import stat
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource
from eth_account import Account
from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from web3 import Web3

from flchain import safe_json
from flchain.cli_options import (
    economics_options,
    eth_to_wei,
    format_eth,
    pop_economics,
    weight_options,
)
from flchain.config import DEFAULT_MAX_SAMPLES, MAX_SAMPLES_LIMIT
from flchain.contracts.artifact import load_artifact
from flchain.contracts.client import FLChainClient
from flchain.contracts.errors import ContractRevert, FLChainError
from flchain.contracts.ledger import (
    BlobCheck,
    ConfigMismatchError,
    Ledger,
    LedgerError,
    MemberMoney,
    RoundRecord,
    TaskPrivacy,
    chain_time,
    count_commits,
    event_row,
    get_task_checked,
    hex0x,
    ledger_tables,
    list_tasks,
    load_task_privacy,
    member_money,
    member_row,
    penalty_text,
    plain,
    read_commit_counts,
    read_round_events,
    rebuild_ledger,
    reputation_history,
    reputation_moves,
    round_detail,
    round_row,
    sha256_file,
    slash_records,
    task_row,
    verify_blobs,
)
from flchain.contracts.names import MemberNames
from flchain.contracts.sender import TransactionSender
from flchain.contracts.types import REP_UNIT, TaskInfo, TaskParams, TaskStatus
from flchain.devnet.manifest import (
    DevnetError,
    chain_stopped,
    node_dir,
    read_manifest,
    stopped_journal,
)

DEFAULT_RPC = "http://127.0.0.1:8545"
NODE_TASK_CONFIG = "task-config.json"  # what the devnet launcher writes into every node dir
_RPC_TIMEOUT_S = 30
_PIPE_WIDTH = 160
_HEX_DIGITS = set("0123456789abcdefABCDEF")


# ---------------------------------------------------------------- errors and output


@contextmanager
def _cli_errors() -> Iterator[None]:
    """Report expected failures as one line (exit 1) instead of a traceback."""
    try:
        yield
    except click.ClickException:
        raise
    except (FLChainError, ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    return value


def _echo_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> None:
    """Rows as CSV (lists space-separated, dicts as JSON, None empty)."""
    click.echo(_csv_text(rows, columns), nl=False)


def _csv_text(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    names = list(columns) if columns is not None else list(rows[0]) if rows else []
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_cell(row.get(k)) for k in names})
    return buffer.getvalue()


def _short(value: str, keep: int = 10) -> str:
    """0x-hex digests shortened for tables (JSON and CSV always carry them whole)."""
    if isinstance(value, str) and value.startswith("0x") and len(value) > keep + 6:
        return f"{value[:keep]}…{value[-4:]}"
    return value


def _when(timestamp: int | None) -> str:
    if not timestamp:
        return "-"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "none"
    return _short(str(value))


@dataclass(frozen=True)
class _Column:
    header: str
    key: str
    render: Callable[[Any], str] = _cell
    style: Callable[[Any], str | None] = lambda _value: None


def _status_style(value: Any) -> str | None:
    return {
        "finalized": "green",
        "ok": "green",
        "active": "green",
        "accepted": "green",
        "failed": "red",
        "reverted": "red",
        "aborted": "red",
        "mismatch": "red",
        "ejected": "red",
        "rejected": "red",
        "stalled": "yellow",
        "missing": "yellow",
        "voting": "cyan",
    }.get(str(value))


def _echo_table(title: str, columns: Sequence[_Column], rows: Sequence[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column.header, overflow="fold")
    for row in rows:
        # Text, not markup: chain data such as peer ids may contain "[".
        cells = [
            Text(column.render(row.get(column.key)), style=column.style(row.get(column.key)) or "")
            for column in columns
        ]
        table.add_row(*cells)
    # Piped output gets a fixed width instead of rich's 80-column default.
    Console(width=None if sys.stdout.isatty() else _PIPE_WIDTH).print(table)


def _emit(
    rows: Sequence[dict[str, Any]],
    *,
    title: str,
    columns: Sequence[_Column],
    as_json: bool,
    as_csv: bool,
) -> None:
    if as_json:
        _echo_json(list(rows))
    elif as_csv:
        _echo_csv(rows, None if rows else [c.key for c in columns])
    else:
        _echo_table(title, columns, rows)


# ---------------------------------------------------------------- parsing values


def _parse_digest(value: str, what: str) -> bytes:
    text = value.strip().removeprefix("0x").removeprefix("0X")
    if len(text) != 64 or not set(text) <= _HEX_DIGITS:
        raise click.BadParameter(
            f"{value!r} is not a 32-byte digest (64 hex digits)", param_hint=what
        )
    return bytes.fromhex(text)


def _check_address(value: str, what: str) -> str:
    if not Web3.is_address(value):
        raise click.BadParameter(
            f"{value!r} is not an address (0x + 40 hex digits, checksummed if mixed case)",
            param_hint=what,
        )
    return Web3.to_checksum_address(value)


# ---------------------------------------------------------------- keys


def _key_from_hex(text: str, source: str) -> LocalAccount:
    """An account from a hex private key; errors name the source, never the key."""
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
    if key is not None and key_file is not None:
        raise click.UsageError("give --key or --key-file, not both")
    if key is not None:
        return _key_from_hex(key, "--key")
    if key_file is not None:
        _warn_if_readable(key_file)
        with key_file.open("rb") as file:
            raw = file.read(_MAX_KEY_FILE_BYTES + 1)
        if len(raw) > _MAX_KEY_FILE_BYTES:
            raise click.BadParameter(
                f"{key_file} is larger than {_MAX_KEY_FILE_BYTES} bytes: not a key or keystore"
            )
        if not raw.lstrip().startswith(b"{"):
            return _key_from_hex(raw.decode("utf-8", errors="replace"), str(key_file))
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
        return _key_from_hex(from_env, "FLCHAIN_KEY")
    raise click.UsageError("no signing key: pass --key, --key-file, or set FLCHAIN_KEY")


# ---------------------------------------------------------------- chain access


def _reason(exc: Exception) -> str:
    text = str(exc)
    if "refused" in text.lower():
        return "connection refused"
    if "timed out" in text.lower() or "timeout" in type(exc).__name__.lower():
        return "timed out"
    return f"{type(exc).__name__}: {text[:200]}"


def connect(rpc_url: str) -> Web3:
    """A Web3 for `rpc_url` that answered eth_chainId (the client retries later calls)."""
    if not rpc_url.startswith(("http://", "https://")):
        raise click.BadParameter(f"{rpc_url!r} is not an http(s):// URL", param_hint="--rpc")
    # web3 checks eth_chainId around every call; a chain's id never changes, so cache it
    # (a ledger rebuild makes hundreds of calls). Retries are the client's RetryPolicy's job.
    provider = Web3.HTTPProvider(
        rpc_url,
        request_kwargs={"timeout": _RPC_TIMEOUT_S},
        exception_retry_configuration=None,
        cache_allowed_requests=True,
        cacheable_requests={"eth_chainId"},
    )
    w3 = Web3(provider)
    try:
        int(w3.eth.chain_id)
    except Exception as exc:
        raise click.ClickException(f"cannot reach RPC at {rpc_url}: {_reason(exc)}") from exc
    return w3


def open_flchain(w3: Web3, address: str, account: LocalAccount | None = None) -> FLChainClient:
    """A client for FLChain at `address`, after checking that code answering as FLChain is
    there. Read-only callers pass no account: a random one stands in and never signs."""
    checksum = _check_address(address, "--contract")
    code = w3.eth.get_code(checksum)
    if not code:
        raise click.ClickException(
            f"no contract code at {checksum} on chain {w3.eth.chain_id} "
            "(wrong --contract, or a chain restarted without its state?)"
        )
    client = FLChainClient(w3, checksum, account or Account.create())
    try:
        client.task_count()
    except FLChainError as exc:
        raise click.ClickException(
            f"the contract at {checksum} does not answer as FLChain: {exc}"
        ) from exc
    return client


# ---------------------------------------------------------------- shared options


def _rpc_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--rpc",
        envvar="FLCHAIN_RPC",
        default=DEFAULT_RPC,
        show_default=True,
        help="Ethereum JSON-RPC URL (env FLCHAIN_RPC).",
    )(fn)


def _key_options(fn: Callable[..., Any]) -> Callable[..., Any]:
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


def _json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(fn)


# ---------------------------------------------------------------- flchain contract


@click.group("contract")
def contract() -> None:
    """Deploy the FLChain contract to any Ethereum JSON-RPC endpoint."""


@contract.command("deploy")
@_rpc_option
@_key_options
@_json_option
def deploy_command(
    rpc: str, key: str | None, key_file: Path | None, password_file: Path | None, as_json: bool
) -> None:
    """Deploy FLChain from the key's account; prints the address, tx hash, block and gas."""
    with _cli_errors():
        account = load_account(key, key_file, password_file)
        w3 = connect(rpc)
        sender = TransactionSender(w3, account)
        receipt = sender.send(None, load_artifact().deploy_data(), what="deploy FLChain")
        result = {
            "address": Web3.to_checksum_address(receipt["contractAddress"]),
            "tx_hash": HexBytes(receipt["transactionHash"]).to_0x_hex(),
            "block_number": int(receipt["blockNumber"]),
            "gas_used": int(receipt["gasUsed"]),
            "chain_id": sender.chain_id,
            "deployer": account.address,
        }
    if as_json:
        _echo_json(result)
        return
    click.echo(f"FLChain deployed at {result['address']}")
    click.echo(f"  tx {result['tx_hash']} in block {result['block_number']}")
    click.echo(f"  gas used {result['gas_used']}, chain id {result['chain_id']}")


# ---------------------------------------------------------------- flchain task


@click.group("task")
def task() -> None:
    """Create federated-learning tasks on an FLChain contract, and move their money.

    create escrows the reward pool, fund adds to it, withdraw pays a member once the task
    is settled, refund returns the pool to the owner of a task that paid no rewards."""


def _digest_choice(path: Path | None, digest: str | None, names: tuple[str, str]) -> bytes:
    if path is not None and digest is not None:
        raise click.UsageError(f"give {names[0]} or {names[1]}, not both")
    if path is not None:
        return sha256_file(path)
    if digest is not None:
        return _parse_digest(digest, names[1])
    raise click.UsageError(f"missing {names[0]} FILE or {names[1]} 0x..")


def _initial_digest_from_config(path: Path) -> bytes:
    """Nodes rebuild round 0's model from a flchain task config; so can we."""
    from flchain.taskconfig import TaskConfig, TaskConfigError, initial_model_digest

    try:
        return initial_model_digest(TaskConfig.from_file(path))
    except (TaskConfigError, ValueError) as exc:
        raise click.UsageError(
            f"{path} is not a flchain task config ({exc}); give --model FILE or --model-digest"
        ) from exc


def _max_samples_choice(config_file: Path | None, option: int | None) -> int:
    """The task's max_samples: a flchain task config's own value (which every node weighs
    by; --max-samples may only repeat it), else --max-samples, else the default."""
    from flchain.taskconfig import TaskConfig, TaskConfigError

    config = None
    if config_file is not None:
        try:
            config = TaskConfig.from_file(config_file)
        except (TaskConfigError, OSError):
            config = None  # some other config file: only its digest goes on chain
    if config is None:
        return DEFAULT_MAX_SAMPLES if option is None else option
    if option is not None and option != config.max_samples:
        raise click.UsageError(
            f"--max-samples {option} contradicts {config_file}'s max_samples "
            f"{config.max_samples}; the nodes weigh by the config"
        )
    return config.max_samples


@task.command("config")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Where to write the task config JSON (hand it to every node).",
)
@click.option("--model", default="cnn", show_default=True, help="logreg | mlp | cnn | resnet")
@click.option("--dataset", default="digits", show_default=True)
@click.option(
    "--rule", default=None, help="Aggregation rule [default: multikrum; fedavg with --secure]"
)
@click.option("--rule-param", multiple=True, metavar="KEY=VALUE", help="e.g. f=1, beta=0.2")
@click.option("--local-epochs", default=2, show_default=True)
@click.option("--batch-size", default=16, show_default=True)
@click.option("--lr", default=0.1, show_default=True)
@click.option("--dp-clip", type=float, default=None)
@click.option("--dp-noise", type=float, default=0.0, show_default=True)
@click.option("--dp-delta", type=float, default=1e-5, show_default=True)
@click.option(
    "--secure",
    is_flag=True,
    help="Secure aggregation: masked Paillier bundles, a decryptor chosen on chain; FedAvg only.",
)
@click.option("--secure-bits", default=16, show_default=True, help="Quantization bits.")
@click.option("--secure-key-bits", default=2048, show_default=True, help="Paillier key size.")
@click.option("--secure-range", type=float, default=None, help="Quantization range (-c, c).")
@click.option("--seed", default=0, show_default=True, help="Seeds the initial model and shards.")
@weight_options
@click.option("--json", "as_json", is_flag=True)
def task_config_command(
    out: Path, rule: str | None, rule_param: tuple[str, ...], as_json: bool, **fields: Any
) -> None:
    """Write a task config and print the two digests `task create` commits to.

    Every node checks the file against the config digest and rebuilds the initial model from
    it, so `task create --config FILE` needs nothing else.
    """
    from flchain.config import ConfigError, parse_key_values
    from flchain.taskconfig import TaskConfigError, build_task_config, initial_model_digest

    try:
        rule = rule or ("fedavg" if fields["secure"] else "multikrum")
        params = parse_key_values(rule_param, "--rule-param")
        config = build_task_config(rule=rule, rule_params=params, **fields)
        initial = initial_model_digest(config)
    except (TaskConfigError, ConfigError, ValueError) as exc:
        raise click.UsageError(str(exc)) from exc
    out.write_bytes(config.to_json_bytes())
    info = {
        "path": str(out),
        "config_digest": hex0x(config.digest),
        "initial_digest": hex0x(initial),
    }
    if as_json:
        _echo_json(info)
    else:
        click.echo(
            f"wrote {out}: config {info['config_digest']}, initial model {info['initial_digest']}"
        )


@task.command("create")
@_rpc_option
@_key_options
@click.option(
    "--contract",
    "contract_address",
    envvar="FLCHAIN_CONTRACT",
    required=True,
    help="FLChain address (env FLCHAIN_CONTRACT).",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Task config file; its sha256 is the config digest.",
)
@click.option("--config-digest", help="Config digest (0x + 64 hex), instead of --config.")
@click.option(
    "--model",
    "model_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Initial model blob; its sha256 is the initial model digest (default: rebuilt "
    "from --config when that is a flchain task config, as the nodes do).",
)
@click.option("--model-digest", help="Initial model digest (0x + 64 hex), instead of --model.")
@click.option("--min-members", type=click.IntRange(1, 256), default=2, show_default=True)
@click.option("--max-members", type=click.IntRange(1, 256), default=16, show_default=True)
@click.option(
    "--submit-window", type=click.IntRange(min=1), default=600, show_default=True, help="Seconds."
)
@click.option(
    "--vote-window", type=click.IntRange(min=1), default=300, show_default=True, help="Seconds."
)
@click.option(
    "--alarm-window",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Seconds after finalization for Siren alarms; 0 disables alarms.",
)
@economics_options()
@click.option(
    "--stake-wei",
    type=click.IntRange(min=0),
    help="Stake each member deposits at join (forfeited to the reward pool if ejected).",
)
@click.option("--stake-eth", help="The stake in ETH (default 0).")
@click.option("--max-rounds", type=click.IntRange(min=1), default=100, show_default=True)
@click.option(
    "--max-samples",
    type=click.IntRange(0, MAX_SAMPLES_LIMIT),
    default=None,
    help=f"Cap on the sample count an update weighs with (0: unused) [default: the task "
    f"config's max_samples, else {DEFAULT_MAX_SAMPLES}].",
)
@click.option("--allowlist", is_flag=True, help="Only allowlisted accounts may join.")
@click.option(
    "--allow",
    "allowed",
    multiple=True,
    help="Account to allowlist right away (repeatable; implies --allowlist).",
)
@_json_option
def create_command(
    rpc: str,
    key: str | None,
    key_file: Path | None,
    password_file: Path | None,
    contract_address: str,
    config_file: Path | None,
    config_digest: str | None,
    model_file: Path | None,
    model_digest: str | None,
    min_members: int,
    max_members: int,
    submit_window: int,
    vote_window: int,
    alarm_window: int,
    stake_wei: int | None,
    stake_eth: str | None,
    max_rounds: int,
    max_samples: int | None,
    allowlist: bool,
    allowed: tuple[str, ...],
    as_json: bool,
    **economics: Any,
) -> None:
    """Create a task (your account becomes its owner); prints the task id.

    The config digest commits every member to the task config (model, data spec, rule, DP
    and secure-aggregation settings); the initial model digest names round 1's base model.

    The reward pool (--reward-eth/--reward-wei) is sent with the call and escrowed by the
    contract: anyone may add to it later (`task fund`), members take their payout once the
    task is settled (`task withdraw`), and if no round paid a reward the owner takes it back
    (`task refund`).
    """
    money = pop_economics(economics)
    with _cli_errors():
        config = _digest_choice(config_file, config_digest, ("--config", "--config-digest"))
        if model_file is None and model_digest is None and config_file is not None:
            initial = _initial_digest_from_config(config_file)
        else:
            initial = _digest_choice(model_file, model_digest, ("--model", "--model-digest"))
        if stake_wei is not None and stake_eth is not None:
            raise click.UsageError("give --stake-wei or --stake-eth, not both")
        stake = stake_wei if stake_wei is not None else eth_to_wei(stake_eth or "0", "--stake-eth")
        allow = [_check_address(a, "--allow") for a in allowed]
        params = TaskParams(
            config_digest=config,
            initial_digest=initial,
            min_members=min_members,
            max_members=max_members,
            submit_window=submit_window,
            vote_window=vote_window,
            alarm_window=alarm_window,
            quorum_bps=money.quorum_bps,
            alarm_bps=money.alarm_bps,
            stake=stake,
            max_rounds=max_rounds,
            rep_floor=money.rep_floor,
            allowlist=allowlist or bool(allow),
            max_samples=_max_samples_choice(config_file, max_samples),
            reward=money.reward_wei,
        )
        account = load_account(key, key_file, password_file)
        client = open_flchain(connect(rpc), contract_address, account)
        tx = client.create_task_tx(params)
        task_id = int(tx.event("TaskCreated")["task_id"])
        for address in allow:
            try:
                client.set_allowed(task_id, address)
            except FLChainError as exc:
                raise click.ClickException(
                    f"task {task_id} was created, but allowlisting {address} failed: {exc}"
                ) from exc
        result = {
            "task_id": task_id,
            "tx_hash": tx.tx_hash,
            "block_number": tx.block_number,
            "gas_used": tx.gas_used,
            "contract": client.address,
            "owner": account.address,
            "config_digest": hex0x(config),
            "initial_digest": hex0x(initial),
            "stake_wei": stake,
            "reward_wei": money.reward_wei,
            "quorum_bps": money.quorum_bps,
            "alarm_bps": money.alarm_bps,
            "rep_floor": money.rep_floor,
            "max_samples": params.max_samples,
            "allowed": allow,
        }
    if as_json:
        _echo_json(result)
        return
    click.echo(f"Task {task_id} created on {client.address}")
    click.echo(f"  tx {tx.tx_hash} in block {tx.block_number}, gas used {tx.gas_used}")
    click.echo(f"  config {hex0x(config)}, initial model {hex0x(initial)}")
    click.echo(
        f"  reward pool {_eth(money.reward_wei)} ETH, stake {_eth(stake)} ETH; quorum "
        f"{money.quorum_bps} bps, alarm {money.alarm_bps} bps, reputation floor "
        f"{money.rep_floor}"
    )


# ---------------------------------------------------------------- flchain task: money


def _contract_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--contract",
        "contract_address",
        envvar="FLCHAIN_CONTRACT",
        required=True,
        help="FLChain address (env FLCHAIN_CONTRACT).",
    )(fn)


_TASK_ID = click.argument("task_id", metavar="TASK", type=click.IntRange(min=1))


def _signed_client(
    rpc: str,
    contract_address: str,
    key: str | None,
    key_file: Path | None,
    password_file: Path | None,
    task_id: int,
) -> tuple[FLChainClient, TaskInfo]:
    """A client sending as the key's account, and the task (which must exist)."""
    account = load_account(key, key_file, password_file)
    client = open_flchain(connect(rpc), contract_address, account)
    return client, get_task_checked(client, task_id)


def _not_settled(client: FLChainClient, task: TaskInfo) -> str | None:
    """Why the task's payouts are not final yet (the contract's words first), or None.

    Settled: the task ended and the alarm window of its last good round closed. The view
    answers at the head block; a quiet chain's next block is later, so the window is also
    checked against chain time (the contract has the last word either way)."""
    if task.status in (TaskStatus.REGISTERING, TaskStatus.RUNNING):
        state = (
            f"running (round {task.current_round} of {task.max_rounds})"
            if task.status == TaskStatus.RUNNING
            else "registering members"
        )
        return (
            f"task running: task {task.task_id} is {state}; "
            "payouts are final once it has finished (or its owner closed it) and the alarm "
            "window of its last finalized round has closed"
        )
    if task.settled or task.global_round == 0:
        return None
    end = client.get_round(task.task_id, task.global_round).finalized_at + task.alarm_window
    now = chain_time(client)
    if now >= end:
        return None
    return (
        f"alarm window open: round {task.global_round}'s Siren alarm window closes at "
        f"{_when(end)} UTC (in {end - now} s); an alarm could still revert it and move rewards"
    )


def _tx_fields(tx: Any) -> dict[str, Any]:
    return {"tx_hash": tx.tx_hash, "block_number": tx.block_number, "gas_used": tx.gas_used}


@task.command("fund")
@_rpc_option
@_key_options
@_contract_option
@_TASK_ID
@click.option("--eth", "amount_eth", help="ETH to add to the reward pool.")
@click.option("--wei", "amount_wei", type=click.IntRange(min=1), help="Wei, instead of --eth.")
@_json_option
def fund_command(
    rpc: str,
    key: str | None,
    key_file: Path | None,
    password_file: Path | None,
    contract_address: str,
    task_id: int,
    amount_eth: str | None,
    amount_wei: int | None,
    as_json: bool,
) -> None:
    """Add to TASK's reward pool (anyone may, while the task registers or runs).

    The pool pays each finalized round's accepted members (those that voted on the round
    before) an equal share of pool / rounds left; what is left at the end is split among
    the members in proportion to the rewards they earned. A top-up cannot be taken back."""
    if (amount_eth is None) == (amount_wei is None):
        raise click.UsageError("give the amount as --eth or --wei (one of them)")
    amount = amount_wei if amount_wei is not None else eth_to_wei(amount_eth or "", "--eth")
    if amount == 0:
        raise click.BadParameter("the amount must be positive", param_hint="--eth")
    with _cli_errors():
        client, info = _signed_client(rpc, contract_address, key, key_file, password_file, task_id)
        if info.status not in (TaskStatus.REGISTERING, TaskStatus.RUNNING):
            raise click.ClickException(
                f"task {task_id} has ended ({info.status.name.lower()}): its reward pool "
                "takes no more funds"
            )
        tx = client.fund_task(task_id, amount)
        event = tx.event("RewardFunded")
        result = {
            "task_id": task_id,
            "funder": client.account,
            "amount_wei": int(event["amount"]),
            "reward_pool_wei": int(event["reward_pool"]),
            **_tx_fields(tx),
        }
    if as_json:
        _echo_json(result)
        return
    click.echo(
        f"Added {_eth(amount)} ETH to task {task_id}'s reward pool: now "
        f"{_eth(result['reward_pool_wei'])} ETH"
    )
    click.echo(f"  tx {tx.tx_hash} in block {tx.block_number}, gas used {tx.gas_used}")


_WITHDRAW_REFUSALS = {
    "not member": "{account} is not a member of task {task_id}",
    "ejected": "{account} was ejected from task {task_id}: its stake and rewards went to the "
    "reward pool (`flchain ledger members` shows the forfeit)",
    "withdrawn": "{account} has already withdrawn its payout from task {task_id}",
}


@task.command("withdraw")
@_rpc_option
@_key_options
@_contract_option
@_TASK_ID
@_json_option
def withdraw_command(
    rpc: str,
    key: str | None,
    key_file: Path | None,
    password_file: Path | None,
    contract_address: str,
    task_id: int,
    as_json: bool,
) -> None:
    """Take your payout from TASK (a member's key): stake, rewards earned, and a share of
    the reward pool left at the end in proportion to those rewards.

    Only once the task is settled: it has finished (or its owner closed it) and the Siren
    alarm window of its last finalized round has closed. Ejected members get nothing: their
    stake and rewards went to the pool."""
    with _cli_errors():
        client, info = _signed_client(rpc, contract_address, key, key_file, password_file, task_id)
        problem = _not_settled(client, info)
        if problem is not None:
            raise click.ClickException(f"task {task_id} is not settled yet: {problem}")
        try:
            tx = client.withdraw(task_id)
        except ContractRevert as exc:
            refusal = _WITHDRAW_REFUSALS.get(exc.reason)
            if refusal is None:
                raise
            raise click.ClickException(
                refusal.format(account=client.account, task_id=task_id)
            ) from exc
        event = tx.event("Withdrawn")
        stake, reward = int(event["stake"]), int(event["reward"])
        result = {
            "task_id": task_id,
            "member": int(event["member"]),
            "account": client.account,
            "stake_wei": stake,
            "reward_wei": reward,
            "amount_wei": stake + reward,
            **_tx_fields(tx),
        }
    if as_json:
        _echo_json(result)
        return
    click.echo(
        f"Withdrew {_eth(stake + reward)} ETH from task {task_id} as member {result['member']}: "
        f"stake {_eth(stake)} ETH, rewards {_eth(reward)} ETH"
    )
    click.echo(f"  tx {tx.tx_hash} in block {tx.block_number}, gas used {tx.gas_used}")


@task.command("refund")
@_rpc_option
@_key_options
@_contract_option
@_TASK_ID
@_json_option
def refund_command(
    rpc: str,
    key: str | None,
    key_file: Path | None,
    password_file: Path | None,
    contract_address: str,
    task_id: int,
    as_json: bool,
) -> None:
    """Take TASK's reward pool back (the owner's key), when the settled task paid no
    rewards: no round was finalized with an accepted, active member. Once any member earned
    a reward, the pool left belongs to the members (paid by their `task withdraw`)."""
    with _cli_errors():
        client, info = _signed_client(rpc, contract_address, key, key_file, password_file, task_id)
        if info.owner.lower() != client.account.lower():
            raise click.ClickException(
                f"only task {task_id}'s owner {info.owner} may claim its refund "
                f"(this key is {client.account})"
            )
        problem = _not_settled(client, info)
        if problem is not None:
            raise click.ClickException(f"task {task_id} is not settled yet: {problem}")
        if info.rewards_paid > 0:
            raise click.ClickException(
                f"nothing to claim: task {task_id}'s members earned "
                f"{_eth(info.rewards_paid)} ETH of rewards, so the pool left "
                f"({_eth(info.reward_pool)} ETH) is theirs, paid by their `task withdraw`"
            )
        if info.reward_pool == 0:
            raise click.ClickException(f"nothing to claim: task {task_id}'s reward pool is empty")
        tx = client.claim_refund(task_id)
        amount = int(tx.event("RefundClaimed")["amount"])
        result = {
            "task_id": task_id,
            "owner": client.account,
            "amount_wei": amount,
            **_tx_fields(tx),
        }
    if as_json:
        _echo_json(result)
        return
    click.echo(f"Refunded {_eth(amount)} ETH of task {task_id}'s reward pool to {client.account}")
    click.echo(f"  tx {tx.tx_hash} in block {tx.block_number}, gas used {tx.gas_used}")


# ---------------------------------------------------------------- flchain ledger: sources


@dataclass(frozen=True)
class DevnetFile:
    """What `flchain devnet up` records in DIR/devnet.json for the ledger to find."""

    rpc_url: str
    contract: str
    task_id: int
    blob_dirs: tuple[Path, ...]
    task_config: Path | None = None  # the first node's copy of the task config
    names: MemberNames = field(default_factory=MemberNames)  # node names and attacks
    stopped: bool = False  # its chain process has gone
    journal: Path | None = None  # DIR/chain, where the py-evm chain journaled its state
    no_journal: str | None = None  # why a stopped devnet has no journal
    directory: Path | None = None  # DIR itself (the explorer reads its nodes' status)


def read_devnet(directory: Path) -> DevnetFile:
    """DIR/devnet.json as the ledger needs it (read by `flchain.devnet.manifest`, as every
    devnet command reads it), and whether its chain still runs."""
    try:
        data = read_manifest(directory)
    except DevnetError as exc:
        raise click.ClickException(str(exc)) from None
    node_dirs = [node_dir(directory, n["dir"]) for n in data["nodes"]]
    config = node_dirs[0] / NODE_TASK_CONFIG if node_dirs else None
    stopped, journal, no_journal = chain_stopped(data), None, None
    if stopped:
        try:
            journal = stopped_journal(directory, data)
        except DevnetError as exc:
            no_journal = str(exc)
    return DevnetFile(
        rpc_url=data["rpc_url"],
        contract=data["contract"],
        task_id=data["task_id"],
        blob_dirs=tuple(d / "blobs" for d in node_dirs),
        task_config=config,
        names=MemberNames.from_manifest(data),
        stopped=stopped,
        journal=journal,
        no_journal=no_journal,
        directory=directory,
    )


@dataclass
class _Source:
    """Where a ledger command reads from, after --devnet defaults and explicit options."""

    rpc: str
    contract: str | None
    task_id: int | None
    devnet: DevnetFile | None
    from_block: int
    chunk_blocks: int | None
    as_json: bool
    as_csv: bool
    config: Path | None = None
    journal: Path | None = None  # a stopped devnet's chain journal, read instead of --rpc
    _client: FLChainClient | None = field(default=None, repr=False)

    @property
    def client(self) -> FLChainClient:
        if self._client is None:
            if self.contract is None:
                raise click.UsageError("no contract: pass --contract ADDR or --devnet DIR")
            self._client = open_flchain(self._web3(), self.contract)
        return self._client

    def _web3(self) -> Web3:
        if self.journal is None:
            return connect(self.rpc)
        from flchain.devnet.replay import replay_web3  # py-evm: only for a stopped devnet

        if not (self.as_json or self.as_csv):
            click.echo(f"devnet stopped: reading its chain journal in {self.journal}", err=True)
        return replay_web3(self.journal)

    def names(self, accounts: Sequence[str]) -> MemberNames:
        """Labels for a task's members (`accounts` by index): with --devnet, node names and
        the Byzantine nodes' attacks too."""
        base = self.devnet.names if self.devnet is not None else MemberNames()
        return base.with_accounts(accounts)

    def resolve_task(self) -> int:
        """--task, else the devnet's task, else the contract's only task."""
        if self.task_id is not None:
            return self.task_id
        count = self.client.task_count()
        if count == 1:
            return 1
        if count == 0:
            raise click.ClickException(f"FLChain at {self.client.address} has no tasks yet")
        raise click.UsageError(
            f"FLChain at {self.client.address} has {count} tasks: pass --task ID "
            "(`flchain ledger tasks` lists them)"
        )

    def config_file(self, task_id: int) -> Path | None:
        """--config, else (for the devnet's own task) the first devnet node's copy."""
        if self.config is not None:
            return self.config
        devnet = self.devnet
        if devnet is None or devnet.task_config is None or devnet.task_id != task_id:
            return None
        return devnet.task_config if devnet.task_config.is_file() else None

    def privacy(self, task: TaskInfo) -> TaskPrivacy | None:
        """The task's privacy settings from its config file, None when there is none;
        ConfigMismatchError when the file is not the config the task committed to."""
        path = self.config_file(task.task_id)
        if path is None:
            return None
        from flchain.taskconfig import TaskConfigError, read_config_bytes

        try:
            data = read_config_bytes(path)
        except TaskConfigError as exc:
            raise LedgerError(str(exc)) from exc
        return load_task_privacy(data, task, str(path))

    def ledger(self, task_id: int | None = None) -> Ledger:
        return rebuild_ledger(
            self.client,
            self.resolve_task() if task_id is None else task_id,
            from_block=self.from_block,
            chunk_blocks=self.chunk_blocks,
        )


def _explicit(ctx: click.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source in (ParameterSource.COMMANDLINE, ParameterSource.PROMPT)


def _make_source(ctx: click.Context, options: dict[str, Any]) -> _Source:
    if options["as_json"] and options.get("as_csv"):
        raise click.UsageError("give --json or --csv, not both")
    devnet = read_devnet(options["devnet"]) if options["devnet"] is not None else None
    rpc, address, task_id = options["rpc"], options["contract_address"], options["task_id"]
    journal = None
    if devnet is not None:
        # The command line wins over the devnet file, which wins over the environment.
        rpc = rpc if _explicit(ctx, "rpc") else devnet.rpc_url
        address = address if _explicit(ctx, "contract_address") else devnet.contract
        task_id = task_id if task_id is not None else devnet.task_id
        if devnet.stopped and not _explicit(ctx, "rpc"):
            # Its chain has gone, and its RPC with it: the journal holds the whole chain.
            if devnet.journal is None:
                raise click.ClickException(str(devnet.no_journal))
            journal = devnet.journal
    return _Source(
        rpc=rpc,
        contract=address,
        task_id=task_id,
        devnet=devnet,
        from_block=options["from_block"],
        chunk_blocks=options["chunk_blocks"],
        as_json=options["as_json"],
        as_csv=options.get("as_csv", False),
        config=options.get("config"),
        journal=journal,
    )


_SOURCE_KEYS = (
    "rpc",
    "contract_address",
    "task_id",
    "devnet",
    "from_block",
    "chunk_blocks",
    "as_json",
    "as_csv",
    "config",
)

_CONFIG_HELP = (
    "Task config JSON (its sha256 must be the task's on-chain config digest) for the privacy "
    "budget: adds each member's DP rounds and epsilon at the task's delta. With --devnet the "
    "first node's task-config.json is used. Nodes may add more noise than the task demands, "
    "so epsilon is an upper bound on what a node spent."
)


def _source_options(*, tabular: bool, privacy: bool) -> list[Callable[[Any], Any]]:
    options = [
        click.option(
            "--rpc",
            envvar="FLCHAIN_RPC",
            default=DEFAULT_RPC,
            show_default=True,
            help="Ethereum JSON-RPC URL (env FLCHAIN_RPC).",
        ),
        click.option(
            "--contract",
            "contract_address",
            envvar="FLCHAIN_CONTRACT",
            help="FLChain address (env FLCHAIN_CONTRACT).",
        ),
        click.option(
            "--task",
            "task_id",
            type=click.IntRange(min=1),
            help="Task id (default: the devnet's task, or the contract's only task).",
        ),
        click.option(
            "--devnet",
            type=click.Path(exists=True, file_okay=False, path_type=Path),
            help="Devnet directory: RPC, contract, task, blob stores and node names from its "
            "devnet.json; once it has stopped, its chain journal is read instead of its RPC.",
        ),
        click.option(
            "--from-block",
            type=click.IntRange(min=0),
            default=0,
            show_default=True,
            help="First block to read events from (the contract's deployment block is enough).",
        ),
        click.option(
            "--chunk-blocks",
            type=click.IntRange(min=1),
            help="Read logs in ranges of this many blocks (for endpoints that cap eth_getLogs).",
        ),
        click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts."),
    ]
    if tabular:
        options.append(click.option("--csv", "as_csv", is_flag=True, help="Print CSV."))
    if privacy:
        options.append(
            click.option(
                "--config",
                type=click.Path(exists=True, dir_okay=False, path_type=Path),
                help=_CONFIG_HELP,
            )
        )
    return options


def _ledger_command(
    name: str, *, tabular: bool = True, privacy: bool = False
) -> Callable[[Callable[..., None]], click.Command]:
    """Register a `flchain ledger NAME` command that takes the source options (and --config
    with `privacy`); the command function receives a `_Source` first, then its own options,
    inside `_cli_errors`."""

    def decorate(fn: Callable[..., None]) -> click.Command:
        @functools.wraps(fn)
        @click.pass_context
        def run(ctx: click.Context, **kwargs: Any) -> None:
            options = {k: kwargs.pop(k) for k in _SOURCE_KEYS if k in kwargs}
            with _cli_errors():
                fn(_make_source(ctx, options), **kwargs)

        for option in reversed(_source_options(tabular=tabular, privacy=privacy)):
            run = option(run)
        return ledger.command(name)(run)

    return decorate


# ---------------------------------------------------------------- flchain ledger: commands


@click.group("ledger")
def ledger() -> None:
    """Inspect the on-chain model ledger: tasks, rounds, updates, votes, members, alarms,
    and the money: reward pools, rewards, payouts, penalties and slashes.

    Point it at a chain with --rpc URL --contract ADDR [--task ID], or at a local devnet
    with --devnet DIR, running or stopped (then its chain journal is replayed, read-only, in
    this process). Tables by default (amounts in ETH); --json or --csv for scripts
    (amounts in wei). Members show as index, node name (with --devnet) and short address:
    #3 node-2 0x1234…abcd, with the attack of the devnet's Byzantine nodes.

    members, rounds, round and export add the DP budget (epsilon) when they have the task's
    config: --config FILE, or with --devnet DIR the nodes' task-config.json.
    """


@_ledger_command("tasks")
def tasks_command(source: _Source) -> None:
    """Every task: owner, status, members, rounds, config digest and its money.

    Money in ETH (wei in --json/--csv): the stake each member deposits; the reward pool
    still to pay (escrow, top-ups and forfeits); the rewards paid to members so far; what
    ejected members forfeited (slashed); and whether the task is settled (ended, its last
    alarm window closed: payouts are final and `task withdraw` is open)."""
    rows = [task_row(t) for t in list_tasks(source.client)]
    if source.as_json or source.as_csv:
        header = [_Column(f.name, f.name) for f in dataclasses.fields(TaskInfo)]
        _emit(rows, title="", columns=header, as_json=source.as_json, as_csv=source.as_csv)
        return
    columns = [
        _Column("id", "task_id"),
        _Column("owner", "owner", render=str),
        _Column("status", "status", style=_status_style),
        _Column("members", "members_text"),
        _Column("round", "round_text"),
        _Column("global", "global_round"),
        _Column("config digest", "config_digest"),
        _Column("stake", "stake", render=_eth),
        _Column("pool", "reward_pool", render=_eth),
        _Column("paid", "rewards_paid", render=_eth),
        _Column("slashed", "slashed", render=_eth),
        _Column("settled", "settled"),
    ]
    shown = [
        {
            **row,
            "members_text": f"{row['n_active']}/{row['n_members']}",
            "round_text": f"{row['current_round']}/{row['max_rounds']}",
        }
        for row in rows
    ]
    title = (
        "FLChain tasks (members: active/joined; round: current/max; global: the round of the "
        "good model; amounts in ETH)"
    )
    _echo_table(title, columns, shown)


def _eth(wei: Any) -> str:
    return format_eth(wei)


@_ledger_command("rounds", privacy=True)
def rounds_command(source: _Source) -> None:
    """Per round: status, times, update counts, global digest, votes, alarms.

    Status is open, voting, stalled (windows over without quorum: anyone may close it),
    finalized, failed, reverted (by Siren alarms) or aborted. JSON also carries the
    secure-mode facts (decryptor, re-masked members, sum digest).

    With the task config (--config FILE, or --devnet DIR), epsilon is the budget a member
    that committed in every round up to that one has spent: the task's worst case then."""
    book = source.ledger()
    privacy = source.privacy(book.task)
    rows = [round_row(book.task.task_id, r, privacy) for r in book.rounds]
    columns = [
        _Column("round", "round"),
        _Column("status", "status", style=_status_style),
        _Column("start (UTC)", "start", render=_when),
        _Column("submit by", "submit_after", render=_after),
        _Column("vote by", "vote_after", render=_after),
        _Column("finalized", "finalized_after", render=_after),
        _Column("committed", "committed"),
        _Column("accepted", "accepted"),
        _Column("rejected", "rejected", render=str),
        _Column("global digest", "global_digest"),
        _Column("votes", "votes"),
        _Column("alarms", "alarms"),
    ]
    title = f"Task {book.task.task_id}: {len(rows)} rounds ({book.task.status.name.lower()})"
    if privacy is not None:
        columns.append(_Column("epsilon", "epsilon", render=_epsilon_text))
        title += f"; {_privacy_title(privacy)}"
    if source.as_json or source.as_csv:
        _emit(rows, title=title, columns=columns, as_json=source.as_json, as_csv=source.as_csv)
        return
    names = source.names([m.account for m in book.members])
    shown = [
        {**_with_offsets(row), "rejected": _rejected_text(rnd, names)}
        for row, rnd in zip(rows, book.rounds, strict=True)
    ]
    _echo_table(title, columns, shown)
    if _shows_secure(privacy, book.rounds):
        # A table of its own: the round summary is already as wide as a terminal.
        secure_columns = [
            _Column("round", "round"),
            _Column("decryptor", "decryptor", render=lambda v: _brief_or_dash(names, v)),
            _Column("re-masked", "remasked", render=lambda v: names.briefs(v) if v else "none"),
            _Column("sum digest", "sum_digest", render=lambda v: v or "not published"),
        ]
        _echo_table("Secure aggregation", secure_columns, rows)


def _brief_or_dash(names: MemberNames, index: int | None) -> str:
    return "-" if index is None else names.brief(index)


def _rejected_text(rnd: RoundRecord, names: MemberNames) -> str:
    """How many updates the round rejected, and whose: "1: #3 node-2 (byzantine: ...)"."""
    if rnd.accepted is None:
        return "-"
    rejected = sorted(set(rnd.submitted) - set(rnd.accepted))
    return f"{len(rejected)}: {names.briefs(rejected)}" if rejected else "0"


def _with_offsets(row: dict[str, Any]) -> dict[str, Any]:
    """A round row with its deadlines and finalization as seconds after the round start."""
    start = row["start"]
    return {
        **row,
        "submit_after": row["submit_deadline"] - start,
        "vote_after": row["vote_deadline"] - start,
        "finalized_after": None if row["finalized_at"] is None else row["finalized_at"] - start,
    }


def _after(seconds: int | None) -> str:
    return "-" if seconds is None else f"+{seconds}s"


def _epsilon_text(value: Any) -> str:
    return "no DP" if value is None else f"{value:.3f}"


def _privacy_title(privacy: TaskPrivacy) -> str:
    if not privacy.has_dp:
        return "no DP noise in the task config (no finite epsilon)"
    return (
        f"epsilon at delta={privacy.dp_delta:g}, noise multiplier {privacy.dp_noise:g} "
        "(an upper bound: nodes may add more noise)"
    )


def _shows_secure(privacy: TaskPrivacy | None, rounds: Sequence[RoundRecord]) -> bool:
    """Secure-mode facts are shown for a secure task, or wherever the chain has them."""
    secure = privacy is not None and privacy.secure
    return secure or any(r.sum_digest is not None or r.remasks for r in rounds)


@_ledger_command("round", privacy=True)
@click.argument("number", type=click.IntRange(min=1))
def round_command(source: _Source, number: int) -> None:
    """One round in detail: commitments, verdicts, votes, tallies, alarms; in secure mode
    also the decryptor, the re-masked members and the published sum digest.

    A vote after the round finalized is a late vote (weight "late": it moves no tally; it
    is settled when the next round ends).

    The money: the reward share each paid member was credited when the round finalized (a
    revert claws it back into the pool), each member's reputation moves in the round with
    their reasons (accepted, rejected, no-submit, bad-vote, no-vote; for the previous
    round's votes no-late-vote, bad-late-vote; alarm-bond, bond-returned, reverted) and the
    members the round ejected, with their forfeit. ETH in the table, wei in --json.

    With the task config (--config FILE, or --devnet DIR), each member's DP rounds and
    epsilon after this round. --csv prints one row per eligible member."""
    task_id = source.resolve_task()
    task_info = get_task_checked(source.client, task_id)
    privacy = source.privacy(task_info)
    rnd, prev, events = read_round_events(
        source.client,
        task_id,
        number,
        from_block=source.from_block,
        chunk_blocks=source.chunk_blocks,
    )
    commits = read_commit_counts(source.client, task_id, number) if privacy else None
    moves = reputation_moves([r for r in (prev, rnd) if r is not None], events)
    slashes = slash_records(events, moves)
    detail = round_detail(task_id, rnd, privacy, commits, moves, slashes)
    names = source.names([m.account for m in source.client.members(task_id)])
    if names.knows_nodes:
        for member in detail["members"]:
            member.update(names.fields(member["member"]))
    if source.as_json:
        _echo_json(detail)
        return
    rows = [
        {
            "task_id": task_id,
            "round": number,
            **m,
            "reputation_moves": _moves_text(m["reputation_moves"]),
        }
        for m in detail["members"]
    ]
    if source.as_csv:
        _echo_csv(rows)
        return
    click.echo(
        f"Task {task_id} round {number}: {rnd.status}"
        + (f" ({rnd.fail_reason})" if rnd.fail_reason else "")
    )
    click.echo(f"  base model     {hex0x(rnd.base_digest)} (round {rnd.base_round})")
    if rnd.global_digest is not None:
        click.echo(f"  global model   {hex0x(rnd.global_digest)}")
    click.echo(
        f"  quorum         {rnd.quorum_weight} of {rnd.total_reputation} reputation"
        f" ({rnd.quorum_bps / 100:g}%); final tally {_cell(rnd.final_tally)}"
    )
    click.echo(f"  alarm weight   {rnd.alarm_weight}")
    click.echo(f"  rewards        {_round_rewards_text(rnd)}")
    if rnd.status == "reverted":
        clawed = "not read" if rnd.clawed_back is None else f"{_eth(rnd.clawed_back)} ETH"
        click.echo(
            f"  clawed back    {clawed} (the revert returned the round's rewards to the pool)"
        )
    for slash in detail["slashes"]:
        click.echo(
            f"  ejected        {names.label(slash['member'])} "
            f"(reputation {slash['reputation']}, "
            f"{slash['cause'] or 'unknown cause'}): forfeited {_eth(slash['forfeited_wei'])} ETH"
            + ("; reinstated by the revert" if slash["reinstated"] else "")
        )
    secure = _shows_secure(privacy, [rnd])
    if secure:
        _echo_secure_facts(rnd.decryptor, list(rnd.remasked), detail["sum_digest"], names)
    if privacy is not None:
        budget = (
            f"epsilon {_epsilon_text(detail['epsilon'])} at delta={privacy.dp_delta:g} for a "
            f"member that committed in all {number} rounds (noise multiplier "
            f"{privacy.dp_noise:g}; an upper bound: nodes may add more noise)"
            if privacy.has_dp
            else _privacy_title(privacy)
        )
        click.echo(f"  DP budget      {budget}")
    member_columns = [
        _Column("member", "member_label", render=str),
        _Column("digest", "digest"),
        _Column("samples", "samples"),
        _Column("base", "base_round"),
        _Column("loss", "loss"),
        _Column("verdict", "verdict", style=_status_style),
        _Column("vote digest", "vote_digest"),
        _Column("vote accepts", "vote_accepted"),
        _Column("weight", "vote_weight_text"),
        _Column("alarm", "alarmed"),
        _Column("reward (ETH)", "reward_wei", render=_eth),
        _Column("reputation", "reputation_moves", render=_moves_lines),
    ]
    if secure:
        member_columns.append(_Column("remask digest", "remask_digest"))
    if privacy is not None:
        member_columns += [
            _Column("DP rounds", "dp_rounds"),
            _Column("epsilon", "epsilon", render=_epsilon_text),
        ]
    for row in rows:
        row["vote_weight_text"] = "late" if row["vote_late"] else row["vote_weight"]
        row["member_label"] = names.label(row["member"], stacked=True)
    _echo_table("Members", member_columns, rows)
    tally_columns = [
        _Column("digest", "digest"),
        _Column("accepts", "accepted"),
        _Column("weight", "weight"),
        _Column("voters", "voters"),
    ]
    _echo_table("Tallies", tally_columns, detail["tallies"])


def _round_rewards_text(rnd: RoundRecord) -> str:
    if not rnd.paid:
        return "none" if rnd.accepted is not None else "none (not finalized)"
    members = ",".join(str(m) for m in rnd.paid)
    return (
        f"{_eth(rnd.reward_share)} ETH each to members {members} "
        f"({_eth(rnd.reward_paid)} ETH in all)"
    )


def _moves_lines(text: str | None) -> str:
    """A member's reputation moves in a table cell: one move a line."""
    return text.replace("; ", "\n") if text else "-"


def _moves_text(moves: Sequence[dict[str, Any]]) -> str:
    """A member's reputation moves in a round: "+20 accepted; -100 alarm-bond (undone)"."""
    parts = []
    for m in moves:
        text = f"{m['delta']:+d} {'+'.join(m['reasons'])}"
        parts.append(text + " (undone)" if m["undone"] else text)
    return "; ".join(parts)


def _echo_secure_facts(
    decryptor: int | None, remasked: list[int], sum_digest: str | None, names: MemberNames
) -> None:
    who = "none (no eligible member registered a Paillier key)"
    click.echo(f"  decryptor      {who if decryptor is None else names.label(decryptor)}")
    click.echo(f"  re-masked      {names.briefs(remasked) if remasked else 'none'}")
    click.echo(f"  sum digest     {sum_digest or 'not published'}")


@_ledger_command("members", privacy=True)
def members_command(source: _Source) -> None:
    """Members: address, peer id, reputation, status, stake, joined round, Paillier key,
    and their money.

    Money (ETH in the table, wei in --json/--csv): rewards earned (credited by finalized
    rounds; for an ejected member, what it forfeited with its stake), the payout `task
    withdraw` pays once the task is settled (stake, rewards, share of the pool left),
    what an ejected member forfeited, what a member withdrew; and the penalties: reputation
    lost per round with the reason (rejected, no-submit, bad-vote, no-vote, no-late-vote,
    bad-late-vote, alarm-bond; "(undone)" when a revert gave it back).

    With the task config (--config FILE, or --devnet DIR), also the rounds each member
    committed an update in (its DP mechanism ran once per commit) and the epsilon spent."""
    book = source.ledger()
    task_info = book.task
    privacy = source.privacy(task_info)
    money = member_money(book)
    commits = count_commits(r.submitted for r in book.rounds) if privacy else {}
    rows = [
        member_row(task_info.task_id, m, privacy, commits.get(m.index, 0), money[m.index])
        for m in book.members
    ]
    names = source.names([m.account for m in book.members])
    if names.knows_nodes:
        for row in rows:
            row.update(names.fields(row["index"], row["account"]))
    columns = [
        _Column("index", "index"),
        _Column("account", "account", render=str),
        _Column("peer id", "peer_id", render=str),
        _Column("reputation", "reputation_factor", render=lambda v: f"{v:.3f}"),
        _Column("status", "status", style=_status_style),
        _Column("stake (ETH)", "stake_wei", render=_eth),
        _Column("joined round", "since_round"),
    ]
    title = f"Task {task_info.task_id} members"
    if (privacy is not None and privacy.secure) or any(m.has_he_key for m in book.members):
        columns.append(_Column("Paillier key", "he_key", render=lambda v: _cell(v is not None)))
    if privacy is not None:
        columns += [
            _Column("DP rounds", "dp_rounds"),
            _Column("epsilon", "epsilon", render=_epsilon_text),
        ]
        title += f"; {_privacy_title(privacy)}"
    if source.as_json or source.as_csv:
        _emit(rows, title=title, columns=columns, as_json=source.as_json, as_csv=source.as_csv)
        return
    # The table names a member by index, node and short address (the account in full is
    # in --json/--csv).
    columns[:2] = [_Column("member", "member", render=str)]
    shown = [{**row, "member": names.label(row["index"], row["account"])} for row in rows]
    _echo_table(title, columns, shown)
    money_rows = [{**row, "penalty_list": _penalties_text(money[row["index"]])} for row in shown]
    money_columns = [
        _Column("member", "member", render=str),
        _Column("status", "status", style=_status_style),
        _Column("earned (ETH)", "earned_wei", render=_eth),
        _Column("payout (ETH)", "payout_wei", render=_eth),
        _Column("forfeited (ETH)", "forfeited_wei", render=_eth),
        _Column("withdrawn (ETH)", "withdrawn_wei", render=_eth),
        _Column("rep lost", "reputation_lost"),
        _Column("penalties", "penalty_list", render=lambda v: v or "none"),
    ]
    _echo_table(
        f"Task {task_info.task_id} money: {_task_money_text(task_info)}",
        money_columns,
        money_rows,
    )


def _penalties_text(money: MemberMoney) -> str:
    return "; ".join(penalty_text(p) for p in money.penalties)


def _task_money_text(info: TaskInfo) -> str:
    settled = "settled" if info.settled else "not settled"
    return (
        f"pool {_eth(info.reward_pool)} ETH, paid {_eth(info.rewards_paid)} ETH, "
        f"slashed {_eth(info.slashed)} ETH ({settled})"
    )


def _event_names() -> list[str]:
    return sorted(item["name"] for item in load_artifact().abi if item["type"] == "event")


def _args_text(args: Any) -> str:
    return " ".join(f"{k}={_short(str(v))}" for k, v in args.items())


@_ledger_command("events")
@click.option(
    "--name",
    "names",
    multiple=True,
    help="Only events with this name (repeatable; case-insensitive), e.g. VoteCast.",
)
@click.option("--round", "round_number", type=click.IntRange(min=0), help="Only this round.")
def events_command(source: _Source, names: tuple[str, ...], round_number: int | None) -> None:
    """The task's decoded event log: block, tx, event name and arguments."""
    known = {n.lower(): n for n in _event_names()}
    unknown = [n for n in names if n.lower() not in known]
    if unknown:
        raise click.BadParameter(
            f"unknown event {', '.join(unknown)}; events are {', '.join(known.values())}",
            param_hint="--name",
        )
    wanted = {known[n.lower()] for n in names}
    task_id = source.resolve_task()
    get_task_checked(source.client, task_id)
    events = source.client.events(task_id, source.from_block, chunk_blocks=source.chunk_blocks)
    rows = [
        event_row(task_id, ev)
        for ev in events
        if (not wanted or ev["event"] in wanted)
        and (round_number is None or ev["args"].get("round") == round_number)
    ]
    columns = [
        _Column("block", "block_number"),
        _Column("tx", "tx_hash"),
        _Column("event", "event"),
        _Column("args", "args", render=_args_text),
    ]
    _emit(
        rows,
        title=f"Task {task_id} events",
        columns=columns,
        as_json=source.as_json,
        as_csv=source.as_csv,
    )


@_ledger_command("verify")
@click.option(
    "--blobs",
    "blob_dirs",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Directory of blob files named by digest (repeatable; default: the devnet nodes').",
)
@click.option("--strict", is_flag=True, help="Exit 1 on missing blobs too.")
@click.pass_context
def verify_command(
    ctx: click.Context, source: _Source, blob_dirs: tuple[Path, ...], strict: bool
) -> None:
    """Re-hash local blobs against the digests on chain.

    Checks every committed update, every finalized global model, the initial model and, in
    secure mode, every re-masked update and published sum against `<dir>/<64 hex digest>`
    files. Exit 1 on any mismatch (and, with --strict, on any missing blob)."""
    dirs = list(blob_dirs)
    if not dirs and source.devnet is not None:
        dirs = [d for d in source.devnet.blob_dirs if d.is_dir()]
    if not dirs:
        raise click.UsageError("no blob directories: pass --blobs DIR or --devnet DIR")
    book = source.ledger()
    checks = verify_blobs(book, dirs)
    names = source.names([m.account for m in book.members])
    counts = {s: sum(c.status == s for c in checks) for s in ("ok", "mismatch", "missing")}
    rows = [_check_row(c) for c in checks]
    if source.as_json:
        _echo_json({**counts, "blob_dirs": [str(d) for d in dirs], "checks": rows})
    elif source.as_csv:
        _echo_csv(rows)
    else:
        columns = [
            _Column("kind", "kind"),
            _Column("round", "round"),
            _Column("member", "member", render=lambda v: "-" if v is None else names.label(v)),
            _Column("digest", "digest", render=str),
            _Column("status", "status", style=_status_style),
            _Column("copies", "paths", render=lambda v: str(len(v))),
        ]
        _echo_table("Blob verification", columns, rows)
        click.echo(f"{counts['ok']} ok, {counts['mismatch']} mismatch, {counts['missing']} missing")
        for check in checks:
            for path in check.bad_paths:
                click.echo(f"mismatch: {path} does not hash to {hex0x(check.digest)}", err=True)
    if counts["mismatch"] or (strict and counts["missing"]):
        ctx.exit(1)


def _check_row(check: BlobCheck) -> dict[str, Any]:
    row = plain(check)
    row["paths"] = list(check.paths)
    row["bad_paths"] = list(check.bad_paths)
    return row


@_ledger_command("export", tabular=False, privacy=True)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["json", "csv"]),
    default="json",
    show_default=True,
    help="json: one file; csv: a directory with one CSV per table.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    help="Output file (json; - for stdout) or directory (csv).",
)
@click.option("--all-tasks", is_flag=True, help="Export every task on the contract.")
def export_command(source: _Source, fmt: str, out: Path, all_tasks: bool) -> None:
    """Export the whole ledger as JSON or CSV.

    Tasks, members, rounds, updates, votes, alarms, penalties (reputation lost, with its
    reason), slashes (ejections and their forfeit), transfers (reward escrow, top-ups,
    stakes, withdrawals, refunds) and events, rebuilt from chain views and events; every row
    carries its task id. Amounts are wei: tasks carry the reward pool, rewards paid, slashed
    and funded; members what they earned, their payout, forfeit and withdrawal; rounds the
    reward share, the paid members and a revert's clawback.

    With the task config (--config FILE, or --devnet DIR) the tasks, members and rounds
    tables also carry the DP budget; with --all-tasks a config applies to the tasks whose
    config digest it matches (the others' are null)."""
    ids = list(range(1, source.client.task_count() + 1)) if all_tasks else [source.resolve_task()]
    books = [source.ledger(i) for i in ids]
    tables = ledger_tables(books, _export_privacy(source, books))
    header = {
        "contract": source.client.address,
        "chain_id": source.client.sender.chain_id,
        "head_block": max((b.head_block for b in books), default=0),
    }
    files: list[str] = []
    if fmt == "json":
        text = json.dumps({**header, **tables}, indent=2) + "\n"
        if str(out) == "-":
            click.echo(text, nl=False)
            return
        out.write_text(text, "utf-8")
        files.append(str(out))
    else:
        out.mkdir(parents=True, exist_ok=True)
        for name, rows in tables.items():
            path = out / f"{name}.csv"
            path.write_text(_csv_text(rows, _table_columns(name, rows)), "utf-8")
            files.append(str(path))
    counts = {name: len(rows) for name, rows in tables.items()}
    if source.as_json:
        _echo_json({**header, "format": fmt, "files": files, "counts": counts})
        return
    summary = ", ".join(f"{n} {name}" for name, n in counts.items())
    click.echo(f"Exported tasks {', '.join(map(str, ids))} ({summary}) to {', '.join(files)}")


def _export_privacy(source: _Source, books: Sequence[Ledger]) -> dict[int, TaskPrivacy] | None:
    """Privacy settings per exported task; None when no task has a config. A config that
    matches none of several exported tasks is an error, as it is for one task."""
    found: dict[int, TaskPrivacy] = {}
    mismatch: ConfigMismatchError | None = None
    for book in books:
        try:
            privacy = source.privacy(book.task)
        except ConfigMismatchError as exc:
            if len(books) == 1 or source.config is None:
                raise
            mismatch = mismatch or exc
            continue
        if privacy is not None:
            found[book.task.task_id] = privacy
    if mismatch is not None and not found:
        raise ConfigMismatchError(f"{source.config} matches no exported task ({mismatch})")
    return found or None


def _table_columns(name: str, rows: list[dict[str, Any]]) -> list[str]:
    """CSV header of an export table, also for an empty one (so every file has a header)."""
    if rows:
        return list(rows[0])
    empty = {
        "tasks": ["task_id"],
        "members": ["task_id", "index", "account"],
        "rounds": ["task_id", "round", "status"],
        "updates": ["task_id", "round", "member", "digest"],
        "votes": ["task_id", "round", "member", "digest"],
        "alarms": ["task_id", "round", "member"],
        "penalties": ["task_id", "round", "member", "old", "new", "delta", "reasons", "undone"],
        "slashes": ["task_id", "round", "member", "account", "reputation", "forfeited_wei"],
        "transfers": ["task_id", "kind", "direction", "account", "member", "amount_wei"],
        "events": ["task_id", "block_number", "log_index", "tx_hash", "event", "args"],
    }
    return empty[name]


@_ledger_command("plot", tabular=False)
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Image file."
)
def plot_command(source: _Source, out: Path) -> None:
    """Plot reputations and accepted/rejected updates per round.

    The image format follows the --out suffix (png, svg, pdf)."""
    book = source.ledger()
    _plot(book, out, source.names([m.account for m in book.members]))
    if source.as_json:
        _echo_json(
            {
                "out": str(out),
                "task_id": book.task.task_id,
                "rounds": len(book.rounds),
                "members": len(book.members),
            }
        )
        return
    click.echo(f"Wrote {out}")


def _plot(book: Ledger, out: Path, names: MemberNames | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = reputation_history(book)
    names = names or MemberNames().with_accounts([m.account for m in book.members])
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    try:
        xs = list(range(len(book.rounds) + 1))
        for index, values in history.items():
            points = [(x, v / REP_UNIT) for x, v in zip(xs, values, strict=True) if v is not None]
            top.plot(
                [p[0] for p in points], [p[1] for p in points], marker="o", label=names.brief(index)
            )
        top.set_ylabel("reputation factor")
        top.set_title(f"Task {book.task.task_id} on {book.contract[:10]}…")
        if history:
            top.legend(fontsize="small", ncol=4)
        rounds = [r.round for r in book.rounds]
        accepted = [r.n_accepted or 0 for r in book.rounds]
        rejected = [r.n_rejected or 0 for r in book.rounds]
        bottom.bar(rounds, accepted, color="tab:green", label="accepted")
        bottom.bar(rounds, rejected, bottom=accepted, color="tab:red", label="rejected")
        for rnd in book.rounds:
            if rnd.status not in ("finalized", "open", "voting"):
                bottom.annotate(rnd.status, (rnd.round, 0), ha="center", va="bottom", rotation=90)
        bottom.set_xlabel("round")
        bottom.set_ylabel("updates")
        bottom.legend(fontsize="small")
        figure.tight_layout()
        figure.savefig(out)
    finally:
        plt.close(figure)


@_ledger_command("serve", tabular=False, privacy=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8600,
    show_default=True,
    help="Port to listen on (0: pick a free one; the URL is printed).",
)
@click.option(
    "--blobs",
    "blob_dirs",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Blob directory for the verify view (repeatable; default: the devnet nodes').",
)
@click.option(
    "--vhost",
    "vhosts",
    multiple=True,
    help="Another Host name the page may be reached by (besides localhost and IP addresses).",
)
def serve_command(
    source: _Source, host: str, port: int, blob_dirs: tuple[Path, ...], vhosts: tuple[str, ...]
) -> None:
    """Serve a read-only web explorer of the ledger until Ctrl-C.

    Tasks, each task's rounds (status, commitments, verdicts, votes and tallies against the
    quorum, alarms, reverts, the decryptor), accuracy and loss curves, reputation and
    rewards per member, the members, the decoded event log and blob verification, updated
    live on each new block while the chain runs; a stopped --devnet is read from its chain
    journal. A JSON API for scripts lives under /api (docs/explorer.md). --json prints
    {"url": ...} once listening."""
    from flchain.devnet.manifest import read_manifest  # light; the explorer imports below
    from flchain.devnet.policy import is_loopback
    from flchain.explorer import ExplorerServer, ExplorerSource

    devnet, dirs = source.devnet, list(blob_dirs)
    devnet_dir = devnet.directory if devnet is not None else None
    manifest = read_manifest(devnet_dir) if devnet_dir is not None else {"nodes": []}
    nodes = tuple({**n, "dir": str(node_dir(devnet_dir, n["dir"]))} for n in manifest["nodes"])
    if not dirs and devnet is not None:
        dirs = list(devnet.blob_dirs)
    origin = f"journal {source.journal}" if source.journal is not None else f"rpc {source.rpc}"
    explorer = ExplorerSource(
        client=source.client,
        origin=origin,
        live=source.journal is None,
        default_task=source.task_id,
        devnet_dir=devnet_dir,
        devnet_task=devnet.task_id if devnet is not None else None,
        names=devnet.names if devnet is not None else MemberNames(),
        nodes=nodes,
        blob_dirs=tuple(dirs),
        privacy=source.privacy,
        from_block=source.from_block,
        chunk_blocks=source.chunk_blocks,
    )
    if not is_loopback(host):
        click.secho(
            f"warning: --host {host} serves the ledger to anyone who can reach it", err=True
        )
    with ExplorerServer(explorer, host, port, vhosts=tuple(vhosts)) as server:
        if source.as_json:
            click.echo(json.dumps({"url": server.url}))  # one line: a script reads it
        else:
            click.echo(f"FLChain explorer at {server.url} (Ctrl-C to stop)")
        try:
            server.wait()
        except KeyboardInterrupt:
            click.echo("stopped", err=True)
