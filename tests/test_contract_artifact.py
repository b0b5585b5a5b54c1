"""The committed FLChain.json is exactly what the installed Vyper makes of the contract's
three sources (FLChain.vy, FLChainSettlement.vy, FLChainCore.vy), within the code budget."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import vyper
from eth_abi import decode as abi_decode

from flchain.contracts import ArtifactError, load_artifact
from flchain.contracts.artifact import (
    CODE_BUDGET,
    SETTLEMENT_FILE,
    SOURCE_FILE,
    SOURCE_FILES,
    parse_artifact,
    source_texts,
    sources_sha256,
)
from flchain.contracts.build import ARTIFACT_PATH, artifact_drift, compile_artifact, main, render

# Every transaction entry point and its state mutability: value goes with a task's reward
# (create_task, fund_task) and a member's stake (join), nowhere else.
ENTRY_POINTS = {
    "create_task": "payable",
    "fund_task": "payable",
    "join": "payable",
    "set_allowed": "nonpayable",
    "submit": "nonpayable",
    "vote": "nonpayable",
    "remask": "nonpayable",
    "publish_sum": "nonpayable",
    "close_round": "nonpayable",
    "raise_alarm": "nonpayable",
    "close_task": "nonpayable",
    "withdraw": "nonpayable",
    "claim_refund": "nonpayable",
}


@pytest.fixture(scope="module")
def fresh() -> dict:
    return compile_artifact()


def test_committed_artifact_matches_a_fresh_compile(
    fresh: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("flchain.contracts.build.compile_artifact", lambda: fresh)
    assert artifact_drift() == []
    assert ARTIFACT_PATH.read_text(encoding="utf-8") == render(fresh)
    art = load_artifact()
    assert art.bytecode == fresh["bytecode"]
    assert art.settlement_bytecode == fresh["settlementBytecode"]
    assert art.abi == fresh["abi"]
    assert art.runtime_sizes == fresh["runtimeSizes"]
    assert art.source_sha256 == sources_sha256(source_texts())
    assert art.vyper_version == vyper.__version__


def test_both_pieces_fit_the_code_budget() -> None:
    assert CODE_BUDGET == 24_576 * 3 // 4  # EIP-170's limit, with a quarter to spare
    sizes = load_artifact().runtime_sizes
    assert set(sizes) == {SOURCE_FILE, SETTLEMENT_FILE}
    for name, size in sizes.items():
        assert 0 < size <= CODE_BUDGET, name


def test_artifact_exposes_every_entry_point_as_a_transaction() -> None:
    abi = load_artifact().abi
    functions = {i["name"]: i for i in abi if i["type"] == "function"}
    for name, mutability in ENTRY_POINTS.items():
        assert functions[name]["stateMutability"] == mutability, name
    # Gone with the reward pool, or reachable only from FLChain's own vote.
    assert not {"claim_slashed", "finalize_round"} & set(functions)
    # The settlement's events are FLChain's (delegatecall logs at FLChain's address).
    events = {i["name"]: [x["name"] for x in i["inputs"]] for i in abi if i["type"] == "event"}
    assert not {"StakeWithdrawn", "SlashedClaimed"} & set(events)
    assert events["Withdrawn"] == ["task_id", "account", "member", "stake", "reward"]
    assert events["RefundClaimed"] == ["task_id", "owner", "amount"]
    assert events["RewardFunded"] == ["task_id", "funder", "amount", "reward_pool"]
    assert events["RoundPaid"] == ["task_id", "round", "paid", "share", "reward_pool"]
    assert events["MemberEjected"][-2:] == ["reputation", "forfeited"]
    assert events["RoundReverted"][-1] == "clawed_back"


def test_deploy_data_is_the_bytecode_then_the_settlement_code_abi_encoded() -> None:
    art = load_artifact()
    data = art.deploy_data()
    assert data.startswith(art.bytecode)
    arg = bytes.fromhex(data[len(art.bytecode) :])
    assert len(arg) % 32 == 0
    assert abi_decode(["bytes"], arg) == (bytes.fromhex(art.settlement_bytecode[2:]),)


def test_check_fails_when_the_artifact_drifts(
    tmp_path: Path, fresh: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The compile itself is covered above; here only the comparison logic runs.
    monkeypatch.setattr("flchain.contracts.build.compile_artifact", lambda: fresh)
    path = tmp_path / "FLChain.json"
    assert main(["--check", "--out", str(path)]) == 1  # missing
    assert main(["--out", str(path)]) == 0
    assert main(["--check", "--out", str(path)]) == 0
    stale = dict(fresh, settlementBytecode=fresh["settlementBytecode"][:-2] + "00")
    path.write_text(render(stale), encoding="utf-8")
    assert main(["--check", "--out", str(path)]) == 1
    assert artifact_drift(path) == ["settlementBytecode differs"]
    path.write_text(json.dumps(fresh), encoding="utf-8")  # same data, not canonical text
    assert artifact_drift(path) == ["formatting differs from the canonical rendering"]


def test_a_change_to_any_source_changes_the_recorded_hash() -> None:
    texts = source_texts()
    assert set(texts) == set(SOURCE_FILES)
    base = sources_sha256(texts)
    hashes = {base}
    for name in SOURCE_FILES:
        hashes.add(sources_sha256(dict(texts, **{name: texts[name] + "\n# an edit\n"})))
    assert len(hashes) == 1 + len(SOURCE_FILES)
    # Each file is hashed under its name: moving text from one file to the next is a change.
    first, second = SOURCE_FILES[:2]
    moved = dict(texts, **{first: texts[first] + "#", second: texts[second][1:]})
    assert texts[second][0] == "#"  # every source starts with its pragma comment
    assert sources_sha256(moved) != base


def test_the_build_refuses_pieces_that_lay_out_storage_differently() -> None:
    texts = source_texts()
    anchor = "initializes: store\n"
    assert anchor in texts[SOURCE_FILE]
    texts[SOURCE_FILE] = texts[SOURCE_FILE].replace(anchor, anchor + "\nextra: uint256\n", 1)
    with pytest.raises(ArtifactError, match="lay out storage differently"):
        compile_artifact(texts)


def test_the_build_refuses_a_piece_over_the_code_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """The budget check alone, on stand-in compiler output (a real compile is above)."""
    sizes = {SOURCE_FILE: CODE_BUDGET, SETTLEMENT_FILE: CODE_BUDGET}

    def fake_compile(_vyper: Any, _root: Path, name: str, _formats: list[str]) -> dict:
        return {
            "abi": [],
            "bytecode": "0x00",
            "bytecode_runtime": "0x" + "00" * sizes[name],
            "layout": {"storage_layout": {}},
        }

    monkeypatch.setattr("flchain.contracts.build._compile", fake_compile)
    edited = dict(source_texts(), **{SETTLEMENT_FILE: "# pragma version ~=0.4.3\n"})
    built = compile_artifact(edited)  # exactly the budget: accepted
    assert built["runtimeSizes"] == sizes
    assert built["sourceSha256"] == sources_sha256(edited)  # the sources it was given
    sizes[SETTLEMENT_FILE] += 1
    with pytest.raises(ArtifactError, match=f"{SETTLEMENT_FILE} compiles to .* over the budget"):
        compile_artifact(edited)


def _artifact_json(**overrides: object) -> str:
    data: dict[str, object] = {
        "abi": [],
        "bytecode": "0x6000",
        "contractName": "F",
        "runtimeSizes": {},
        "settlementBytecode": "0x6000",
        "sourceSha256": "",
        "vyperVersion": "",
    }
    data.update(overrides)
    return json.dumps(data)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not valid JSON"),
        ('{"abi": []}', "exactly the keys"),
        (_artifact_json(bytecode="6000"), "bytecode must be a 0x-prefixed hex string"),
        (_artifact_json(settlementBytecode="0xzz"), "settlementBytecode must be a 0x-prefixed"),
        (_artifact_json(settlementBytecode="0x600"), "settlementBytecode must be a 0x-prefixed"),
        (_artifact_json(abi={}), "abi must be a list"),
        (_artifact_json(runtimeSizes=[1, 2]), "runtimeSizes must map names to byte counts"),
        (_artifact_json(runtimeSizes={"F": "1"}), "runtimeSizes must map names to byte counts"),
    ],
)
def test_malformed_artifacts_are_rejected(text: str, message: str) -> None:
    with pytest.raises(ArtifactError, match=message):
        parse_artifact(text)


def test_a_well_formed_artifact_parses() -> None:
    art = parse_artifact(_artifact_json(runtimeSizes={"F": 2}))
    assert (art.bytecode, art.settlement_bytecode, art.runtime_sizes) == (
        "0x6000",
        "0x6000",
        {"F": 2},
    )
