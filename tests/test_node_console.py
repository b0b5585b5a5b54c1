"""What `flchain node run` tells its operator: one line per round step (or JSON lines), the
fund hint of an unfunded node, `node fund`, and the next steps `node init` prints."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from click.testing import CliRunner
from eth_account import Account
from web3 import Web3

from flchain.commands import node_console as console
from flchain.commands.node import node
from flchain.contracts import FLChainClient, TaskParams
from flchain.contracts.testing import LocalChain, anvil_chain
from flchain.node import funds
from flchain.node.events import LOGGER, RoundEvent, emit, make_event
from flchain.node.identity import init_node_dir
from flchain.taskconfig import build_task_config, initial_model_digest

DIGEST = bytes.fromhex("1a2b3c4d" + "00" * 28)
VOTE = bytes.fromhex("9f1c2d3e" + "11" * 28)
ADDRESS = "0xfB04069eAf7a3f41Ba2EC446d559A7888BcdBebB"


# ---------------------------------------------------------------- formatting, no network


def test_each_round_step_is_one_short_line() -> None:
    lines = {
        "committed": (
            make_event("committed", 3, digest=DIGEST, size=605_123, train_s=1.23, peers=12),
            "round 3  committed 0x1a2b3c4d…  (605 KB, trained 1.2 s, 12 peers)",
        ),
        "fetched": (
            make_event("fetched", 3, got=3, of=4, missing=[2], seconds=15.04),
            "round 3  fetched 3/4 updates  (missing 2; 15.0 s)",
        ),
        "voted": (
            make_event("voted", 3, digest=VOTE, accepted=[0, 1, 3], submitted=4, quorum_bps=6666),
            "round 3  voted 0x9f1c2d3e…  accepted 0,1,3 of 4  (quorum 66.66%)",
        ),
        "finalized": (
            make_event("finalized", 3, digest=VOTE, accuracy=0.951, accepted=[0, 1, 3], ours=True),
            "round 3  finalized 0x9f1c2d3e…  accuracy 0.9510  (accepted 0,1,3)",
        ),
        "lost": (
            make_event("finalized", 3, digest=VOTE, accuracy=None, accepted=[], ours=False),
            "round 3  finalized 0x9f1c2d3e…  accuracy -  (accepted none; not our vote)",
        ),
        "joined": (
            make_event("joined", task=1, index=2, fresh=True),
            "joined task 1 as member 2",
        ),
        "waiting": (
            make_event("waiting", members=1, min_members=4),
            "waiting for members  (1/4 joined)",
        ),
        "refused": (
            make_event("refused", 3, what="vote", reason="too late"),
            "round 3  vote refused: too late",
        ),
        "unknown": (  # an event without a template still reads as one line
            make_event("remasked", 5, over=[0, 2]),
            "round 5  remasked over=[0, 2]",
        ),
    }
    for name, (event, expected) in lines.items():
        assert console.format_line(event) == expected, name


def test_the_fund_hint_names_the_whole_checksummed_address_and_both_ways_to_pay() -> None:
    event = make_event(
        "unfunded",
        level=logging.WARNING,
        address=ADDRESS,
        balance_wei=0,
        needs_wei=75 * 10**15,
        member=False,
        command=f"flchain node fund {ADDRESS} --amount 0.075",
        cast=f"cast send {ADDRESS} --value 0.075ether",
    )
    first, *rest = console.format_line(event).splitlines()
    assert first == (
        f"fund {ADDRESS} (balance 0 ETH, needs about 0.075 ETH for stake and gas); waiting for it"
    )
    assert "flchain node fund" in rest[0] and "cast send" in rest[1]


def test_json_lines_carry_event_round_fields_and_time() -> None:
    event = make_event("voted", 3, digest=VOTE, accepted=[0, 1, 3], submitted=4, quorum_bps=6666)
    data = json.loads(console.format_json(event))
    assert data["event"] == "voted" and data["round"] == 3 and data["level"] == "info"
    assert data["digest"] == "0x" + VOTE.hex()  # whole, not shortened
    assert data["accepted"] == [0, 1, 3]
    assert abs(data["ts"] - time.time()) < 60
    with pytest.raises(ValueError, match="reserved"):
        make_event("voted", 3, round=4)
    # a plain log record becomes JSON too, so --log-json output is JSON throughout
    record = logging.LogRecord("flchain.node.p2p", logging.WARNING, "x", 1, "dial %s", ("a",), None)
    assert json.loads(console.record_json(record)) | {"ts": 0} == {
        "ts": 0,
        "level": "warning",
        "event": "log",
        "round": None,
        "logger": "flchain.node.p2p",
        "message": "dial a",
    }


@pytest.fixture
def clean_logging() -> Iterator[None]:
    """Whatever `console.setup` changes in the process-wide logging state, put back."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.getLogger("flchain").level)
    libp2p = logging.getLogger("libp2p")
    saved_libp2p = (libp2p.propagate, libp2p.level)
    yield
    for handler in root.handlers[:]:
        if handler not in saved[0]:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(saved[1])
    logging.getLogger("flchain").setLevel(saved[2])
    libp2p.propagate, libp2p.level = saved_libp2p


def _emit_everything() -> None:
    emit("committed", 1, digest=DIGEST, size=2700, train_s=0.5, peers=1)
    emit("refused", 1, level=logging.WARNING, what="submit", reason="phase")
    logging.getLogger("flchain.node.p2p").info("dialing a peer")
    logging.getLogger("flchain.node.engine").warning("a member's proof does not verify")
    logging.getLogger("libp2p.transport.tcp").error("Failed to open TCP stream")
    logging.getLogger("urllib3.connectionpool").debug("Starting new HTTP connection")


@pytest.mark.usefixtures("clean_logging")
def test_by_default_round_lines_on_stdout_warnings_on_stderr_and_no_library_noise() -> None:
    out, err = io.StringIO(), io.StringIO()
    console.setup(stdout=out, stderr=err)
    _emit_everything()
    assert out.getvalue().splitlines() == [
        "round 1  committed 0x1a2b3c4d…  (2.7 KB, trained 0.5 s, 1 peer)",
        "round 1  submit refused: phase",
    ]
    assert err.getvalue().count("\n") == 1 and "proof does not verify" in err.getvalue()


@pytest.mark.usefixtures("clean_logging")
def test_quiet_verbose_json_and_the_log_file(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    console.setup(quiet=True, stdout=out, stderr=err)
    _emit_everything()
    assert out.getvalue() == "round 1  submit refused: phase\n"
    assert "proof does not verify" in err.getvalue() and "TCP" not in err.getvalue()

    out, err = io.StringIO(), io.StringIO()
    console.setup(verbose=1, stdout=out, stderr=err)
    _emit_everything()
    assert "round 1  committed" in out.getvalue()  # timestamped next to the log lines
    assert not out.getvalue().startswith("round")
    logged = err.getvalue()
    assert "INFO flchain.node.p2p: dialing a peer" in logged
    assert "ERROR libp2p.transport.tcp: Failed to open TCP stream" in logged  # -v: libraries
    assert "urllib3" not in logged  # debug needs -vvv

    out, err = io.StringIO(), io.StringIO()
    log_file = tmp_path / "node.log"
    console.setup(as_json=True, log_file=log_file, stdout=out, stderr=err)
    _emit_everything()
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(r["event"], r["level"]) for r in rows] == [
        ("committed", "info"),
        ("refused", "warning"),
        ("log", "warning"),
    ]
    assert err.getvalue() == ""
    for handler in logging.getLogger().handlers:
        handler.flush()
    written = log_file.read_text()  # everything at info, libraries included
    assert "round 1  committed" in written and "dialing a peer" in written
    assert "Failed to open TCP stream" in written and "urllib3" not in written


# ---------------------------------------------------------------- funds, no network


def test_an_unfunded_node_says_so_once_per_balance_and_goes_on_once_funded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def need(balance: int) -> funds.FundsNeed:
        return funds.FundsNeed(ADDRESS, balance, 5 * 10**15, 75 * 10**15, 10**15, 10, False)

    balances = iter([0, 0, 0, 10**15, 10**15, 10**17])
    monkeypatch.setattr(funds, "funds_need", lambda client, task_id: need(next(balances)))
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)

    seen: list[RoundEvent] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.round_event)  # type: ignore[attr-defined]

    logger = logging.getLogger(LOGGER)
    handler, level = Collect(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        got = trio.run(
            lambda: funds.wait_for_funds(None, 1, "http://u:secret@h:8545", sleep=sleep)  # type: ignore[arg-type]
        )
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert got.balance == 10**17
    assert [(e.event, e.fields["balance_wei"]) for e in seen] == [
        ("unfunded", 0),
        ("unfunded", 10**15),  # the balance moved: said again, with the new figure
        ("funded", 10**17),
    ]
    assert "secret" not in seen[0].fields["command"]  # credentials in the RPC URL stay out
    assert pauses == [1.0, 2.0, 4.0, 8.0, 15.0]  # backing off, not hammering the chain


def test_suggested_amounts_are_rounded_up_to_two_digits() -> None:
    assert funds.round_up(52_734_375_000_000_000) == 53_000_000_000_000_000
    assert funds.round_up(75 * 10**15) == 75 * 10**15
    assert funds.round_up(7) == 7 and funds.round_up(0) == 0


# ---------------------------------------------------------------- against anvil


@pytest.fixture(scope="module")
def chain(anvil_bin: str) -> Iterator[LocalChain]:
    with anvil_chain(anvil_bin) as local:
        yield local


def _rpc(chain: LocalChain) -> str:
    return str(chain.w3.provider.endpoint_uri)  # type: ignore[attr-defined]


def test_node_fund_moves_eth_from_a_dev_account_or_a_key_file(
    chain: LocalChain, tmp_path: Path
) -> None:
    target = Account.create().address
    runner = CliRunner()
    sent = runner.invoke(
        node,
        ["fund", target.lower(), "--rpc", _rpc(chain), "--amount", "0.25", "--dev-account", "0"],
    )
    assert sent.exit_code == 0, sent.output
    assert f"sent 0.25 ETH to {target}" in sent.output  # checksummed, though given lower-case
    assert chain.w3.eth.get_balance(target) == 25 * 10**16

    (payer,) = chain.new_accounts(1)
    key_file = tmp_path / "payer.key"
    key_file.write_text(payer.key.to_0x_hex())
    key_file.chmod(0o600)
    node_dir = tmp_path / "n"
    init_node_dir(node_dir, "pw", scrypt_n=2**10)
    address = json.loads((node_dir / "node.json").read_text())["address"]
    args = ["fund", str(node_dir), "--rpc", _rpc(chain), "--amount", "0.5"]
    sent = runner.invoke(node, [*args, "--from-key", str(key_file), "--json"])
    assert sent.exit_code == 0, sent.output
    transfer = json.loads(sent.output)
    assert transfer["to"] == address and transfer["from"] == payer.address
    assert chain.w3.eth.get_balance(address) == transfer["balance_wei"] == 5 * 10**17

    nobody = runner.invoke(node, args, env={"FLCHAIN_KEY": ""})
    assert nobody.exit_code != 0 and "--from-key KEYFILE, --dev-account N" in nobody.output
    missing = runner.invoke(node, [*args, "--dev-account", "99"])
    assert missing.exit_code == 1 and "--dev-account 99" in missing.output


def _task(chain: LocalChain, tmp_path: Path) -> tuple[str, int, Path]:
    config = build_task_config(model="logreg", rule="fedavg")
    path = tmp_path / "task-config.json"
    path.write_bytes(config.to_json_bytes())
    (owner,) = chain.new_accounts(1)
    client = FLChainClient.deploy(chain.w3, owner)
    task_id = client.create_task(
        TaskParams(
            config_digest=config.digest,
            initial_digest=initial_model_digest(config),
            min_members=2,
            max_members=4,
            submit_window=60,
            vote_window=60,
            alarm_window=0,
            quorum_bps=6666,
            alarm_bps=6666,
            stake=10**15,
            max_rounds=3,
            rep_floor=500,
            max_samples=config.max_samples,
        )
    )
    return client.address, task_id, path


def _read_until(proc: subprocess.Popen[str], lines: list[str], want: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if want in line:
            return
    raise AssertionError(f"no {want!r} within {seconds} s; got {lines}")


def test_an_unfunded_node_asks_once_for_eth_waits_and_joins_once_funded(
    chain: LocalChain, tmp_path: Path
) -> None:
    contract, task_id, config = _task(chain, tmp_path)
    node_dir = tmp_path / "node"
    address = init_node_dir(node_dir, "pw", scrypt_n=2**10).address
    cmd = [sys.executable, "-m", "flchain.cli", "node", "run", "--dir", str(node_dir)]
    cmd += ["--rpc", _rpc(chain), "--contract", contract.lower(), "--task", str(task_id)]
    cmd += ["--data", "digits#shard=0/2", "--task-config", str(config), "--device", "cpu"]
    env = {**os.environ, "FLCHAIN_PASSWORD": "pw", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, bufsize=1
    )
    lines: list[str] = []
    try:
        _read_until(proc, lines, "fund 0x", 60)
        hint = lines[-1]
        assert hint.startswith(f"fund {address} (balance 0 ETH, needs about ")
        assert f"on {contract}" in "\n".join(lines)  # the contract, checksummed
        time.sleep(1.5)  # it checks the balance again after 1 s: the hint is not repeated
        fund = ["fund", address, "--rpc", _rpc(chain), "--amount", "0.1", "--dev-account", "0"]
        assert CliRunner().invoke(node, fund).exit_code == 0
        _read_until(proc, lines, "waiting for members", 20)
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=20)
    text = "\n".join(lines)
    assert [line for line in lines if line.startswith("fund ")] == [hint]
    assert f"funded {address}  balance 0.1 ETH" in text
    assert f"joined task {task_id} as member 0" in text
    assert "Traceback" not in stderr and "insufficient funds" not in stderr.lower()
    assert address.lower() not in text  # every address printed checksummed


def test_node_init_prints_the_next_steps(tmp_path: Path) -> None:
    password = tmp_path / "pw.txt"
    password.write_text("correct horse\n")
    password.chmod(0o600)
    directory = tmp_path / "mynode"
    out = CliRunner().invoke(
        node, ["init", "--dir", str(directory), "--password-file", str(password)]
    )
    assert out.exit_code == 0, out.output
    address = json.loads((directory / "node.json").read_text())["address"]
    assert Web3.is_checksum_address(address)
    assert "next steps:" in out.output
    assert f"flchain node fund {address} --rpc URL --amount" in out.output
    assert f"cast send {address} --value" in out.output
    assert f"flchain node run --dir {directory} --password-file {password}" in out.output
    again = CliRunner().invoke(
        node, ["init", "--dir", str(directory), "--password-file", str(password)]
    )
    assert again.exit_code != 0 and "node init --force" in again.output  # a flag that exists
