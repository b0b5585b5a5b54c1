"""The DP budget (epsilon) and the secure-mode facts in `flchain ledger`, end to end.

One py-evm devnet server for the module, one FLChain contract, three tasks of three members:

    task 1  DP (sigma 1.1, delta 1e-5)  round 1 all commit, round 2 member 2 skips,
                                         round 3 all commit (open)
    task 2  no DP noise                  round 1 members 0 and 1 commit (open)
    task 3  secure, DP (sigma 0.8)       members 0 and 1 registered Paillier keys;
                                         round 1 all commit, decryptor 0 publishes the sum,
                                         finalized; round 2 member 2 drops out, 0 and 1
                                         re-mask, decryptor 1 publishes the sum

Each member's epsilon must be `flchain.crypto.dp.epsilon(sigma, 1.0, k, delta)` for the k rounds
it committed an update in: the accountant a node runs, fed from the chain alone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from eth_account import Account
from web3 import Web3

from flchain.commands.ledger import ledger
from flchain.contracts import FLChainClient, TaskParams, bitmap, encode_loss
from flchain.contracts.ledger import ConfigMismatchError, load_task_privacy, rebuild_ledger
from flchain.crypto.dp import epsilon
from flchain.devnet.accounts import DEFAULT_MNEMONIC, derive_accounts
from flchain.devnet.chain import DevChain
from flchain.devnet.genesis import GenesisConfig
from flchain.devnet.rpc_server import DevnetServer
from flchain.taskconfig import TaskConfig

WINDOW = 600
DP = TaskConfig(rule="fedavg", dp_clip=1.0, dp_noise=1.1, dp_delta=1e-5)
NO_DP = TaskConfig(rule="fedavg")
SECURE = TaskConfig(rule="fedavg", dp_clip=1.0, dp_noise=0.8, dp_delta=1e-6, secure=True)


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def hx(data: bytes) -> str:
    return "0x" + data.hex()


def run(args: list[str]) -> Result:
    return CliRunner().invoke(ledger, args, catch_exceptions=False)


def run_json(args: list[str]) -> Any:
    result = run([*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@dataclass
class Net:
    server: DevnetServer
    address: str
    configs: dict[int, Path]  # task id -> its config file
    blobs: dict[bytes, bytes] = field(default_factory=dict)  # secure task: digest -> bytes

    def rpc(self, task_id: int) -> list[str]:
        return ["--rpc", self.server.rpc_url, "--contract", self.address, "--task", str(task_id)]

    def client(self) -> FLChainClient:
        w3 = Web3(Web3.HTTPProvider(self.server.rpc_url))
        return FLChainClient(w3, self.address, Account.create())


def _create(owner: FLChainClient, config: TaskConfig) -> int:
    params = TaskParams(
        config_digest=config.digest,
        initial_digest=sha(b"initial"),
        min_members=3,
        max_members=8,
        submit_window=WINDOW,
        vote_window=WINDOW,
        quorum_bps=6000,
        max_rounds=10,
    )
    return owner.create_task(params)


def _submit(net: Net, member: FLChainClient, task_id: int, rnd: int, label: str) -> None:
    data = f"update t{task_id} r{rnd} {label}".encode()
    net.blobs[sha(data)] = data
    member.submit(task_id, rnd, sha(data), 100, rnd - 1, encode_loss(0.5))


def _blob(net: Net, label: str) -> bytes:
    data = label.encode()
    net.blobs[sha(data)] = data
    return sha(data)


def _end_submit_phase(net: Net, client: FLChainClient, task_id: int, rnd: int) -> None:
    """Mine a block at the round's submit deadline (the vote phase starts there)."""
    deadline = client.get_round(task_id, rnd).submit_deadline
    net.server.chain.set_next_block_timestamp(deadline)
    net.server.chain.mine()


def _drive(net: Net, owner: FLChainClient, members: list[FLChainClient]) -> None:
    dp_task = _create(owner, DP)
    for i, member in enumerate(members):
        member.join(dp_task, f"dp-{i}".encode(), sha(f"x {i}".encode()))
    for i in (0, 1, 2):
        _submit(net, members[i], dp_task, 1, f"m{i}")
    for i in (0, 1):  # two of three reach the 60% quorum
        members[i].vote(dp_task, 1, sha(b"g1"), bitmap([0, 1, 2]))
    for i in (0, 1):  # member 2 skips round 2
        _submit(net, members[i], dp_task, 2, f"m{i}")
    _end_submit_phase(net, owner, dp_task, 2)
    for i in (0, 1):
        members[i].vote(dp_task, 2, sha(b"g2"), bitmap([0, 1]))
    for i in (0, 1, 2):
        _submit(net, members[i], dp_task, 3, f"m{i}")

    plain_task = _create(owner, NO_DP)
    for i, member in enumerate(members):
        member.join(plain_task, f"plain-{i}".encode(), sha(f"x {i}".encode()))
    for i in (0, 1):
        _submit(net, members[i], plain_task, 1, f"m{i}")

    secure_task = _create(owner, SECURE)
    for i, member in enumerate(members):
        he_key = sha(f"paillier {i}".encode()) if i < 2 else bytes(32)
        member.join(secure_task, f"secure-{i}".encode(), sha(f"x {i}".encode()), he_key)
    for i in (0, 1, 2):
        _submit(net, members[i], secure_task, 1, f"m{i}")
    members[0].publish_sum(secure_task, 1, _blob(net, "sum r1"))
    for i in (0, 1):
        members[i].vote(secure_task, 1, sha(b"g1"), bitmap([0, 1, 2]))
    for i in (0, 1):  # member 2 drops out of round 2
        _submit(net, members[i], secure_task, 2, f"m{i}")
    _end_submit_phase(net, owner, secure_task, 2)
    for i in (0, 1):
        members[i].remask(secure_task, 2, _blob(net, f"remask r2 m{i}"))
    members[1].publish_sum(secure_task, 2, _blob(net, "sum r2"))
    assert (dp_task, plain_task, secure_task) == (1, 2, 3)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    tmp = tmp_path_factory.mktemp("privacy")
    chain = DevChain(GenesisConfig(accounts=4))
    with DevnetServer(chain, port=0) as server:
        keys = [a.private_key_hex for a in derive_accounts(DEFAULT_MNEMONIC, 4)]
        w3 = Web3(Web3.HTTPProvider(server.rpc_url))
        owner = FLChainClient.deploy(w3, Account.from_key(keys[0]))
        members = [FLChainClient(w3, owner.address, Account.from_key(k)) for k in keys[1:]]
        configs = {}
        for task_id, config in ((1, DP), (2, NO_DP), (3, SECURE)):
            configs[task_id] = tmp / f"task-{task_id}.json"
            configs[task_id].write_bytes(config.to_json_bytes())
        net = Net(server, owner.address, configs)
        _drive(net, owner, members)
        yield net
    chain.close()


def eps(config: TaskConfig, rounds: int) -> float:
    return epsilon(config.dp_noise, 1.0, rounds, config.dp_delta)


# ---------------------------------------------------------------- members


def test_member_epsilon_is_the_accountant_for_its_committed_rounds(net: Net) -> None:
    rows = run_json(["members", *net.rpc(1), "--config", str(net.configs[1])])
    assert [r["dp_rounds"] for r in rows] == [3, 3, 2]
    assert [r["epsilon"] for r in rows] == [eps(DP, 3), eps(DP, 3), eps(DP, 2)]
    assert rows[2]["epsilon"] < rows[0]["epsilon"]  # skipping round 2 spent less
    assert all((r["dp_noise"], r["dp_delta"]) == (1.1, 1e-5) for r in rows)
    assert all(r["he_key"] is None for r in rows)


def test_members_without_a_config_have_no_privacy_columns(net: Net) -> None:
    rows = run_json(["members", *net.rpc(1)])
    assert len(rows) == 3
    assert not {"dp_rounds", "epsilon", "dp_delta", "dp_noise"} & set(rows[0])
    table = run(["members", *net.rpc(1)]).output
    assert "epsilon" not in table


def test_members_table_shows_epsilon_and_delta(net: Net) -> None:
    result = run(["members", *net.rpc(1), "--config", str(net.configs[1])])
    assert result.exit_code == 0, result.output
    assert "delta=1e-05" in result.output and "upper bound" in result.output
    assert f"{eps(DP, 3):.3f}" in result.output and f"{eps(DP, 2):.3f}" in result.output


def test_no_dp_noise_means_no_epsilon(net: Net) -> None:
    rows = run_json(["members", *net.rpc(2), "--config", str(net.configs[2])])
    assert [r["dp_rounds"] for r in rows] == [1, 1, 0]
    assert [r["epsilon"] for r in rows] == [None, None, None]
    assert [r["dp_noise"] for r in rows] == [0.0, 0.0, 0.0]
    table = run(["members", *net.rpc(2), "--config", str(net.configs[2])]).output
    assert "no DP" in table
    (round_1,) = run_json(["rounds", *net.rpc(2), "--config", str(net.configs[2])])
    assert round_1["epsilon"] is None


# ---------------------------------------------------------------- rounds


def test_round_epsilon_is_the_worst_case_and_grows(net: Net) -> None:
    rows = run_json(["rounds", *net.rpc(1), "--config", str(net.configs[1])])
    assert [r["epsilon"] for r in rows] == [eps(DP, 1), eps(DP, 2), eps(DP, 3)]
    assert rows[0]["epsilon"] < rows[1]["epsilon"] < rows[2]["epsilon"]
    assert all(r["dp_delta"] == 1e-5 for r in rows)
    table = run(["rounds", *net.rpc(1), "--config", str(net.configs[1])]).output
    assert "delta=1e-05" in table and f"{eps(DP, 3):.3f}" in table


def test_round_detail_gives_each_members_budget_after_that_round(net: Net) -> None:
    detail = run_json(["round", "2", *net.rpc(1), "--config", str(net.configs[1])])
    assert detail["epsilon"] == eps(DP, 2) and detail["dp_delta"] == 1e-5
    budget = [(m["dp_rounds"], m["epsilon"]) for m in detail["members"]]
    assert budget == [(2, eps(DP, 2)), (2, eps(DP, 2)), (1, eps(DP, 1))]
    text = run(["round", "2", *net.rpc(1), "--config", str(net.configs[1])]).output
    assert f"DP budget      epsilon {eps(DP, 2):.3f} at delta=1e-05" in text


def test_export_carries_the_budget(net: Net, tmp_path: Path) -> None:
    out = tmp_path / "ledger.json"
    run_json(["export", *net.rpc(1), "--config", str(net.configs[1]), "--out", str(out)])
    data = json.loads(out.read_text())
    (task,) = data["tasks"]
    assert (task["dp_noise"], task["dp_delta"], task["dp_clip"], task["secure"]) == (
        1.1,
        1e-5,
        1.0,
        False,
    )
    assert [m["epsilon"] for m in data["members"]] == [eps(DP, 3), eps(DP, 3), eps(DP, 2)]
    assert [r["epsilon"] for r in data["rounds"]] == [eps(DP, 1), eps(DP, 2), eps(DP, 3)]


def test_export_all_tasks_applies_the_config_where_it_matches(net: Net, tmp_path: Path) -> None:
    out = tmp_path / "all.json"
    args = ["export", *net.rpc(1), "--all-tasks", "--config", str(net.configs[1])]
    run_json([*args, "--out", str(out)])
    data = json.loads(out.read_text())
    by_task: dict[int, list[Any]] = {}
    for row in data["members"]:
        by_task.setdefault(row["task_id"], []).append(row["epsilon"])
    assert by_task == {1: [eps(DP, 3), eps(DP, 3), eps(DP, 2)], 2: [None] * 3, 3: [None] * 3}
    assert [t["dp_noise"] for t in data["tasks"]] == [1.1, None, None]
    stray = tmp_path / "stray.json"
    stray.write_bytes(TaskConfig(rule="median").to_json_bytes())
    result = run(["export", *net.rpc(1), "--all-tasks", "--config", str(stray), "--out", "-"])
    assert result.exit_code == 1 and "matches no exported task" in result.output


# ---------------------------------------------------------------- the config must match


def test_a_config_of_another_task_is_refused_naming_both_digests(net: Net) -> None:
    for command in (["members"], ["rounds"], ["round", "1"]):
        result = run([*command, *net.rpc(1), "--config", str(net.configs[2])])
        assert result.exit_code == 1, command
        assert f"is not task 1's config: it hashes to {hx(NO_DP.digest)}" in result.output
        assert f"the config digest on chain is {hx(DP.digest)}" in result.output
        assert "Traceback" not in result.output


def test_load_task_privacy_checks_digest_and_content(net: Net) -> None:
    task = net.client().get_task(1)
    privacy = load_task_privacy(DP.to_json_bytes(), task, "dp.json")
    assert (privacy.dp_noise, privacy.dp_delta, privacy.secure) == (1.1, 1e-5, False)
    assert privacy.epsilon(0) == 0.0
    # Same settings, other bytes (indented): not what the task committed to.
    pretty = json.dumps(json.loads(DP.to_json_bytes()), indent=2).encode()
    with pytest.raises(ConfigMismatchError, match="is not task 1's config"):
        load_task_privacy(pretty, task, "pretty.json")


# ---------------------------------------------------------------- --devnet


def _fake_devnet(net: Net, root: Path, task_id: int, config: bytes | None) -> Path:
    nodes = []
    for i in range(2):
        node = root / f"node-{i}"
        node.mkdir(parents=True)
        nodes.append({"name": f"node-{i}", "dir": str(node)})
    if config is not None:
        (root / "node-0" / "task-config.json").write_bytes(config)
    spec = {"rpc_url": net.server.rpc_url, "contract": net.address, "task_id": task_id}
    (root / "devnet.json").write_text(json.dumps({**spec, "nodes": nodes}))
    return root


def test_devnet_reads_the_first_nodes_task_config(net: Net, tmp_path: Path) -> None:
    devnet = _fake_devnet(net, tmp_path / "devnet", 1, DP.to_json_bytes())
    rows = run_json(["members", "--devnet", str(devnet)])
    assert [r["epsilon"] for r in rows] == [eps(DP, 3), eps(DP, 3), eps(DP, 2)]
    # Another task of the same contract: the devnet's config is not its config.
    rows = run_json(["members", "--devnet", str(devnet), "--task", "2"])
    assert "epsilon" not in rows[0]
    # --config wins over the devnet's file.
    args = ["members", "--devnet", str(devnet), "--task", "2", "--config", str(net.configs[2])]
    rows = run_json(args)
    assert [r["dp_rounds"] for r in rows] == [1, 1, 0]


def test_devnet_without_a_config_and_with_a_wrong_one(net: Net, tmp_path: Path) -> None:
    bare = _fake_devnet(net, tmp_path / "bare", 1, None)
    assert "epsilon" not in run_json(["rounds", "--devnet", str(bare)])[0]
    wrong = _fake_devnet(net, tmp_path / "wrong", 1, NO_DP.to_json_bytes())
    result = run(["rounds", "--devnet", str(wrong)])
    assert result.exit_code == 1
    assert "task-config.json is not task 1's config" in result.output
    assert hx(NO_DP.digest) in result.output and hx(DP.digest) in result.output


# ---------------------------------------------------------------- secure mode


def test_rounds_json_carries_decryptor_remasked_and_sum(net: Net) -> None:
    r1, r2 = run_json(["rounds", *net.rpc(3)])
    assert (r1["decryptor"], r1["remasked"], r1["sum_digest"]) == (0, [], hx(sha(b"sum r1")))
    assert (r2["decryptor"], r2["remasked"], r2["sum_digest"]) == (1, [0, 1], hx(sha(b"sum r2")))
    assert r1["status"] == "finalized" and r2["status"] == "voting"
    # A plain task's rounds have none of it.
    plain = run_json(["rounds", *net.rpc(1)])
    assert {(r["decryptor"], r["sum_digest"]) for r in plain} == {(None, None)}
    assert all(r["remasked"] == [] for r in plain)


def test_members_show_who_registered_a_paillier_key(net: Net) -> None:
    rows = run_json(["members", *net.rpc(3)])
    assert [r["he_key"] for r in rows] == [
        hx(sha(b"paillier 0")),
        hx(sha(b"paillier 1")),
        None,
    ]
    table = run(["members", *net.rpc(3)]).output
    assert "Paillier key" in table


def test_round_detail_shows_the_secure_facts(net: Net) -> None:
    detail = run_json(["round", "2", *net.rpc(3), "--config", str(net.configs[3])])
    assert (detail["decryptor"], detail["remasked"]) == (1, [0, 1])
    remasks = [m["remask_digest"] for m in detail["members"]]
    assert remasks == [hx(sha(b"remask r2 m0")), hx(sha(b"remask r2 m1")), None]
    assert [m["epsilon"] for m in detail["members"]] == [
        eps(SECURE, 2),
        eps(SECURE, 2),
        eps(SECURE, 1),
    ]
    # The sum digest on chain is enough to show them, config or not.
    text = run(["round", "2", *net.rpc(3)]).output
    assert "decryptor      #1 0x" in text
    assert "re-masked      #0, #1" in text
    assert f"sum digest     {hx(sha(b'sum r2'))}" in text
    plain = run(["round", "1", *net.rpc(1)]).output
    assert "decryptor" not in plain
    rounds = run(["rounds", *net.rpc(3)]).output
    assert "Secure aggregation" in rounds and hx(sha(b"sum r2")) in rounds
    assert "Secure aggregation" not in run(["rounds", *net.rpc(1)]).output


def test_verify_rehashes_sum_and_remask_blobs(net: Net, tmp_path: Path) -> None:
    store = tmp_path / "blobs"
    store.mkdir()
    for digest, data in net.blobs.items():
        (store / digest.hex()).write_bytes(data)
    report = run_json(["verify", *net.rpc(3), "--blobs", str(store)])
    checks = {(c["kind"], c["round"], c["member"]): c["status"] for c in report["checks"]}
    assert checks[("sum", 1, 0)] == checks[("sum", 2, 1)] == "ok"
    assert checks[("remask", 2, 0)] == checks[("remask", 2, 1)] == "ok"
    (store / sha(b"sum r2").hex()).write_bytes(b"a forged sum")
    result = run(["verify", *net.rpc(3), "--blobs", str(store), "--json"])
    assert result.exit_code == 1
    bad = [c for c in json.loads(result.output)["checks"] if c["status"] == "mismatch"]
    assert [(c["kind"], c["round"]) for c in bad] == [("sum", 2)]


def test_rebuilt_ledger_matches_the_client_views(net: Net) -> None:
    client = net.client()
    book = rebuild_ledger(client, 3)
    assert [r.decryptor for r in book.rounds] == [client.decryptor(3, 1), client.decryptor(3, 2)]
    assert book.rounds[1].remasks == tuple((i, client.get_remask(3, 2, i)) for i in (0, 1))
    assert [m.has_he_key for m in book.members] == [True, True, False]
