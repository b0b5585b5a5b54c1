"""The docs' `simulate` and `bench` examples run to the end: each command from the README and
the `--help` texts (read from them, not copied), in a fresh directory, as a user's shell runs
it. The `simulate` examples get `--rounds 2` appended (the option's last value counts), which
keeps the suite's time: everything else about each run is as written, from the argument
checks to the summary and the files it writes.

The devnet examples are run elsewhere: the README's CLI tour in test_readme_tour.py, the
network's attacks in test_devnet_attacks.py, secure mode in test_devnet_secure.py.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from docskit import help_examples, readme_commands, run_documented

EXAMPLES = readme_commands() + help_examples()
SIMULATE = [c for c in EXAMPLES if c.startswith("flchain simulate") and "--help" not in c]
BENCH = [c for c in EXAMPLES if c.startswith("flchain bench")]


def test_the_docs_have_simulate_and_bench_examples() -> None:
    assert len(SIMULATE) >= 5 and BENCH


@pytest.mark.slow
@pytest.mark.parametrize("line", SIMULATE)
def test_every_simulate_example_runs_to_its_summary(line: str, tmp_path: Path) -> None:
    result = run_documented(line, tmp_path, ("--rounds", "2"))
    if "--json" in line:
        rounds = json.loads(result.stdout)["rounds"]
        assert [r["round"] for r in rounds] == [1, 2]
    else:
        assert "final accuracy" in " ".join(result.stdout.split())
    if "--plot" in line:
        plot = tmp_path / shlex.split(line)[shlex.split(line).index("--plot") + 1]
        assert plot.read_bytes().startswith(b"\x89PNG")


@pytest.mark.slow
@pytest.mark.parametrize("line", BENCH)
def test_every_bench_example_runs_as_written(line: str, tmp_path: Path) -> None:
    result = run_documented(line, tmp_path)
    if "--json" in line:
        figures = json.loads(result.stdout)
        assert figures["speedup"]["total"] > 1
