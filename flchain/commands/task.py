"""`flchain task config | create | fund | withdraw | refund`: a task's life on any chain."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from flchain.commands.access import (
    check_address,
    connect,
    json_option,
    key_options,
    load_account,
    open_flchain,
    parse_digest,
    rpc_option,
)
from flchain.commands.options import (
    dataset_option,
    dp_options,
    economics_options,
    eth_to_wei,
    model_options,
    pop_economics,
    pop_rule_params,
    rule_options,
    secure_default_rule,
    secure_options,
    weight_options,
    window_options,
)
from flchain.commands.output import cli_errors, echo_json, when
from flchain.config import DEFAULT_MAX_SAMPLES, MAX_SAMPLES_LIMIT
from flchain.contracts.errors import ContractRevert, FLChainError
from flchain.contracts.ledger import (
    chain_time,
    get_task_checked,
    hex0x,
    sha256_file,
)
from flchain.contracts.types import TaskInfo, TaskParams, TaskStatus
from flchain.units import format_eth

if TYPE_CHECKING:  # web3 loads when a command reaches a chain, not for --help
    from flchain.contracts.client import FLChainClient

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
        return parse_digest(digest, names[1])
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
@model_options
@dataset_option
@rule_options
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0.0, min_open=True), default=0.1, show_default=True)
@dp_options
@secure_options
@click.option("--seed", default=0, show_default=True, help="Seeds the initial model and shards.")
@weight_options
@click.option("--json", "as_json", is_flag=True)
def task_config_command(out: Path, rule: str, as_json: bool, **fields: Any) -> None:
    """Write a task config and print the two digests `task create` commits to.

    Every node checks the file against the config digest and rebuilds the initial model from
    it, so `task create --config FILE` needs nothing else.
    """
    from flchain.config import ConfigError
    from flchain.taskconfig import TaskConfigError, build_task_config, initial_model_digest

    params = pop_rule_params(fields)
    fields["rule"] = rule
    secure_default_rule(fields)
    rule = fields.pop("rule")
    try:
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
        echo_json(info)
    else:
        click.echo(
            f"wrote {out}: config {info['config_digest']}, initial model {info['initial_digest']}"
        )


@task.command("create")
@rpc_option
@key_options
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
@window_options
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
@json_option
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
    with cli_errors():
        config = _digest_choice(config_file, config_digest, ("--config", "--config-digest"))
        if model_file is None and model_digest is None and config_file is not None:
            initial = _initial_digest_from_config(config_file)
        else:
            initial = _digest_choice(model_file, model_digest, ("--model", "--model-digest"))
        if stake_wei is not None and stake_eth is not None:
            raise click.UsageError("give --stake-wei or --stake-eth, not both")
        stake = stake_wei if stake_wei is not None else eth_to_wei(stake_eth or "0", "--stake-eth")
        allow = [check_address(a, "--allow") for a in allowed]
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
        echo_json(result)
        return
    click.echo(f"Task {task_id} created on {client.address}")
    click.echo(f"  tx {tx.tx_hash} in block {tx.block_number}, gas used {tx.gas_used}")
    click.echo(f"  config {hex0x(config)}, initial model {hex0x(initial)}")
    click.echo(
        f"  reward pool {format_eth(money.reward_wei)} ETH, stake {format_eth(stake)} ETH; quorum "
        f"{money.quorum_bps} bps, alarm {money.alarm_bps} bps, reputation floor "
        f"{money.rep_floor}"
    )


# ---------------------------------------------------------------- flchain task: money


def contract_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--contract",
        "contract_address",
        envvar="FLCHAIN_CONTRACT",
        required=True,
        help="FLChain address (env FLCHAIN_CONTRACT).",
    )(fn)


TASK_ID = click.argument("task_id", metavar="TASK", type=click.IntRange(min=1))


def signed_client(
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
        f"{when(end)} UTC (in {end - now} s); an alarm could still revert it and move rewards"
    )


def tx_fields(tx: Any) -> dict[str, Any]:
    return {"tx_hash": tx.tx_hash, "block_number": tx.block_number, "gas_used": tx.gas_used}


@task.command("fund")
@rpc_option
@key_options
@contract_option
@TASK_ID
@click.option("--eth", "amount_eth", help="ETH to add to the reward pool.")
@click.option("--wei", "amount_wei", type=click.IntRange(min=1), help="Wei, instead of --eth.")
@json_option
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
    with cli_errors():
        client, info = signed_client(rpc, contract_address, key, key_file, password_file, task_id)
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
            **tx_fields(tx),
        }
    if as_json:
        echo_json(result)
        return
    click.echo(
        f"Added {format_eth(amount)} ETH to task {task_id}'s reward pool: now "
        f"{format_eth(result['reward_pool_wei'])} ETH"
    )
    click.echo(f"  tx {tx.tx_hash} in block {tx.block_number}, gas used {tx.gas_used}")


_WITHDRAW_REFUSALS = {
    "not member": "{account} is not a member of task {task_id}",
    "ejected": "{account} was ejected from task {task_id}: its stake and rewards went to the "
    "reward pool (`flchain ledger members` shows the forfeit)",
    "withdrawn": "{account} has already withdrawn its payout from task {task_id}",
}


@task.command("withdraw")
@rpc_option
@key_options
@contract_option
@TASK_ID
@json_option
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
    with cli_errors():
        client, info = signed_client(rpc, contract_address, key, key_file, password_file, task_id)
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
            **tx_fields(tx),
        }
    if as_json:
        echo_json(result)
        return
    click.echo(
        f"Withdrew {format_eth(stake + reward)} ETH from task {task_id} "
        f"as member {result['member']}: "
        f"stake {format_eth(stake)} ETH, rewards {format_eth(reward)} ETH"
    )
    click.echo(f"  tx {tx.tx_hash} in block {tx.block_number}, gas used {tx.gas_used}")


@task.command("refund")
@rpc_option
@key_options
@contract_option
@TASK_ID
@json_option
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
    with cli_errors():
        client, info = signed_client(rpc, contract_address, key, key_file, password_file, task_id)
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
                f"{format_eth(info.rewards_paid)} ETH of rewards, so the pool left "
                f"({format_eth(info.reward_pool)} ETH) is theirs, paid by their `task withdraw`"
            )
        if info.reward_pool == 0:
            raise click.ClickException(f"nothing to claim: task {task_id}'s reward pool is empty")
        tx = client.claim_refund(task_id)
        amount = int(tx.event("RefundClaimed")["amount"])
        result = {
            "task_id": task_id,
            "owner": client.account,
            "amount_wei": amount,
            **tx_fields(tx),
        }
    if as_json:
        echo_json(result)
        return
    click.echo(
        f"Refunded {format_eth(amount)} ETH of task {task_id}'s reward pool to {client.account}"
    )
    click.echo(f"  tx {tx.tx_hash} in block {tx.block_number}, gas used {tx.gas_used}")
