"""Rule facts as the commands read them: --rule-param everywhere, invalid f refused clearly,
the devnet's automatic f within the rule's bound. Fast: nothing is trained or started."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from flchain.cli import cli
from flchain.config import ConfigError, SimulationConfig
from flchain.devnet import launcher
from flchain.devnet.launcher import DevnetError, DevnetPlan, auto_f, tolerance_warning
from flchain.taskconfig import TaskConfig, TaskConfigError


@pytest.fixture
def planned(monkeypatch: pytest.MonkeyPatch) -> list[DevnetPlan]:
    """`devnet up` stops right after planning: the plan is captured, nothing starts."""
    plans: list[DevnetPlan] = []

    def fake_up(plan: DevnetPlan, **_: object) -> dict:
        plans.append(plan)
        raise DevnetError("not started in this test")

    monkeypatch.setattr(launcher, "up", fake_up)
    return plans


def _devnet(tmp_path: Path, *args: str):
    return CliRunner().invoke(cli, ["devnet", "up", "--dir", str(tmp_path), *args])


def test_every_command_with_rule_takes_rule_param(tmp_path: Path, planned: list) -> None:
    for command in (["simulate"], ["devnet", "up"], ["task", "config"]):
        result = CliRunner().invoke(cli, [*command, "--help"])
        assert result.exit_code == 0 and "--rule-param" in result.output, command
    result = _devnet(tmp_path, "--rule", "multikrum", "--nodes", "7", "--rule-param", "m=3")
    assert "not started in this test" in result.output
    assert planned[-1].task_config().rule_params == {"f": 1, "m": 3}  # f: automatic
    _devnet(tmp_path, "--rule", "trimmed_mean", "--rule-param", "beta=2/7", "--nodes", "7")
    assert planned[-1].task_config().rule_params == {"beta": "2/7"}
    out = tmp_path / "task.json"
    made = CliRunner().invoke(
        cli, ["task", "config", "--out", str(out), "--rule", "trimmed_mean", "--rule-param",
              "beta=2/7", "--model", "logreg"]
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    assert TaskConfig.from_file(out).rule_params == {"beta": "2/7"}


def test_devnet_up_refuses_invalid_rule_settings_clearly(tmp_path: Path, planned: list) -> None:
    bad_f = _devnet(tmp_path, "--nodes", "4", "--rule", "krum", "--f", "1")
    assert bad_f.exit_code == 2
    assert "n > 2f + 2" in bad_f.output and "f can be at most 0" in bad_f.output
    bad_name = _devnet(tmp_path, "--rule", "multikrum", "--rule-param", "k=2")
    assert bad_name.exit_code == 2 and "its parameters: f, m" in bad_name.output
    bad_beta = _devnet(tmp_path, "--rule", "trimmed_mean", "--rule-param", "beta=0.1")
    assert bad_beta.exit_code == 2
    assert "i.e. nothing: use beta >= 1/4" in bad_beta.output
    secure = _devnet(tmp_path, "--secure", "--rule", "median")
    assert secure.exit_code == 2 and "--secure runs fedavg" in secure.output
    assert planned == []


def test_devnet_automatic_f_respects_the_rules_bound(tmp_path: Path, planned: list) -> None:
    assert [auto_f("multikrum", n, 1) for n in (3, 4, 5, 6, 7)] == [0, 0, 1, 1, 1]
    assert [auto_f("krum", 10, b) for b in (0, 2, 3, 5)] == [1, 2, 3, 3]
    assert [auto_f("bulyan", n, 2) for n in (6, 7, 11)] == [0, 1, 2]
    assert auto_f("trimmed_mean", 4, 0) == 1  # the 4-node devnet trims one per side
    result = _devnet(tmp_path, "--nodes", "4", "--byzantine", "1", "--attack", "signflip")
    assert planned[-1].task_config().rule_params == {"f": 0}  # multikrum: n > 2f + 2
    assert "tolerates at most 0 Byzantine of 4 nodes, not 1" in result.output
    assert "--nodes 5 or more" in result.output
    five = DevnetPlan(directory=tmp_path, nodes=5, byzantine=1, attacks=("signflip",))
    assert five.task_config().rule_params == {"f": 1} and tolerance_warning(five) is None


def test_simulate_and_configs_check_rule_values() -> None:
    result = CliRunner().invoke(
        cli, ["simulate", "--nodes", "4", "--rule", "multikrum", "--f", "1", "--rounds", "1"]
    )
    assert result.exit_code == 2
    assert "multikrum needs n > 2f + 2 (Blanchard et al. 2017)" in result.output
    with pytest.raises(ConfigError, match=r"beta=0.1 trims .* nothing"):
        SimulationConfig(nodes=4, rule="trimmed_mean", rule_params={"beta": 0.1})
    assert SimulationConfig(nodes=7, rule="trimmed_mean", rule_params={"beta": "2/7"})
    with pytest.raises(TaskConfigError, match="krum f must be >= 0"):
        TaskConfig(rule="krum", rule_params={"f": -1})
    with pytest.raises(TaskConfigError, match=r"has no parameter.*it takes: beta, f"):
        TaskConfig(rule="trimmed_mean", rule_params={"m": 1})
    with pytest.raises(TaskConfigError, match="public validation set"):
        TaskConfig(rule="siren")
    with pytest.raises(TaskConfigError, match="secure mode on the network runs fedavg"):
        TaskConfig(rule="siren", secure=True)
