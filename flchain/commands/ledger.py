"""`flchain ledger ...`: read and verify the on-chain model ledger, as tables, JSON or a web page.

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

import dataclasses
import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from flchain.commands.access import DEFAULT_RPC, connect, open_flchain
from flchain.commands.output import (
    Column,
    cell,
    cli_errors,
    csv_text,
    echo_csv,
    echo_json,
    echo_table,
    emit,
    short,
    status_style,
    when,
)
from flchain.contracts.artifact import load_artifact
from flchain.contracts.ledger import (
    BlobCheck,
    ConfigMismatchError,
    Ledger,
    LedgerError,
    MemberMoney,
    RoundRecord,
    TaskPrivacy,
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
    slash_records,
    task_row,
    verify_blobs,
)
from flchain.contracts.names import MemberNames
from flchain.contracts.types import REP_UNIT, TaskInfo
from flchain.devnet.manifest import (
    DevnetError,
    chain_stopped,
    node_dir,
    read_manifest,
    stopped_journal,
)
from flchain.units import format_eth

if TYPE_CHECKING:  # web3 loads when a command reaches a chain, not for --help
    from web3 import Web3

    from flchain.contracts.client import FLChainClient

NODE_TASK_CONFIG = "task-config.json"  # what the devnet launcher writes into every node dir


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
            "--dir",
            "devnet",
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
    inside `cli_errors`."""

    def decorate(fn: Callable[..., None]) -> click.Command:
        @functools.wraps(fn)
        @click.pass_context
        def run(ctx: click.Context, **kwargs: Any) -> None:
            options = {k: kwargs.pop(k) for k in _SOURCE_KEYS if k in kwargs}
            with cli_errors():
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
        header = [Column(f.name, f.name) for f in dataclasses.fields(TaskInfo)]
        emit(rows, title="", columns=header, as_json=source.as_json, as_csv=source.as_csv)
        return
    columns = [
        Column("id", "task_id"),
        Column("owner", "owner", render=str),
        Column("status", "status", style=status_style),
        Column("members", "members_text"),
        Column("round", "round_text"),
        Column("global", "global_round"),
        Column("config digest", "config_digest"),
        Column("stake", "stake", render=format_eth),
        Column("pool", "reward_pool", render=format_eth),
        Column("paid", "rewards_paid", render=format_eth),
        Column("slashed", "slashed", render=format_eth),
        Column("settled", "settled"),
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
    echo_table(title, columns, shown)


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
        Column("round", "round"),
        Column("status", "status", style=status_style),
        Column("start (UTC)", "start", render=when),
        Column("submit by", "submit_after", render=_after),
        Column("vote by", "vote_after", render=_after),
        Column("finalized", "finalized_after", render=_after),
        Column("committed", "committed"),
        Column("accepted", "accepted"),
        Column("rejected", "rejected", render=str),
        Column("global digest", "global_digest"),
        Column("votes", "votes"),
        Column("alarms", "alarms"),
    ]
    title = f"Task {book.task.task_id}: {len(rows)} rounds ({book.task.status.name.lower()})"
    if privacy is not None:
        columns.append(Column("epsilon", "epsilon", render=_epsilon_text))
        title += f"; {_privacy_title(privacy)}"
    if source.as_json or source.as_csv:
        emit(rows, title=title, columns=columns, as_json=source.as_json, as_csv=source.as_csv)
        return
    names = source.names([m.account for m in book.members])
    shown = [
        {**_with_offsets(row), "rejected": _rejected_text(rnd, names)}
        for row, rnd in zip(rows, book.rounds, strict=True)
    ]
    echo_table(title, columns, shown)
    if _shows_secure(privacy, book.rounds):
        # A table of its own: the round summary is already as wide as a terminal.
        secure_columns = [
            Column("round", "round"),
            Column("decryptor", "decryptor", render=lambda v: _brief_or_dash(names, v)),
            Column("re-masked", "remasked", render=lambda v: names.briefs(v) if v else "none"),
            Column("sum digest", "sum_digest", render=lambda v: v or "not published"),
        ]
        echo_table("Secure aggregation", secure_columns, rows)


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
        echo_json(detail)
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
        echo_csv(rows)
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
        f" ({rnd.quorum_bps / 100:g}%); final tally {cell(rnd.final_tally)}"
    )
    click.echo(f"  alarm weight   {rnd.alarm_weight}")
    click.echo(f"  rewards        {_round_rewards_text(rnd)}")
    if rnd.status == "reverted":
        clawed = "not read" if rnd.clawed_back is None else f"{format_eth(rnd.clawed_back)} ETH"
        click.echo(
            f"  clawed back    {clawed} (the revert returned the round's rewards to the pool)"
        )
    for slash in detail["slashes"]:
        click.echo(
            f"  ejected        {names.label(slash['member'])} "
            f"(reputation {slash['reputation']}, "
            f"{slash['cause'] or 'unknown cause'}): "
            f"forfeited {format_eth(slash['forfeited_wei'])} ETH"
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
        Column("member", "member_label", render=str),
        Column("digest", "digest"),
        Column("samples", "samples"),
        Column("base", "base_round"),
        Column("loss", "loss"),
        Column("verdict", "verdict", style=status_style),
        Column("vote digest", "vote_digest"),
        Column("vote accepts", "vote_accepted"),
        Column("weight", "vote_weight_text"),
        Column("alarm", "alarmed"),
        Column("reward (ETH)", "reward_wei", render=format_eth),
        Column("reputation", "reputation_moves", render=_moves_lines),
    ]
    if secure:
        member_columns.append(Column("remask digest", "remask_digest"))
    if privacy is not None:
        member_columns += [
            Column("DP rounds", "dp_rounds"),
            Column("epsilon", "epsilon", render=_epsilon_text),
        ]
    for row in rows:
        row["vote_weight_text"] = "late" if row["vote_late"] else row["vote_weight"]
        row["member_label"] = names.label(row["member"], stacked=True)
    echo_table("Members", member_columns, rows)
    tally_columns = [
        Column("digest", "digest"),
        Column("accepts", "accepted"),
        Column("weight", "weight"),
        Column("voters", "voters"),
    ]
    echo_table("Tallies", tally_columns, detail["tallies"])


def _round_rewards_text(rnd: RoundRecord) -> str:
    if not rnd.paid:
        return "none" if rnd.accepted is not None else "none (not finalized)"
    members = ",".join(str(m) for m in rnd.paid)
    return (
        f"{format_eth(rnd.reward_share)} ETH each to members {members} "
        f"({format_eth(rnd.reward_paid)} ETH in all)"
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
        Column("index", "index"),
        Column("account", "account", render=str),
        Column("peer id", "peer_id", render=str),
        Column("reputation", "reputation_factor", render=lambda v: f"{v:.3f}"),
        Column("status", "status", style=status_style),
        Column("stake (ETH)", "stake_wei", render=format_eth),
        Column("joined round", "since_round"),
    ]
    title = f"Task {task_info.task_id} members"
    if (privacy is not None and privacy.secure) or any(m.has_he_key for m in book.members):
        columns.append(Column("Paillier key", "he_key", render=lambda v: cell(v is not None)))
    if privacy is not None:
        columns += [
            Column("DP rounds", "dp_rounds"),
            Column("epsilon", "epsilon", render=_epsilon_text),
        ]
        title += f"; {_privacy_title(privacy)}"
    if source.as_json or source.as_csv:
        emit(rows, title=title, columns=columns, as_json=source.as_json, as_csv=source.as_csv)
        return
    # The table names a member by index, node and short address (the account in full is
    # in --json/--csv).
    columns[:2] = [Column("member", "member", render=str)]
    shown = [{**row, "member": names.label(row["index"], row["account"])} for row in rows]
    echo_table(title, columns, shown)
    money_rows = [{**row, "penalty_list": _penalties_text(money[row["index"]])} for row in shown]
    money_columns = [
        Column("member", "member", render=str),
        Column("status", "status", style=status_style),
        Column("earned (ETH)", "earned_wei", render=format_eth),
        Column("payout (ETH)", "payout_wei", render=format_eth),
        Column("forfeited (ETH)", "forfeited_wei", render=format_eth),
        Column("withdrawn (ETH)", "withdrawn_wei", render=format_eth),
        Column("rep lost", "reputation_lost"),
        Column("penalties", "penalty_list", render=lambda v: v or "none"),
    ]
    echo_table(
        f"Task {task_info.task_id} money: {_task_money_text(task_info)}",
        money_columns,
        money_rows,
    )


def _penalties_text(money: MemberMoney) -> str:
    return "; ".join(penalty_text(p) for p in money.penalties)


def _task_money_text(info: TaskInfo) -> str:
    settled = "settled" if info.settled else "not settled"
    return (
        f"pool {format_eth(info.reward_pool)} ETH, paid {format_eth(info.rewards_paid)} ETH, "
        f"slashed {format_eth(info.slashed)} ETH ({settled})"
    )


def _event_names() -> list[str]:
    return sorted(item["name"] for item in load_artifact().abi if item["type"] == "event")


def _args_text(args: Any) -> str:
    return " ".join(f"{k}={short(str(v))}" for k, v in args.items())


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
        Column("block", "block_number"),
        Column("tx", "tx_hash"),
        Column("event", "event"),
        Column("args", "args", render=_args_text),
    ]
    emit(
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
        echo_json({**counts, "blob_dirs": [str(d) for d in dirs], "checks": rows})
    elif source.as_csv:
        echo_csv(rows)
    else:
        columns = [
            Column("kind", "kind"),
            Column("round", "round"),
            Column("member", "member", render=lambda v: "-" if v is None else names.label(v)),
            Column("digest", "digest", render=str),
            Column("status", "status", style=status_style),
            Column("copies", "paths", render=lambda v: str(len(v))),
        ]
        echo_table("Blob verification", columns, rows)
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
            path.write_text(csv_text(rows, _table_columns(name, rows)), "utf-8")
            files.append(str(path))
    counts = {name: len(rows) for name, rows in tables.items()}
    if source.as_json:
        echo_json({**header, "format": fmt, "files": files, "counts": counts})
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
        echo_json(
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
    from flchain.devnet.policy import is_loopback
    from flchain.explorer import ExplorerServer

    explorer = _explorer(source, blob_dirs)
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


def _explorer(source: _Source, blob_dirs: Sequence[Path] = ()) -> Any:
    """The explorer's view of `source` (an `ExplorerSource`): with a devnet, its node names,
    node directories (their status files) and blob stores too."""
    from flchain.devnet.manifest import read_manifest  # light; the explorer imports below
    from flchain.explorer import ExplorerSource

    devnet, dirs = source.devnet, list(blob_dirs)
    devnet_dir = devnet.directory if devnet is not None else None
    manifest = read_manifest(devnet_dir) if devnet_dir is not None else {"nodes": []}
    nodes = tuple({**n, "dir": str(node_dir(devnet_dir, n["dir"]))} for n in manifest["nodes"])
    if not dirs and devnet is not None:
        dirs = list(devnet.blob_dirs)
    origin = f"journal {source.journal}" if source.journal is not None else f"rpc {source.rpc}"
    return ExplorerSource(
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


def devnet_explorer(directory: Path) -> Any:
    """An explorer server (not started) on 127.0.0.1 at a free port for the running devnet in
    `directory`: what `devnet up` serves while it watches."""
    from flchain.explorer import ExplorerServer

    devnet = read_devnet(directory)
    source = _Source(
        rpc=devnet.rpc_url,
        contract=devnet.contract,
        task_id=devnet.task_id,
        devnet=devnet,
        from_block=0,
        chunk_blocks=None,
        as_json=True,  # no notes on stderr
        as_csv=False,
    )
    return ExplorerServer(_explorer(source), "127.0.0.1", 0)
