"""The fixed-order reductions behind deterministic mode (flchain.aggregation._numerics)."""

from __future__ import annotations

import math

import pytest
import torch

import flchain.aggregation._numerics as numerics
from flchain.aggregation import AggregationError, finite_rows
from flchain.aggregation._numerics import (
    combine,
    det_pow,
    det_sum,
    dots_with,
    exact_sum,
    next_pow2,
    pairwise_sq_dists,
    rows_sum,
    sq_dists_to,
)


def test_next_pow2():
    assert [next_pow2(k) for k in (1, 2, 3, 4, 5, 1000, 1024, 1025)] == [
        1, 2, 4, 4, 8, 1024, 1024, 2048,
    ]  # fmt: skip


def test_det_sum_follows_the_documented_tree():
    # 5 values padded to 8, folded upper half onto lower half:
    # ((x0 + x4) + (x2 + x6)) + ((x1 + x5) + (x3 + x7)) with x5..x7 = 0
    x = [1e16, 1.0, -1e16, 1.0, 3.0]
    expected = ((x[0] + x[4]) + (x[2] + 0.0)) + ((x[1] + 0.0) + (x[3] + 0.0))
    got = det_sum(torch.tensor(x, dtype=torch.float64)).item()
    assert got == expected
    assert got != sum(x)  # the left-to-right sum rounds differently (a real order check)


def test_det_sum_of_whole_numbers_is_exact_and_batched_rows_match_single_rows():
    x = torch.arange(1000, dtype=torch.float64).reshape(4, 250)
    assert det_sum(x).tolist() == [float(sum(range(i * 250, (i + 1) * 250))) for i in range(4)]
    g = torch.Generator().manual_seed(0)
    y = torch.randn(5, 333, generator=g, dtype=torch.float64)
    batched = det_sum(y)
    assert all(det_sum(y[i]).item() == batched[i].item() for i in range(5))


def test_long_sums_fold_chunks_then_the_chunk_sums(monkeypatch):
    monkeypatch.setattr(numerics, "_CHUNK", 4)
    # 10 values -> chunks [x0..x3], [x4..x7], [x8, x9, 0, 0], each folded as a 4-tree, then
    # the three chunk sums (padded to 4) folded the same way.
    x = [1e16, 1.0, -1e16, 1.0, 3.0, 1e-3, 7.0, -2.5, 1e16, 0.5]

    def tree4(a, b, c, e):
        return (a + c) + (b + e)

    chunk = [tree4(*x[0:4]), tree4(*x[4:8]), tree4(x[8], x[9], 0.0, 0.0)]
    expected = tree4(chunk[0], chunk[1], chunk[2], 0.0)
    assert det_sum(torch.tensor(x, dtype=torch.float64)).item() == expected


@pytest.mark.parametrize("chunk", [4, 64, 8192])
@pytest.mark.parametrize("block", [1, 2, 3, 7])
def test_row_reductions_do_not_depend_on_the_block_size(monkeypatch, block, chunk):
    monkeypatch.setattr(numerics, "_CHUNK", chunk)
    g = torch.Generator().manual_seed(1)
    U = torch.randn(9, 1001, generator=g, dtype=torch.float64)
    v = torch.randn(1001, generator=g, dtype=torch.float64)
    diffs = [det_sum((U[i] - v) * (U[i] - v)).item() for i in range(9)]
    dots = [det_sum(U[i] * v).item() for i in range(9)]
    monkeypatch.setattr(numerics, "_BLOCK", block)
    assert sq_dists_to(U, v, deterministic=True).tolist() == diffs
    assert dots_with(U, v, deterministic=True).tolist() == dots


@pytest.mark.parametrize("block", [3, 64])
@pytest.mark.parametrize("d", [300, 2 * 8192 + 17])
def test_pairwise_sq_dists_are_each_pairs_documented_sum(monkeypatch, block, d):
    """All pairs go through a chunk together, in blocks of rows that split one row's pairs;
    each distance must still be the documented chunked fold of its own squared differences,
    bit for bit, whatever the block size (the order is part of the protocol: every node
    must get the same bits)."""
    g = torch.Generator().manual_seed(5)
    U = torch.randn(9, d, generator=g, dtype=torch.float64)
    monkeypatch.setattr(numerics, "_BLOCK", block)
    D = pairwise_sq_dists(U, deterministic=True)
    for i in range(9):
        for j in range(9):
            want = 0.0 if i == j else det_sum((U[max(i, j)] - U[min(i, j)]) ** 2).item()
            assert D[i, j].item() == want, (i, j)


def test_pairwise_sq_dists_deterministic():
    g = torch.Generator().manual_seed(2)
    U = torch.randn(7, 300, generator=g, dtype=torch.float64)
    D = pairwise_sq_dists(U, deterministic=True)
    assert torch.equal(D, D.T)
    assert D.diagonal().tolist() == [0.0] * 7
    assert torch.allclose(D, torch.cdist(U, U) ** 2, rtol=1e-12, atol=1e-12)
    perm = torch.randperm(7, generator=g)
    Dp = pairwise_sq_dists(U[perm], deterministic=True)
    assert torch.equal(Dp, D[perm][:, perm])  # bit-exact equivariance
    fast = pairwise_sq_dists(U, deterministic=False)
    assert torch.allclose(fast, D, rtol=1e-9, atol=1e-9)


def test_combine_is_an_in_order_loop_of_multiply_then_add():
    g = torch.Generator().manual_seed(3)
    U = torch.randn(4, 50, generator=g, dtype=torch.float64)
    c = [0.1, 0.0, 0.7, 0.2]
    expected = torch.zeros(50, dtype=torch.float64)
    for i in (0, 2, 3):
        expected = expected + U[i] * c[i]
    assert torch.equal(combine(c, U, deterministic=True), expected)
    assert torch.allclose(combine(c, U, deterministic=False), expected, atol=1e-14)


def test_rows_sum_adds_rows_in_order():
    S = torch.tensor([[1e16], [1.0], [-1e16]], dtype=torch.float64)
    assert rows_sum(S, deterministic=True).item() == (1e16 + 1.0) - 1e16


def test_exact_sum_is_order_free():
    values = [1e16, 1.0, -1e16, 1.0]
    assert exact_sum(values) == 2.0 == exact_sum(list(reversed(values)))


@pytest.mark.parametrize(
    ("x", "p", "expected"),
    [(4.0, 0.5, 2.0), (2.0, -1.0, 0.5), (3.0, 3.0, 27.0), (16.0, 0.25, 2.0), (9.0, -0.5, 1 / 3)],
)
def test_det_pow_exact_cases(x, p, expected):
    assert det_pow(x, p) == expected


def test_det_pow_is_close_to_pow_and_rejects_other_exponents():
    for x in (0.3, 1.7, 12.5):
        for p in (-1.5, -0.5, 0.0, 0.75, 2.0, 1 / 16):
            assert det_pow(x, p) == pytest.approx(math.pow(x, p), rel=1e-14)
    with pytest.raises(AggregationError, match="multiples of 1/16"):
        det_pow(2.0, 0.3)
    with pytest.raises(AggregationError, match="positive base"):
        det_pow(0.0, 1.0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_finite_rows_agrees_with_isfinite_and_survives_an_overflowing_sum(dtype):
    big = torch.finfo(dtype).max
    rows = torch.randn(7, 50, generator=torch.Generator().manual_seed(0)).to(dtype)
    rows[1, 3] = math.nan
    rows[2, 0] = math.inf
    rows[3, 49] = -math.inf
    rows[4, :4] = big  # finite, but the sum overflows to inf
    rows[5, :2] = torch.tensor([big, -big], dtype=dtype)
    rows[6, 10], rows[6, 11] = math.inf, -math.inf  # the sum is NaN
    expected = torch.isfinite(rows).all(dim=1)
    assert finite_rows(rows).tolist() == expected.tolist() == [
        True, False, False, False, True, True, False,
    ]  # fmt: skip
    assert finite_rows(rows[4]).tolist() == [True]  # one row, 1-D
    assert finite_rows(rows[2]).tolist() == [False]
