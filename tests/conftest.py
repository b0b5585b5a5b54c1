"""Shared fixtures: locating the foundry binaries that CI installs from npm."""

from __future__ import annotations

import os
import shutil
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


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fuzz surfaces append their figures to FLCHAIN_FUZZ_REPORT (`make fuzz`)."""
    from fuzzkit import TALLIES

    for tally in TALLIES:
        if tally.inputs:
            tally.report()
