"""`flchain node init | fund | run | status`: one node daemon on one machine.

`run` prints one line per round step (`node_console` renders the engine's events from
node/events.py), `-q` only warnings and errors, `--log-json` JSON lines for machines.
"""

from __future__ import annotations

import functools
import json
import os
import re
import socket
import urllib.error
import urllib.request
from pathlib import Path

import click

from flchain import safe_json
from flchain.attacks import DATA_ATTACKS, PROTOCOL_ATTACKS, SECURE_ATTACKS, UPDATE_ATTACKS
from flchain.commands import node_console as console
from flchain.commands.options import (
    eth_to_wei,
    keep_rounds_option,
)
from flchain.config import DEFAULT_LINGER_S, ConfigError, parse_key_values
from flchain.units import format_eth

# What `node status` reads: runtime.json (a few addresses) and the /status answer (metrics
# and a per-round accuracy history included); a larger or deeper document is not a node's.
_MAX_RUNTIME_BYTES = 64 * 1024
_MAX_STATUS_BYTES = 8 * 1024 * 1024
_MAX_STATUS_DEPTH = 8
_NODE_ATTACKS = (*UPDATE_ATTACKS, *DATA_ATTACKS, *sorted(PROTOCOL_ATTACKS), *SECURE_ATTACKS)


@click.group("node")
def node() -> None:
    """Run one flchain node: keys, the daemon, and its status."""


_password_option = click.option(
    "--password-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="File holding the key password (else $FLCHAIN_PASSWORD).",
)


@node.command("init")
@click.option("--dir", "directory", required=True, type=click.Path(path_type=Path))
@_password_option
@click.option("--force", is_flag=True, help="Replace keys that already exist (they are lost).")
@click.option("--json", "as_json", is_flag=True, help="Print the public identity as JSON.")
def init_command(directory: Path, password_file: Path | None, force: bool, as_json: bool) -> None:
    """Create the node's keys: an Ethereum keystore, a libp2p key and an X25519 key, all
    encrypted with the password and readable by the owner only (0600)."""
    from flchain.node.identity import IdentityError, init_node_dir, read_password

    try:
        identity = init_node_dir(directory, read_password(password_file), overwrite=force)
    except (IdentityError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    info = identity.public_info()
    if as_json:
        click.echo(json.dumps(info))
        return
    click.echo(f"node directory {directory}")
    for key, value in info.items():
        click.echo(f"  {key}: {value}")
    click.echo(next_steps(directory, password_file, identity.address))


def next_steps(directory: Path, password_file: Path | None, address: str) -> str:
    """What a fresh node needs before it runs: ETH on its address, then `node run` (README,
    "One node per machine")."""
    password = f" --password-file {password_file}" if password_file is not None else ""
    return "\n".join(
        [
            "next steps:",
            f"  1. fund {address} with the task's stake and gas (`node run` says how much):",
            f"       flchain node fund {address} --rpc URL --amount 0.1 --from-key KEYFILE",
            "       (on a devnet --dev-account 0 instead of --from-key), or with foundry:",
            f"       cast send {address} --value 0.1ether --rpc-url URL --private-key 0x...",
            "  2. run it with the task's contract, id and config (from the task's owner):",
            f"       flchain node run --dir {directory}{password} --rpc URL \\",
            "         --contract 0x... --task ID --task-config task-config.json \\",
            "         --data 'digits#shard=I/N' --listen /ip4/THIS_HOST_IP/tcp/4001 \\",
            "         --bootstrap /ip4/PEER_IP/tcp/4001/p2p/PEER_ID   # any running member",
        ]
    )


def _fund_target(target: str) -> str:
    """ADDRESS, or a node directory whose node.json names it; checksummed."""
    from web3 import Web3

    from flchain.node.identity import NODE_JSON

    if Web3.is_address(target):
        return Web3.to_checksum_address(target)
    path = Path(target)
    if path.is_dir():
        try:
            meta = safe_json.load_file(path / NODE_JSON, max_bytes=64 * 1024, max_depth=4)
            address = meta["address"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise click.BadParameter(
                f"{target} has no readable {NODE_JSON} ({exc}); run `flchain node init` there",
                param_hint="ADDRESS",
            ) from exc
        if isinstance(address, str) and Web3.is_address(address):
            return Web3.to_checksum_address(address)
    raise click.BadParameter(
        f"{target!r} is neither an address (0x + 40 hex digits) nor a node directory",
        param_hint="ADDRESS",
    )


@node.command("fund")
@click.argument("target", metavar="ADDRESS")
@click.option(
    "--rpc",
    envvar="FLCHAIN_RPC",
    default="http://127.0.0.1:8545",
    show_default=True,
    help="Ethereum JSON-RPC URL (env FLCHAIN_RPC).",
)
@click.option("--amount", required=True, metavar="ETH", help="How much to send, in ETH.")
@click.option(
    "--from-key",
    "key_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Pay from this key: a file holding a hex key, or an eth keystore JSON (env "
    "FLCHAIN_KEY: a hex key).",
)
@click.option(
    "--password-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Password of a --from-key keystore (else $FLCHAIN_PASSWORD).",
)
@click.option(
    "--dev-account",
    type=click.IntRange(min=0),
    default=None,
    metavar="N",
    help="Pay from the endpoint's unlocked account N (eth_accounts): a devnet's, as "
    "`flchain chain serve` and anvil have.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the transfer as JSON.")
def fund_command(
    target: str,
    rpc: str,
    amount: str,
    key_file: Path | None,
    password_file: Path | None,
    dev_account: int | None,
    as_json: bool,
) -> None:
    """Send ETH to a node's ADDRESS (or to the node of a directory): its stake and gas.

    The same as `cast send ADDRESS --value 0.1ether --rpc-url URL --private-key KEY`."""
    from flchain.commands.access import connect, load_account
    from flchain.node.funds import FundError, send_eth

    address = _fund_target(target)
    value = eth_to_wei(amount, "--amount")
    if value == 0:
        raise click.BadParameter("send more than 0 ETH", param_hint="--amount")
    if key_file is not None and dev_account is not None:
        raise click.UsageError("give --from-key or --dev-account, not both")
    account = None
    if dev_account is None:
        if key_file is None and not os.environ.get("FLCHAIN_KEY"):
            raise click.UsageError(
                "who pays? give --from-key KEYFILE, --dev-account N (a devnet) or set FLCHAIN_KEY"
            )
        account = load_account(None, key_file, password_file)
    w3 = connect(rpc)
    try:
        transfer = send_eth(w3, address, value, account=account, dev_account=dev_account)
    except FundError as exc:
        raise click.ClickException(str(exc)) from exc
    except Exception as exc:  # RPC refusals (insufficient funds), a revert, a timeout
        raise click.ClickException(f"the transfer failed: {exc}") from exc
    if as_json:
        click.echo(json.dumps(transfer.as_dict()))
        return
    click.echo(
        f"sent {format_eth(value)} ETH to {transfer.to} from {transfer.sender}\n"
        f"  tx {transfer.tx_hash} in block {transfer.block_number}; balance now "
        f"{format_eth(transfer.balance)} ETH"
    )


@node.command("run")
@click.option("--dir", "directory", required=True, type=click.Path(path_type=Path))
@_password_option
@click.option(
    "--rpc",
    default="http://127.0.0.1:8545",
    show_default=True,
    help="Any Ethereum JSON-RPC endpoint.",
)
@click.option("--contract", required=True, help="FLChain contract address.")
@click.option("--task", "task_id", required=True, type=int, help="Task id on the contract.")
@click.option(
    "--data",
    required=True,
    help="DATASET[#shard=I/N[,partition=P][,alpha=A]], e.g. digits#shard=0/4.",
)
@click.option(
    "--task-config",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The task's config JSON (checked against its on-chain digest).",
)
@click.option(
    "--listen",
    multiple=True,
    default=("/ip4/127.0.0.1/tcp/0",),
    show_default=True,
    help="libp2p listen multiaddr.",
)
@click.option("--bootstrap", multiple=True, help="Peer multiaddr with /p2p/<id> to join through.")
@click.option(
    "--peers-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="JSON list of peer multiaddrs (/p2p/<id>) known ahead: members among them are "
    "dialed directly, not looked up through other members (`devnet up` writes one).",
)
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True
)
@click.option(
    "--attack",
    "attacks",
    multiple=True,
    type=click.Choice(_NODE_ATTACKS),
    help="Make this node Byzantine (repeatable: one update/data attack plus any protocol attacks).",
)
@click.option("--attack-param", multiple=True, metavar="KEY=VALUE")
@click.option(
    "--collude-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The devnet's collusion channel (flchain.attacks.channel): alie/ipm colluders estimate "
    "the benign statistics there; honest nodes get it only in the omniscient test mode.",
)
@click.option(
    "--status-port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Port of the local /status and /metrics endpoint (0 = any free port).",
)
@click.option("--status-host", default="127.0.0.1", show_default=True)
@click.option("--seed", default=0, show_default=True, help="Seed of this node's own draws.")
@click.option(
    "--dp-clip",
    type=float,
    default=None,
    help="DP: clip each update to this L2 norm (tighter than the task's, if set).",
)
@click.option(
    "--dp-noise",
    type=float,
    default=None,
    help="DP: Gaussian noise multiplier sigma (larger than the task's, if set).",
)
@click.option("--dp-delta", type=float, default=None, help="DP: delta the epsilon refers to.")
@keep_rounds_option
@click.option(
    "--linger",
    type=click.FloatRange(min=0),
    default=DEFAULT_LINGER_S,
    show_default=True,
    help="Seconds to keep serving blobs after the task ends, so members a step behind can "
    "still fetch the final model.",
)
@click.option(
    "-v",
    "--verbose",
    count=True,
    help="More detail: -v the node's log and library warnings, -vv debug, -vvv library debug.",
)
@click.option("-q", "--quiet", is_flag=True, help="Print only warnings and errors.")
@click.option(
    "--log-json",
    is_flag=True,
    help="Print one JSON object per line (ts, level, event, round, fields) instead of text.",
)
@click.option(
    "--log-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also append the full log (info, or debug with -vv; libraries too) to this file.",
)
def run_command(
    directory: Path,
    password_file: Path | None,
    rpc: str,
    contract: str,
    task_id: int,
    data: str,
    task_config: Path | None,
    listen: tuple[str, ...],
    bootstrap: tuple[str, ...],
    peers_file: Path | None,
    device: str,
    attacks: tuple[str, ...],
    attack_param: tuple[str, ...],
    collude_dir: Path | None,
    status_port: int,
    status_host: str,
    seed: int,
    dp_clip: float | None,
    dp_noise: float | None,
    dp_delta: float | None,
    keep_rounds: int,
    linger: float,
    verbose: int,
    quiet: bool,
    log_json: bool,
    log_file: Path | None,
) -> None:
    """Run the node daemon: train, exchange updates over libp2p, commit and vote on chain,
    until the task ends. Prints one line per round step (committed, fetched, voted,
    finalized); an unfunded account is told once what to send and waits for it."""
    import trio
    from web3 import Web3

    from flchain.allocator import retain_freed_memory
    from flchain.node.daemon import NodeError, NodeSettings, run_node
    from flchain.node.identity import IdentityError, load_node_identity, read_password
    from flchain.node.p2p import load_peers_file
    from flchain.taskconfig import DataSpec, TaskConfigError

    if quiet and verbose:
        raise click.UsageError("give -q or -v, not both")
    if not Web3.is_address(contract):
        raise click.BadParameter(
            f"{contract!r} is not an address (0x + 40 hex digits)", param_hint="--contract"
        )
    _ports_free(status_host, status_port, listen)
    retain_freed_memory()
    try:
        console.setup(verbose=verbose, quiet=quiet, as_json=log_json, log_file=log_file)
    except OSError as exc:
        raise click.ClickException(f"cannot open the log file: {exc}") from exc
    try:
        settings = NodeSettings(
            dir=directory,
            rpc_url=rpc,
            contract=Web3.to_checksum_address(contract),
            task_id=task_id,
            data=DataSpec.parse(data),
            listen=listen,
            bootstrap=bootstrap,
            peers=load_peers_file(peers_file) if peers_file else (),
            device=device,
            attacks=attacks,
            attack_params=parse_key_values(attack_param, "--attack-param"),
            collude_dir=collude_dir,
            task_config=task_config,
            status_host=status_host,
            status_port=status_port,
            seed=seed,
            dp_clip=dp_clip,
            dp_noise=dp_noise,
            dp_delta=dp_delta,
            keep_rounds=keep_rounds,
            linger=linger,
        )
        password = read_password(password_file)
        identity = load_node_identity(directory, password)
        trio.run(functools.partial(run_node, settings, identity, password=password))
    except (NodeError, IdentityError, TaskConfigError, ConfigError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    except KeyboardInterrupt:
        click.echo("stopped", err=True)
    except BaseExceptionGroup as group:  # trio's tasks: one OSError (a port taken since) is
        match, _ = group.split(OSError)  # the user's to fix, anything else a bug to show
        if match is None:
            raise
        raise click.ClickException(f"cannot listen: {match.exceptions[0]}") from None


_TCP_LISTEN = re.compile(r"^/ip[46]/(?P<host>[^/]+)/tcp/(?P<port>\d+)")


def _ports_free(status_host: str, status_port: int, listen: tuple[str, ...]) -> None:
    """Fail before anything starts when a port the node would listen on is taken (a second
    node on the same machine with the same --listen, say), naming the option."""
    wanted = [(status_host, status_port, "--status-port")]
    for address in listen:
        match = _TCP_LISTEN.match(address)
        if match:
            wanted.append((match["host"], int(match["port"]), "--listen"))
    for host, port, option in wanted:
        if port == 0:
            continue
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                raise click.BadParameter(
                    f"{host}:{port} is not free ({exc.strerror}); pick another port or 0",
                    param_hint=option,
                ) from None


@node.command("status")
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path),
    default=None,
    help="Node directory (reads its runtime.json).",
)
@click.option("--url", default=None, help="Status endpoint, e.g. http://127.0.0.1:9100.")
@click.option("--json", "as_json", is_flag=True)
def status_command(directory: Path | None, url: str | None, as_json: bool) -> None:
    """Show a running node's round, phase, peers and accuracy."""
    from flchain.node.files import RUNTIME_FILE

    if url is None:
        if directory is None:
            raise click.UsageError("give --dir or --url")
        try:
            runtime = safe_json.load_file(
                directory / RUNTIME_FILE, max_bytes=_MAX_RUNTIME_BYTES, max_depth=2
            )
            url = runtime["status_url"]
            if not isinstance(url, str):
                raise ValueError("status_url is not a string")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise click.ClickException(f"no running node found in {directory}: {exc}") from exc
    try:
        with urllib.request.urlopen(f"{url}/status", timeout=5) as response:
            status = safe_json.loads(
                response.read(_MAX_STATUS_BYTES + 1),
                max_bytes=_MAX_STATUS_BYTES,
                max_depth=_MAX_STATUS_DEPTH,
            )
            if not isinstance(status, dict):
                raise ValueError("the status is not a JSON object")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise click.ClickException(f"node at {url} does not answer: {exc}") from exc
    if as_json:
        click.echo(json.dumps(status, indent=2))
        return
    acc = status.get("accuracy")
    click.echo(
        f"task {status['task']} round {status['round']} ({status['phase']}), member "
        f"{status['member_index']}, {len(status['peers'])} peers, rounds done "
        f"{status['rounds_done']}, accuracy {acc if acc is None else f'{acc:.4f}'}"
    )
    if status.get("address"):
        click.echo(f"  address {status['address']}")
    if status.get("last_error"):
        click.echo(f"  last error: {status['last_error']}")
