"""Shared pieces of the property-based fuzz tests (tests/test_fuzz_*.py).

The suite runs a small number of generated inputs per surface; `make fuzz` runs the same
tests with FLCHAIN_FUZZ_EXAMPLES=10000 and FLCHAIN_FUZZ_REPORT=FILE, and
benchmarks/bench_fuzz.py turns the report lines into the table in docs/benchmarks.md.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

FUZZ_EXAMPLES = int(os.environ.get("FLCHAIN_FUZZ_EXAMPLES", "150"))


def fuzz_settings(examples: int | None = None) -> settings:
    """Hypothesis settings for one surface: no deadline (servers run in threads), no example
    database (CI starts clean), and the example count from the environment."""
    return settings(
        max_examples=examples or FUZZ_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.function_scoped_fixture,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )


TALLIES: list[Tally] = []  # every surface's tally; conftest reports them at session end


@dataclass
class Tally:
    """What one surface saw: inputs, how each ended, and crashes (must stay zero)."""

    surface: str
    inputs: int = 0
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    crashes: list[str] = field(default_factory=list)

    def accept(self) -> None:
        self.inputs += 1
        self.accepted += 1

    def reject(self, reason: str) -> None:
        self.inputs += 1
        self.rejected[reason] += 1

    def crash(self, what: str) -> None:
        self.inputs += 1
        self.crashes.append(what[:200])

    def __post_init__(self) -> None:
        TALLIES.append(self)

    def check(self, shares: dict[str, float]) -> None:
        """What every surface promises: no crash, every input accepted or rejected with a
        counted reason, and (about) as many inputs as its properties were given."""
        assert self.crashes == [], self.crashes[:5]
        assert self.inputs == self.accepted + sum(self.rejected.values())
        assert self.inputs >= sum(examples_for(shares, kind) for kind in shares) // 2

    def report(self) -> None:
        """Append this surface's figures to FLCHAIN_FUZZ_REPORT, when set."""
        path = os.environ.get("FLCHAIN_FUZZ_REPORT")
        if not path:
            return
        row = {
            "surface": self.surface,
            "inputs": self.inputs,
            "accepted": self.accepted,
            "rejected": dict(self.rejected),
            "crashes": len(self.crashes),
        }
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(row) + "\n")


def examples_for(shares: dict[str, float], kind: str) -> int:
    """How many of the surface's FUZZ_EXAMPLES inputs go to the property `kind` (at least 10)."""
    return max(10, round(FUZZ_EXAMPLES * shares[kind]))


# Any JSON value (NaN and Infinity excluded: they are not JSON), for fields a peer controls.
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**300), max_value=2**300)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=25,
)
