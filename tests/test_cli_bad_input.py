"""Every argument is checked before any work starts: a bad value is one `Error:` line naming
the option, exit code 2, no traceback, and nothing started (no devnet folder written)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from flchain.cli import cli

BAD_DEVNET_UP = {
    "negative nodes": (["--nodes", "-1"], "--nodes"),
    "no nodes": (["--nodes", "0"], "--nodes"),
    "more nodes than a task holds": (["--nodes", "257"], "--nodes"),
    "no rounds": (["--rounds", "0"], "--rounds"),
    "unknown model": (["--model", "foo"], "--model"),
    "unknown partition": (["--partition", "foo"], "--partition"),
    "no local epochs": (["--local-epochs", "0"], "--local-epochs"),
    "no submit window": (["--submit-window", "0"], "--submit-window"),
    "window past the contract's bound": (["--vote-window", str(2**32)], "--vote-window"),
    "negative alarm window": (["--alarm-window", "-1"], "--alarm-window"),
    "every node byzantine": (["--byzantine", "4", "--attack", "signflip"], "--byzantine"),
    "byzantine without an attack": (["--byzantine", "1"], "--attack"),
    "noise without a clip": (["--dp-noise", "0.5"], "clip"),
    "rule bound": (["--rule", "bulyan", "--f", "2"], "bulyan"),
    "unknown rule": (["--rule", "nope"], "--rule"),
    "secure attack without --secure": (["--byzantine", "1", "--attack", "ringshift"], "--secure"),
    "alarm below quorum": (["--alarm-bps", "5000", "--quorum-bps", "6000"], "--alarm-bps"),
}

BAD_SIMULATE = {
    "no nodes": (["--nodes", "0"], "--nodes"),
    "unknown model": (["--model", "foo"], "--model"),
    "every peer byzantine": (["--byzantine", "10", "--attack", "signflip"], "--byzantine"),
    "rule bound before training": (["--rule", "bulyan", "--f", "2"], "bulyan"),
    "no rounds": (["--rounds", "0"], "--rounds"),
}


def _refused(args: list[str], names: str) -> None:
    result = CliRunner().invoke(cli, args, prog_name="flchain")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    assert names in errors[0]


@pytest.mark.parametrize("args,names", BAD_DEVNET_UP.values(), ids=BAD_DEVNET_UP.keys())
def test_devnet_up_refuses_bad_arguments_before_it_starts(
    tmp_path: Path, args: list[str], names: str
) -> None:
    directory = tmp_path / "devnet"
    _refused(["devnet", "up", "--dir", str(directory), *args], names)
    assert not directory.exists()  # nothing was started or written


@pytest.mark.parametrize("args,names", BAD_SIMULATE.values(), ids=BAD_SIMULATE.keys())
def test_simulate_refuses_bad_arguments_before_it_trains(args: list[str], names: str) -> None:
    _refused(["simulate", *args], names)


@pytest.mark.parametrize("option", ["--status-port", "--listen"])
def test_node_run_refuses_a_busy_port_in_one_line(tmp_path: Path, option: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        value = str(port) if option == "--status-port" else f"/ip4/127.0.0.1/tcp/{port}"
        node_run = ["node", "run", "--dir", str(tmp_path), "--contract", "0x" + "11" * 20]
        _refused([*node_run, "--task", "1", "--data", "digits#shard=0/2", option, value], option)
