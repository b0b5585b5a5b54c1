"""The commands the docs show, read from the docs themselves (the README's shell blocks and
every `--help` text's examples): what the docs tests check and run."""

from __future__ import annotations

import inspect
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
from click.testing import CliRunner

from flchain.cli import _COMMANDS, cli

README = Path(__file__).resolve().parent.parent / "README.md"
SHELL_FENCES = ("```bash", "```sh", "```console")


def readme_blocks() -> list[list[str]]:
    """Per shell block of the README, its `flchain ...` commands in order: continuations
    joined, comments cut, `a; b` split."""
    blocks: list[list[str]] = []
    in_block, pending = False, ""
    for raw in README.read_text().splitlines():
        if raw.startswith("```"):
            in_block, pending = raw.strip() in SHELL_FENCES, ""
            if in_block:
                blocks.append([])
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
                blocks[-1].append(part)
    return [block for block in blocks if block]


def readme_commands() -> list[str]:
    """Every `flchain ...` command of the README's shell blocks, in order."""
    return [command for block in readme_blocks() for command in block]


def _walk(command: click.Command, path: tuple[str, ...]) -> list[tuple[str, ...]]:
    found = [path]
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            found += _walk(command.get_command(ctx, name), (*path, name))  # type: ignore[arg-type]
    return found


def help_examples() -> list[str]:
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


def run_documented(
    line: str, cwd: Path, extra: tuple[str, ...] = (), timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run a documented `flchain ...` line (plus `extra` arguments) as a user's shell would,
    in `cwd`, and check that it succeeded without a traceback."""
    args = shlex.split(line)
    assert args[0] == "flchain", line
    result = subprocess.run(
        [sys.executable, "-m", "flchain.cli", *args[1:], *extra],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "COLUMNS": "200"},  # wide tables: labels stay on one line
    )
    assert result.returncode == 0, f"{line!r}: {result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr, result.stderr
    return result
