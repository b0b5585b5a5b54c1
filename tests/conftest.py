"""Shared fixtures: locating the foundry binaries that CI installs from npm."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_NPM_BIN = REPO / ".tools" / "node_modules" / "@foundry-rs"


def _find_tool(name: str) -> str:
    """Path of a foundry binary: $FLCHAIN_<NAME>, the Makefile's npm install, or PATH.

    `make test` installs both binaries first (`make tools`), so a missing one is a failure.
    """
    env = os.environ.get(f"FLCHAIN_{name.upper()}")
    if env:
        return env
    local = _NPM_BIN / f"{name}-linux-amd64" / "bin" / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found:
        return found
    pytest.fail(f"{name} not found: run `make tools` (npm package @foundry-rs/{name}-linux-amd64)")


@pytest.fixture(scope="session")
def anvil_bin() -> str:
    return _find_tool("anvil")


@pytest.fixture(scope="session")
def cast_bin() -> str:
    return _find_tool("cast")


# How much one test marked slow (a devnet, a browser, a subprocess run: seconds to tens of
# seconds) weighs against any other test (tens of milliseconds) when files are ordered.
SLOW_TEST_WEIGHT = 1000


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Heaviest files first. `make test` runs `pytest -n 2 --dist loadfile
    --no-loadscope-reorder`: each worker takes whole files in this order as it gets free, so
    the files left for the end are light ones. xdist's own order (most tests first) left
    the one-test files for the end, among them the netns liveness test (40 s) and the README
    tour (16 s), which then ran alone while the other worker had nothing left to do."""
    weight: Counter[Path] = Counter()
    for item in items:
        weight[item.path] += SLOW_TEST_WEIGHT if item.get_closest_marker("slow") else 1
    items.sort(key=lambda item: -weight[item.path])  # stable: a file keeps its tests' order


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fuzz surfaces append their figures to FLCHAIN_FUZZ_REPORT (`make fuzz`)."""
    from fuzzkit import TALLIES

    for tally in TALLIES:
        if tally.inputs:
            tally.report()
