"""`flchain simulate`: a federated experiment with Byzantine peers in one process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from flchain.attacks import DATA_ATTACKS, DESCRIPTIONS, SECURE_ATTACKS, UPDATE_ATTACKS
from flchain.commands.options import (
    check_population,
    dataset_option,
    dp_options,
    model_options,
    partition_option,
    pop_rule_params,
    population_options,
    rule_options,
    secure_default_rule,
    secure_options,
    weight_options,
)
from flchain.config import (
    DEFAULT_ALARM_BPS,
    ConfigError,
    SimulationConfig,
    parse_key_values,
)
from flchain.siren_defaults import CLIENT_THRESHOLD

if TYPE_CHECKING:  # torch: imported when a simulation runs, not for --help
    from flchain.simulation import RoundRecord, Simulation, SimulationResult

_SIM_ATTACKS = (*UPDATE_ATTACKS, *DATA_ATTACKS, *SECURE_ATTACKS)
_ATTACK_HELP = "; ".join(f"{name}: {DESCRIPTIONS[name]}" for name in _SIM_ATTACKS)


@click.command("simulate")
@population_options(nodes=10, rounds=20, peers="peers")
@model_options
@partition_option
@click.option("--batch-size", default=16, show_default=True)
@click.option("--lr", default=0.1, show_default=True, help="Local SGD learning rate.")
@click.option("--momentum", default=0.9, show_default=True)
@click.option("--weight-decay", default=0.0, show_default=True)
@click.option("--prox-mu", default=0.0, show_default=True, help="FedProx proximal term mu.")
@dataset_option
@click.option("--alpha", default=0.5, show_default=True, help="Dirichlet concentration.")
@click.option(
    "--classes-per-client", default=2, show_default=True, help="Classes per peer for shards."
)
@click.option(
    "--public-fraction",
    default=0.05,
    show_default=True,
    help="Share of training data held out as the small public set (SageFlow, evaluation).",
)
@rule_options
@click.option(
    "--attack",
    type=click.Choice(_SIM_ATTACKS),
    default=None,
    help=f"What the Byzantine peers do. {_ATTACK_HELP}.",
)
@click.option("--attack-param", multiple=True, metavar="KEY=VALUE", help="Attack knob.")
@click.option(
    "--stragglers",
    default=0.0,
    show_default=True,
    help="Probability that a peer's update arrives late (SageFlow's asynchronous setup): it "
    "arrives 1..--max-delay rounds after the peer started, and the peer starts nothing new "
    "until then.",
)
@click.option(
    "--max-delay",
    default=0,
    show_default=True,
    help="Most rounds a late update takes to arrive (its largest staleness).",
)
@click.option(
    "--alarm-threshold",
    default=CLIENT_THRESHOLD,
    show_default=True,
    help="Siren's C_l: a peer alarms when its own model's validation accuracy exceeds the "
    "global model's by more than C_l times its own.",
)
@click.option(
    "--alarm-bps",
    default=DEFAULT_ALARM_BPS,
    show_default=True,
    help="Siren: the share of peers (basis points) whose alarms on a round revert it and abort "
    "the round running, as the contract does on the network with reputation weights.",
)
@click.option("--server-lr", default=1.0, show_default=True, help="Step size of the aggregate.")
@click.option(
    "--fast/--deterministic",
    default=False,
    show_default=True,
    help="--fast aggregates in float32 on the training device instead of the bit-exact path.",
)
@dp_options
@secure_options
@weight_options
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True
)
@click.option("--json", "as_json", is_flag=True, help="Print the final metrics as JSON.")
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write accuracy/loss per round to this PNG.",
)
@click.option(
    "--save-model",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the final global model as safetensors.",
)
def simulate_command(**opts: object) -> None:
    """Run a federated experiment with Byzantine peers and robust aggregation in one process.

    It uses the same training, attack and aggregation code as the network node. Examples:

        flchain simulate --nodes 10 --byzantine 3 --attack signflip --rule multikrum

        flchain simulate --model mlp --dp-clip 1 --dp-noise 0.8 --secure
    """
    as_json = bool(opts.pop("as_json"))
    plot = opts.pop("plot")
    save_model = opts.pop("save_model")
    check_population(int(opts["nodes"]), int(opts["byzantine"]), opts["attack"])  # type: ignore[call-overload]
    from flchain.advice import setting_warnings
    from flchain.allocator import retain_freed_memory
    from flchain.simulation import Simulation

    retain_freed_memory()
    try:
        config = _config_from_options(opts)
        sim = Simulation(config)
    except (ConfigError, ValueError) as exc:
        raise click.UsageError(str(exc)) from exc
    err = Console(stderr=True)
    for warning in setting_warnings(
        rule=config.rule,
        nodes=config.nodes,
        rounds=config.rounds,
        dimension=int(sim.global_params.numel()),
        secure=config.secure,
        dp_clip=config.dp_clip,
        dp_noise=config.dp_noise,
    ):
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)
    result = _run_with_progress(sim, err, quiet=as_json)
    if save_model is not None:
        save_model.write_bytes(result.model_bytes)
    if plot is not None:
        write_plot(result, plot)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        _print_summary(result, Console())


def _config_from_options(opts: dict) -> SimulationConfig:
    secure_default_rule(opts)
    rule_params = pop_rule_params(opts)
    attack_params = parse_key_values(opts.pop("attack_param"), "--attack-param")
    deterministic = not opts.pop("fast")
    return SimulationConfig(
        **opts, rule_params=rule_params, attack_params=attack_params, deterministic=deterministic
    )


def _run_with_progress(sim: Simulation, err: Console, *, quiet: bool) -> SimulationResult:
    cfg = sim.config
    with Progress(
        TextColumn("[bold]round"),
        MofNCompleteColumn(),
        BarColumn(),
        TextColumn("acc {task.fields[acc]}"),
        TimeElapsedColumn(),
        console=err,
        disable=quiet,
        transient=False,
    ) as progress:
        task = progress.add_task("simulate", total=cfg.rounds, acc="-")

        def on_round(record: RoundRecord) -> None:
            progress.update(task, advance=1, acc=f"{record.accuracy:.3f}")

        return sim.run(on_round)


def _print_summary(result: SimulationResult, console: Console) -> None:
    cfg = result.config
    attack = f"{cfg.byzantine} x {cfg.attack}" if cfg.byzantine else "none"
    table = Table(
        title=f"flchain simulate: {cfg.nodes} nodes, rule {cfg.rule}, attack {attack}, "
        f"{cfg.dataset}/{cfg.partition}, model {cfg.model}"
    )
    for col in ("round", "test acc", "test loss", "train loss", "honest in", "byzantine in"):
        table.add_column(col, justify="right")
    show_stale = cfg.stragglers > 0
    show_alarms = any(r.alarms for r in result.rounds)
    show_asr = cfg.attack == "backdoor"
    if show_stale:
        table.add_column("stale", justify="right")
    if show_alarms:
        table.add_column("alarms", justify="right")
    if show_asr:
        table.add_column("backdoor ASR", justify="right")
    if cfg.dp_enabled:
        table.add_column("epsilon", justify="right")
    if cfg.secure:
        table.add_column("decryptor", justify="right")
        table.add_column("secure err", justify="right")
    for r in result.rounds:
        row = [
            str(r.round),
            f"{r.accuracy:.4f}",
            f"{r.loss:.4f}",
            f"{r.train_loss:.4f}",
            f"{r.accepted_honest}/{r.honest}",
            f"{r.accepted_byzantine}/{r.byzantine}",
        ]
        if show_stale:
            row.append(str(r.stale_updates))
        if show_alarms:
            row.append(str(r.alarms))
        if show_asr:
            row.append(f"{r.attack_success_rate:.3f}")
        if cfg.dp_enabled:
            row.append(_fmt_epsilon(r.epsilon))
        if cfg.secure:
            row.append("-" if r.decryptor is None else str(r.decryptor))
            row.append(_fmt_float(r.secure_error))
        table.add_row(*row)
    console.print(table)
    if result.diverged_round is not None:
        console.print(
            f"[bold red]the global model diverged in round {result.diverged_round}[/]: the run "
            "stopped there (training on from non-finite weights would say nothing more)"
        )
    console.print(
        f"final accuracy [bold]{result.final_accuracy:.4f}[/] (best {result.best_accuracy:.4f}), "
        f"byzantine peers {result.byzantine_ids}, model sha256 {result.model_sha256[:16]}…, "
        f"{result.num_params} parameters on {result.device}"
    )
    if cfg.dp_enabled:
        console.print(
            f"differential privacy: clip {cfg.dp_clip:g}, noise multiplier {cfg.dp_noise:g}; "
            f"{'the decrypted sum' if cfg.secure else 'each honest peer'} spent epsilon "
            f"[bold]{_fmt_epsilon(result.final_epsilon)}[/] "
            f"at delta {cfg.dp_delta:g} over {len(result.rounds)} rounds"
        )
    if cfg.secure:
        rule = "FedAvg plus alarms" if cfg.rule == "siren" else "FedAvg"
        console.print(
            f"secure aggregation ({rule}, {cfg.secure_bits}-bit quantization in "
            f"+-{cfg.secure_value_range:g}, {cfg.secure_key_bits}-bit Paillier): largest gap to "
            f"plaintext FedAvg {_fmt_float(result.secure_max_error)}, quantization bound "
            f"{_fmt_float(max((r.secure_bound or 0.0) for r in result.rounds))}"
        )
        clamped = sum(r.secure_clipped or 0 for r in result.rounds)
        if clamped:
            console.print(
                f"[yellow]{clamped} coordinate(s) fell outside +-{cfg.secure_value_range:g} and "
                "were clamped[/]: widen --secure-range if honest peers are among them"
            )
        rejected = [r for r in result.rounds if r.secure_rejected]
        if rejected:
            console.print(
                f"[yellow]{len(rejected)} round(s) rejected by every member[/] (the decrypted "
                f"mean did not decode or broke the aggregate bound), first: "
                f"{rejected[0].secure_rejected}"
            )


def _fmt_epsilon(epsilon: float | None) -> str:
    if epsilon is None:
        return "-"
    return "inf (no noise)" if epsilon == float("inf") else f"{epsilon:.3f}"


def _fmt_float(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def write_plot(result: SimulationResult, path: Path) -> None:
    """Accuracy and loss per round, for a quick look at convergence and at an attack's bite."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = [r.round for r in result.rounds]
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
    ax_acc.plot(rounds, [r.accuracy for r in result.rounds], marker="o")
    ax_acc.set(xlabel="round", ylabel="test accuracy", ylim=(0, 1))
    ax_loss.plot(rounds, [r.loss for r in result.rounds], marker="o", color="tab:red")
    ax_loss.set(xlabel="round", ylabel="test loss")
    cfg = result.config
    fig.suptitle(f"{cfg.rule}, {cfg.byzantine}/{cfg.nodes} byzantine ({cfg.attack or 'none'})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
