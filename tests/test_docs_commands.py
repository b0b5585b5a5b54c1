"""Every `flchain` command in the README and in every `--help` example parses as written:
the commands are extracted from the files themselves (not copied here), then parsed by the
real command tree, options, choices and ranges included. `devnet up` and `simulate` examples
also run their whole argument checking (everything before a chain starts or a model trains).

Run to the end elsewhere: the README's CLI tour (test_readme_tour.py), every `simulate` and
`bench` example (test_docs_examples_run.py). The templates for separate hosts (placeholders
such as 0xCONTRACT and 10.0.0.x) are parsed here; test_liveness_netns.py and the node tests
run that path with real addresses.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from docskit import help_examples, readme_commands

from flchain.cli import cli

README_COMMANDS = readme_commands()
HELP_EXAMPLES = help_examples()


def test_the_docs_have_commands_to_check() -> None:
    assert len(README_COMMANDS) >= 30
    assert any(c.startswith("flchain devnet up") for c in HELP_EXAMPLES)


def _parse(args: list[str]) -> click.Context:
    """Parse `args` down the real command tree (types, choices, ranges, required options),
    without running any callback; the leaf command's context."""
    command: click.Command = cli
    ctx = command.make_context("flchain", list(args))
    while isinstance(command, click.Group):
        rest = [*ctx._protected_args, *ctx.args]
        name, sub, rest = command.resolve_command(ctx, rest)
        assert sub is not None, f"no command {name!r}"
        command = sub
        ctx = sub.make_context(name or "", rest, parent=ctx)
    return ctx


DIRECTORY_OPTIONS = ("--dir", "--devnet", "--state")
FILE_SUFFIXES = (".key", ".txt", ".json", ".png", ".csv", ".npz", ".pem")


def _placeholders(args: list[str], root: Path) -> None:
    """The files and folders a documented command names, as its reader would have them: an
    option that wants an existing file gets one (empty), so parsing checks the rest."""
    for before, arg in zip(["", *args], args, strict=False):
        if arg.startswith("-") or "://" in arg:
            continue
        path = root / arg
        if before in DIRECTORY_OPTIONS:
            path.mkdir(parents=True, exist_ok=True)
        elif arg.endswith(FILE_SUFFIXES):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()


@pytest.mark.parametrize("line", README_COMMANDS + HELP_EXAMPLES)
def test_every_documented_command_parses_as_written(
    line: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = shlex.split(line)[1:]
    _placeholders(args, tmp_path)
    monkeypatch.chdir(tmp_path)
    try:
        _parse(args)
    except click.exceptions.Exit:  # --help, --version
        return
    except click.UsageError as exc:
        pytest.fail(f"{line!r}: {exc.format_message()}")


def _checked(line: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """Run a devnet up or simulate example with the work itself replaced: every argument
    check runs, nothing starts."""
    from flchain.devnet import launcher
    from flchain.simulation import Simulation

    started: list[Any] = []

    def fake_up(plan: Any, **_: Any) -> dict:
        started.append(plan)
        raise click.exceptions.Exit(0)

    def fake_run(self: Any, *_: Any) -> None:
        started.append(self.config)
        raise click.exceptions.Exit(0)

    monkeypatch.setattr(launcher, "up", fake_up)
    monkeypatch.setattr(Simulation, "run", fake_run)
    args = shlex.split(line)[1:]
    if args[:2] == ["devnet", "up"] and "--dir" not in args:
        args += ["--dir", str(tmp_path / "devnet")]
    result = CliRunner().invoke(cli, args, prog_name="flchain")
    assert result.exit_code == 0, f"{line!r}: {result.output}"
    return started


CHECKED = [
    c
    for c in README_COMMANDS + HELP_EXAMPLES
    if c.startswith(("flchain devnet up", "flchain simulate"))
    and "--help" not in c
    and "--dataset" not in c  # data files the docs' readers have, not this machine
]


@pytest.mark.parametrize("line", CHECKED)
def test_devnet_and_simulate_examples_pass_every_argument_check(
    line: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert _checked(line, monkeypatch, tmp_path), f"{line!r} never reached its work"
