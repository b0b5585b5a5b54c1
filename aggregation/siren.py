"""Siren (Guo et al., SoCC 2021): Byzantine-robust FL via proactive alarming.

Follows the paper's reference code, AISIGSJTU/Siren (read, not copied):

- client side (`client_alarm`; reference `agents.py`, functions `agent` and `alarm`): each
  client holds out a tenth of its shard as a validation split it never trains on
  (`validation_split`; the reference takes the first tenth, our shards are sorted by index so we
  take a seeded random one); from the second round on it compares its own previous local model with
  the new global model on that split and alarms when local > global + C_l * local (a relative
  threshold, C_l = `CLIENT_THRESHOLD` = 0.04, the reference's `--client_c`). A client that
  alarmed trains this round from its own previous local model instead of the global one, and
  still reports its update relative to the global model (`local - global`), as the reference
  does;
- server side (`run`; reference `main.py`, functions `server_detect` and `train_fn`): the server
  checks the updates only when alarms arrive, on its own small dataset, with the slack
  C_s = `SERVER_THRESHOLD` = 0.1 (`--server_c`); every rejection adds one penalty point, every
  acceptance takes `FORGIVE` = 0.5 off (`--forgive`), and a client that collects
  int(`PROHIBIT_FRACTION` * T) points (0.45 * T, `--server_prohibit`, T the number of rounds)
  is ignored for good. Here the points are kept as credits counting down from that limit
  (credit = limit - points), so the limit scales with the task's rounds (`credit_limit`);
- rollback (`Rollback`; reference `train_fn`): when the check rejects a client that is not
  already blacklisted, the round's accepted updates are applied to the global model of one
  round earlier (t-1), or two (t-2) in the cases the reference does, instead of the current
  one, which the attack may already have moved.

On the network there is no server: every node plays it. The server's data is the public
validation set the task config names (`flchain.public_set`, scores quantized so that every
honest node gets the same bits); the alarms are the ones the members raised on chain on the
round's base model before committing their update (`flchain.node.engine`); the credits and
the rollback state are not carried in memory but replayed from the rounds that built the
current model (`replay`, from the chain's accepted bitmaps), so every honest node derives the
same ones, a restarted node included; the rollback applies the update to the global model
of t-1 / t-2 along the chain's lineage. Enough alarm stake still reverts a finalized round on
chain (the contract's own check, on top of the paper's; the simulation models it per head).
Malicious clients alarm every round, as the reference's do (`attacks.always_alarms`).

Deviation: a member the contract ejects (its reputation fell below the task's floor) stops
submitting, so the replay no longer sees it dropped each round, where the reference's
blacklisted client keeps arming the rollback (`exist_mal`); the rounds it was rejected in still
count. The simulation has no ejection.

Every Siren default is defined once, in `flchain.siren_defaults` (torch-free, so the configs can
import it), and re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from flchain.aggregation._numerics import dots_with
from flchain.aggregation._validation import check_float
from flchain.aggregation.base import Batch, RuleSpec
from flchain.aggregation.catalog import FACTS
from flchain.aggregation.errors import AggregationError
from flchain.aggregation.fedavg import weighted_mean
from flchain.aggregation.result import AggregateResult
from flchain.siren_defaults import (
    CLIENT_THRESHOLD,
    DEFAULT_ROUNDS,
    FORGIVE,
    PENALTY,
    PROHIBIT_FRACTION,
    SERVER_THRESHOLD,
    VALIDATION_FRACTION,
)

INPUTS = ("alarms", "public_accuracy")
OPTIONAL_INPUTS = ("credits",)
__all__ = [
    "CLIENT_THRESHOLD",
    "DEFAULT_MAX_CREDIT",
    "DEFAULT_ROUNDS",
    "FORGIVE",
    "INPUTS",
    "OPTIONAL_INPUTS",
    "PENALTY",
    "PROHIBIT_FRACTION",
    "SERVER_THRESHOLD",
    "SPEC",
    "VALIDATION_FRACTION",
    "Rollback",
    "client_alarm",
    "credit_limit",
    "fresh_credits",
    "replay",
    "run",
    "settle",
    "validation_split",
]


def credit_limit(rounds: int, fraction: float = PROHIBIT_FRACTION) -> float:
    """Penalty points that blacklist a client in a task of `rounds` rounds: int(0.45 * T) as
    in the reference (`main.py`, `train_fn`: `prohibit[i] >= int(args.server_prohibit *
    args.T)`), but at least 1: with T < 3 the reference's limit is 0 and every client would
    be blacklisted before its first update."""
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise AggregationError(f"siren rounds must be a positive integer, got {rounds!r}")
    frac = check_float("siren prohibit fraction", fraction, low=0.0, low_open=True)
    return float(max(1, math.floor(frac * rounds + 1e-9)))


DEFAULT_MAX_CREDIT = credit_limit(DEFAULT_ROUNDS)


def client_alarm(
    global_accuracy: float, local_accuracy: float, threshold: float = CLIENT_THRESHOLD
) -> bool:
    """A client's alarm, as in the reference (`agents.py`, `alarm`): True when its previous
    local model beats the new global model on its held-out validation split by more than
    `threshold` times the local accuracy: local > global + C_l * local (accuracies as
    fractions in [0, 1]; C_l = `CLIENT_THRESHOLD` = 0.04 by default).
    """
    g = check_float("global_accuracy", global_accuracy, low=0.0, high=1.0)
    loc = check_float("local_accuracy", local_accuracy, low=0.0, high=1.0)
    c = check_float("threshold", threshold, low=0.0)
    return loc > g + c * loc


def validation_split(
    n: int, seed: int, fraction: float = VALIDATION_FRACTION
) -> tuple[torch.Tensor, torch.Tensor]:
    """(validation, training) indices into a client's n samples, disjoint and together all of
    them. The reference (`agents.py`, `agent`) holds out the first tenth of each shard for the
    alarms and trains on the rest; our shards are sorted by dataset index, so the tenth is a
    seeded random one instead (the same on every run with the same seed). At least one
    sample is held out when n >= 2, so a small shard can still judge the global model."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    frac = check_float("validation fraction", fraction, low=0.0, high=1.0, high_open=True)
    size = int(n * frac)
    if n >= 2 and frac > 0:
        size = max(size, 1)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    return order[:size].sort().values, order[size:].sort().values


@dataclass
class Rollback:
    """Which global model the server applies a round's accepted updates to, the reference's
    rule (`main.py`, `train_fn`, its `flag` and `exist_mal` state): a round whose check drops
    an update goes back to the global model of one round earlier (t-1), and to two rounds
    earlier (t-2) when the round before had also flagged an attacker without rolling back
    (in practice: a client had already been blacklisted). A round right after a rollback does
    not roll back again: its base already is the older model. `step` returns how many
    rounds to go back (0, 1 or 2)."""

    armed: bool = False  # the reference's `flag`
    current: bool = False  # `exist_mal[0]`: an attacker showed up in this round
    previous: bool = False  # `exist_mal[1]`: ... in the round before

    def step(self, t: int, dropped_any: bool, dropped_eligible: bool) -> int:
        """t: the 0-based index of the global model this round's clients trained from.
        dropped_any: some update was not used (blacklisted ones included);
        dropped_eligible: some client that is not blacklisted after this round was rejected
        (the result's info carries both)."""
        if dropped_any and not self.armed:
            self.current = self.armed = True
        if not dropped_eligible or not self.current:
            self.armed = False
        if self.armed and self.current:
            if t >= 2 and self.previous:
                self.current = self.previous = False
                return 2
            if t >= 1:
                self.previous, self.current = True, False
                return 1
            return 0
        self.previous, self.current = self.current, False
        return 0


def settle(
    credits: dict[int, float],
    submitted: Sequence[int],
    accepted: Sequence[int],
    *,
    max_credit: float,
    penalty: float = PENALTY,
    forgive: float = FORGIVE,
) -> tuple[bool, bool]:
    """One round's outcome applied to `credits` (member -> credit; a member not in it has
    max_credit) in place, as `run` moves them: a submitter that is not blacklisted loses
    `penalty` when it was not accepted and regains `forgive` (up to max_credit) when it was.
    Returns (dropped_any, dropped_eligible) for `Rollback.step`. A submitter whose update
    was missing or invalid counts as rejected: the chain records only who was accepted."""
    taken = set(accepted)
    for m in submitted:
        credit = credits.get(m, max_credit)
        if credit <= 0:
            continue
        credits[m] = min(max_credit, credit + forgive) if m in taken else credit - penalty
    dropped = [m for m in submitted if m not in taken]
    eligible = any(credits.get(m, max_credit) > 0 for m in dropped)
    return bool(dropped), eligible


def replay(
    rounds: Iterable[tuple[Sequence[int], Sequence[int]]],
    *,
    max_credit: float,
    penalty: float = PENALTY,
    forgive: float = FORGIVE,
) -> tuple[dict[int, float], Rollback]:
    """Siren's server state after `rounds`, the (submitted, accepted) members of each round
    that built the current global model, oldest first: the credits (`settle`) and the
    rollback state (`Rollback.step` with t = the round's position). On the network every
    honest node replays the same finalized rounds from the chain, so all derive the same
    state without trusting anyone's memory."""
    credits: dict[int, float] = {}
    rollback = Rollback()
    for t, (submitted, accepted) in enumerate(rounds):
        dropped_any, dropped_eligible = settle(
            credits, submitted, accepted, max_credit=max_credit, penalty=penalty, forgive=forgive
        )
        rollback.step(t, dropped_any, dropped_eligible)
    return credits, rollback


def fresh_credits(n: int, max_credit: float = DEFAULT_MAX_CREDIT) -> torch.Tensor:
    """Credits of n clients that were never rejected (what `credits` defaults to)."""
    return torch.full((n,), float(max_credit), dtype=torch.float64)


class _Check:
    """The server-side test of a group of updates against the group's best one."""

    def __init__(self, batch: Batch, accuracy: list[float], slack: float) -> None:
        self._batch = batch
        self._accuracy = accuracy
        self._slack = slack

    def best(self, members: list[int]) -> int:
        """Highest public accuracy; ties go to the lower index."""
        return min(members, key=lambda i: (-self._accuracy[i], i))

    def floor(self, reference: int) -> float:
        """Accuracy below which an update is suspicious: best - slack * best."""
        top = self._accuracy[reference]
        return top - self._slack * top

    def suspicious(self, reference: int, members: list[int]) -> set[int]:
        """Members clearly less accurate than `reference`, or pointing away from it
        (cosine similarity <= 0, i.e. a non-positive dot product)."""
        batch = self._batch
        dots = dots_with(
            batch.updates[members], batch.updates[reference], deterministic=batch.deterministic
        ).tolist()
        limit = self.floor(reference)
        return {
            i
            for i, dot in zip(members, dots, strict=True)
            if self._accuracy[i] < limit or dot <= 0.0
        }


def _decide(
    check: _Check, alarmed: list[int], quiet: list[int], accuracy: list[float]
) -> tuple[str, set[int], int | None]:
    """Which active updates the server rejects: (case, rejected, reference update)."""
    if not alarmed:
        return "no_alarm", set(), None
    if len(alarmed) == 1:
        everyone = sorted(alarmed + quiet)
        ref = check.best(everyone)
        return "single_alarm", check.suspicious(ref, everyone), ref
    ref = check.best(alarmed)
    bad_alarmers = check.suspicious(ref, alarmed)
    if bad_alarmers:
        return "alarmers_split", set(quiet) | bad_alarmers, ref
    if not quiet or accuracy[check.best(quiet)] < check.floor(ref):
        return "alarmers_trusted", set(quiet), ref
    ref_quiet = check.best(quiet)
    return "alarmers_rejected", set(alarmed) | check.suspicious(ref_quiet, quiet), ref_quiet


def run(
    batch: Batch,
    *,
    server_threshold: float = SERVER_THRESHOLD,
    rounds: int = DEFAULT_ROUNDS,
    max_credit: float | None = None,
    penalty: float = PENALTY,
    forgive: float = FORGIVE,
) -> AggregateResult:
    """Siren's server-side aggregation.

    Side inputs: alarms (bool [n], from `client_alarm`), public_accuracy ([n], accuracy of
    base_global + update_i on the server's data), and optionally credits ([n], the
    previous round's info["credits"]; default `fresh_credits`). Clients with credits <= 0
    are blacklisted: never aggregated, and their alarms are ignored.

    With a = accuracy of the reference update and c = server_threshold, an update is
    suspicious when its accuracy is below a - c * a or its cosine with the reference is <= 0.
    - no alarm: every active update is aggregated;
    - one alarm: all active updates are checked against the most accurate one;
    - several alarms: the alarming updates are checked against their most accurate one;
      if some are suspicious, they and all non-alarming updates are rejected; if none is,
      the alarms are believed when the best non-alarming update is below a - c * a (then
      every non-alarming update is rejected); otherwise the alarms are false, every
      alarming update is rejected and the non-alarming ones are checked among themselves.

    Credits: a rejected update loses `penalty`; an accepted one regains `forgive`, up to
    max_credit, which defaults to `credit_limit(rounds)` = int(0.45 * rounds): pass the
    task's number of rounds (the reference's penalty points counted down from its limit).
    The new credits are in info["credits"]; the caller passes them back next round.
    Accepted updates are averaged with `weights`; if none is accepted the update is zero.
    info["dropped_any"] / info["dropped_eligible"] feed `Rollback.step`, which says onto
    which global model (t, t-1 or t-2) the caller applies the update.
    scores: public_accuracy. info also: case, reference, rejected, alarms_counted,
    max_credit, blacklisted (credits <= 0 after this round).
    """
    slack = check_float("siren server_threshold", server_threshold, low=0.0, high=1.0)
    if max_credit is None:
        max_credit = credit_limit(rounds)
    max_credit = check_float("siren max_credit", max_credit, low=0.0, low_open=True)
    penalty = check_float("siren penalty", penalty, low=0.0, low_open=True)
    forgive = check_float("siren forgive", forgive, low=0.0)
    n = batch.n
    credits_in = batch.inputs.get("credits")
    credits = fresh_credits(n, max_credit) if credits_in is None else credits_in.clone()
    if bool((credits > max_credit).any()):
        raise AggregationError(f"siren credits must be <= max_credit={max_credit}")
    accuracy = batch.inputs["public_accuracy"].tolist()
    alarms = batch.inputs["alarms"].tolist()
    credit = credits.tolist()

    active = [i for i in range(n) if credit[i] > 0]
    alarmed = [i for i in active if alarms[i]]
    quiet = [i for i in active if not alarms[i]]
    case, rejected, reference = _decide(_Check(batch, accuracy, slack), alarmed, quiet, accuracy)

    passed = torch.zeros(n, dtype=torch.bool)
    for i in active:
        if i in rejected:
            credit[i] -= penalty
        else:
            credit[i] = min(max_credit, credit[i] + forgive)
            passed[i] = True
    accepted = passed & (batch.weights > 0)
    update = weighted_mean(batch, accepted) if bool(accepted.any()) else batch.zeros()
    new_credits = torch.tensor(credit, dtype=torch.float64)
    return AggregateResult(
        update=update,
        accepted=accepted,
        scores=batch.inputs["public_accuracy"].clone(),
        info={
            "case": case,
            "reference": reference,
            "rejected": sorted(rejected),
            "alarms_counted": len(alarmed),
            "dropped_any": not bool(passed.all()),
            "dropped_eligible": any(not passed[i] and credit[i] > 0 for i in range(n)),
            "max_credit": max_credit,
            "credits": new_credits,
            "blacklisted": new_credits <= 0,
        },
    )


# The server's check scores every update on public data: on the network every node scores on
# the public validation set the task config names. In secure mode only the sum is revealed:
# FedAvg plus the alarms.
SPEC = RuleSpec(
    **FACTS["siren"].spec_fields(), run=run, inputs=INPUTS, optional_inputs=OPTIONAL_INPUTS
)
