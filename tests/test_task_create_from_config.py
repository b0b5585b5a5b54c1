"""`flchain task create --config task-config.json` without an initial model: the CLI rebuilds
round 0's model from the config exactly as the nodes will, so their check passes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from click.testing import CliRunner

from flchain.commands.contract import contract
from flchain.commands.task import task
from flchain.devnet.accounts import DEFAULT_MNEMONIC, derive_accounts
from flchain.devnet.chain import DevChain
from flchain.devnet.genesis import GenesisConfig
from flchain.devnet.rpc_server import DevnetServer
from flchain.node.learner import Learner
from flchain.taskconfig import DataSpec, TaskConfig, build_task_config


def test_initial_digest_is_derived_from_a_task_config(tmp_path: Path) -> None:
    config = TaskConfig(model="logreg", rule="median", seed=7, max_samples=500)
    path = tmp_path / "task-config.json"
    path.write_bytes(config.to_json_bytes())
    # SageFlow names its public validation set (and that set's digest) in the config.
    sageflow = build_task_config(model="logreg", rule="sageflow", seed=7)
    sageflow_path = tmp_path / "sageflow.json"
    sageflow_path.write_bytes(sageflow.to_json_bytes())
    not_a_config = tmp_path / "other.json"
    not_a_config.write_bytes(b'{"rule": "multikrum", "color": "red"}')
    runner = CliRunner()
    with DevnetServer(DevChain(GenesisConfig(accounts=1)), port=0) as server:
        key = derive_accounts(DEFAULT_MNEMONIC, 1)[0].private_key_hex
        rpc = ["--rpc", server.rpc_url, "--key", key]
        deployed = json.loads(runner.invoke(contract, ["deploy", *rpc, "--json"]).output)
        base = ["create", *rpc, "--contract", deployed["address"], "--json"]
        result = runner.invoke(task, [*base, "--config", str(path)])
        assert result.exit_code == 0, result.output
        created = json.loads(result.output)
        with_public_set = runner.invoke(task, [*base, "--config", str(sageflow_path)])
        refused = runner.invoke(task, [*base, "--config", str(not_a_config)])
        contradicted = runner.invoke(task, [*base, "--config", str(path), "--max-samples", "9"])
        # Not a flchain config: the cap is --max-samples (or the default), as for a digest.
        other = runner.invoke(
            task, [*base, "--config-digest", "0x" + "ab" * 32, "--model-digest", "0x" + "cd" * 32]
        )
    learner = Learner(config, DataSpec("digits"), device="cpu")
    expected = hashlib.sha256(learner.initial_model()).hexdigest()
    assert created["initial_digest"] == "0x" + expected
    assert created["config_digest"] == "0x" + config.digest.hex()
    assert created["max_samples"] == 500  # the cap the nodes assume goes on chain
    assert with_public_set.exit_code == 0, with_public_set.output
    on_chain = json.loads(with_public_set.output)
    assert (
        on_chain["config_digest"] == "0x" + hashlib.sha256(sageflow_path.read_bytes()).hexdigest()
    )
    assert sageflow.public_data is not None
    assert sageflow.public_data["sha256"].encode() in sageflow_path.read_bytes()
    node = Learner(sageflow, DataSpec("digits", 0, 2), device="cpu")  # checks the set's digest
    assert on_chain["initial_digest"] == "0x" + hashlib.sha256(node.initial_model()).hexdigest()
    assert contradicted.exit_code == 2
    assert "contradicts" in contradicted.output
    assert json.loads(other.output)["max_samples"] == 10_000
    assert refused.exit_code == 2
    assert "not a flchain task config" in refused.output
    assert "--model-digest" in refused.output


def test_task_config_writes_the_file_nodes_check_and_prints_its_digests(tmp_path: Path) -> None:
    out = tmp_path / "task-config.json"
    result = CliRunner().invoke(
        task,
        [
            "config",
            "--out",
            str(out),
            "--model",
            "mlp",
            "--rule",
            "krum",
            "--rule-param",
            "f=1",
            "--dp-clip",
            "1.5",
            "--dp-noise",
            "0.3",
            "--max-samples",
            "0",
            "--robust-weights",
            "consensus",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    config = TaskConfig.from_json_bytes(out.read_bytes())
    assert (config.model, config.rule, config.rule_params) == ("mlp", "krum", {"f": 1})
    assert (config.dp_clip, config.dp_noise) == (1.5, 0.3)
    assert (config.max_samples, config.robust_weights) == (0, "consensus")
    assert info["config_digest"] == "0x" + hashlib.sha256(out.read_bytes()).hexdigest()
    learner = Learner(config, DataSpec("digits"), device="cpu")
    assert info["initial_digest"] == "0x" + hashlib.sha256(learner.initial_model()).hexdigest()
    bad = CliRunner().invoke(
        task, ["config", "--out", str(out), "--rule", "median", "--rule-param", "f=1"]
    )
    assert bad.exit_code == 2
    assert "has no parameter" in bad.output
