"""Siren (Guo et al., SoCC 2021): Byzantine-robust FL via proactive alarming.

Clients raise alarms when the global model does worse than their own local model on their
local validation data (`client_alarm`); the server checks the updates only when alarms
arrive, using its own small dataset, and keeps per-client credits that fall on every
rejection and recover slowly on every acceptance, so a client caught often is ignored.
"""

from __future__ import annotations

import torch

from flchain.aggregation._numerics import dots_with
from flchain.aggregation._validation import check_float
from flchain.aggregation.base import Batch, RuleSpec
from flchain.aggregation.errors import AggregationError
from flchain.aggregation.fedavg import weighted_mean
from flchain.aggregation.result import AggregateResult

INPUTS = ("alarms", "public_accuracy")
OPTIONAL_INPUTS = ("credits",)
# The reference blacklists after 0.45 * T rejections with T = 40 rounds.
DEFAULT_MAX_CREDIT = 18.0


def client_alarm(global_accuracy: float, local_accuracy: float, threshold: float = 0.03) -> bool:
    """A client's alarm: True when its local model beats the global model on its own
    validation data by more than `threshold` (accuracies as fractions in [0, 1]; the paper
    uses 3 percentage points).
    """
    g = check_float("global_accuracy", global_accuracy, low=0.0, high=1.0)
    loc = check_float("local_accuracy", local_accuracy, low=0.0, high=1.0)
    t = check_float("threshold", threshold, low=0.0)
    return loc > g + t


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
    server_threshold: float = 0.1,
    max_credit: float = DEFAULT_MAX_CREDIT,
    penalty: float = 1.0,
    forgive: float = 0.5,
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
    max_credit (the reference: 0.45 * T rounds of penalty 1, forgiveness 0.5). The new
    credits are in info["credits"]; the caller passes them back next round.
    Accepted updates are averaged with `weights`; if none is accepted the update is zero.
    info["rollback"] is True when alarms were raised and the check rejected an update:
    Siren then applies this round's update to the last good global model rather than to
    the current one, which the alarms flagged.
    scores: public_accuracy. info also: case, reference, rejected, alarms_counted,
    blacklisted (credits <= 0 after this round).
    """
    slack = check_float("siren server_threshold", server_threshold, low=0.0, high=1.0)
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
            "rollback": bool(alarmed) and bool(rejected),
            "credits": new_credits,
            "blacklisted": new_credits <= 0,
        },
    )


SPEC = RuleSpec(name="siren", run=run, inputs=INPUTS, optional_inputs=OPTIONAL_INPUTS)
