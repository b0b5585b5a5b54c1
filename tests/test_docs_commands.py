"""Every `flchain` command in the README and in every `--help` example parses as written:
the commands are extracted from the files themselves (not copied here), then parsed by the
real command tree, options, choices and ranges included. `devnet up` and `simulate` examples
also run their whole argument checking (everything before a chain starts or a model trains).

What this cannot do is run each example to the end: several start 8-node networks or train
for minutes. The end-to-end tests run the README's main paths (`make demo`'s devnet, the
ledger and status of a stopped devnet, node init/fund/run) for real.
"""

from __future__ import annotations

import inspect
import re
import shlex
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from flchain.cli import _COMMANDS, cli

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def _readme_commands() -> list[str]:
    """`flchain ...` lines of the README's shell blocks: continuations joined, comments cut,
    `a; b` split."""
    commands: list[str] = []
    in_block, pending = False, ""
    for raw in README.read_text().splitlines():
        if raw.startswith("```"):
            in_block, pending = raw.strip() in ("```bash", "```sh", "```console"), ""
            continue
        if not in_block:
            continue
        line = pending + raw.strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        for part in line.split(";"):
            part = part.split(" #", 1)[0].strip()
            if part.startswith("flchain "):
                commands.append(part)
    return commands


def _walk(command: click.Command, path: tuple[str, ...]) -> list[tuple[str, ...]]:
    found = [path]
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            found += _walk(command.get_command(ctx, name), (*path, name))  # type: ignore[arg-type]
    return found


def _help_examples() -> list[str]:
    """The `flchain ...` example lines of every command's --help, from the help text itself
    (the rendered help rewraps lines)."""
    examples = []
    for name in _COMMANDS:
        for path in _walk(cli.get_command(click.Context(cli), name), (name,)):  # type: ignore[arg-type]
            result = CliRunner().invoke(cli, [*path, "--help"], prog_name="flchain")
            assert result.exit_code == 0, (path, result.output)
            command = _command_at(path)
            for line in inspect.cleandoc(command.help or "").splitlines():
                match = re.search(r"(?:^|Example: |[A-Za-z]+: )\s*(flchain \S.*)$", line.strip())
                if match and not match.group(1).endswith("..."):
                    examples.append(match.group(1).split(" #", 1)[0].strip())
    return examples


def _command_at(path: tuple[str, ...]) -> click.Command:
    command: click.Command = cli
    for name in path:
        assert isinstance(command, click.Group)
        found = command.get_command(click.Context(command), name)
        assert found is not None
        command = found
    return command


README_COMMANDS = _readme_commands()
HELP_EXAMPLES = _help_examples()


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
