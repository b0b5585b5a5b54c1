"""`flchain bench paillier`: both timings, the ratio and the 1M extrapolation, as text or JSON."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from flchain.commands.bench import bench
from flchain.crypto.bench import MILLION, compare_phe_packed
from flchain.crypto.errors import CryptoError

ARGS = ["paillier", "--dim", "3000", "--key-bits", "1024", "--baseline-sample", "20"]


def test_bench_paillier_json_reports_both_paths_and_the_ratio() -> None:
    result = CliRunner().invoke(bench, [*ARGS, "--workers", "1", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["dim"] == 3000 and report["key_bits"] == 1024 and report["workers"] == 1
    assert report["slots_per_plaintext"] == 53 and report["plaintexts"] == 57  # (1022 // 19)
    base, packed, speedup = report["baseline"], report["packed"], report["speedup"]
    assert base["sample"] == 20 and base["extrapolated"] is True
    assert base["total_s"] == pytest.approx(base["per_value_s"] * 3000)
    assert base["total_1m_s"] == pytest.approx(base["per_value_s"] * MILLION)
    assert packed["total_s"] == pytest.approx(packed["obfuscators_s"] + packed["encrypt_s"])
    assert speedup["total"] == pytest.approx(base["total_s"] / packed["total_s"])
    assert speedup["online"] >= speedup["total"] > 1.0
    assert packed["total_1m_s"] > packed["total_s"]


def test_bench_paillier_text_output_says_what_was_extrapolated() -> None:
    result = CliRunner().invoke(bench, [*ARGS, "--method", "full", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "timed on 20 values, extrapolated" in result.output
    assert "full obfuscators" in result.output
    assert "speedup:" in result.output and "1,000,000" in result.output


def test_bench_paillier_rejects_bad_options() -> None:
    result = CliRunner().invoke(bench, ["paillier", "--dim", "0"])
    assert result.exit_code != 0 and "--dim" in result.output
    with pytest.raises(CryptoError, match="baseline_sample"):
        compare_phe_packed(10, baseline_sample=0)
