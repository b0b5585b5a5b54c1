"""What `flchain devnet up` will start, checked before anything starts: the `DevnetPlan`.

Light to import (no web3, libp2p or torch until a check needs a rule's code), so `devnet up`
can check its arguments and start the node host (`flchain.devnet.nodehost`) before it pays
for the launcher's imports (`flchain.devnet.launcher`), which then overlap the host's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from flchain.aggregation.catalog import FACTS
from flchain.config import (
    DEFAULT_ALARM_BPS,
    DEFAULT_DEVNET_REWARD_ETH,
    DEFAULT_MAX_SAMPLES,
    DEFAULT_QUORUM_BPS,
    DEFAULT_REP_FLOOR,
    DEFAULT_SECURE_KEY_BITS,
)
from flchain.node.blobstore import DEFAULT_KEEP_ROUNDS
from flchain.taskconfig import TaskConfig, build_task_config

# The task's reward pool, escrowed by the chain's first funded dev account (`devnet up
# --reward-eth`); its rounds pay it to the accepted members that voted on the round before.
DEFAULT_REWARD_ETH = DEFAULT_DEVNET_REWARD_ETH
DEFAULT_REWARD_WEI = int(Decimal(DEFAULT_REWARD_ETH) * 10**18)


@dataclass(frozen=True)
class DevnetPlan:
    directory: Path
    nodes: int = 4
    rounds: int = 5
    rule: str = "multikrum"
    rule_params: dict[str, Any] = field(default_factory=dict)
    byzantine: int = 0
    attacks: tuple[str, ...] = ()  # given to the Byzantine nodes in turn
    chain: str = "pyevm"
    model: str = "cnn"
    dataset: str = "digits"
    partition: str = "iid"
    local_epochs: int = 2
    submit_window: int = 120
    vote_window: int = 120
    alarm_window: int = 0
    quorum_bps: int = DEFAULT_QUORUM_BPS
    alarm_bps: int = DEFAULT_ALARM_BPS
    rep_floor: int = DEFAULT_REP_FLOOR
    reward_wei: int = DEFAULT_REWARD_WEI
    seed: int = 0
    dp_clip: float | None = None
    dp_noise: float = 0.0
    dp_delta: float = 1e-5
    secure: bool = False
    secure_bits: int = 16
    secure_key_bits: int = DEFAULT_SECURE_KEY_BITS
    secure_range: float | None = None
    max_samples: int = DEFAULT_MAX_SAMPLES
    robust_weights: str = "uniform"
    keep_rounds: int = DEFAULT_KEEP_ROUNDS  # each node's blob retention (`node run --keep-rounds`)
    # Test mode: honest nodes leak their updates to the colluders before they commit.
    omniscient: bool = False
    attack_params: tuple[str, ...] = ()  # KEY=VALUE knobs of the Byzantine nodes' attacks

    def task_config(self) -> TaskConfig:
        params = dict(self.rule_params)
        # trimmed_mean's beta is its other way of saying how many to trim per side.
        facts = FACTS.get(self.rule)  # an unknown rule: the config says so below
        if facts is not None and facts.takes_f and "f" not in params and "beta" not in params:
            params["f"] = auto_f(self.rule, self.nodes, self.byzantine)
        # SageFlow / Siren: the public validation set is named, with its digest, here.
        return build_task_config(
            model=self.model,
            dataset=self.dataset,
            rule=self.rule,
            rule_params=params,
            local_epochs=self.local_epochs,
            seed=self.seed,
            dp_clip=self.dp_clip,
            dp_noise=self.dp_noise,
            dp_delta=self.dp_delta,
            secure=self.secure,
            secure_bits=self.secure_bits,
            secure_key_bits=self.secure_key_bits,
            secure_range=self.secure_range,
            max_samples=self.max_samples,
            robust_weights=self.robust_weights,
        )


def auto_f(rule: str, nodes: int, byzantine: int) -> int:
    """The f a devnet task gets when none is given: the number of Byzantine nodes (at least
    1), capped at the largest f the rule's bound allows for `nodes` (its spec's max_f: Krum
    n > 2f + 2, Bulyan n >= 4f + 3, trimmed mean 2f < n), and never below 0."""
    from flchain.aggregation.registry import max_f  # the rules' bounds are their code

    most = max_f(rule, nodes)
    wanted = max(byzantine, 1)
    return max(0, wanted if most is None else min(wanted, most))


def tolerance_warning(plan: DevnetPlan) -> str | None:
    """A sentence when the plan's Byzantine nodes exceed what its rule's guarantee tolerates
    on its node count (from the rule's spec), else None. A rule with no Byzantine tolerance
    at all (FedAvg) gets none: running attacks against it is the point of such a plan."""
    if plan.byzantine == 0 or plan.secure:
        return None
    from flchain.aggregation.registry import rule_spec

    spec = rule_spec(plan.rule)
    if spec.max_f is None or spec.max_f(10**6) <= 0:
        return None
    most = spec.max_f(plan.nodes)
    f = plan.task_config().rule_params.get("f")
    if plan.byzantine <= most and (f is None or f >= plan.byzantine):
        return None
    if plan.byzantine <= most:
        return (
            f"{plan.rule} runs with f={f} but {plan.byzantine} of {plan.nodes} nodes are "
            "Byzantine: more than it is told to tolerate"
        )
    runs = "" if f is None else f"; it runs with f={max(f, 0)}"
    return (
        f"{plan.rule}'s guarantee ({spec.f_bound}) tolerates at most {max(most, 0)} Byzantine of "
        f"{plan.nodes} nodes, not {plan.byzantine}{runs}. For {plan.byzantine} Byzantine use "
        f"--nodes {_nodes_for(spec, plan.byzantine)} or more"
    )


def _nodes_for(spec: Any, f: int) -> int:
    n = 1
    while spec.max_f(n) < f:
        n += 1
    return n
