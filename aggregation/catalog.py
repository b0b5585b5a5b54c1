"""What each aggregation rule is, without the rules: names and facts the CLI, configs and
launcher need before any tensor exists (`flchain --help` lists them without importing torch).

Each rule module builds its `RuleSpec` from its entry here (`RuleFacts.spec_fields`), so a
fact is stated once; the registry (`flchain.aggregation.registry`) adds the code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class RuleFacts:
    """One rule's facts (see `RuleSpec` for their meaning)."""

    name: str
    network: bool = True
    secure: bool = False
    public_data: bool = False
    weighted: bool = False
    f_bound: str = ""
    takes_f: bool = False

    def spec_fields(self) -> dict[str, Any]:
        return asdict(self)


FACTS: dict[str, RuleFacts] = {
    facts.name: facts
    for facts in (
        RuleFacts("fedavg", secure=True, weighted=True, f_bound="f = 0"),
        RuleFacts("median", f_bound="2f < n"),
        RuleFacts("trimmed_mean", f_bound="2f < n, f trimmed per side", takes_f=True),
        RuleFacts("krum", f_bound="n > 2f + 2", takes_f=True),
        RuleFacts("multikrum", f_bound="n > 2f + 2", takes_f=True),
        RuleFacts("bulyan", f_bound="n >= 4f + 3", takes_f=True),
        RuleFacts("geomed", weighted=True, f_bound="2f < n"),
        RuleFacts("sageflow", public_data=True),
        RuleFacts("siren", secure=True, public_data=True),
    )
}

RULES: tuple[str, ...] = tuple(FACTS)
# Rules the network runs (every honest node derives the same model from the blobs alone).
NETWORK_RULES: tuple[str, ...] = tuple(r for r, f in FACTS.items() if f.network)
# Rules secure aggregation can run: only the sum of the updates is revealed, so the rule is
# FedAvg (plus the members' alarms for Siren); rules that judge single updates cannot.
SECURE_RULES: tuple[str, ...] = tuple(r for r, f in FACTS.items() if f.secure)
# Rules that need per-update scores on data the aggregator holds.
PUBLIC_DATA_RULES: tuple[str, ...] = tuple(r for r, f in FACTS.items() if f.public_data)
# Rules whose result is a weighted statistic of every update (they take consensus weights).
WEIGHTED_RULES: tuple[str, ...] = tuple(r for r, f in FACTS.items() if f.weighted)
# Rules with an `f` parameter (their valid f for n is 0..max_f(rule, n)).
F_RULES: tuple[str, ...] = tuple(r for r, f in FACTS.items() if f.takes_f)


def f_bounds_text() -> str:
    """Each f-taking rule's valid f for n (for --help texts)."""
    return "; ".join(f"{r}: {FACTS[r].f_bound}" for r in F_RULES)
