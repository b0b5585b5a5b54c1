"""Unit tests of `flchain.contracts.ledger` on hand-built chain values (no chain needed).

The end-to-end reading of a real chain is in test_contract_cli.py.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from flchain.contracts.ledger import (
    ConfigMismatchError,
    Ledger,
    LedgerError,
    MemberRecord,
    RoundRecord,
    TaskPrivacy,
    UnknownRoundError,
    UpdateRecord,
    VoteRecord,
    count_commits,
    format_peer_id,
    funded_wei,
    ledger_digests,
    ledger_tables,
    load_task_privacy,
    member_money,
    member_row,
    penalty_text,
    plain,
    reputation_history,
    reputation_moves,
    round_detail,
    round_row,
    round_status,
    sha256_file,
    slash_records,
    transfer_records,
    verify_blobs,
)
from flchain.contracts.types import RoundInfo, RoundStatus, TaskInfo, TaskStatus, bitmap
from flchain.crypto.dp import epsilon


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


INITIAL, G1, U0, U1 = sha(b"initial"), sha(b"global 1"), sha(b"update 0"), sha(b"update 1")
OWNER = "0x" + "11" * 20


def round_info(**overrides: Any) -> RoundInfo:
    base = RoundInfo(
        task_id=1,
        round=1,
        status=RoundStatus.OPEN,
        start=1000,
        submit_deadline=1600,
        vote_deadline=1900,
        finalized_at=0,
        base_digest=INITIAL,
        base_round=0,
        global_digest=bytes(32),
        accepted=0,
        eligible=bitmap([0, 1, 2]),
        submitted=0,
        voted=0,
        alarmed=0,
        alarm_weight=0,
        total_reputation=3000,
        quorum_bps=6667,
    )
    return replace(base, **overrides)


def task_info(**overrides: Any) -> TaskInfo:
    base = TaskInfo(
        task_id=1,
        owner="0x" + "11" * 20,
        status=TaskStatus.RUNNING,
        config_digest=sha(b"config"),
        initial_digest=INITIAL,
        global_digest=G1,
        global_round=1,
        min_members=2,
        max_members=8,
        submit_window=600,
        vote_window=300,
        alarm_window=0,
        quorum_bps=6667,
        alarm_bps=5000,
        stake=0,
        max_rounds=10,
        rep_floor=0,
        allowlist=False,
        max_samples=10_000,
        current_round=2,
        round_start=2000,
        n_members=2,
        n_active=2,
        total_reputation=2000,
        reward_pool=0,
        rewards_paid=0,
        slashed=0,
        settled=False,
    )
    return replace(base, **overrides)


def member(index: int, reputation: int, since_round: int = 1) -> MemberRecord:
    return MemberRecord(
        index=index,
        account="0x" + f"{index:040x}",
        peer_id=f"peer-{index}".encode(),
        x25519=sha(b"x"),
        status="active",
        since_round=since_round,
        reputation=reputation,
        stake_wei=0,
    )


def round_record(number: int, **overrides: Any) -> RoundRecord:
    base = RoundRecord(
        round=number,
        status="open",
        start=1000,
        submit_deadline=1600,
        vote_deadline=1900,
        finalized_at=None,
        base_digest=INITIAL,
        base_round=0,
        global_digest=None,
        accepted=None,
        eligible=(0, 1),
        submitted=(),
        voted=(),
        alarmed=(),
        alarm_weight=0,
        total_reputation=2000,
        quorum_bps=6667,
        final_tally=None,
        fail_reason=None,
        updates=(),
        votes=(),
        tallies=(),
        alarms=(),
    )
    return replace(base, **overrides)


def update(number: int, index: int, digest: bytes, verdict: str | None) -> UpdateRecord:
    return UpdateRecord(number, index, digest, 10, number - 1, 0.5, verdict)


def ledger_of(rounds: list[RoundRecord], events: list[dict[str, Any]] | None = None) -> Ledger:
    return Ledger(
        contract="0x" + "22" * 20,
        chain_id=31337,
        head_block=50,
        now=5000,
        task=task_info(current_round=len(rounds)),
        members=(member(0, 1020), member(1, 950)),
        rounds=tuple(rounds),
        events=tuple(events or []),
    )


FINALIZED_ROUND_1 = round_record(
    1,
    status="finalized",
    finalized_at=1200,
    global_digest=G1,
    accepted=(0,),
    submitted=(0, 1),
    voted=(0, 1),
    updates=(update(1, 0, U0, "accepted"), update(1, 1, U1, "rejected")),
    votes=(
        VoteRecord(1, 0, G1, (0,), 1000, 7, "0xaa"),
        VoteRecord(1, 1, G1, (0,), 1000, 8, "0xbb"),
    ),
    final_tally=2000,
)


# ---------------------------------------------------------------- round status


@pytest.mark.parametrize(
    ("overrides", "now", "expected"),
    [
        ({}, 1000, "open"),
        ({"submitted": bitmap([0, 1])}, 1599, "open"),  # one eligible member still to commit
        ({"submitted": bitmap([0, 1, 2])}, 1001, "voting"),  # everyone committed: vote early
        ({}, 1600, "voting"),  # submit window over
        ({"submitted": bitmap([0]), "voted": bitmap([0])}, 1899, "voting"),
        ({}, 1900, "stalled"),  # vote window over without quorum: anyone may close it
        ({"submitted": bitmap([0, 1, 2]), "voted": bitmap([0, 1, 2])}, 1100, "stalled"),
        ({"status": RoundStatus.FINALIZED}, 1000, "finalized"),
        ({"status": RoundStatus.FAILED}, 1000, "failed"),
        ({"status": RoundStatus.REVERTED}, 1000, "reverted"),
        ({"status": RoundStatus.ABORTED}, 99999, "aborted"),
    ],
)
def test_round_status_splits_open_rounds_by_phase(
    overrides: dict[str, Any], now: int, expected: str
) -> None:
    assert round_status(round_info(**overrides), now) == expected


# ---------------------------------------------------------------- formatting


def test_peer_ids_print_as_libp2p_does() -> None:
    ed25519 = bytes.fromhex("002408011220") + bytes(32)
    assert format_peer_id(ed25519) == "12D3KooW9pNAk8aiBuGVQtWRdbkLmo5qVL3e2h5UxbN2Nz9ttwiw"
    sha256_multihash = bytes.fromhex("1220") + bytes(32)
    assert format_peer_id(sha256_multihash) == "QmNLei78zWmzUdbeRB3CiUfAizWUrbeeZh5K1rhAQKCh51"
    assert format_peer_id(b"peer-7") == "peer-7"
    assert format_peer_id(b"\x01\xff") == "0x01ff"
    assert format_peer_id(b"has space") == "0x" + b"has space".hex()  # not one token
    # A multihash prefix whose length byte does not match the data is not a multihash.
    assert format_peer_id(bytes.fromhex("1220") + bytes(31)) == "0x1220" + "00" * 31


def test_plain_makes_json_ready_values() -> None:
    value = {"s": RoundStatus.REVERTED, "d": b"\x01\x02", "t": (1, [b"\xff"]), 3: None}
    assert plain(value) == {"s": "reverted", "d": "0x0102", "t": [1, ["0xff"]], "3": None}
    assert plain(update(2, 1, U1, None)) == {
        "round": 2,
        "member": 1,
        "digest": "0x" + U1.hex(),
        "samples": 10,
        "base_round": 1,
        "loss": 0.5,
        "verdict": None,
    }


# ---------------------------------------------------------------- records


def test_round_counts_and_quorum_weight() -> None:
    assert (FINALIZED_ROUND_1.n_accepted, FINALIZED_ROUND_1.n_rejected) == (1, 1)
    assert (round_record(2).n_accepted, round_record(2).n_rejected) == (None, None)
    # 6667 bps of 2000 is 1333.4: a pair needs 1334 (the contract's tally * BPS >= quorum).
    assert FINALIZED_ROUND_1.quorum_weight == 1334
    assert round_record(1, quorum_bps=6000, total_reputation=4000).quorum_weight == 2400


def test_ledger_round_lookup_names_the_range() -> None:
    book = ledger_of([FINALIZED_ROUND_1, round_record(2)])
    assert book.round(2).round == 2
    with pytest.raises(UnknownRoundError, match=r"task 1 has no round 3 \(rounds 1\.\.2\)"):
        book.round(3)
    with pytest.raises(UnknownRoundError, match="no rounds yet"):
        ledger_of([]).round(1)


def test_round_detail_lists_every_eligible_member() -> None:
    detail = round_detail(1, FINALIZED_ROUND_1)
    assert detail["status"] == "finalized" and detail["accepted_members"] == [0]
    first, second = detail["members"]
    assert (first["verdict"], first["vote_weight"], first["digest"]) == (
        "accepted",
        1000,
        "0x" + U0.hex(),
    )
    assert (second["verdict"], second["voted"], second["alarmed"]) == ("rejected", True, False)
    quiet = round_detail(1, round_record(2, eligible=(0, 1, 2)))
    assert [m["submitted"] for m in quiet["members"]] == [False, False, False]
    assert quiet["members"][2]["digest"] is None


def test_ledger_tables_carry_the_task_id_on_every_row() -> None:
    events = [
        {
            "event": "TaskCreated",
            "block_number": 3,
            "log_index": 0,
            "tx_hash": "0xcc",
            "args": {"task_id": 1, "config_digest": b"\x01", "owner": OWNER, "reward": 5},
        }
    ]
    tables = ledger_tables([ledger_of([FINALIZED_ROUND_1], events)])
    assert {name: len(rows) for name, rows in tables.items()} == {
        "tasks": 1,
        "members": 2,
        "rounds": 1,
        "updates": 2,
        "votes": 2,
        "alarms": 0,
        "penalties": 0,
        "slashes": 0,
        "transfers": 1,
        "events": 1,
    }
    assert all(row["task_id"] == 1 for rows in tables.values() for row in rows)
    assert tables["events"][0]["args"] == {
        "task_id": 1,
        "config_digest": "0x01",
        "owner": OWNER,
        "reward": 5,
    }
    assert tables["tasks"][0]["funded_wei"] == 5
    assert tables["transfers"][0]["kind"] == "reward"
    assert tables["rounds"][0]["global_digest"] == "0x" + G1.hex()


# ---------------------------------------------------------------- reputation history


def _rep_event(number: int, index: int, old: int, new: int) -> dict[str, Any]:
    args = {"task_id": 1, "round": number, "member": index, "old": old, "new": new}
    return {"event": "ReputationChanged", "block_number": 0, "log_index": 0, "args": args}


def test_reputation_history_replays_the_moves() -> None:
    events = [
        _rep_event(1, 0, 1000, 1020),
        _rep_event(1, 1, 1000, 900),
        _rep_event(3, 0, 1020, 1040),
        _rep_event(3, 1, 900, 800),
    ]
    rounds = [round_record(n) for n in (1, 2, 3)]
    book = replace(ledger_of(rounds, events), members=(member(0, 1040), member(1, 800)))
    assert reputation_history(book) == {
        0: [1000, 1020, 1020, 1040],
        1: [1000, 900, 900, 800],
    }


def test_reputation_history_of_a_late_joiner_and_of_a_partial_log() -> None:
    rounds = [round_record(n) for n in (1, 2, 3)]
    late = member(1, 1020, since_round=3)  # joined during round 2
    # Only round 3's moves were read (a late --from-block): round 1's move stays invisible.
    events = [_rep_event(3, 0, 900, 920), _rep_event(3, 1, 1000, 1020)]
    book = replace(ledger_of(rounds, events), members=(member(0, 920), late))
    assert reputation_history(book) == {0: [900, 900, 900, 920], 1: [None, None, 1000, 1020]}


# ---------------------------------------------------------------- blob verification


def test_ledger_digests_cover_initial_updates_and_finalized_globals() -> None:
    book = ledger_of([FINALIZED_ROUND_1, round_record(2, updates=(update(2, 1, U0, None),))])
    assert ledger_digests(book) == [
        ("initial", 0, None, INITIAL),
        ("update", 1, 0, U0),
        ("update", 1, 1, U1),
        ("global", 1, None, G1),
        ("update", 2, 1, U0),
    ]


def _blob_store(path: Path, blobs: dict[bytes, bytes]) -> Path:
    path.mkdir()
    for digest, data in blobs.items():
        (path / digest.hex()).write_bytes(data)
    return path


def test_verify_blobs_ok_mismatch_missing(tmp_path: Path) -> None:
    book = ledger_of([FINALIZED_ROUND_1])
    store = _blob_store(
        tmp_path / "a", {INITIAL: b"initial", U0: b"update 0", U1: b"forged", G1: b"x"}
    )
    (store / G1.hex()).unlink()
    checks = verify_blobs(book, [store])
    assert [(c.kind, c.status) for c in checks] == [
        ("initial", "ok"),
        ("update", "ok"),
        ("update", "mismatch"),
        ("global", "missing"),
    ]
    assert checks[2].bad_paths == (str(store / U1.hex()),)
    assert checks[3].paths == ()


def test_verify_blobs_checks_every_copy(tmp_path: Path) -> None:
    book = ledger_of([FINALIZED_ROUND_1])
    blobs = {INITIAL: b"initial", U0: b"update 0", U1: b"update 1", G1: b"global 1"}
    good = _blob_store(tmp_path / "good", blobs)
    bad = _blob_store(tmp_path / "bad", {G1: b"global 2"})
    checks = {c.digest: c for c in verify_blobs(book, [good, bad])}
    assert checks[G1].status == "mismatch"
    assert checks[G1].paths == (str(good / G1.hex()), str(bad / G1.hex()))
    assert checks[G1].bad_paths == (str(bad / G1.hex()),)
    assert [checks[d].status for d in (INITIAL, U0, U1)] == ["ok", "ok", "ok"]


def test_verify_blobs_refuses_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match=r"blob directory .*nope does not exist"):
        verify_blobs(ledger_of([]), [tmp_path / "nope"])


def test_sha256_file_reads_large_files_in_chunks(tmp_path: Path) -> None:
    data = bytes(range(256)) * 9000  # 2.3 MB: several chunks
    path = tmp_path / "big"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).digest()
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert sha256_file(empty).hex() == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )


# ---------------------------------------------------------------- privacy budget

DP = TaskPrivacy(config_digest=sha(b"c"), dp_noise=1.1, dp_delta=1e-5, dp_clip=1.0, secure=False)
NO_DP = replace(DP, dp_noise=0.0, dp_clip=None)


def test_count_commits_counts_rounds_not_updates() -> None:
    assert count_commits([(0, 1, 2), (0, 1), (), (1, 2)]) == {0: 2, 1: 3, 2: 2}
    assert count_commits([(0, 0)]) == {0: 1}  # one round, however listed
    assert count_commits([]) == {}


def test_task_privacy_epsilon_is_the_accountant_at_full_participation() -> None:
    assert DP.epsilon(3) == epsilon(1.1, 1.0, 3, 1e-5)
    assert DP.epsilon(0) == 0.0
    assert 0 < DP.epsilon(1) < DP.epsilon(2) < DP.epsilon(10)
    assert NO_DP.epsilon(5) is None  # no noise: no finite guarantee, never inf in JSON


def test_member_row_privacy_columns_only_with_a_config() -> None:
    bare = member_row(1, member(0, 1000))
    assert not {"dp_rounds", "epsilon", "dp_delta"} & set(bare)
    assert bare["he_key"] is None
    row = member_row(1, replace(member(0, 1000), he_key=sha(b"pk")), DP, 2)
    assert (row["dp_rounds"], row["dp_noise"], row["dp_delta"]) == (2, 1.1, 1e-5)
    assert row["epsilon"] == epsilon(1.1, 1.0, 2, 1e-5)
    assert row["he_key"] == "0x" + sha(b"pk").hex()
    assert member_row(1, member(0, 1000), NO_DP, 2)["epsilon"] is None


def test_round_row_epsilon_is_the_worst_case_up_to_that_round() -> None:
    rows = [round_row(1, round_record(n), DP) for n in (1, 2, 3)]
    assert [r["epsilon"] for r in rows] == [epsilon(1.1, 1.0, n, 1e-5) for n in (1, 2, 3)]
    assert "epsilon" not in round_row(1, round_record(1))


def test_round_row_and_detail_carry_the_secure_facts() -> None:
    secure = round_record(
        2, decryptor=1, remasks=((0, U0), (1, U1)), sum_digest=G1, submitted=(0, 1)
    )
    row = round_row(1, secure)
    assert (row["decryptor"], row["remasked"], row["sum_digest"]) == (1, [0, 1], "0x" + G1.hex())
    plain_row = round_row(1, round_record(2))
    assert (plain_row["decryptor"], plain_row["remasked"], plain_row["sum_digest"]) == (
        None,
        [],
        None,
    )
    detail = round_detail(1, replace(secure, eligible=(0, 1, 2)), DP, {0: 2, 1: 1})
    assert [m["remask_digest"] for m in detail["members"]] == [
        "0x" + U0.hex(),
        "0x" + U1.hex(),
        None,
    ]
    assert [m["dp_rounds"] for m in detail["members"]] == [2, 1, 0]
    assert detail["members"][2]["epsilon"] == 0.0
    with pytest.raises(ValueError, match="commit counts"):
        round_detail(1, secure, DP)


def test_ledger_tables_with_privacy_fill_unknown_tasks_with_none() -> None:
    rounds = [FINALIZED_ROUND_1, round_record(2, submitted=(1,), updates=(update(2, 1, U0, None),))]
    book = ledger_of(rounds)
    other = replace(ledger_of([FINALIZED_ROUND_1]), task=task_info(task_id=2, current_round=1))
    tables = ledger_tables([book, other], {1: DP})
    members = [(m["task_id"], m["dp_rounds"], m["epsilon"]) for m in tables["members"]]
    assert members == [
        (1, 1, epsilon(1.1, 1.0, 1, 1e-5)),
        (1, 2, epsilon(1.1, 1.0, 2, 1e-5)),
        (2, None, None),
        (2, None, None),
    ]
    assert [(t["task_id"], t["dp_noise"], t["secure"]) for t in tables["tasks"]] == [
        (1, 1.1, False),
        (2, None, None),
    ]
    assert [r["epsilon"] for r in tables["rounds"]][:2] == [
        epsilon(1.1, 1.0, 1, 1e-5),
        epsilon(1.1, 1.0, 2, 1e-5),
    ]
    # Every row of a table has the same columns (CSV takes its header from the first row).
    for rows in tables.values():
        assert len({tuple(r) for r in rows}) <= 1
    assert "epsilon" not in ledger_tables([book])["members"][0]


def test_load_task_privacy_needs_the_committed_bytes() -> None:
    data = json.dumps({"rule": "fedavg", "dp_clip": 2.0, "dp_noise": 0.7, "dp_delta": 1e-6})
    task = task_info(config_digest=sha(data.encode()))
    privacy = load_task_privacy(data.encode(), task, "cfg.json")
    assert (privacy.dp_noise, privacy.dp_delta, privacy.dp_clip) == (0.7, 1e-6, 2.0)
    assert privacy.config_digest == task.config_digest and not privacy.secure
    with pytest.raises(ConfigMismatchError) as caught:
        load_task_privacy(data.encode() + b" ", task, "cfg.json")
    message = str(caught.value)
    assert "cfg.json is not task 1's config" in message
    assert "0x" + sha(data.encode() + b" ").hex() in message
    assert "0x" + task.config_digest.hex() in message


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"[1, 2]", "is not a flchain task config: task config must be a JSON object"),
        (b'{"nope": 1}', "unknown task config field"),
        (b'{"dp_clip": 1.0, "dp_noise": 1.0, "dp_delta": 0}', r"dp_delta must be in \(0, 1\)"),
        (b'{"dp_clip": 1.0, "dp_noise": -1.0}', "dp_noise must be a finite number >= 0"),
    ],
)
def test_load_task_privacy_refuses_configs_it_cannot_account(data: bytes, match: str) -> None:
    with pytest.raises(LedgerError, match=match):
        load_task_privacy(data, task_info(config_digest=sha(data)), "cfg.json")


def test_ledger_digests_add_remasked_updates_and_the_sum() -> None:
    secure = round_record(
        1, decryptor=2, remasks=((1, U1),), sum_digest=G1, updates=(update(1, 0, U0, None),)
    )
    assert ledger_digests(ledger_of([secure])) == [
        ("initial", 0, None, INITIAL),
        ("update", 1, 0, U0),
        ("remask", 1, 1, U1),
        ("sum", 1, 2, G1),
    ]


# ---------------------------------------------------------------- money and penalties


def _ev(name: str, tx: str, log_index: int, **args: Any) -> dict[str, Any]:
    return {
        "event": name,
        "block_number": int(tx[2:], 16),
        "log_index": log_index,
        "tx_hash": tx,
        "args": {"task_id": 1, **args},
    }


def _rc(tx: str, log_index: int, number: int, index: int, old: int, new: int) -> dict[str, Any]:
    return _ev("ReputationChanged", tx, log_index, round=number, member=index, old=old, new=new)


# Round 1 finalized: member 0 accepted (+20); 1 rejected (-50) and voted for another bitmap
# (-50); 2 sent nothing (-50). Member 2 then raised an alarm that failed: the bond (-100) took
# it below the floor, an ejection logged after the alarm (only a failed alarm ejects).
# Round 2 failed with a vote cast: member 1 neither committed (-50) nor voted (-100).
PENALTY_ROUNDS = [
    round_record(
        1,
        status="finalized",
        eligible=(0, 1, 2),
        submitted=(0, 1),
        accepted=(0,),
        global_digest=G1,
        voted=(0, 1),
        alarmed=(2,),
        votes=(
            VoteRecord(1, 0, G1, (0,), 1000, 7, "0x07"),
            VoteRecord(1, 1, G1, (0, 1), 1000, 8, "0x08"),
        ),
        reward_share=30,
        paid=(0,),
    ),
    round_record(2, status="failed", eligible=(0, 1), submitted=(0,), voted=(0,)),
]
PENALTY_EVENTS = [
    _rc("0x08", 1, 1, 0, 1000, 1020),
    _rc("0x08", 2, 1, 1, 1000, 900),
    _rc("0x08", 3, 1, 2, 1000, 950),
    _rc("0x09", 0, 1, 2, 950, 850),
    _ev("AlarmRaised", "0x09", 1, round=1, member=2, weight=950, alarm_weight=950),
    _ev("MemberEjected", "0x09", 2, round=1, member=2, account=OWNER, reputation=850, forfeited=7),
    _rc("0x0a", 1, 2, 1, 900, 750),
]


def test_reputation_moves_name_the_reasons_of_a_settlement_and_an_alarm_bond() -> None:
    moves = reputation_moves(PENALTY_ROUNDS, PENALTY_EVENTS)
    assert [(m.round, m.member, m.delta, m.reasons, m.undone) for m in moves] == [
        (1, 0, 20, ("accepted",), False),
        (1, 1, -100, ("rejected", "bad-vote"), False),
        (1, 2, -50, ("no-submit",), False),
        (1, 2, -100, ("alarm-bond",), False),
        (2, 1, -150, ("no-submit", "no-vote"), False),
    ]
    assert [m.is_penalty for m in moves] == [False, True, True, True, True]
    (slash,) = slash_records(PENALTY_EVENTS, moves)
    assert (slash.member, slash.forfeited, slash.cause, slash.reinstated) == (
        2,
        7,
        ("alarm-bond",),
        False,
    )
    assert penalty_text(moves[1]) == "r1 rejected+bad-vote -100"


def test_a_revert_undoes_the_round_and_returns_the_bonds() -> None:
    reverted = round_record(
        3,
        status="reverted",
        submitted=(0, 1),
        accepted=(0, 1),
        global_digest=G1,
        voted=(0, 1),
        alarmed=(0, 1),
        votes=(
            VoteRecord(3, 0, G1, (0, 1), 1000, 1, "0x01"),
            VoteRecord(3, 1, G1, (0, 1), 1000, 2, "0x02"),
        ),
        reward_share=5,
        paid=(0, 1),
        clawed_back=10,
    )
    events = [
        _rc("0x02", 1, 3, 0, 1000, 1020),
        _rc("0x02", 2, 3, 1, 1000, 1020),
        _rc("0x03", 0, 3, 1, 1020, 920),
        _ev("AlarmRaised", "0x03", 1, round=3, member=1, weight=1020, alarm_weight=1020),
        _rc("0x04", 0, 3, 0, 1020, 920),
        _ev("AlarmRaised", "0x04", 1, round=3, member=0, weight=1020, alarm_weight=2040),
        _rc("0x04", 2, 3, 0, 920, 900),  # the round's +20 undone
        _rc("0x04", 3, 3, 1, 920, 900),
        _rc("0x04", 4, 3, 0, 900, 1000),  # bonds returned, last
        _rc("0x04", 5, 3, 1, 900, 1000),
        _ev("RoundReverted", "0x04", 6, round=3, clawed_back=10),
    ]
    moves = reputation_moves([reverted], events)
    assert [(m.member, m.delta, m.reasons, m.undone) for m in moves] == [
        (0, 20, ("accepted",), True),
        (1, 20, ("accepted",), True),
        (1, -100, ("alarm-bond",), True),
        (0, -100, ("alarm-bond",), True),
        (0, -20, ("reverted",), False),
        (1, -20, ("reverted",), False),
        (0, 100, ("bond-returned",), False),
        (1, 100, ("bond-returned",), False),
    ]
    # Undoing a gain is no penalty; the undone bonds cost nothing in the end.
    assert [m.is_penalty for m in moves] == [False, False, True, True, False, False, False, False]
    row = round_row(1, reverted)
    assert (row["reward_share_wei"], row["paid_members"], row["reward_paid_wei"]) == (5, [0, 1], 10)
    assert row["clawed_back_wei"] == 10
    detail = round_detail(1, replace(reverted, eligible=(0, 1)), moves=moves)
    assert [m["reward_wei"] for m in detail["members"]] == [5, 5]
    assert [r["reasons"] for r in detail["members"][0]["reputation_moves"]] == [
        ["accepted"],
        ["alarm-bond"],
        ["reverted"],
        ["bond-returned"],
    ]


def test_transfer_records_and_member_money() -> None:
    events = [
        _ev("TaskCreated", "0x01", 0, owner=OWNER, reward=100),
        _ev("MemberJoined", "0x02", 0, account="0xa0", member=0, stake=10),
        _ev("MemberJoined", "0x03", 0, account="0xa1", member=1, stake=10),
        _ev("RewardFunded", "0x04", 0, funder="0xf0", amount=50, reward_pool=150),
        *PENALTY_EVENTS,
        _ev("Withdrawn", "0x10", 0, account="0xa0", member=0, stake=10, reward=140),
        _ev("RefundClaimed", "0x11", 0, owner=OWNER, amount=0),  # zero moves nothing
    ]
    transfers = transfer_records(events)
    assert [(t.kind, t.direction, t.amount, t.member) for t in transfers] == [
        ("reward", "in", 100, None),
        ("stake", "in", 10, 0),
        ("stake", "in", 10, 1),
        ("fund", "in", 50, None),
        ("withdraw", "out", 150, 0),
    ]
    assert funded_wei(events) == 150
    members = (
        replace(member(0, 1020), status="withdrawn", stake_wei=10, earned=30),
        replace(member(1, 750), stake_wei=10, payout=10),
        replace(member(2, 850), status="ejected", stake_wei=10),
    )
    book = replace(ledger_of(PENALTY_ROUNDS, events), members=members)
    money = member_money(book)
    assert (money[0].withdrawn, money[0].penalties, money[0].reputation_lost) == (150, (), 0)
    assert money[1].reputation_lost == 250 and money[1].withdrawn is None
    assert [p.reasons for p in money[1].penalties] == [
        ("rejected", "bad-vote"),
        ("no-submit", "no-vote"),
    ]
    assert (money[2].forfeited, money[2].reputation_lost) == (10, 150)
    row = member_row(1, members[2], money=money[2])
    assert (row["earned_wei"], row["payout_wei"], row["forfeited_wei"]) == (0, 0, 10)
    assert row["ejected_round"] == 1
    assert row["penalties"] == [
        {"round": 1, "reasons": ["no-submit"], "lost": 50, "undone": False},
        {"round": 1, "reasons": ["alarm-bond"], "lost": 100, "undone": False},
    ]
    tables = ledger_tables([book])
    assert [(p["member"], p["reasons"]) for p in tables["penalties"]] == [
        (1, "rejected+bad-vote"),
        (2, "no-submit"),
        (2, "alarm-bond"),
        (1, "no-submit+no-vote"),
    ]
    assert [(x["member"], x["cause"], x["forfeited_wei"]) for x in tables["slashes"]] == [
        (2, "alarm-bond", 7)
    ]
    assert tables["tasks"][0]["funded_wei"] == 150


def test_late_votes_are_settled_by_the_next_round() -> None:
    # Round 1 finalized by members 0 and 1; 2 voted late for another result, 3 never voted.
    finalized = round_record(
        1,
        status="finalized",
        eligible=(0, 1, 2, 3),
        submitted=(0, 1, 2, 3),
        accepted=(0, 1, 2, 3),
        global_digest=G1,
        voted=(0, 1, 2),
        votes=(
            VoteRecord(1, 0, G1, (0, 1, 2, 3), 1000, 1, "0x01", late=False),
            VoteRecord(1, 1, G1, (0, 1, 2, 3), 1000, 2, "0x02", late=False),
            VoteRecord(1, 2, U0, (0, 1, 2, 3), 0, 3, "0x03", late=True),
        ),
    )
    # Round 2 failed and nobody voted in it: its own duties blame nobody.
    failed = round_record(2, status="failed", eligible=(0, 1, 2, 3), submitted=(0,))
    events = [_rc("0x04", 1, 2, 2, 1020, 970), _rc("0x04", 2, 2, 3, 1020, 970)]
    moves = reputation_moves([finalized, failed], events)
    assert [(m.member, m.reasons) for m in moves] == [
        (2, ("bad-late-vote",)),
        (3, ("no-late-vote",)),
    ]
    # Without the previous round the ledger cannot tell why.
    assert [m.reasons for m in reputation_moves([failed], events)] == [("unknown",)] * 2
    # A late vote is not judged with the round's own (in-time) votes.
    assert _settlement_reasons_of(finalized, 2) == ("accepted",)


def _settlement_reasons_of(rnd: RoundRecord, index: int) -> tuple[str, ...]:
    event = _rc("0x09", 1, rnd.round, index, 1000, 1020)
    (move,) = reputation_moves([rnd], [event])
    return move.reasons


def test_a_block_mined_during_the_read_makes_the_ledger_read_again() -> None:
    """Views read the latest block as each call runs: the ledger must come from one head, or a
    page could show a member in the events but not in the members (or a round finalized
    while its task still runs) and keep that mix until the next block."""
    import hashlib

    from flchain.contracts import FLChainClient, TaskParams
    from flchain.contracts.ledger import rebuild_ledger
    from flchain.contracts.testing import open_chain

    def digest(label: str) -> bytes:
        return hashlib.sha256(label.encode()).digest()

    with open_chain("eth-tester") as chain:
        owner_key, member_key = chain.new_accounts(2)
        owner = FLChainClient.deploy(chain.w3, owner_key)
        task_id = owner.create_task(
            TaskParams(
                config_digest=digest("config"),
                initial_digest=digest("initial"),
                min_members=2,
                max_members=4,
                submit_window=600,
                vote_window=600,
            )
        )
        member = FLChainClient(chain.w3, owner.address, member_key)
        real_events = owner.events
        reads: list[int] = []

        def events(*args: Any, **kwargs: Any) -> Any:
            reads.append(args[2])  # the head the read is at
            if len(reads) == 1:  # a member joins while the ledger is being read
                member.join(task_id, b"peer-late", digest("x25519-late"))
            return real_events(*args, **kwargs)

        owner.events = events  # type: ignore[method-assign]
        book = rebuild_ledger(owner, task_id)
    assert len(reads) == 2 and reads[1] == reads[0] + 1
    assert book.head_block == reads[1]
    assert [m.peer_id for m in book.members] == [b"peer-late"]
    assert any(e["event"] == "MemberJoined" for e in book.events)
