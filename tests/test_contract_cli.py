"""`flchain contract deploy`, `flchain task create|fund|withdraw|refund` and `flchain
ledger ...` end to end.

One py-evm devnet server per module. The story contract is deployed and its task created
through the CLI, with a 1.8 ETH reward pool over 6 rounds; four members then drive five
rounds with the client:

    round 1  finalized   members 0, 1, 2 accepted, 3 rejected (votes 0, 1, 2): 0.1 ETH each
    round 2  failed      split vote (0, 1 vs 2), 3 did not vote, closed as stalled at the
                         vote deadline; member 3: no vote -100, and it never voted on round
                         1, not even late: -50
    round 3  reverted    all accepted (votes 0, 1, 2), but only the voters of round 2 are
                         paid: 0.125 ETH each to 0, 1, 2 (1.5 ETH / 4 rounds left / 3); then
                         alarms from 3, 2, 1 (bonds of 100) revert it and claw the 0.375 ETH
                         back
    round 4  aborted     trained on round 3's model when the revert came
    round 5  open        members 0 and 1 committed

Every ledger command's JSON/CSV is checked against that history, hand-computed: reputations
move +20 per accepted and -50 per rejected update, -100 for no vote in a failed round that
others voted in, -50 for no vote on a finalized round (settled when the next round ends;
REP_UNIT 1000), quorum and alarm threshold are 60% of the reputation (for an alarm, of the
reputation left after the bonds).

A second contract (the money contract, run first: its time travel must not age the story's
open round) settles a task to the end; see `_drive_money`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result
from eth_account import Account
from rich.console import Console
from web3 import Web3

from flchain.commands.contract import contract
from flchain.commands.devnet import _print_summary, _view, devnet, ledger_summary
from flchain.commands.ledger import ledger
from flchain.commands.options import DEFAULT_WINDOW_S, eth_to_wei
from flchain.commands.task import task
from flchain.config import DEFAULT_ALARM_BPS, DEFAULT_QUORUM_BPS, DEFAULT_REP_FLOOR
from flchain.contracts import FLChainClient, bitmap, encode_loss
from flchain.devnet.accounts import DEFAULT_MNEMONIC, derive_accounts
from flchain.devnet.anvil import spawn_anvil
from flchain.devnet.chain import DevChain
from flchain.devnet.genesis import GenesisConfig
from flchain.devnet.launcher import STAKE_WEI, DevnetPlan, deploy_task
from flchain.devnet.rpc_server import DevnetServer
from flchain.units import format_eth

STAKE = 10**16  # --stake-eth 0.01
REWARD = 18 * 10**17  # --reward-eth 1.8
PASSWORD = "correct horse battery staple"
# An Ed25519 libp2p peer id (identity multihash of the protobuf public key): prints 12D3KooW...
PEER0 = bytes.fromhex("002408011220") + bytes(32)
PEER0_TEXT = "12D3KooW9pNAk8aiBuGVQtWRdbkLmo5qVL3e2h5UxbN2Nz9ttwiw"


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def hx(data: bytes) -> str:
    return "0x" + data.hex()


def blob(label: str) -> bytes:
    return f"blob {label}".encode() * 10


def run(group: Any, args: list[str], **kwargs: Any) -> Result:
    return CliRunner().invoke(group, args, catch_exceptions=False, **kwargs)


def run_json(group: Any, args: list[str]) -> Any:
    result = run(group, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def run_csv(group: Any, args: list[str]) -> list[dict[str, str]]:
    result = run(group, [*args, "--csv"])
    assert result.exit_code == 0, result.output
    return list(csv.DictReader(io.StringIO(result.output)))


@dataclass
class Net:
    server: DevnetServer
    keys: list[str]
    address: str
    deploy: dict[str, Any]
    created: dict[str, Any]
    devnet_dir: Path
    second: Result | None = None  # task 2: created with defaults, FLCHAIN_KEY and --allow
    config_file: Path | None = None  # task 1's config, as given to `task create --config`
    blobs: dict[bytes, bytes] = field(default_factory=dict)  # digest -> bytes
    start_block: int = 0
    votes_done_block: int = 0
    money_address: str = ""
    money: dict[str, Any] = field(default_factory=dict)  # what _drive_money's commands said

    @property
    def rpc(self) -> list[str]:
        return ["--rpc", self.server.rpc_url, "--contract", self.address]

    @property
    def dev(self) -> list[str]:
        return ["--devnet", str(self.devnet_dir)]

    def money_target(self, task_id: int = 1) -> list[str]:
        return [
            "--rpc",
            self.server.rpc_url,
            "--contract",
            self.money_address,
            "--task",
            str(task_id),
        ]


def _drive_rounds(net: Net, members: list[FLChainClient], owner: FLChainClient) -> None:
    def commit(rnd: int, who: list[int]) -> None:
        base = owner.get_round(1, rnd).base_round  # the only base round submit accepts
        for i in who:
            data = blob(f"update r{rnd} m{i}")
            net.blobs[sha(data)] = data
            members[i].submit(1, rnd, sha(data), 100 * (i + 1), base, encode_loss(0.25 * i))

    def global_model(label: str) -> bytes:
        data = blob(label)
        net.blobs[sha(data)] = data
        return sha(data)

    commit(1, [0, 1, 2, 3])
    g1 = global_model("global r1")
    for i in (0, 1, 2):
        members[i].vote(1, 1, g1, bitmap([0, 1, 2]))
    commit(2, [0, 1, 2, 3])
    for i, (label, accepted) in enumerate(
        [("r2a", [0, 1, 2, 3]), ("r2a", [0, 1, 2, 3]), ("r2b", [0, 1, 2])]
    ):
        members[i].vote(1, 2, sha(blob(label)), bitmap(accepted))
    net.server.chain.set_next_block_timestamp(owner.get_round(1, 2).vote_deadline)
    net.server.chain.mine()
    owner.close_round(1, 2)
    commit(3, [0, 1, 2, 3])
    g3 = global_model("global r3")
    for i in (0, 1, 2):
        members[i].vote(1, 3, g3, bitmap([0, 1, 2, 3]))
    net.votes_done_block = net.server.chain.block_number
    for i in (3, 2, 1):
        members[i].raise_alarm(1, 3)
    commit(5, [0, 1])


def _drive_money(server: DevnetServer, keys: list[str]) -> tuple[str, dict[str, Any]]:
    """A task settled to the end on a contract of its own, through the money commands.

    Task 1: 4 members, stake 0.01 ETH, reward 0.8 ETH at creation + 0.4 ETH funded by an
    outsider, 3 rounds, quorum and alarm 60%, reputation floor 850.

        round 1  finalized  0, 1 accepted (0.2 ETH each: 1.2 / 3 rounds left / 2) by the
                            votes of 0, 1, 2; 2 rejected (-50: 950); 3 sent nothing (-50:
                            950); then 3 raised an alarm that failed (950 < 60% of 3840;
                            bond -100: 850, not below the floor) and, during round 2, cast a
                            late vote on round 1 for another result
        round 2  failed     0 and 1 voted (2040 < quorum 60% of 3940): 2 did not vote (-100:
                            850), 3 neither committed nor voted, and its late vote was wrong
                            (-50 -100 -50: 650, ejected, its 0.01 ETH stake to the pool)
        round 3  finalized  0, 1 accepted and paid, both voted on round 2 (0.405 ETH each:
                            0.81 / 1 / 2); 2 rejected (800, ejected: stake to the pool after
                            the payment); the task finishes

    Payout of 0 and 1: 0.01 stake + 0.605 earned + 0.01 pool left / 2 = 0.62 ETH each,
    which empties the contract (0.8 + 0.4 + 4 x 0.01 = 1.24 ETH in). Task 2: a 0.5 ETH
    reward, closed while registering, refunded to its owner.
    """
    rpc = ["--rpc", server.rpc_url]
    owner_key, member_keys, outsider_key = keys[0], keys[1:5], keys[5]
    address = run_json(contract, ["deploy", *rpc, "--key", owner_key])["address"]
    target = [*rpc, "--contract", address]
    out: dict[str, Any] = {}

    def cli(name: str, args: list[str], key: str) -> None:
        out[name] = run(task, [*args, *target, "--key", key, "--json"])

    create = ["create", "--config-digest", hx(sha(b"money")), "--model-digest", hx(sha(b"m"))]
    create += ["--min-members", "4", "--max-members", "4", "--alarm-window", "600"]
    create += ["--submit-window", "600", "--vote-window", "600", "--quorum-bps", "6000"]
    create += ["--alarm-bps", "6000", "--rep-floor", "850", "--stake-eth", "0.01"]
    cli("create", [*create, "--reward-eth", "0.8", "--max-rounds", "3"], owner_key)
    cli("fund", ["fund", "1", "--eth", "0.4"], outsider_key)
    w3 = Web3(Web3.HTTPProvider(server.rpc_url))
    owner = FLChainClient(w3, address, Account.from_key(owner_key))
    members = [FLChainClient(w3, address, Account.from_key(k)) for k in member_keys]
    for i, member in enumerate(members):
        member.join(1, f"money-{i}".encode(), sha(f"money x25519 {i}".encode()))
    cli("withdraw_running", ["withdraw", "1"], member_keys[0])

    def submit(rnd: int, who: list[int]) -> None:
        base = owner.get_round(1, rnd).base_round
        for i in who:
            members[i].submit(1, rnd, sha(f"money r{rnd} m{i}".encode()), 10, base, 0)

    def travel_to(timestamp: int) -> None:
        server.chain.set_next_block_timestamp(timestamp)
        server.chain.mine()

    submit(1, [0, 1, 2])
    travel_to(owner.get_round(1, 1).submit_deadline)
    g1 = sha(b"money g1")
    for i in (0, 1, 2):
        members[i].vote(1, 1, g1, bitmap([0, 1]))
    members[3].raise_alarm(1, 1)
    members[3].vote(1, 1, sha(b"another result"), bitmap([0, 1, 2]))  # late
    submit(2, [0, 1, 2])
    travel_to(owner.get_round(1, 2).submit_deadline)
    for i in (0, 1):
        members[i].vote(1, 2, sha(b"money g2"), bitmap([0, 1, 2]))
    travel_to(owner.get_round(1, 2).vote_deadline)
    owner.close_round(1, 2)
    submit(3, [0, 1, 2])
    for i in (0, 1):
        members[i].vote(1, 3, sha(b"money g3"), bitmap([0, 1]))
    cli("withdraw_window", ["withdraw", "1"], member_keys[0])
    cli("refund_window", ["refund", "1"], owner_key)
    travel_to(owner.get_round(1, 3).finalized_at + 600)
    out["members_settled"] = run_json(ledger, ["members", *target, "--task", "1"])
    cli("refund_paid", ["refund", "1"], owner_key)
    cli("withdraw_0", ["withdraw", "1"], member_keys[0])
    cli("withdraw_1", ["withdraw", "1"], member_keys[1])
    cli("withdraw_ejected", ["withdraw", "1"], member_keys[2])
    cli("withdraw_again", ["withdraw", "1"], member_keys[0])
    cli("withdraw_outsider", ["withdraw", "1"], outsider_key)
    out["balance_after_withdrawals"] = w3.eth.get_balance(address)
    refund_task = ["create", "--config-digest", hx(sha(b"r")), "--model-digest", hx(sha(b"m"))]
    cli("create_refund", [*refund_task, "--reward-eth", "0.5"], owner_key)
    cli("refund_registering", ["refund", "2"], owner_key)
    owner.close_task(2)
    cli("fund_closed", ["fund", "2", "--wei", "1"], outsider_key)
    cli("refund_outsider", ["refund", "2"], outsider_key)
    cli("refund", ["refund", "2"], owner_key)
    out["balance_after_refund"] = w3.eth.get_balance(address)
    return address, out


def _write_devnet(net: Net) -> None:
    """devnet.json and per-node blob stores: each node holds its own updates, the initial
    model and the global models."""
    nodes = []
    for i in range(4):
        store = net.devnet_dir / f"node-{i}" / "blobs"
        store.mkdir(parents=True)
        nodes.append({"name": f"node-{i}", "dir": f"node-{i}"})
        for digest, data in net.blobs.items():
            label = data[: data.index(b"blob", 1)].decode()
            if "update" not in label or label.endswith(f"m{i}"):
                (store / digest.hex()).write_bytes(data)
    spec = {"rpc_url": net.server.rpc_url, "contract": net.address, "task_id": 1, "nodes": nodes}
    (net.devnet_dir / "devnet.json").write_text(json.dumps(spec))


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    tmp = tmp_path_factory.mktemp("ledger")
    chain = DevChain(GenesisConfig(accounts=6))
    with DevnetServer(chain, port=0) as server:
        keys = [a.private_key_hex for a in derive_accounts(DEFAULT_MNEMONIC, 6)]
        money_address, money = _drive_money(server, keys)
        deployed = run_json(contract, ["deploy", "--rpc", server.rpc_url, "--key", keys[0]])
        config = tmp / "task.json"
        config.write_bytes(b'{"rule": "multikrum"}')
        model = tmp / "initial.safetensors"
        model.write_bytes(blob("initial model"))
        keystore = tmp / "owner.json"
        keystore.write_text(json.dumps(Account.encrypt(keys[0], PASSWORD, iterations=2)))
        keystore.chmod(0o600)
        password = tmp / "password.txt"
        password.write_text(PASSWORD + "\n")
        created = run_json(
            task,
            [
                "create",
                "--rpc",
                server.rpc_url,
                "--contract",
                deployed["address"],
                "--key-file",
                str(keystore),
                "--password-file",
                str(password),
                "--config",
                str(config),
                "--model",
                str(model),
                "--min-members",
                "4",
                "--max-members",
                "8",
                "--submit-window",
                "600",
                "--vote-window",
                "600",
                "--alarm-window",
                "600",
                "--quorum-bps",
                "6000",
                "--alarm-bps",
                "6000",
                "--stake-eth",
                "0.01",
                "--reward-eth",
                "1.8",
                "--max-rounds",
                "6",
            ],
        )
        net = Net(server, keys, deployed["address"], deployed, created, tmp / "devnet")
        net.money_address, net.money = money_address, money
        net.config_file = config
        net.blobs[sha(blob("initial model"))] = blob("initial model")
        w3 = Web3(Web3.HTTPProvider(server.rpc_url))
        owner = FLChainClient(w3, net.address, Account.from_key(keys[0]))
        members = [FLChainClient(w3, net.address, Account.from_key(k)) for k in keys[1:5]]
        for i, member in enumerate(members):
            member.join(1, PEER0 if i == 0 else f"peer-{i}".encode(), sha(f"x25519 {i}".encode()))
        _drive_rounds(net, members, owner)
        _write_devnet(net)
        outsider = Account.from_key(keys[5]).address.lower()
        args = ["create", *net.rpc, "--config-digest", hx(sha(b"c2")), "--model-digest"]
        net.second = run(
            task,
            [*args, hx(sha(b"m2")), "--allow", outsider, "--json"],
            env={"FLCHAIN_KEY": keys[0]},
        )
        yield net
    chain.close()


# ---------------------------------------------------------------- deploy and create


def test_deploy_json_matches_the_receipt_and_the_code_is_there(net: Net) -> None:
    w3 = Web3(Web3.HTTPProvider(net.server.rpc_url))
    receipt = w3.eth.get_transaction_receipt(net.deploy["tx_hash"])
    assert net.deploy["address"] == receipt["contractAddress"]
    assert net.deploy["block_number"] == receipt["blockNumber"]
    assert net.deploy["gas_used"] == receipt["gasUsed"] > 0
    assert net.deploy["chain_id"] == 31337
    assert net.deploy["deployer"] == Account.from_key(net.keys[0]).address
    assert len(w3.eth.get_code(net.address)) > 1000


def test_task_create_hashes_the_files_and_stores_the_parameters(net: Net) -> None:
    assert net.created["task_id"] == 1
    assert net.created["config_digest"] == hx(sha(b'{"rule": "multikrum"}'))
    assert net.created["initial_digest"] == hx(sha(blob("initial model")))
    assert net.created["owner"] == Account.from_key(net.keys[0]).address
    assert net.created["stake_wei"] == STAKE
    assert net.created["reward_wei"] == REWARD
    assert (net.created["quorum_bps"], net.created["alarm_bps"]) == (6000, 6000)
    (row,) = [t for t in run_json(ledger, ["tasks", *net.rpc]) if t["task_id"] == 1]
    assert row["config_digest"] == net.created["config_digest"]
    assert row["initial_digest"] == net.created["initial_digest"]
    assert (row["min_members"], row["max_members"], row["max_rounds"]) == (4, 8, 6)
    assert (row["submit_window"], row["vote_window"], row["alarm_window"]) == (600, 600, 600)
    assert (row["quorum_bps"], row["alarm_bps"], row["stake"]) == (6000, 6000, STAKE)
    assert row["allowlist"] is False
    assert row["owner"] == net.created["owner"]


def test_task_create_defaults_env_key_and_allowlist(net: Net) -> None:
    outsider = Account.from_key(net.keys[5]).address
    result = net.second
    assert result is not None and result.exit_code == 0, result
    created = json.loads(result.output)
    assert created["allowed"] == [outsider]
    task_id = created["task_id"]
    w3 = Web3(Web3.HTTPProvider(net.server.rpc_url))
    reader = FLChainClient(w3, net.address, Account.create())
    info = reader.get_task(task_id)
    # The economics defaults are flchain.config's.
    assert (info.min_members, info.max_members, info.quorum_bps, info.alarm_bps) == (
        2,
        16,
        DEFAULT_QUORUM_BPS,
        DEFAULT_ALARM_BPS,
    )
    windows = (info.submit_window, info.vote_window, info.alarm_window)
    assert windows == (DEFAULT_WINDOW_S, DEFAULT_WINDOW_S, 0)  # one default everywhere
    assert (info.stake, info.max_rounds, info.rep_floor, info.allowlist) == (
        0,
        100,
        DEFAULT_REP_FLOOR,
        True,
    )
    assert (info.reward_pool, created["reward_wei"]) == (0, 0)
    assert reader.is_allowed(task_id, outsider)
    assert net.keys[0][2:] not in result.output


def test_task_create_human_output_names_the_task(net: Net) -> None:
    args = ["create", *net.rpc, "--key", net.keys[0], "--config-digest", hx(sha(b"c3"))]
    result = run(task, [*args, "--model-digest", hx(sha(b"m3"))])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Task ")
    assert f"created on {net.address}" in result.output
    assert "reward pool 0 ETH, stake 0 ETH; quorum 6666 bps, alarm 6666 bps" in result.output


# ---------------------------------------------------------------- ledger views


def test_tasks_lists_every_task_with_status_and_round(net: Net) -> None:
    rows = run_json(ledger, ["tasks", *net.rpc])
    assert [r["task_id"] for r in rows] == list(range(1, len(rows) + 1))
    first = rows[0]
    assert (first["status"], first["current_round"], first["n_members"]) == ("running", 5, 4)
    # Round 3 was reverted: the good model is round 1's again.
    assert first["global_round"] == 1
    assert first["global_digest"] == hx(sha(blob("global r1")))
    # Round 1 paid 0.1 ETH to three members; round 3's payment was clawed back.
    assert (first["reward_pool"], first["rewards_paid"], first["slashed"]) == (
        REWARD - 3 * 10**17,
        3 * 10**17,
        0,
    )
    assert first["settled"] is False
    assert all(r["status"] == "registering" for r in rows[1:])
    table = run(ledger, ["tasks", *net.rpc]).output
    assert "running" in table and net.created["owner"] in table
    assert "amounts in ETH" in table and "1.5" in table and "0.3" in table and "5/6" in table


def test_rounds_json_tells_the_story(net: Net) -> None:
    rows = run_json(ledger, ["rounds", *net.dev])
    summary = [
        (r["round"], r["status"], r["committed"], r["accepted"], r["rejected"], r["votes"])
        for r in rows
    ]
    assert summary == [
        (1, "finalized", 4, 3, 1, 3),
        (2, "failed", 4, None, None, 3),
        (3, "reverted", 4, 4, 0, 3),
        (4, "aborted", 0, None, None, 0),
        (5, "open", 2, None, None, 0),
    ]
    r1, r2, r3, r4, r5 = rows
    assert r1["global_digest"] == hx(sha(blob("global r1")))
    assert r1["accepted_members"] == [0, 1, 2]
    assert (r1["final_tally"], r1["quorum_weight"], r1["total_reputation"]) == (3000, 2400, 4000)
    # Round 1 left members 0-2 at 1020 and member 3 at 950 (rejected: -50).
    assert (r2["fail_reason"], r2["global_digest"], r2["total_reputation"]) == (
        "stalled",
        None,
        4010,
    )
    assert r3["global_digest"] == hx(sha(blob("global r3")))
    # Round 2 took 150 from member 3 (no vote, no vote on round 1): round 3 opened with
    # 3 x 1020 + 800 = 3860, quorum 2316, reached by the third vote (3060). Each member then
    # had its +20; the alarms of 3 (820), 2 (1040) and 1 (1040) weigh 2900, and 2900 >= 60% of
    # 4 x 20 + 3860 - 3 bonds of 100 = 3640 (2184), while the first two, 1860 < 60% of 3740
    # (2244), were not enough.
    assert (r3["alarms"], r3["alarm_weight"], r3["final_tally"]) == (3, 2900, 3060)
    assert r4["fail_reason"] == "aborted_by_alarm"
    # The money: round 1 paid 1.8 ETH / 6 rounds left / 3 accepted = 0.1 ETH each; round 3
    # accepted all four but paid only those that voted on round 2: 1.5 / 4 / 3 = 0.125 ETH
    # each to 0, 1, 2, which its revert clawed back.
    assert (r1["reward_share_wei"], r1["paid_members"], r1["clawed_back_wei"]) == (
        10**17,
        [0, 1, 2],
        None,
    )
    assert r3["accepted_members"] == [0, 1, 2, 3]
    assert (r3["reward_share_wei"], r3["paid_members"], r3["reward_paid_wei"]) == (
        125 * 10**15,
        [0, 1, 2],
        375 * 10**15,
    )
    assert r3["clawed_back_wei"] == 375 * 10**15
    assert [r["reward_share_wei"] for r in (r2, r4, r5)] == [0, 0, 0]
    # Round 5 restarts from the last good model, round 1's.
    assert (r5["base_round"], r5["base_digest"]) == (1, r1["global_digest"])
    for r in rows:
        assert r["submit_deadline"] == r["start"] + 600
        assert r["vote_deadline"] == r["start"] + 1200


def test_rounds_csv_and_table_agree_with_json(net: Net) -> None:
    rows = run_csv(ledger, ["rounds", *net.dev])
    assert [r["status"] for r in rows] == ["finalized", "failed", "reverted", "aborted", "open"]
    assert rows[0]["accepted_members"] == "0 1 2"
    assert rows[1]["accepted"] == ""  # None is an empty cell
    table = run(ledger, ["rounds", *net.dev]).output
    for word in ("finalized", "failed", "reverted", "aborted", "open", "+600s", "+1200s"):
        assert word in table


def test_round_detail_shows_verdicts_votes_and_tallies(net: Net) -> None:
    detail = run_json(ledger, ["round", "1", *net.dev])
    members = detail["members"]
    assert [m["verdict"] for m in members] == ["accepted", "accepted", "accepted", "rejected"]
    assert [m["samples"] for m in members] == [100, 200, 300, 400]
    assert [m["loss"] for m in members] == [0.0, 0.25, 0.5, 0.75]
    assert [m["digest"] for m in members] == [hx(sha(blob(f"update r1 m{i}"))) for i in range(4)]
    assert [m["voted"] for m in members] == [True, True, True, False]
    assert [m["vote_weight"] for m in members] == [1000, 1000, 1000, None]
    assert members[0]["vote_accepted"] == [0, 1, 2]
    (tally,) = detail["tallies"]
    assert (tally["weight"], tally["voters"], tally["accepted"]) == (3000, [0, 1, 2], [0, 1, 2])


def test_round_detail_of_a_split_vote_and_of_a_reverted_round(net: Net) -> None:
    split = run_json(ledger, ["round", "2", *net.dev])
    weights = {t["digest"]: (t["weight"], t["voters"]) for t in split["tallies"]}
    # Round 1 left members 0-2 at 1020 (member 3, at 950, did not vote).
    assert weights == {hx(sha(blob("r2a"))): (2040, [0, 1]), hx(sha(blob("r2b"))): (1020, [2])}
    assert all(m["verdict"] is None for m in split["members"])
    reverted = run_json(ledger, ["round", "3", *net.dev])
    assert [m["verdict"] for m in reverted["members"]] == ["accepted"] * 4
    alarms = [(a["member"], a["weight"], a["alarm_weight"]) for a in reverted["alarm_list"]]
    assert alarms == [(1, 1040, 2900), (2, 1040, 1860), (3, 820, 820)]
    assert [m["alarmed"] for m in reverted["members"]] == [False, True, True, True]
    # Each member: its +20 (undone), its bond (undone), the revert's -20, the bond back.
    moves = [
        [(r["delta"], "+".join(r["reasons"]), r["undone"]) for r in m["reputation_moves"]]
        for m in reverted["members"]
    ]
    assert moves[0] == [(20, "accepted", True), (-20, "reverted", False)]
    assert moves[3] == [
        (20, "accepted", True),
        (-100, "alarm-bond", True),
        (-20, "reverted", False),
        (100, "bond-returned", False),
    ]
    # Member 3's update was accepted, but it had not voted on round 2: no share.
    assert [m["reward_wei"] for m in reverted["members"]] == [125 * 10**15] * 3 + [0]
    assert reverted["clawed_back_wei"] == 375 * 10**15 and reverted["slashes"] == []
    table = run(ledger, ["round", "3", *net.dev]).output
    assert "0.125 ETH each to members 0,1,2 (0.375 ETH in all)" in table
    assert "clawed back    0.375 ETH" in table
    # One move a line; a member is its index and short address (no node names here).
    assert "-100 alarm-bond" in table and "(undone)" in table and "bond-returned" in table
    assert "│ #3 " in table and "│ 0x" in table


def test_round_detail_csv_and_table(net: Net) -> None:
    rows = run_csv(ledger, ["round", "1", *net.dev])
    assert [r["member"] for r in rows] == ["0", "1", "2", "3"]
    assert [r["verdict"] for r in rows] == ["accepted"] * 3 + ["rejected"]
    assert [r["reward_wei"] for r in rows] == [str(10**17)] * 3 + ["0"]
    assert [r["reputation_moves"] for r in rows] == ["+20 accepted"] * 3 + ["-50 rejected"]
    table = run(ledger, ["round", "1", *net.dev]).output
    assert "finalized" in table and "rejected" in table
    assert hx(sha(blob("global r1"))) in table
    assert "0.1 ETH each to members 0,1,2 (0.3 ETH in all)" in table


def test_events_before_from_block_leave_weights_unknown_but_views_complete(net: Net) -> None:
    args = ["round", "3", *net.dev, "--from-block", str(net.votes_done_block + 1)]
    detail = run_json(ledger, args)
    assert [m["vote_weight"] for m in detail["members"]] == [None, None, None, None]
    assert [m["voted"] for m in detail["members"]] == [True, True, True, False]
    assert detail["final_tally"] == 3060  # read from the view when the event was not
    assert [a["weight"] for a in detail["alarm_list"]] == [1040, 1040, 820]


def test_members_show_reputation_status_stake_and_peer_id(net: Net) -> None:
    rows = run_json(ledger, ["members", *net.dev])
    # The revert undid round 3 and returned the alarm bonds: round 2's reputations again.
    assert [r["reputation"] for r in rows] == [1020, 1020, 1020, 800]
    assert [r["status"] for r in rows] == ["active"] * 4
    assert [r["stake_wei"] for r in rows] == [STAKE] * 4
    assert [r["since_round"] for r in rows] == [1] * 4
    assert [r["peer_id"] for r in rows] == [PEER0_TEXT, "peer-1", "peer-2", "peer-3"]
    assert rows[0]["peer_id_hex"] == hx(PEER0)
    assert [r["account"] for r in rows] == [Account.from_key(k).address for k in net.keys[1:5]]
    table = run(ledger, ["members", *net.dev]).output
    assert "1.020" in table and "0.800" in table and PEER0_TEXT in table


def test_members_show_rewards_payout_and_penalties(net: Net) -> None:
    rows = run_json(ledger, ["members", *net.dev])
    assert [r["earned_wei"] for r in rows] == [10**17] * 3 + [0]
    # Payout: stake + earned + the pool left (1.5 ETH) split by rewards (a third each).
    assert [r["payout_wei"] for r in rows] == [61 * 10**16] * 3 + [STAKE]
    assert [r["forfeited_wei"] for r in rows] == [0] * 4
    assert [r["withdrawn_wei"] for r in rows] == [None] * 4
    assert [r["reputation_lost"] for r in rows] == [0, 0, 0, 200]
    assert rows[3]["penalties"] == [
        {"round": 1, "reasons": ["rejected"], "lost": 50, "undone": False},
        {"round": 2, "reasons": ["no-vote", "no-late-vote"], "lost": 150, "undone": False},
        {"round": 3, "reasons": ["alarm-bond"], "lost": 100, "undone": True},
    ]
    assert rows[0]["penalties"] == [] and rows[0]["ejected_round"] is None
    csv_rows = run_csv(ledger, ["members", *net.dev])
    assert json.loads(csv_rows[3]["penalties"])[0]["reasons"] == ["rejected"]
    table = run(ledger, ["members", *net.dev]).output
    assert "earned (ETH)" in table and "0.61" in table
    assert "r1 rejected -50; r2 no-vote+no-late-vote -150;" in table
    assert "pool 1.5 ETH, paid 0.3 ETH, slashed 0 ETH (not settled)" in table


def test_members_dp_rounds_count_every_released_update(net: Net) -> None:
    assert net.config_file is not None
    rows = run_json(ledger, ["members", *net.dev, "--config", str(net.config_file)])
    # Rounds 1-3 (finalized, failed, reverted) all four committed, round 4 (aborted) nobody,
    # round 5 members 0 and 1: an update counts whatever became of its round.
    assert [r["dp_rounds"] for r in rows] == [4, 4, 3, 3]
    # The config ({"rule": "multikrum"}) adds no DP noise: no finite epsilon.
    assert [(r["dp_noise"], r["epsilon"]) for r in rows] == [(0.0, None)] * 4
    table = run(ledger, ["members", *net.dev, "--config", str(net.config_file)]).output
    assert "no DP" in table


def test_events_filter_by_name_and_round(net: Net) -> None:
    failed = run_json(ledger, ["events", *net.dev, "--name", "roundfailed"])
    assert [(e["args"]["round"], e["args"]["reason"]) for e in failed] == [(2, 1), (4, 2)]
    votes = run_json(ledger, ["events", *net.dev, "--name", "VoteCast", "--round", "1"])
    assert [e["args"]["tally"] for e in votes] == [1000, 2000, 3000]
    assert all(e["tx_hash"].startswith("0x") and e["block_number"] > 0 for e in votes)
    everything = run_json(ledger, ["events", *net.dev])
    blocks = [(e["block_number"], e["log_index"]) for e in everything]
    assert blocks == sorted(blocks)
    assert everything[0]["event"] == "TaskCreated"
    rows = run_csv(ledger, ["events", *net.dev, "--name", "AlarmRaised"])
    assert [json.loads(r["args"])["member"] for r in rows] == [3, 2, 1]


def test_unknown_event_name_is_a_usage_error(net: Net) -> None:
    result = run(ledger, ["events", *net.dev, "--name", "Nope"])
    assert result.exit_code == 2
    assert "unknown event Nope" in result.output


# ---------------------------------------------------------------- verify


def _copy_blobs(net: Net, target: Path) -> Path:
    target.mkdir()
    for digest, data in net.blobs.items():
        (target / digest.hex()).write_bytes(data)
    return target


def test_verify_devnet_blob_stores_all_ok(net: Net) -> None:
    report = run_json(ledger, ["verify", *net.dev])
    # initial + 14 updates (4 + 4 + 4 + 2) + the global models of rounds 1 and 3
    assert (report["ok"], report["mismatch"], report["missing"]) == (17, 0, 0)
    kinds = [(c["kind"], c["round"], c["member"]) for c in report["checks"]]
    assert kinds[0] == ("initial", 0, None)
    assert ("global", 3, None) in kinds and ("update", 5, 1) in kinds
    update = next(c for c in report["checks"] if c["kind"] == "update" and c["member"] == 2)
    assert update["paths"] == [str(net.devnet_dir / "node-2" / "blobs" / update["digest"][2:])]


def test_verify_reports_mismatch_and_missing_with_exit_codes(net: Net, tmp_path: Path) -> None:
    store = _copy_blobs(net, tmp_path / "store")
    corrupt = sha(blob("update r1 m3"))
    (store / corrupt.hex()).write_bytes(b"tampered")
    (store / sha(blob("global r3")).hex()).unlink()
    result = run(ledger, ["verify", *net.dev, "--blobs", str(store), "--json"])
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert (report["ok"], report["mismatch"], report["missing"]) == (15, 1, 1)
    status = {c["digest"]: c["status"] for c in report["checks"]}
    assert status[hx(corrupt)] == "mismatch"
    assert status[hx(sha(blob("global r3")))] == "missing"
    table = run(ledger, ["verify", *net.dev, "--blobs", str(store)])
    assert table.exit_code == 1
    assert "15 ok, 1 mismatch, 1 missing" in table.output


def test_verify_missing_fails_only_when_strict(net: Net, tmp_path: Path) -> None:
    store = _copy_blobs(net, tmp_path / "store")
    (store / sha(blob("initial model")).hex()).unlink()
    relaxed = run(ledger, ["verify", *net.dev, "--blobs", str(store), "--csv"])
    assert relaxed.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(relaxed.output)))
    assert [r["status"] for r in rows].count("missing") == 1 and rows[0]["status"] == "missing"
    strict = run(ledger, ["verify", *net.dev, "--blobs", str(store), "--strict", "--json"])
    assert strict.exit_code == 1


def test_verify_one_bad_copy_among_good_ones_is_a_mismatch(net: Net, tmp_path: Path) -> None:
    good = _copy_blobs(net, tmp_path / "good")
    bad = tmp_path / "bad"
    bad.mkdir()
    digest = sha(blob("global r1"))
    (bad / digest.hex()).write_bytes(b"not the model")
    result = run(ledger, ["verify", *net.dev, "--blobs", str(good), "--blobs", str(bad), "--json"])
    assert result.exit_code == 1
    (check,) = [c for c in json.loads(result.output)["checks"] if c["digest"] == hx(digest)]
    assert check["status"] == "mismatch"
    assert check["bad_paths"] == [str(bad / digest.hex())]
    assert len(check["paths"]) == 2


# ---------------------------------------------------------------- export and plot


def test_export_json_holds_the_whole_ledger(net: Net, tmp_path: Path) -> None:
    out = tmp_path / "ledger.json"
    summary = run_json(ledger, ["export", *net.dev, "--out", str(out)])
    data = json.loads(out.read_text())
    counts = {name: len(data[name]) for name in summary["counts"]}
    assert counts == summary["counts"]
    assert {k: counts[k] for k in ("tasks", "members", "rounds", "updates", "votes", "alarms")} == {
        "tasks": 1,
        "members": 4,
        "rounds": 5,
        "updates": 14,
        "votes": 9,
        "alarms": 3,
    }
    # Member 3's rejection and missing votes, the three bonds; the reward escrow, four stakes.
    assert counts["penalties"] == 5 and counts["slashes"] == 0 and counts["transfers"] == 5
    assert data["tasks"][0]["funded_wei"] == REWARD
    assert [m["earned_wei"] for m in data["members"]] == [10**17] * 3 + [0]
    assert counts["events"] == len(run_json(ledger, ["events", *net.dev]))
    assert data["contract"] == net.address and data["chain_id"] == 31337
    rejected = [(u["round"], u["member"]) for u in data["updates"] if u["verdict"] == "rejected"]
    assert rejected == [(1, 3)]
    assert [r["status"] for r in data["rounds"]] == [
        "finalized",
        "failed",
        "reverted",
        "aborted",
        "open",
    ]


def test_export_csv_writes_one_file_per_table(net: Net, tmp_path: Path) -> None:
    out = tmp_path / "csv"
    result = run(ledger, ["export", *net.dev, "--format", "csv", "--out", str(out)])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    tables = ("tasks", "members", "rounds", "updates", "votes", "alarms", "events")
    tables += ("penalties", "slashes", "transfers")
    assert names == sorted(f"{n}.csv" for n in tables)
    with open(out / "slashes.csv") as handle:  # empty, with its header
        assert handle.read().startswith("task_id,round,member,account,reputation,forfeited_wei")
    with open(out / "votes.csv") as handle:
        votes = list(csv.DictReader(handle))
    assert [(v["round"], v["member"], v["weight"]) for v in votes][:3] == [
        ("1", "0", "1000"),
        ("1", "1", "1000"),
        ("1", "2", "1000"),
    ]


def test_export_all_tasks(net: Net, tmp_path: Path) -> None:
    out = tmp_path / "all.json"
    summary = run_json(ledger, ["export", *net.rpc, "--all-tasks", "--out", str(out)])
    n_tasks = len(run_json(ledger, ["tasks", *net.rpc]))
    assert summary["counts"]["tasks"] == n_tasks >= 2
    assert summary["counts"]["rounds"] == 5  # the other tasks never started


def test_plot_writes_a_png(net: Net, tmp_path: Path) -> None:
    out = tmp_path / "ledger.png"
    summary = run_json(ledger, ["plot", *net.dev, "--out", str(out)])
    assert summary == {"out": str(out), "task_id": 1, "rounds": 5, "members": 4}
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


# ---------------------------------------------------------------- errors


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_rpc_is_one_clear_line(net: Net) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    result = run(ledger, ["tasks", "--rpc", url, "--contract", net.address])
    assert result.exit_code == 1
    assert f"cannot reach RPC at {url}" in result.output
    assert "Traceback" not in result.output


def test_no_code_at_the_contract_address(net: Net) -> None:
    empty = "0x000000000000000000000000000000000000dEaD"
    result = run(ledger, ["rounds", "--rpc", net.server.rpc_url, "--contract", empty])
    assert result.exit_code == 1
    assert f"no contract code at {empty}" in result.output


def test_a_contract_that_is_not_flchain(net: Net) -> None:
    w3 = Web3(Web3.HTTPProvider(net.server.rpc_url))
    # Init code that deploys the one-byte runtime STOP.
    tx = w3.eth.send_transaction({"from": w3.eth.accounts[5], "data": "0x600060005360016000f3"})
    other = w3.eth.wait_for_transaction_receipt(tx)["contractAddress"]
    result = run(ledger, ["tasks", "--rpc", net.server.rpc_url, "--contract", other])
    assert result.exit_code == 1
    assert "does not answer as FLChain" in result.output


def test_bad_contract_address_and_unknown_task_and_round(net: Net) -> None:
    result = run(ledger, ["tasks", "--rpc", net.server.rpc_url, "--contract", "0x1234"])
    assert result.exit_code == 2 and "is not an address" in result.output
    n_tasks = len(run_json(ledger, ["tasks", *net.rpc]))
    result = run(ledger, ["rounds", *net.rpc, "--task", "99"])
    assert result.exit_code == 1
    assert f"no task 99 on FLChain at {net.address} (task ids 1..{n_tasks})" in result.output
    result = run(ledger, ["round", "9", *net.dev])
    assert result.exit_code == 1 and "task 1 has no round 9 (rounds 1..5)" in result.output


def test_several_tasks_need_task_id(net: Net) -> None:
    result = run(ledger, ["members", *net.rpc])
    assert result.exit_code == 2
    assert "pass --task ID" in result.output


def test_bad_keys_are_refused_without_echoing_them(net: Net, tmp_path: Path) -> None:
    short = "0x1234abcd"
    result = run(contract, ["deploy", "--rpc", net.server.rpc_url, "--key", short])
    assert result.exit_code == 2
    assert "bad private key from --key" in result.output and "1234abcd" not in result.output
    zero = "0x" + "00" * 32
    result = run(contract, ["deploy", "--rpc", net.server.rpc_url, "--key", zero])
    assert result.exit_code == 2 and "not a valid secp256k1 key" in result.output
    result = run(contract, ["deploy", "--rpc", net.server.rpc_url], env={"FLCHAIN_KEY": ""})
    assert result.exit_code == 2 and "no signing key" in result.output
    keystore = tmp_path / "k.json"
    keystore.write_text(json.dumps(Account.encrypt(net.keys[1], PASSWORD, iterations=2)))
    keystore.chmod(0o600)
    args = ["deploy", "--rpc", net.server.rpc_url, "--key-file", str(keystore)]
    result = run(contract, args, env={"FLCHAIN_PASSWORD": "wrong"})
    assert result.exit_code == 2 and "cannot decrypt keystore" in result.output
    result = run(contract, args, env={"FLCHAIN_PASSWORD": None}, input="")
    assert result.exit_code == 2 and "pass --password-file or set FLCHAIN_PASSWORD" in result.output
    hex_file = tmp_path / "key.hex"
    hex_file.write_text(net.keys[1] + "\n")
    hex_file.chmod(0o644)
    result = run(contract, ["deploy", "--rpc", net.server.rpc_url, "--key-file", str(hex_file)])
    assert result.exit_code == 0, result.output
    assert "is readable by other users" in result.output
    assert net.keys[1][2:] not in result.output


def test_a_reverted_create_reports_the_reason(net: Net) -> None:
    args = ["create", *net.rpc, "--key", net.keys[0], "--config-digest", hx(sha(b"c"))]
    args += ["--model-digest", hx(sha(b"m")), "--min-members", "5", "--max-members", "4"]
    result = run(task, args)
    assert result.exit_code == 1
    assert "contract reverted: bad members" in result.output


def test_create_needs_a_config_and_a_model(net: Net, tmp_path: Path) -> None:
    base = ["create", *net.rpc, "--key", net.keys[0]]
    result = run(task, [*base, "--model-digest", hx(sha(b"m"))])
    assert result.exit_code == 2 and "missing --config FILE or --config-digest" in result.output
    result = run(task, [*base, "--config-digest", "0x12", "--model-digest", hx(sha(b"m"))])
    assert result.exit_code == 2 and "is not a 32-byte digest" in result.output
    stake = ["--config-digest", hx(sha(b"c")), "--model-digest", hx(sha(b"m"))]
    result = run(task, [*base, *stake, "--stake-eth", "0.1", "--stake-wei", "5"])
    assert result.exit_code == 2 and "not both" in result.output


def test_devnet_dir_without_devnet_json(tmp_path: Path) -> None:
    result = run(ledger, ["rounds", "--devnet", str(tmp_path)])
    assert result.exit_code == 1
    assert "devnet.json not found" in result.output


@pytest.mark.parametrize("form", ["absolute", "cwd-relative"])
def test_node_dirs_outside_the_devnet_dir(
    net: Net, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, form: str
) -> None:
    devnet = tmp_path / "elsewhere"
    devnet.mkdir()
    spec = json.loads((net.devnet_dir / "devnet.json").read_text())
    spec["nodes"] = [{"name": "n", "dir": str(tmp_path / "never-started")}]
    (devnet / "devnet.json").write_text(json.dumps(spec))
    result = run(ledger, ["verify", "--devnet", str(devnet)])
    assert result.exit_code == 2 and "no blob directories" in result.output
    node_dir = net.devnet_dir / "node-0"
    if form == "cwd-relative":  # how a launcher started with a relative --dir records it
        monkeypatch.chdir(net.devnet_dir.parent)
        node_dir = node_dir.relative_to(net.devnet_dir.parent)
    spec["nodes"] = [{"name": "n", "dir": str(node_dir)}]
    (devnet / "devnet.json").write_text(json.dumps(spec))
    report = run_json(ledger, ["verify", "--devnet", str(devnet)])
    # node-0 holds the initial model, both global models and its own four updates.
    assert (report["ok"], report["missing"]) == (3 + 4, 10)


# ---------------------------------------------------------------- any endpoint


def test_deploy_create_and_read_on_anvil(anvil_bin: str, tmp_path: Path) -> None:
    key = derive_accounts(DEFAULT_MNEMONIC, 1)[0].private_key_hex
    with spawn_anvil(accounts=1, chain_id=4242, binary=anvil_bin) as anvil:
        deployed = run_json(contract, ["deploy", "--rpc", anvil.rpc_url, "--key", key])
        assert deployed["chain_id"] == 4242
        target = ["--rpc", anvil.rpc_url, "--contract", deployed["address"]]
        config = tmp_path / "task.json"
        config.write_bytes(b"{}")
        args = ["create", *target, "--key", key, "--config", str(config)]
        created = run_json(task, [*args, "--model-digest", hx(sha(b"m")), "--max-rounds", "3"])
        assert created["task_id"] == 1
        (row,) = run_json(ledger, ["tasks", *target])
        assert (row["status"], row["max_rounds"]) == ("registering", 3)
        assert row["config_digest"] == hx(sha(b"{}"))
        assert run_json(ledger, ["rounds", *target]) == []
        assert run_json(ledger, ["members", *target]) == []
        header = run(ledger, ["members", *target, "--csv"]).output
        assert header.startswith("index,account,peer_id,reputation_factor,status")


# ---------------------------------------------------------------- money: fund, withdraw, refund

ETH = 10**18


def _money_json(net: Net, name: str) -> Any:
    result = net.money[name]
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def _money_error(net: Net, name: str, code: int = 1) -> str:
    result = net.money[name]
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    return " ".join(result.output.split())  # one line, whatever the terminal wrapped


def test_money_task_created_with_a_reward_and_funded_by_anyone(net: Net) -> None:
    created = _money_json(net, "create")
    assert (created["task_id"], created["reward_wei"], created["stake_wei"]) == (
        1,
        8 * 10**17,
        STAKE,
    )
    assert (created["quorum_bps"], created["alarm_bps"], created["rep_floor"]) == (6000, 6000, 850)
    funded = _money_json(net, "fund")
    assert (funded["amount_wei"], funded["reward_pool_wei"]) == (4 * 10**17, 12 * 10**17)
    assert funded["funder"] == Account.from_key(net.keys[5]).address
    assert "ended (closed): its reward pool takes no more funds" in _money_error(net, "fund_closed")


def test_withdraw_before_settlement_says_why(net: Net) -> None:
    running = _money_error(net, "withdraw_running")
    assert "task 1 is not settled yet: task running: task 1 is running (round 1 of 3)" in running
    window = _money_error(net, "withdraw_window")
    assert "task 1 is not settled yet: alarm window open: round 3's Siren alarm window" in window
    assert "alarm window open" in _money_error(net, "refund_window")


def test_withdraw_pays_stake_rewards_and_the_pool_left(net: Net) -> None:
    paid = [_money_json(net, f"withdraw_{i}") for i in (0, 1)]
    assert [(p["member"], p["stake_wei"], p["reward_wei"]) for p in paid] == [
        (0, STAKE, 61 * 10**16),
        (1, STAKE, 61 * 10**16),
    ]
    assert [p["amount_wei"] for p in paid] == [62 * 10**16] * 2
    # 0.8 + 0.4 ETH of rewards and four 0.01 ETH stakes in, two 0.62 ETH payouts out.
    assert net.money["balance_after_withdrawals"] == 0
    assert "was ejected from task 1" in _money_error(net, "withdraw_ejected")
    assert "has already withdrawn its payout" in _money_error(net, "withdraw_again")
    assert "is not a member of task 1" in _money_error(net, "withdraw_outsider")


def test_refund_only_for_the_owner_of_a_task_that_paid_nothing(net: Net) -> None:
    paid = _money_error(net, "refund_paid")
    assert "nothing to claim: task 1's members earned 1.21 ETH of rewards" in paid
    assert "task running: task 2 is registering" in _money_error(net, "refund_registering")
    assert "only task 2's owner" in _money_error(net, "refund_outsider")
    refund = _money_json(net, "refund")
    assert (refund["task_id"], refund["amount_wei"]) == (2, 5 * 10**17)
    assert refund["owner"] == Account.from_key(net.keys[0]).address
    assert net.money["balance_after_refund"] == 0


def test_members_money_at_settlement_and_after_withdrawals(net: Net) -> None:
    settled = net.money["members_settled"]
    assert [m["status"] for m in settled] == ["active", "active", "ejected", "ejected"]
    assert [m["earned_wei"] for m in settled] == [605 * 10**15] * 2 + [0, 0]
    assert [m["payout_wei"] for m in settled] == [62 * 10**16] * 2 + [0, 0]
    assert [m["forfeited_wei"] for m in settled] == [0, 0, STAKE, STAKE]
    assert [m["ejected_round"] for m in settled] == [None, None, 3, 2]
    rows = run_json(ledger, ["members", *net.money_target()])
    assert [m["status"] for m in rows] == ["withdrawn", "withdrawn", "ejected", "ejected"]
    assert [m["withdrawn_wei"] for m in rows] == [62 * 10**16] * 2 + [None, None]
    assert [m["reputation_lost"] for m in rows] == [0, 0, 200, 350]
    reasons = [
        [("+".join(p["reasons"]), p["round"], p["lost"]) for p in m["penalties"]] for m in rows
    ]
    assert reasons == [
        [],
        [],
        [("rejected", 1, 50), ("no-vote", 2, 100), ("rejected", 3, 50)],
        [
            ("no-submit", 1, 50),
            ("alarm-bond", 1, 100),
            ("no-submit+no-vote+bad-late-vote", 2, 200),
        ],
    ]
    table = run(ledger, ["members", *net.money_target()]).output
    assert "r1 no-submit -50; r1 alarm-bond -100;" in table
    assert "withdrawn (ETH)" in table and "0.62" in table
    assert "paid 1.21 ETH, slashed 0.02 ETH (settled)" in table


def test_round_money_shares_and_ejections(net: Net) -> None:
    r1 = run_json(ledger, ["round", "1", *net.money_target()])
    assert (r1["reward_share_wei"], r1["paid_members"]) == (2 * 10**17, [0, 1])
    assert [m["reward_wei"] for m in r1["members"]] == [2 * 10**17] * 2 + [0, 0]
    assert [(m["vote_weight"], m["vote_late"]) for m in r1["members"]] == [
        (1000, False),
        (1000, False),
        (1000, False),
        (0, True),
    ]
    r2 = run_json(ledger, ["round", "2", *net.money_target()])
    assert [(x["member"], x["cause"], x["forfeited_wei"]) for x in r2["slashes"]] == [
        (3, "no-submit+no-vote+bad-late-vote", STAKE)
    ]
    assert r2["reward_share_wei"] == 0
    table = run(ledger, ["round", "3", *net.money_target()]).output
    assert "0.405 ETH each to members 0,1 (0.81 ETH in all)" in table
    assert "ejected        #2 0x" in table
    assert "(reputation 800, rejected): forfeited 0.01 ETH" in table


def test_tasks_and_export_carry_the_money(net: Net, tmp_path: Path) -> None:
    first, second = run_json(
        ledger, ["tasks", "--rpc", net.server.rpc_url, "--contract", net.money_address]
    )
    assert (first["status"], first["rewards_paid"], first["slashed"], first["settled"]) == (
        "finished",
        121 * 10**16,
        2 * 10**16,
        True,
    )
    assert (second["status"], second["reward_pool"], second["settled"]) == ("closed", 0, True)
    out = tmp_path / "money.json"
    run_json(ledger, ["export", *net.money_target(), "--out", str(out)])
    data = json.loads(out.read_text())
    assert data["tasks"][0]["funded_wei"] == 12 * 10**17
    transfers = [(t["kind"], t["direction"], t["amount_wei"]) for t in data["transfers"]]
    assert transfers == [
        ("reward", "in", 8 * 10**17),
        ("fund", "in", 4 * 10**17),
        *[("stake", "in", STAKE)] * 4,
        *[("withdraw", "out", 62 * 10**16)] * 2,
    ]
    assert [(x["member"], x["round"], x["cause"]) for x in data["slashes"]] == [
        (3, 2, "no-submit+no-vote+bad-late-vote"),
        (2, 3, "rejected"),
    ]
    assert len(data["penalties"]) == 6


def test_money_usage_errors_come_before_any_transaction(net: Net) -> None:
    before = len(run_json(ledger, ["tasks", *net.rpc]))
    base = ["create", *net.rpc, "--key", net.keys[0], "--config-digest", hx(sha(b"c"))]
    base += ["--model-digest", hx(sha(b"m"))]
    result = run(task, [*base, "--quorum-bps", "7000", "--alarm-bps", "6999"])
    assert result.exit_code == 2
    assert "--alarm-bps 6999 is below --quorum-bps 7000" in " ".join(result.output.split())
    result = run(task, [*base, "--quorum-bps", "7000"])  # the default alarm threshold is lower
    assert result.exit_code == 2 and "raise --alarm-bps" in " ".join(result.output.split())
    result = run(task, [*base, "--reward-eth", "1", "--reward-wei", "5"])
    assert result.exit_code == 2 and "not both" in result.output
    result = run(task, [*base, "--reward-eth", "1e-19"])
    assert result.exit_code == 2 and "not a whole number of wei" in result.output
    assert len(run_json(ledger, ["tasks", *net.rpc])) == before
    fund = ["fund", "1", *net.rpc, "--key", net.keys[5]]
    for extra in ([], ["--eth", "1", "--wei", "1"]):
        result = run(task, [*fund, *extra])
        assert result.exit_code == 2 and "--eth or --wei" in result.output
    result = run(task, [*fund, "--eth", "0"])
    assert result.exit_code == 2 and "must be positive" in result.output
    help_text = run(task, ["create", "--help"]).output
    assert "--reward-eth" in help_text and "--rep-floor" in help_text
    assert f"[default: {DEFAULT_QUORUM_BPS}" in help_text


# ---------------------------------------------------------------- devnet: task and summary


def test_devnet_deploy_task_escrows_the_reward_with_the_config_defaults(
    net: Net, tmp_path: Path
) -> None:
    assert DevnetPlan(directory=tmp_path).reward_wei == ETH  # `devnet up --reward-eth 1`
    plan = DevnetPlan(directory=tmp_path, nodes=2, rounds=3, model="logreg", reward_wei=ETH // 4)
    address, task_id, _config = deploy_task(plan, net.server.rpc_url, net.keys[0])
    w3 = Web3(Web3.HTTPProvider(net.server.rpc_url))
    info = FLChainClient(w3, address, Account.create()).get_task(task_id)
    assert (info.reward_pool, info.stake, info.max_rounds) == (ETH // 4, STAKE_WEI, 3)
    assert (info.quorum_bps, info.alarm_bps, info.rep_floor) == (
        DEFAULT_QUORUM_BPS,
        DEFAULT_ALARM_BPS,
        DEFAULT_REP_FLOOR,
    )


def test_devnet_up_checks_the_economics_before_starting_anything(tmp_path: Path) -> None:
    directory = tmp_path / "devnet"
    base = ["up", "--dir", str(directory)]
    result = run(devnet, [*base, "--quorum-bps", "7000", "--alarm-bps", "6000"])
    assert result.exit_code == 2
    assert "--alarm-bps 6000 is below --quorum-bps 7000" in " ".join(result.output.split())
    result = run(devnet, [*base, "--reward-eth", "2", "--reward-wei", "5"])
    assert result.exit_code == 2 and "not both" in result.output
    assert not directory.exists()
    help_text = " ".join(run(devnet, ["up", "--help"]).output.split())
    assert "--reward-eth TEXT" in help_text and "[default: 1]" in help_text
    assert "--rep-floor INTEGER RANGE" in help_text and "earned and would be paid" in help_text


def test_devnet_summary_shows_each_members_money(net: Net, tmp_path: Path) -> None:
    nodes = [
        {
            "name": f"node-{i}",
            "dir": str(tmp_path / f"node-{i}"),  # no status files: accuracy unknown
            "address": Account.from_key(key).address,
            "attack": "alie" if i == 3 else None,
        }
        for i, key in enumerate(net.keys[1:5])
    ]
    manifest = {
        "rpc_url": net.server.rpc_url,
        "contract": net.money_address,
        "task_id": 1,
        "nodes": nodes,
        "secure": False,
    }
    summary = ledger_summary(manifest)
    assert summary["money"] == {
        "stake_wei": STAKE,
        "funded_wei": 12 * 10**17,
        "reward_pool_wei": 10**16,  # the forfeit after round 3's payment, now withdrawn
        "rewards_paid_wei": 121 * 10**16,
        "slashed_wei": 2 * 10**16,
        "settled": True,
    }
    assert [(n["member_index"], n["status"], n["reputation"]) for n in summary["nodes"]] == [
        (0, "withdrawn", 1040),
        (1, "withdrawn", 1040),
        (2, "ejected", 800),
        (3, "ejected", 650),
    ]
    assert [n["earned_wei"] for n in summary["nodes"]] == [605 * 10**15] * 2 + [0, 0]
    assert [n["forfeited_wei"] for n in summary["nodes"]] == [0, 0, STAKE, STAKE]
    shares = [(r["round"], r["reward_share_wei"], r["paid"]) for r in summary["rounds"]]
    assert shares == [(1, 2 * 10**17, [0, 1]), (2, 0, []), (3, 405 * 10**15, [0, 1])]
    assert summary["byzantine_members"] == [3]
    console = Console(record=True, width=200)
    _print_summary(summary, console)
    text = console.export_text()
    assert "earned (ETH)" in text and "0.605" in text and "0.405" in text
    assert "0 (forfeited 0.01)" in text and "ejected" in text and "0.650" in text
    assert "rewards: 1.2 ETH funded, 1.21 ETH paid to members" in text
    assert "0.02 ETH slashed (settled" in text
    manifest.update(rounds=3, rule="multikrum", byzantine=1, attack="alie")
    w3 = Web3(Web3.HTTPProvider(net.server.rpc_url))
    info = FLChainClient(w3, net.money_address, Account.create()).get_task(1)
    console.print(_view(manifest, info))  # the live view of `devnet up` and `devnet status`
    assert "reward pool 0.01 ETH" in " ".join(console.export_text().split())  # title may wrap


def test_eth_amounts_are_exact() -> None:
    assert [format_eth(w) for w in (0, 1, 10**16, 605 * 10**15, 3 * ETH, None)] == [
        "0",
        "0.000000000000000001",
        "0.01",
        "0.605",
        "3",
        "-",
    ]
    long = "1234567890123.123456789012345678"  # 31 digits: more than Decimal's default 28
    assert eth_to_wei(long, "--eth") == 1234567890123123456789012345678
    assert format_eth(eth_to_wei(long, "--eth")) == long
    for bad in ("abc", "-1", "nan", "0.0000000000000000001"):
        with pytest.raises(click.BadParameter):
            eth_to_wei(bad, "--eth")
