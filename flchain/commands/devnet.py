"""`flchain devnet up | status | logs | down`: a whole local network, watched live."""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from flchain.aggregation import NETWORK_RULES
from flchain.attacks import ATTACKS, SECURE_ATTACKS
from flchain.commands.options import (
    check_population,
    dataset_option,
    economics_options,
    keep_rounds_option,
    model_options,
    partition_option,
    pop_economics,
    pop_rule_params,
    population_options,
    rule_options,
    weight_options,
    window_options,
)
from flchain.config import DEFAULT_DEVNET_REWARD_ETH
from flchain.contracts.errors import FLChainError
from flchain.contracts.names import MemberNames
from flchain.contracts.types import (
    REP_UNIT,
    MemberStatus,
    RoundStatus,
    TaskStatus,
    bitmap_indices,
)
from flchain.devnet.manifest import (
    SUMMARY_FILE,
    DevnetError,
    chain_stopped,
    process_alive,
    read_manifest,
    save_summary,
    saved_summary,
    stopped_journal,
)
from flchain.devnet.processes import (
    casualty,
    down,
    existing_devnet,
    node_exited,
    node_status,
    own_log_line,
)
from flchain.units import format_eth

if TYPE_CHECKING:  # web3, torch and libp2p load when a command needs them, not for --help
    import subprocess

    from web3 import Web3

    from flchain.contracts.client import FLChainClient
    from flchain.contracts.views import ViewReader
    from flchain.devnet.plan import DevnetPlan


_DIR = click.option(
    "--dir",
    "--devnet",
    "directory",
    type=click.Path(path_type=Path),
    default=Path(".flchain-devnet"),
    show_default=True,
    help="Devnet directory (chain state, node keys, logs, devnet.json).",
)


@click.group("devnet")
def devnet() -> None:
    """A complete local network: chain, contract, task and N node processes."""


@devnet.command("up")
@_DIR
@population_options(nodes=4, rounds=5)
@model_options
@dataset_option
@partition_option
@window_options
@rule_options
@weight_options
@click.option(
    "--attack",
    "attacks",
    multiple=True,
    type=click.Choice(ATTACKS),
    help="Behaviour of the Byzantine nodes; repeat to give them different ones.",
)
@click.option(
    "--attack-param",
    "attack_params",
    multiple=True,
    metavar="KEY=VALUE",
    help="A knob of the Byzantine nodes' attack, e.g. epsilon=100 (ipm), z=1.5 (alie); "
    "repeatable, passed to every Byzantine node's `node run --attack-param`.",
)
@click.option(
    "--omniscient",
    is_flag=True,
    help="Test mode: the honest nodes hand their updates to the alie/ipm colluders before they "
    "commit (the worst case the simulation models); without it the colluders estimate the "
    "benign statistics from their own honestly trained updates.",
)
@click.option("--chain", type=click.Choice(["pyevm", "anvil"]), default="pyevm", show_default=True)
@economics_options(default_reward_eth=DEFAULT_DEVNET_REWARD_ETH)
@click.option("--dp-clip", type=float, default=None, help="DP: L2 clip norm C of each update.")
@click.option("--dp-noise", type=float, default=0.0, help="DP: noise multiplier sigma.")
@click.option(
    "--dp-delta",
    type=float,
    default=1e-5,
    show_default=True,
    help="DP: the delta that reported epsilons refer to.",
)
@click.option(
    "--secure",
    is_flag=True,
    help="Secure aggregation: updates travel masked and Paillier-encrypted, a decryptor chosen "
    "on chain opens only their mean. Runs FedAvg (robust rules need plaintext updates); Siren "
    "alarms still work (--alarm-window).",
)
@click.option("--secure-bits", default=16, show_default=True, help="Quantization bits.")
@click.option(
    "--secure-key-bits", default=2048, show_default=True, help="Paillier modulus size in bits."
)
@click.option(
    "--secure-range",
    type=float,
    default=None,
    help="Per-coordinate bound c of the quantization range (-c, c); default: 4, or "
    "C(1 + 6 sigma) with DP.",
)
@keep_rounds_option
@click.option("--seed", default=0, show_default=True)
@click.option("--detach", is_flag=True, help="Start everything and return; `devnet down` stops.")
@click.option(
    "--force",
    is_flag=True,
    help="Replace a stopped devnet in --dir (its chain, node keys and logs) without asking.",
)
@click.option("--timeout", default=1800, show_default=True, help="Give up after this many s.")
@click.option("--json", "as_json", is_flag=True, help="Print the final summary as JSON.")
@click.pass_context
def up_command(
    ctx: click.Context,
    directory: Path,
    detach: bool,
    force: bool,
    timeout: int,
    as_json: bool,
    **opts: object,
) -> None:
    """Start a chain, deploy FLChain, create a task and run N nodes until it finishes.

    Example: flchain devnet up --nodes 8 --byzantine 2 --attack alie --rule multikrum

    Secure: flchain devnet up --secure --nodes 4 --model mlp --alarm-window 30

    Without --f the task's f is the Byzantine count (at least 1, capped at the rule's bound for
    --nodes); with --rule siren, --alarm-window defaults to --submit-window.

    The task escrows a reward pool (--reward-eth, from the chain's first dev account) that
    its finalized rounds pay to the accepted members that voted on the round before; members
    below --rep-floor are ejected and forfeit their stake and rewards. The summary at the
    end shows what each member earned and would be paid.
    """
    # The node host first, before this command's own imports: its imports (seconds) then
    # overlap everything up to the nodes' start instead of being what the first round waits
    # for.
    with _early_node_host() as host:
        from flchain.advice import task_warnings
        from flchain.devnet.plan import DevnetPlan, tolerance_warning

        money = pop_economics(opts)
        check_population(int(opts["nodes"]), int(opts["byzantine"]), opts["attacks"])
        ring = [a for a in opts["attacks"] if a in SECURE_ATTACKS]
        if ring and not opts["secure"]:
            raise click.UsageError(
                f"--attack {ring[0]} attacks secure aggregation: it needs --secure"
            )
        rule_params = _rule_params(ctx, opts, pop_rule_params(opts))
        if opts["rule"] == "siren" and ctx.get_parameter_source("alarm_window").name == "DEFAULT":
            # Siren's server side needs its clients' alarms: members raise them on chain as the
            # next round opens, so a window as long as a submit phase is enough.
            opts["alarm_window"] = opts["submit_window"]
        plan = DevnetPlan(
            directory=directory,
            rule_params=rule_params,
            reward_wei=money.reward_wei,
            quorum_bps=money.quorum_bps,
            alarm_bps=money.alarm_bps,
            rep_floor=money.rep_floor,
            **opts,  # type: ignore[arg-type]
        )
        try:
            config = plan.task_config()  # the task config the plan would create, checked first
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc
        warnings = [tolerance_warning(plan)]
        warnings += task_warnings(config, nodes=plan.nodes, rounds=plan.rounds)
        for warning in filter(None, warnings):
            click.secho(f"warning: {warning}", fg="yellow", err=True)
        _may_replace(directory, force)
        err = Console(stderr=True)
        with _stop_signals_interrupt():
            _run_devnet(
                plan, directory, host, detach=detach, timeout=timeout, as_json=as_json, err=err
            )


@contextlib.contextmanager
def _early_node_host() -> Iterator[subprocess.Popen[bytes]]:
    """A node host (`devnet/nodehost.py`) started now; killed on the way out unless the
    launcher handed it the nodes (then it has exited)."""
    from flchain.devnet import nodehost

    host = nodehost.spawn()
    try:
        yield host
    finally:
        if host.poll() is None:  # no nodes were handed to it (the command failed or ended)
            host.kill()
            host.wait()


def _may_replace(directory: Path, force: bool) -> None:
    """A stopped devnet in `directory` goes only with --force or the user's yes (asked on a
    terminal); a running one is never touched."""
    try:
        earlier = existing_devnet(directory)
    except DevnetError as exc:
        raise click.UsageError(str(exc)) from None
    if earlier is None or force:
        return
    if not (click.get_text_stream("stdin").isatty() and click.get_text_stream("stdout").isatty()):
        raise click.UsageError(f"{earlier} would be replaced; pass --force (or another --dir)")
    if not click.confirm(f"{earlier} will be replaced. Go on?", default=False):
        raise click.Abort()


@contextlib.contextmanager
def _stop_signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP (`timeout`, a closed terminal, a service manager) stop `devnet up`
    as Ctrl-C does: through the clean-up that takes the chain and every node down."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run_devnet(
    plan: DevnetPlan,
    directory: Path,
    host: subprocess.Popen[bytes],
    *,
    detach: bool,
    timeout: int,
    as_json: bool,
    err: Console,
) -> None:
    from flchain.devnet import chainproc

    try:
        with err.status("starting chain, contract, task and nodes"):
            # The chain before the launcher's imports (web3, torch): its start-up runs
            # meanwhile. `_may_replace` asked about a stopped devnet in the directory.
            chainproc.clear_directory(directory, replace=True)
            chain_proc = chainproc.spawn_chain(plan)
            try:
                from flchain.devnet import launcher

                manifest = launcher.up(plan, replace=True, host=host, chain_proc=chain_proc)
            except BaseException:
                chainproc.stop_chain(chain_proc)  # started here: gone with the failure
                raise
    except DevnetError as exc:
        raise click.ClickException(str(exc)) from exc
    if detach:
        click.echo(f"explorer: flchain ledger serve --devnet {directory}", err=True)
        click.echo(
            json.dumps(manifest, indent=2)
            if as_json
            else f"devnet running in {directory}: rpc {manifest['rpc_url']}, contract "
            f"{manifest['contract']}, task {manifest['task_id']}; "
            f"`flchain devnet status --dir {directory}` to watch, "
            f"`flchain devnet down --dir {directory}` to stop"
        )
        return
    try:
        with _explorer_while_watching(directory):
            finished = _watch(manifest, directory, timeout, quiet=as_json)
        summary = ledger_summary(manifest)
    finally:
        down(directory)
    save_summary(directory, manifest, summary)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        _print_summary(summary, Console())
    if not finished:
        raise click.ClickException(f"the task did not finish within {timeout} s")


@contextlib.contextmanager
def _explorer_while_watching(directory: Path) -> Iterator[None]:
    """The ledger explorer on 127.0.0.1 while `devnet up` watches, its URL printed; after
    the devnet stops, `flchain ledger serve --devnet DIR` serves the same pages."""
    from flchain.commands.ledger import devnet_explorer

    try:
        server = devnet_explorer(directory).start()
    except (OSError, click.ClickException, FLChainError) as exc:  # the devnet runs without it
        click.echo(f"explorer not started: {exc}", err=True)
        yield
        return
    click.echo(f"explorer: {server.url} (while the devnet runs)", err=True)
    try:
        yield
    finally:
        server.stop()


def _rule_params(ctx: click.Context, opts: dict, params: dict[str, object]) -> dict[str, object]:
    """The rule and its parameters (--rule, --f, --m, --beta, --rule-param), checked against
    the rule's spec (runs on the network? in secure mode? valid for --nodes?); sets
    opts["rule"]. Without --f the task's f is the Byzantine count, at least 1, capped at the
    rule's bound for --nodes."""
    from flchain.aggregation import AggregationError, check_params, rule_parameters
    from flchain.taskconfig import SECURE_NETWORK_RULES

    rule = str(opts["rule"])
    explicit = ctx.get_parameter_source("rule").name != "DEFAULT"
    if rule not in NETWORK_RULES:
        raise click.UsageError(
            f"{rule} does not run on the network; it runs in `flchain simulate`. "
            f"On the network: {', '.join(NETWORK_RULES)}."
        )
    if opts["secure"]:
        runs = SECURE_NETWORK_RULES
        if explicit and rule not in runs:
            raise click.UsageError(
                f"--secure runs {' or '.join(runs)}: the decryptor only sees the sum, so --rule "
                f"{rule} has no single updates to judge (Siren alarms still run)"
            )
        if params:
            raise click.UsageError(
                f"--secure runs {' or '.join(runs)}, which takes no rule parameters; got "
                f"{', '.join(sorted(params))}"
            )
        opts["rule"] = rule = runs[0]
    unknown = sorted(set(params) - set(rule_parameters(rule)))
    if unknown:
        takes = ", ".join(rule_parameters(rule)) or "no parameters"
        raise click.UsageError(
            f"--rule {rule} does not take {', '.join(unknown)}; its parameters: {takes}"
        )
    try:
        check_params(rule, params, int(opts["nodes"]))  # type: ignore[call-overload]
    except AggregationError as exc:
        raise click.UsageError(f"--rule {rule} with {opts['nodes']} nodes: {exc}") from exc
    return params


def _client(manifest: dict, w3: Web3 | None = None, timeout: float = 30.0) -> FLChainClient:
    """A read-only client of the devnet's contract: over its RPC (each request within
    `timeout` seconds), or over `w3` (a replay)."""
    from flchain.contracts.client import FLChainClient
    from flchain.contracts.rpc import http_web3

    w3 = w3 or http_web3(manifest["rpc_url"], timeout)
    return FLChainClient.read_only(w3, manifest["contract"])


def _manifest(directory: Path) -> dict:
    """DIR/devnet.json for status/down: a missing DIR is a usage error (exit 2), a missing
    or damaged devnet.json one `Error:` line (exit 1)."""
    if not directory.is_dir():
        raise click.BadParameter(
            f"no devnet in {directory} (no such directory); start one with `flchain devnet up`",
            param_hint="--dir",
        )
    try:
        return read_manifest(directory)
    except DevnetError as exc:
        raise click.ClickException(str(exc)) from None


def _names(client: FLChainClient | ViewReader, manifest: dict) -> MemberNames:
    """Member labels: node names and attacks from devnet.json, indices from the chain."""
    members = client.members(manifest["task_id"])
    return MemberNames.from_manifest(manifest).with_accounts([m.account for m in members])


def _watch(manifest: dict, directory: Path, timeout: int, *, quiet: bool) -> bool:
    """Show the live view until the task ends; True if it ended before `timeout`. A node or
    the chain that exits before the task ends stops it all (ClickException with its last
    log lines): nobody is left waiting out a timeout for a network that cannot finish."""
    client = _client(manifest)
    deadline = time.time() + timeout
    console = Console(stderr=True)
    live = None if quiet else Live(console=console, refresh_per_second=2, redirect_stdout=False)
    names = MemberNames.from_manifest(manifest)
    with live or contextlib.nullcontext():
        while time.time() < deadline:
            try:
                task = client.get_task(manifest["task_id"])
                if live is not None and len(names.accounts) < task.n_members:
                    names = _names(client, manifest)  # until every node has joined
            except Exception as exc:  # the chain restarting or gone: say so, keep watching
                if live is not None:
                    live.update(f"[yellow]chain at {manifest['rpc_url']} not answering: {exc}")
                time.sleep(1.0)
                continue
            if live is not None:
                live.update(_view(manifest, task, names))
            over = task.status in (TaskStatus.FINISHED, TaskStatus.CLOSED)
            trouble = None if over else casualty(manifest, directory)
            if trouble is not None:
                raise click.ClickException(f"{trouble}\nstopping the devnet")
            if over:
                _wait_nodes_done(manifest, min(deadline, time.time() + NODES_DONE_SECONDS))
                if live is not None:
                    live.update(_view(manifest, client.get_task(manifest["task_id"]), names))
                break
            time.sleep(0.5)
        else:
            return False
    if live is not None:
        console.print()
    return True


NODES_DONE_SECONDS = 90.0
"""How long `devnet up` waits, once the task ended, for the nodes to fetch the final model,
test it and stop (each says phase "done"), before it summarizes what they hold."""


def _wait_nodes_done(manifest: dict, deadline: float) -> None:
    """Until every running node reports "done" (or the deadline): the summary then shows
    what each node holds, not what it held a moment before the end."""
    while time.time() < deadline:
        waiting = [
            node
            for node in manifest["nodes"]
            if process_alive(node.get("pid")) and (node_status(node) or {}).get("phase") != "done"
        ]
        if not waiting:  # a node that died says so in its last status; nothing to wait for
            return
        time.sleep(0.5)


def _view(manifest: dict, task: object, names: MemberNames | None = None) -> Table:
    """The live table: one row per node, named as the ledger names its member."""
    names = names or MemberNames.from_manifest(manifest)
    index = {a.lower(): i for i, a in names.accounts.items()}
    byzantine = manifest["byzantine"]
    attackers = f"{byzantine} byzantine ({manifest['attack']})" if byzantine else "no byzantine"
    table = Table(
        title=f"flchain devnet: task {manifest['task_id']} round {task.current_round}/"
        f"{manifest['rounds']} ({task.status.name.lower()}), rule {manifest['rule']}, "
        f"{attackers}, reward pool {format_eth(task.reward_pool)} ETH"
    )
    for col in ("member", "round", "phase", "peers", "accuracy", "rounds done"):
        table.add_column(col, overflow="fold")
    for node in manifest["nodes"]:
        address = node.get("address")
        label = Text(names.label(index.get((address or "").lower()), address))
        st = node_status(node)
        exited = node_exited(node, st)
        if st is None:
            table.add_row(label, "-", "exited" if exited else "starting", "-", "-", "-")
            continue
        acc = st.get("accuracy")
        table.add_row(
            label,
            str(st["round"]),
            f"exited ({st['phase']})" if exited else st["phase"],
            str(len(st["peers"])),
            "-" if acc is None else f"{acc:.4f}",
            str(st["rounds_done"]),
        )
    return table


def ledger_summary(manifest: dict, client: FLChainClient | None = None) -> dict:
    """Per round: status, who committed, who was accepted and rejected, the agreed digest,
    the reward share it paid; per member: its index, node, account and attack; per node:
    its final accuracy and digest, and its member's reputation, status, rewards earned and
    payout (wei); for the task: its money. Read over the devnet's RPC, or `client`'s."""
    from flchain.contracts.ledger import funded_wei

    client = client or _client(manifest)
    task_id = manifest["task_id"]
    task = client.get_task(task_id)
    events = client.events(task_id)
    members = {m.index: m for m in client.members(task_id)}
    names = MemberNames.from_manifest(manifest).with_accounts(
        {i: m.account for i, m in members.items()}
    )
    byzantine = names.byzantine()
    rounds = []
    for r in range(1, task.current_round + 1):
        info = client.get_round(task_id, r)
        if info.status == RoundStatus.NONE:
            continue
        accepted = bitmap_indices(info.accepted) if info.status == RoundStatus.FINALIZED else []
        rounds.append(
            {
                "round": r,
                "status": info.status.name.lower(),
                "submitted": bitmap_indices(info.submitted),
                "accepted": accepted,
                "rejected": (
                    sorted(set(bitmap_indices(info.submitted)) - set(accepted))
                    if info.status == RoundStatus.FINALIZED
                    else []
                ),
                "byzantine_accepted": sorted(set(accepted) & set(byzantine)),
                "global_digest": "0x" + info.global_digest.hex(),
                "decryptor": client.decryptor(task_id, r) if manifest.get("secure") else None,
                "remasked": bitmap_indices(info.remasked),
                "sum_digest": "0x" + info.sum_digest.hex() if any(info.sum_digest) else None,
                "start": info.start,
                "finalized_at": info.finalized_at,
                "reward_share_wei": info.reward_share,
                "paid": bitmap_indices(info.paid),
            }
        )
    nodes = []
    for node in manifest["nodes"]:
        st = node_status(node, timeout=2.0) or {}
        index = next(
            (i for i, m in members.items() if m.account.lower() == node["address"].lower()), None
        )
        member = members.get(index) if index is not None else None
        nodes.append(
            {
                "name": node["name"],
                "address": node.get("address"),
                "label": names.label(index, node.get("address")),
                "member_index": index,
                "attack": node.get("attack"),
                "reputation": None if member is None else member.reputation,
                "status": None if member is None else member.status.name.lower(),
                "earned_wei": None if member is None else member.earned,
                "payout_wei": None if member is None else member.payout,
                "forfeited_wei": (
                    task.stake + member.earned
                    if member is not None and member.status == MemberStatus.EJECTED
                    else 0
                ),
                "accuracy": st.get("accuracy"),
                "accuracy_history": st.get("accuracy_history", {}),
                "epsilon": (st.get("dp") or {}).get("epsilon"),
                "global_digest": st.get("global_digest"),
                # The node sets global_digest only once it holds the model's blob, its sha256
                # checked: comparing it with the chain's final digest is "has the model".
                "holds_final_model": st.get("global_digest") == "0x" + task.global_digest.hex(),
                "last_error": st.get("last_error"),
                "metrics": st.get("metrics", {}),
            }
        )
    return {
        "task_id": task_id,
        "contract": manifest["contract"],
        "rpc_url": manifest["rpc_url"],
        "status": task.status.name.lower(),
        "final_digest": "0x" + task.global_digest.hex(),
        "byzantine_members": byzantine,
        "members": [
            {"index": i, "account": m.account, **names.fields(i), "label": names.label(i)}
            for i, m in sorted(members.items())
        ],
        "rounds": rounds,
        "nodes": nodes,
        "reputations": client.reputations(task_id),
        "alarms": [
            {"round": e["args"]["round"], "member": e["args"]["member"]}
            for e in events
            if e["event"] == "AlarmRaised"
        ],
        "money": {
            "stake_wei": task.stake,
            "funded_wei": funded_wei(events),
            "reward_pool_wei": task.reward_pool,
            "rewards_paid_wei": task.rewards_paid,
            "slashed_wei": task.slashed,
            "settled": task.settled,
        },
    }


def _print_summary(summary: dict, console: Console) -> None:
    names = MemberNames.from_rows(summary.get("members", []))
    table = Table(title=f"ledger: task {summary['task_id']} ({summary['status']})")
    columns = ("round", "status", "committed", "accepted", "rejected", "byzantine accepted")
    for col in (*columns, "reward each (ETH)", "global digest"):
        table.add_column(col, overflow="fold")
    for r in summary["rounds"]:
        share = r.get("reward_share_wei") or 0
        finalized = r["status"] == "finalized"
        table.add_row(
            str(r["round"]),
            r["status"],
            str(len(r["submitted"])),
            str(len(r["accepted"])) if finalized else "-",
            Text(names.briefs(r.get("rejected", [])) if finalized else "-"),
            Text(names.briefs(r["byzantine_accepted"], mark=False) if finalized else "-"),
            _share_text(share, r["status"]),
            r["global_digest"][:18] + "…",
        )
    console.print(table)
    console.print(f"final digest: {summary['final_digest']}")
    secure = [r for r in summary["rounds"] if r.get("sum_digest")]
    for r in secure:
        remasked = f", re-masked over {r['remasked']}" if r["remasked"] else ""
        console.print(
            f"round {r['round']}: member {names.label(r['decryptor'])} decrypted the sum "
            f"{r['sum_digest'][:18]}…{remasked}"
        )
    if summary.get("alarms"):
        console.print(f"Siren alarms: {summary['alarms']}")
    nodes = Table(title="nodes")
    with_dp = any(n.get("epsilon") is not None for n in summary["nodes"])
    columns = ("member", "accuracy", "holds final model", "reputation", "status")
    columns += ("earned (ETH)", "payout (ETH)", *(["epsilon"] * with_dp))
    for col in columns:
        nodes.add_column(col, overflow="fold")
    for n in summary["nodes"]:
        acc, rep = n["accuracy"], n.get("reputation")
        nodes.add_row(
            Text(n.get("label") or n["name"]),
            "-" if acc is None else f"{acc:.4f}",
            _holds_text(n),
            "-" if rep is None else f"{rep / REP_UNIT:.3f}",
            n.get("status") or "-",
            format_eth(n.get("earned_wei")),
            _payout_text(n),
            *([f"{n['epsilon']:.2f}" if n.get("epsilon") is not None else "-"] * with_dp),
        )
    console.print(nodes)
    console.print(f"reputations (1000 = 1.0): {summary['reputations']}")
    money = summary.get("money")
    if money:
        settled = "settled: `flchain task withdraw` pays" if money["settled"] else "not settled"
        console.print(
            f"rewards: {format_eth(money['funded_wei'])} ETH funded, "
            f"{format_eth(money['rewards_paid_wei'])} ETH paid to members, "
            f"{format_eth(money['reward_pool_wei'])} ETH left in the pool, "
            f"{format_eth(money['slashed_wei'])} ETH slashed ({settled})"
        )


def _holds_text(node: dict) -> str:
    """ "yes" when the node holds the final model (blob verified); else "no" and why."""
    if node.get("holds_final_model"):
        return "yes"
    return f"no: {node['last_error']}" if node.get("last_error") else "no"


def _share_text(share: int, status: str) -> str:
    if not share:
        return "-"
    return format_eth(share) + (" (clawed back)" if status == "reverted" else "")


def _payout_text(node: dict) -> str:
    """A member's payout; for an ejected one, what it forfeited instead."""
    if node.get("status") == "ejected":
        return f"0 (forfeited {format_eth(node.get('forfeited_wei'))})"
    return format_eth(node.get("payout_wei"))


@devnet.command("status")
@_DIR
@click.option("--json", "as_json", is_flag=True)
def status_command(directory: Path, as_json: bool) -> None:
    """Show the task's round and every node's state; for a stopped devnet, that it stopped
    and its final summary (rounds, accepted and rejected members, final digest, accuracy),
    read from the chain journal it left."""
    manifest = _manifest(directory)
    if chain_stopped(manifest):
        _stopped_status(directory, manifest, as_json)
        return
    from flchain.contracts.views import ViewReader  # no web3: a glance at the chain

    reader = ViewReader(manifest["rpc_url"], manifest["contract"])
    try:
        task = reader.get_task(manifest["task_id"])
        names = _names(reader, manifest)
    except FLChainError as exc:
        raise click.ClickException(
            f"the devnet's chain at {manifest['rpc_url']} does not answer "
            f"(pid {manifest.get('chain_pid')} runs): {exc}"
        ) from None
    if as_json:
        click.echo(
            json.dumps(
                {
                    "running": True,
                    "round": task.current_round,
                    "status": task.status.name.lower(),
                    **_nodes_json(manifest),
                },
                indent=2,
            )
        )
    else:
        Console().print(_view(manifest, task, names))


def _nodes_json(manifest: dict) -> dict:
    """`devnet status --json`'s nodes (name -> its /status, the last one it wrote once
    stopped, None before its first) and processes (name -> "running", "done": stopped after
    the task, or "exited": gone before it)."""
    nodes, processes = {}, {}
    for node in manifest["nodes"]:
        status = nodes[node["name"]] = node_status(node, timeout=0.5)
        if process_alive(node.get("pid")):
            processes[node["name"]] = "running"
        else:
            processes[node["name"]] = "exited" if node_exited(node, status) else "done"
    return {"nodes": nodes, "processes": processes}


def _stopped_status(directory: Path, manifest: dict, as_json: bool) -> None:
    """`devnet status` once the chain has gone: the summary `devnet up` prints at the end, as
    `devnet down` (or `devnet up`) saved it, else rebuilt from the journal (replayed in this
    process, nothing started)."""
    running = [n["name"] for n in manifest["nodes"] if process_alive(n.get("pid"))]
    summary = None if running else saved_summary(directory, manifest)
    source = f"as saved when it stopped ({directory / SUMMARY_FILE})"
    if summary is None:
        try:
            journal = stopped_journal(directory, manifest)
        except DevnetError as exc:
            raise click.ClickException(str(exc)) from None
        summary = _replayed_summary(journal, manifest)
        source = f"from the chain journal in {journal}"
        if not running:  # nodes still running may change what it says of them
            save_summary(directory, manifest, summary)
    if as_json:
        final = {
            "running": False,
            "nodes_running": running,
            "round": summary["rounds"][-1]["round"] if summary["rounds"] else 0,
            "status": summary["status"],
            **_nodes_json(manifest),
            "summary": summary,
        }
        click.echo(json.dumps(final, indent=2))
        return
    console = Console()
    still = f"; nodes still running: {', '.join(running)}" if running else ""
    console.print(
        f"devnet in {directory} is stopped (chain not running{still}); task "
        f"{summary['task_id']} {summary['status']}, {source}:",
        markup=False,  # a directory name may hold "["
    )
    _print_summary(summary, console)


def _replayed_summary(journal: Path, manifest: dict) -> dict:
    """`ledger_summary` of a stopped devnet, its journal replayed in this process."""
    from flchain.devnet.journal import JournalError
    from flchain.devnet.replay import replay_web3  # py-evm: only for a stopped devnet

    try:
        return ledger_summary(manifest, _client(manifest, replay_web3(journal)))
    except (JournalError, FLChainError) as exc:
        raise click.ClickException(f"cannot read the chain journal in {journal}: {exc}") from None


@devnet.command("logs")
@_DIR
@click.argument("node")
@click.option("--lines", "lines", type=click.IntRange(min=0), default=50, show_default=True)
@click.option("-n", "lines", type=click.IntRange(min=0), hidden=True)  # the old spelling
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until Ctrl-C.")
@click.option(
    "--all",
    "show_all",
    is_flag=True,
    help="Every line, libraries' included (default: flchain's own lines and every warning).",
)
def logs_command(directory: Path, node: str, lines: int, follow: bool, show_all: bool) -> None:
    """Print the last lines of a node's log (NODE: node-0, 0, or `chain`): its round lines
    and every warning, without the libraries' chatter unless --all."""
    if not directory.is_dir():
        raise click.BadParameter(
            f"no devnet in {directory} (no such directory)", param_hint="--dir"
        )
    name = "chain" if node == "chain" else (node if node.startswith("node-") else f"node-{node}")
    path = directory / "chain.log" if name == "chain" else directory / name / "node.log"
    if not path.exists():
        raise click.ClickException(f"no log for {node!r} at {path}")
    keep = (lambda line: True) if show_all else own_log_line
    with path.open(errors="replace") as handle:
        tail = [line.rstrip("\n") for line in handle if keep(line)]
        if lines:
            click.echo("\n".join(tail[-lines:]))
        if not follow:
            return
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                line = handle.readline()
                if not line:
                    time.sleep(0.3)
                    continue
                if keep(line):
                    click.echo(line.rstrip("\n"))


# How long `devnet down` waits on each read of the final summary before it stops the chain
# without one (a hung chain must not hold the command).
SUMMARY_READ_S = 5.0


@devnet.command("down")
@_DIR
def down_command(directory: Path) -> None:
    """Stop every node and the chain, saving the final summary `devnet status` shows
    afterwards (DIR/summary.json)."""
    _manifest(directory)  # a missing or damaged devnet.json: one line, not a traceback
    summary = None

    def read_summary(manifest: dict) -> None:
        nonlocal summary
        if not chain_stopped(manifest):  # its final state, while its RPC still answers
            with contextlib.suppress(FLChainError, OSError):  # a hung chain: stop it anyway
                summary = ledger_summary(manifest, _client(manifest, timeout=SUMMARY_READ_S))

    try:
        stopped = down(directory, before_chain=read_summary)
    except DevnetError as exc:
        raise click.ClickException(str(exc)) from exc
    if summary is not None:
        save_summary(directory, _manifest(directory), summary)
    click.echo(f"stopped {len(stopped)} processes")
