"""`flchain simulate` as a user runs it: table, --json, --plot, --save-model and clear errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from click.testing import CliRunner

from flchain.cli import cli

FAST = ["simulate", "--nodes", "4", "--rounds", "2", "--model", "logreg"]


def test_json_output_is_machine_readable(tmp_path: Path) -> None:
    model = tmp_path / "model.safetensors"
    plot = tmp_path / "curve.png"
    result = CliRunner().invoke(
        cli,
        [
            *FAST,
            "--byzantine",
            "1",
            "--attack",
            "zero",
            "--rule",
            "median",
            "--json",
            "--plot",
            str(plot),
            "--save-model",
            str(model),
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert len(data["rounds"]) == 2
    assert data["config"]["rule"] == "median"
    assert data["config"]["attack"] == "zero"
    assert len(data["byzantine_ids"]) == 1
    assert data["model_sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_table_output_names_the_setting_and_the_final_accuracy() -> None:
    result = CliRunner().invoke(cli, [*FAST, "--rule", "trimmed_mean", "--beta", "0.25"])
    assert result.exit_code == 0, result.output
    assert "rule trimmed_mean" in result.stdout
    assert "final accuracy" in result.stdout


def test_rule_and_attack_parameters_reach_the_run() -> None:
    result = CliRunner().invoke(
        cli,
        [
            *FAST,
            "--byzantine",
            "1",
            "--attack",
            "scale",
            "--attack-param",
            "factor=3",
            "--nodes",
            "5",  # multikrum with f = 1 needs n > 2f + 2
            "--rule",
            "multikrum",
            "--f",
            "1",
            "--m",
            "2",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    config = json.loads(result.stdout)["config"]
    assert config["rule_params"] == {"f": 1, "m": 2}
    assert config["attack_params"] == {"factor": 3}


def test_bad_input_is_a_usage_error_not_a_traceback() -> None:
    runner = CliRunner()
    missing_attack = runner.invoke(cli, [*FAST, "--byzantine", "1"])
    assert missing_attack.exit_code == 2
    assert "--attack" in missing_attack.output
    bad_pair = runner.invoke(cli, [*FAST, "--rule-param", "oops"])
    assert bad_pair.exit_code == 2
    assert "KEY=VALUE" in bad_pair.output
    bad_rule = runner.invoke(cli, [*FAST, "--rule", "nope"])
    assert bad_rule.exit_code == 2


def test_help_lists_rules_and_attacks() -> None:
    result = CliRunner().invoke(cli, ["simulate", "--help"])
    assert result.exit_code == 0
    for name in ("multikrum", "sageflow", "siren", "alie", "backdoor", "--stragglers"):
        assert name in result.output
