"""Click options that several commands share, declared once so names, defaults and help agree."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation, localcontext
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from flchain.config import (
    DEFAULT_ALARM_BPS,
    DEFAULT_MAX_SAMPLES,
    DEFAULT_QUORUM_BPS,
    DEFAULT_REP_FLOOR,
    MAX_SAMPLES_LIMIT,
    ROBUST_WEIGHTS,
)
from flchain.units import WEI_PER_ETH

F = TypeVar("F", bound=Callable[..., Any])


def _stack(fn: F, options: list[Callable[[F], F]]) -> F:
    """Apply click options so that they show in --help in the order listed."""
    for option in reversed(options):
        fn = option(fn)
    return fn


def weight_options(fn: F) -> F:
    """`--max-samples` and `--robust-weights`: how a task forms aggregation weights, so that
    no member can inflate its own by what it claims."""
    fn = click.option(
        "--robust-weights",
        type=click.Choice(ROBUST_WEIGHTS),
        default="uniform",
        show_default=True,
        help="How rules other than fedavg/geomed weigh the updates they keep.",
    )(fn)
    return click.option(
        "--max-samples",
        type=click.IntRange(0, MAX_SAMPLES_LIMIT),
        default=DEFAULT_MAX_SAMPLES,
        show_default=True,
        help="A claimed sample count weighs at most this much (0: weights ignore samples).",
    )(fn)


def keep_rounds_option(fn: F) -> F:
    """`--keep-rounds`: how many rounds of blobs a node's store keeps (finalized global models
    are always kept)."""
    from flchain.node.blobstore import DEFAULT_KEEP_ROUNDS

    return click.option(
        "--keep-rounds",
        type=click.IntRange(min=1),
        default=DEFAULT_KEEP_ROUNDS,
        show_default=True,
        help="Blob store retention: keep the blobs of the last K rounds (finalized global "
        "models are always kept).",
    )(fn)


# ---------------------------------------------------------------- task economics


@dataclass(frozen=True)
class Economics:
    """What `economics_options` resolved to: the reward pool (wei) and the thresholds."""

    reward_wei: int
    quorum_bps: int
    alarm_bps: int
    rep_floor: int


def eth_to_wei(value: str, param_hint: str) -> int:
    """A decimal amount of ETH as whole wei (BadParameter naming `param_hint` otherwise)."""
    try:
        amount = Decimal(value.strip())
    except (InvalidOperation, AttributeError) as exc:
        raise click.BadParameter(
            f"{value!r} is not a number of ETH", param_hint=param_hint
        ) from exc
    if not amount.is_finite() or amount < 0:
        raise click.BadParameter(
            f"{value!r} is not a non-negative number of ETH", param_hint=param_hint
        )
    with localcontext() as exact:
        exact.prec = 100  # the default 28 digits would round a long amount silently
        wei = amount * WEI_PER_ETH
    if wei != wei.to_integral_value():
        raise click.BadParameter(
            f"{value!r} ETH is not a whole number of wei (18 decimals at most)",
            param_hint=param_hint,
        )
    return int(wei)


def economics_options(*, default_reward_eth: str = "0") -> Callable[[F], F]:
    """`--reward-eth`/`--reward-wei`, `--quorum-bps`, `--alarm-bps` and `--rep-floor`: the
    economics of a task, shared by `task create` and `devnet up` (which differ only in the
    default reward). Defaults: flchain.config. Resolve them with `pop_economics`."""
    from flchain.contracts.types import REP_UNIT

    def decorate(fn: F) -> F:
        options = [
            click.option(
                "--reward-eth",
                default=default_reward_eth,
                show_default=True,
                help="Reward pool in ETH, escrowed with the task (sent with create_task). "
                "Each finalized round pays its accepted members an equal share of "
                "pool / rounds left; what is left at the end (with forfeited stakes) is "
                "split in proportion to the rewards earned, paid by `task withdraw`.",
            ),
            click.option(
                "--reward-wei",
                type=click.IntRange(min=0),
                default=None,
                help="The reward pool in wei, instead of --reward-eth.",
            ),
            click.option(
                "--quorum-bps",
                type=click.IntRange(5001, 10000),
                default=DEFAULT_QUORUM_BPS,
                show_default=True,
                help="Share of the round's reputation whose matching votes finalize it, in "
                "basis points (6666: two of three equal members).",
            ),
            click.option(
                "--alarm-bps",
                type=click.IntRange(1, 10000),
                default=DEFAULT_ALARM_BPS,
                show_default=True,
                help="Share of the active reputation whose Siren alarms revert a finalized "
                "round, in basis points; at least --quorum-bps (fewer members may not undo "
                "a round than agreed on it). Each alarm bonds 100 reputation, returned only "
                "if the round is reverted.",
            ),
            click.option(
                "--rep-floor",
                type=click.IntRange(0, REP_UNIT - 1),
                default=DEFAULT_REP_FLOOR,
                show_default=True,
                help=f"Members whose reputation falls below this ({REP_UNIT} = 1.0, what a "
                "member joins with) are ejected: their stake and rewards go to the reward "
                "pool. Per round: accepted +20, rejected -50, no update -50, a vote for "
                "another result -50; a failed round: no update -50, no vote -100; no vote "
                "on a finalized round, not even late, -50 when the next round ends.",
            ),
        ]
        return _stack(fn, options)

    return decorate


def pop_economics(options: dict[str, Any]) -> Economics:
    """Take the `economics_options` values out of a command's keyword arguments and check
    them (UsageError before anything is sent: the contract would refuse the same)."""
    reward_eth, reward_wei = options.pop("reward_eth"), options.pop("reward_wei")
    quorum, alarm = options.pop("quorum_bps"), options.pop("alarm_bps")
    floor = options.pop("rep_floor")
    if reward_wei is not None:
        ctx = click.get_current_context(silent=True)
        source = ctx.get_parameter_source("reward_eth") if ctx is not None else None
        if source not in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP):
            raise click.UsageError("give --reward-eth or --reward-wei, not both")
        reward = int(reward_wei)
    else:
        reward = eth_to_wei(str(reward_eth), "--reward-eth")
    if alarm < quorum:
        raise click.UsageError(
            f"--alarm-bps {alarm} is below --quorum-bps {quorum}: fewer members could undo a "
            "round than it took to agree on it (the contract refuses it); raise --alarm-bps"
        )
    return Economics(reward_wei=reward, quorum_bps=quorum, alarm_bps=alarm, rep_floor=floor)


# ---------------------------------------------------------------- the run's shape
# The contract's own bounds (FLChainCore.create_task): what it would refuse is refused here,
# before anything starts, with the option's name.
UINT32_MAX = 2**32 - 1
MAX_ROUNDS = UINT32_MAX - 1
DEFAULT_WINDOW_S = 120
"""Submit and vote windows: upper bounds (a phase closes as soon as everyone acted), so a long
default only costs time when a member is missing; 120 s fits the CNN on one CPU thread."""


def population_options(*, nodes: int, rounds: int, peers: str = "nodes") -> Callable[[F], F]:
    """`--nodes/-n`, `--rounds/-r` and `--byzantine/-b`: how many take part, for how long and
    how many of them attack. `peers` names them in the help ("nodes" or "peers"). Check
    the Byzantine count against the nodes with `check_population`."""
    from flchain.contracts.types import MAX_MEMBERS

    def decorate(fn: F) -> F:
        options = [
            click.option(
                "--nodes",
                "-n",
                type=click.IntRange(1, MAX_MEMBERS),
                default=nodes,
                show_default=True,
                help=f"Number of {peers} (a task holds at most {MAX_MEMBERS} members).",
            ),
            click.option(
                "--rounds",
                "-r",
                type=click.IntRange(1, MAX_ROUNDS),
                default=rounds,
                show_default=True,
                help="Federated rounds.",
            ),
            click.option(
                "--byzantine",
                "-b",
                type=click.IntRange(min=0),
                default=0,
                show_default=True,
                help=f"Byzantine {peers} K (fewer than --nodes; give their --attack).",
            ),
        ]
        return _stack(fn, options)

    return decorate


def check_population(nodes: int, byzantine: int, attack: object) -> None:
    """At least one honest peer, and attackers only with an attack (UsageError otherwise)."""
    if byzantine >= nodes:
        raise click.UsageError(
            f"--byzantine {byzantine} of --nodes {nodes} leaves no honest node; at most {nodes - 1}"
        )
    if byzantine and not attack:
        raise click.UsageError("--byzantine K needs --attack NAME")


def model_options(fn: F) -> F:
    """`--model` and `--local-epochs`: what each member trains, and how long per round; the
    choices come from the model zoo."""
    from flchain.models import MODEL_NAMES

    options = [
        click.option("--model", type=click.Choice(MODEL_NAMES), default="cnn", show_default=True),
        click.option(
            "--local-epochs",
            type=click.IntRange(min=1),
            default=2,
            show_default=True,
            help="Local epochs per round.",
        ),
    ]
    return _stack(fn, options)


def dataset_option(fn: F) -> F:
    """`--dataset`: which data set the run trains on (a spec `flchain.models` loads)."""
    return click.option(
        "--dataset",
        default="digits",
        show_default=True,
        help="digits | synthetic[:A,B] | npz:PATH | idx:DIR | torchvision:NAME[:ROOT].",
    )(fn)


def partition_option(fn: F) -> F:
    """`--partition`: how the training data is split across the peers of a run."""
    from flchain.models import PARTITION_SCHEMES

    return click.option(
        "--partition",
        type=click.Choice(PARTITION_SCHEMES),
        default="iid",
        show_default=True,
        help="How training data is split across peers.",
    )(fn)


def window_options(fn: F) -> F:
    """`--submit-window`, `--vote-window` (seconds, upper bounds) and `--alarm-window`
    (seconds after finalization for Siren alarms, 0: off), within the contract's bounds."""
    options = [
        click.option(
            "--submit-window",
            type=click.IntRange(1, UINT32_MAX),
            default=DEFAULT_WINDOW_S,
            show_default=True,
            help="Seconds for members to commit their updates (upper bound: the phase closes "
            "once everyone has).",
        ),
        click.option(
            "--vote-window",
            type=click.IntRange(1, UINT32_MAX),
            default=DEFAULT_WINDOW_S,
            show_default=True,
            help="Seconds for members to vote (upper bound: the round ends at quorum).",
        ),
        click.option(
            "--alarm-window",
            type=click.IntRange(0, UINT32_MAX),
            default=0,
            show_default=True,
            help="Seconds after finalization for Siren alarms (0: off).",
        ),
    ]
    return _stack(fn, options)


# ---------------------------------------------------------------- the aggregation rule
DEFAULT_RULE = "multikrum"
"""The rule every command defaults to (with --secure: FedAvg, the secure rule that runs)."""


def rule_options(fn: F) -> F:
    """`--rule`, its Byzantine bound `--f`, `--m` (Multi-Krum), `--beta` (trimmed mean) and any
    other parameter as `--rule-param KEY=VALUE`; merge them with `pop_rule_params`."""
    from flchain.aggregation import RULES, f_bounds_text

    options = [
        click.option(
            "--rule",
            type=click.Choice(RULES),
            default=DEFAULT_RULE,
            show_default=True,
            help="Aggregation rule (with --secure: fedavg unless given).",
        ),
        click.option(
            "--f",
            "f",
            type=click.IntRange(min=0),
            default=None,
            help=f"Byzantine bound f ({f_bounds_text()}); same as --rule-param f=F.",
        ),
        click.option(
            "--m",
            "m",
            type=click.IntRange(min=1),
            default=None,
            help="How many updates multikrum averages; same as --rule-param m=M.",
        ),
        click.option(
            "--beta",
            default=None,
            metavar="FRACTION",
            help="Trim fraction per side for trimmed_mean, exact (2/7 of 7 updates trims 2); "
            "same as --rule-param beta=B.",
        ),
        click.option(
            "--rule-param",
            multiple=True,
            metavar="KEY=VALUE",
            help="A rule parameter (e.g. m=3, beta=2/7, nu=1e-6); repeatable.",
        ),
    ]
    return _stack(fn, options)


def secure_default_rule(options: dict[str, Any], secure_rule: str = "fedavg") -> None:
    """With --secure and no --rule given, the rule is `secure_rule` (what secure aggregation
    runs) instead of DEFAULT_RULE, which needs plaintext updates."""
    ctx = click.get_current_context()
    if options.get("secure") and ctx.get_parameter_source("rule") == ParameterSource.DEFAULT:
        options["rule"] = secure_rule


def pop_rule_params(options: dict[str, Any]) -> dict[str, Any]:
    """Take `rule_options`' parameters out of a command's keyword arguments as one dict
    (UsageError for a malformed or twice-given parameter); leaves `rule` in place."""
    from flchain.config import ConfigError, parse_key_values

    try:
        params = parse_key_values(options.pop("rule_param"), "--rule-param")
        for key in ("f", "m", "beta"):
            value = options.pop(key)
            if value is None:
                continue
            if key in params:
                raise click.UsageError(f"--{key} and --rule-param {key}=... both given")
            # --beta 0.25 is a number and 2/7 stays an exact fraction, as with --rule-param
            params.update(parse_key_values([f"{key}={value}"], f"--{key}"))
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    return params


def secure_options(fn: F) -> F:
    """`--secure` and its settings: quantization bits and range, the Paillier key size."""
    from flchain.aggregation import SECURE_RULES
    from flchain.config import DEFAULT_SECURE_KEY_BITS, DEFAULT_SECURE_RANGE, MAX_SECURE_KEY_BITS

    options = [
        click.option(
            "--secure",
            is_flag=True,
            help="Secure aggregation: updates are quantized, pairwise-masked and "
            "Paillier-encrypted, and only their sum is decrypted (by a member chosen per "
            f"round). Robust rules need plaintext updates, so only {' and '.join(SECURE_RULES)} "
            "run: siren becomes FedAvg plus alarms. Slow for large models: the Paillier cost "
            "grows with the parameter count; try --model logreg or mlp.",
        ),
        click.option(
            "--secure-bits",
            type=click.IntRange(2, 32),
            default=16,
            show_default=True,
            help="Quantization bits per coordinate in secure mode.",
        ),
        click.option(
            "--secure-key-bits",
            type=click.IntRange(512, MAX_SECURE_KEY_BITS),
            default=DEFAULT_SECURE_KEY_BITS,
            show_default=True,
            help="Paillier modulus size in bits.",
        ),
        click.option(
            "--secure-range",
            type=click.FloatRange(min=0.0, min_open=True),
            default=None,
            metavar="R",
            help="Secure mode: every coordinate travels in [-R, R] (values outside are clamped "
            "and counted). Default: the clip C with --dp-clip (distributed DP widens the ring "
            f"for its noise by itself), else {DEFAULT_SECURE_RANGE:g}.",
        ),
    ]
    return _stack(fn, options)


def dp_options(fn: F) -> F:
    """`--dp-clip`, `--dp-noise` and `--dp-delta`: differential privacy at each member."""
    options = [
        click.option(
            "--dp-clip",
            type=click.FloatRange(min=0.0, min_open=True),
            default=None,
            metavar="C",
            help="DP: every honest member clips its update to L2 norm C before sending it.",
        ),
        click.option(
            "--dp-noise",
            type=click.FloatRange(min=0.0),
            default=0.0,
            show_default=True,
            metavar="SIGMA",
            help="DP noise multiplier (needs --dp-clip). Without --secure each member adds "
            "N(0, (SIGMA*C)^2) per coordinate to its own update; with --secure the members "
            "share one SIGMA*C on the sum (distributed DP), sqrt(n) times less noise in the "
            "mean. The running epsilon is reported per round.",
        ),
        click.option(
            "--dp-delta",
            type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True),
            default=1e-5,
            show_default=True,
            help="DP: the delta at which epsilon is reported.",
        ),
    ]
    return _stack(fn, options)
