"""The committed FLChain.json is exactly what the installed Vyper makes of FLChain.vy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import vyper

from flchain.contracts import ArtifactError, load_artifact
from flchain.contracts.artifact import parse_artifact, sha256_hex, source_text
from flchain.contracts.build import ARTIFACT_PATH, artifact_drift, compile_artifact, main, render

ENTRY_POINTS = {
    "create_task",
    "set_allowed",
    "join",
    "submit",
    "vote",
    "close_round",
    "raise_alarm",
    "close_task",
    "withdraw",
    "claim_slashed",
}


@pytest.fixture(scope="module")
def fresh() -> dict:
    return compile_artifact()


def test_committed_artifact_matches_a_fresh_compile(fresh: dict) -> None:
    assert artifact_drift() == []
    assert ARTIFACT_PATH.read_text(encoding="utf-8") == render(fresh)
    art = load_artifact()
    assert art.bytecode == fresh["bytecode"]
    assert art.abi == fresh["abi"]
    assert art.source_sha256 == sha256_hex(source_text())
    assert art.vyper_version == vyper.__version__


def test_artifact_exposes_every_entry_point_as_a_transaction() -> None:
    functions = {i["name"]: i for i in load_artifact().abi if i["type"] == "function"}
    assert set(functions) >= ENTRY_POINTS
    for name in ENTRY_POINTS:
        expected = "payable" if name == "join" else "nonpayable"
        assert functions[name]["stateMutability"] == expected, name


def test_check_fails_when_the_artifact_drifts(
    tmp_path: Path, fresh: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The compile itself is covered above; here only the comparison logic runs.
    monkeypatch.setattr("flchain.contracts.build.compile_artifact", lambda: fresh)
    path = tmp_path / "FLChain.json"
    assert main(["--check", "--out", str(path)]) == 1  # missing
    assert main(["--out", str(path)]) == 0
    assert main(["--check", "--out", str(path)]) == 0
    stale = dict(fresh, bytecode=fresh["bytecode"][:-2] + "00")
    path.write_text(render(stale), encoding="utf-8")
    assert main(["--check", "--out", str(path)]) == 1
    assert artifact_drift(path) == ["bytecode differs"]
    path.write_text(json.dumps(fresh), encoding="utf-8")  # same data, not canonical text
    assert artifact_drift(path) == ["formatting differs from the canonical rendering"]


def test_a_source_change_changes_the_recorded_hash(fresh: dict) -> None:
    edited = compile_artifact(source_text() + "\n# an edit\n")
    assert edited["sourceSha256"] != fresh["sourceSha256"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not valid JSON"),
        ('{"abi": []}', "exactly the keys"),
        (
            '{"abi": [], "bytecode": "6000", "contractName": "F", "sourceSha256": "", '
            '"vyperVersion": ""}',
            "0x-prefixed",
        ),
        (
            '{"abi": {}, "bytecode": "0x6000", "contractName": "F", "sourceSha256": "", '
            '"vyperVersion": ""}',
            "abi must be a list",
        ),
    ],
)
def test_malformed_artifacts_are_rejected(text: str, message: str) -> None:
    with pytest.raises(ArtifactError, match=message):
        parse_artifact(text)
