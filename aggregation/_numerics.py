"""Reductions whose bits do not depend on the machine.

Deterministic mode must give every honest node a bit-identical model. Elementwise IEEE
operations (+, -, *, /, sqrt) are exactly rounded on every CPU, but BLAS matmuls and
torch's vectorised `sum` reduce in an order that depends on the instruction set (AVX2 vs
AVX-512) and the thread count. So in deterministic mode every reduction here is built
from elementwise ops in a fixed order:

* over d: a pairwise tree (pad to a power of two with zeros, then repeatedly add the upper
  half onto the lower half); vectors longer than `_CHUNK` are cut into chunks of `_CHUNK`
  (the last one zero-padded), each chunk is folded so, and the chunk sums are folded the
  same way. The chunking keeps the work in cache: Krum's n^2 / 2 distances over d = 10^6
  are memory-bound otherwise;
* over n: an explicit loop in index order with separate multiply and add (no fused
  `alpha=`/addcmul, which may become an FMA on one machine and not on another);
* scalars: `math.fsum`, which is correctly rounded and hence order-free.

The fast path (deterministic=False) uses matmuls and native sums on the input's device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from flchain.aggregation.errors import AggregationError

# Rows per block in the deterministic row reductions (the scratch buffer holds
# _BLOCK x _CHUNK float64 values: 4 MiB).
_BLOCK = 64
# Length of the chunks a long reduction is cut into (a power of two; part of the order).
_CHUNK = 8192
# Deterministic powers support exponents k / 2**j with j up to this (see det_pow).
_MAX_ROOT_LEVEL = 4


def next_pow2(length: int) -> int:
    """Smallest power of two >= length (length >= 1)."""
    return 1 << (length - 1).bit_length()


def _fold(buf: Tensor) -> Tensor:
    """Pairwise tree sum over the last dim of `buf` (a power of two long), in place."""
    h = buf.shape[-1]
    while h > 1:
        h //= 2
        buf[..., :h].add_(buf[..., h : 2 * h])
    return buf[..., 0]


def _chunking(length: int) -> tuple[int, int]:
    """(chunk width, number of chunks) of the documented order for a vector of `length`."""
    width = min(_CHUNK, next_pow2(length))
    return width, -(-length // width)


def det_sum(x: Tensor) -> Tensor:
    """Sum over the last dimension in the fixed chunked pairwise order (float64 in and out)."""
    length = x.shape[-1]
    width, chunks = _chunking(length)
    buf = torch.zeros((*x.shape[:-1], chunks * width), dtype=x.dtype, device=x.device)
    buf[..., :length] = x
    partial = torch.zeros((*x.shape[:-1], next_pow2(chunks)), dtype=x.dtype, device=x.device)
    partial[..., :chunks] = _fold(buf.reshape(*x.shape[:-1], chunks, width))
    return _fold(partial).clone()


def _det_row_sums(n: int, d: int, fill: Callable[[Tensor, int, int, int, int], None]) -> Tensor:
    """out[j] = det_sum(row j), where fill(view, j0, j1, a, b) writes columns a..b-1 of rows
    j0..j1-1 into view. Works chunk by chunk so the scratch stays in cache."""
    width, chunks = _chunking(d)
    partial = torch.zeros(n, next_pow2(chunks), dtype=torch.float64)
    buf = torch.empty(min(_BLOCK, n), width, dtype=torch.float64)
    for j0 in range(0, n, _BLOCK):
        j1 = min(j0 + _BLOCK, n)
        view = buf[: j1 - j0]
        for k in range(chunks):
            a, b = k * width, min(d, (k + 1) * width)
            if b - a < width:
                view[:, b - a :].zero_()
            fill(view[:, : b - a], j0, j1, a, b)
            partial[j0:j1, k] = _fold(view)
    return _fold(partial).clone()


def _det_sq_dists_to(rows: Tensor, v: Tensor) -> Tensor:
    """||rows[j] - v||^2 for each j, deterministically."""

    def fill(view: Tensor, j0: int, j1: int, a: int, b: int) -> None:
        torch.sub(rows[j0:j1, a:b], v[a:b], out=view)
        view.mul_(view)

    return _det_row_sums(rows.shape[0], rows.shape[1], fill)


def _det_pair_sq_dists(U: Tensor) -> Tensor:
    """||U[j] - U[i]||^2 for every pair i < j, i-major, deterministically: each pair's sum is
    the one `_det_sq_dists_to(U[i + 1:], U[i])` gives (the same differences, squares and
    folds), but all pairs go through each chunk together, so a round's n (n - 1) / 2 pairs
    take a few hundred tensor operations instead of n times as many."""
    n = U.shape[0]
    # pair p = (i, j) is row p; the pairs of one i are consecutive rows, rows j > i minus U[i]
    starts = [0]
    for i in range(n - 1):
        starts.append(starts[-1] + n - 1 - i)

    def fill(view: Tensor, p0: int, p1: int, a: int, b: int) -> None:
        for i in range(n - 1):
            lo, hi = max(p0, starts[i]), min(p1, starts[i + 1])
            if lo < hi:
                j0 = i + 1 + lo - starts[i]
                rows = U[j0 : j0 + hi - lo, a:b]
                torch.sub(rows, U[i, a:b], out=view[lo - p0 : hi - p0])
        view.mul_(view)

    return _det_row_sums(starts[-1], U.shape[1], fill)


def pairwise_sq_dists(U: Tensor, *, deterministic: bool) -> Tensor:
    """Squared L2 distances [n, n] between the rows of U (zero diagonal).

    Deterministic: float64 on CPU; the pair (i, j) is computed once as rows j > i minus
    row i, so permuting the rows permutes the matrix bit for bit (negation is exact).
    Fast: the Gram-matrix identity in U's dtype, clamped at 0.
    """
    n = U.shape[0]
    if deterministic:
        D = torch.zeros(n, n, dtype=torch.float64)
        if n < 2:
            return D
        first, second = torch.triu_indices(n, n, offset=1)  # pairs i < j, i-major
        D[first, second] = D[second, first] = _det_pair_sq_dists(U)
        return D
    G = U @ U.T
    sq = torch.diagonal(G).clone()
    D = (sq[:, None] + sq[None, :] - 2.0 * G).clamp_(min=0.0)
    D.fill_diagonal_(0.0)
    return D


def sq_dists_to(U: Tensor, v: Tensor, *, deterministic: bool) -> Tensor:
    """||U[i] - v||^2 for each row i."""
    if deterministic:
        return _det_sq_dists_to(U, v)
    diff = U - v
    return (diff * diff).sum(dim=1)


def dots_with(U: Tensor, v: Tensor, *, deterministic: bool) -> Tensor:
    """<U[i], v> for each row i."""
    if deterministic:

        def fill(view: Tensor, j0: int, j1: int, a: int, b: int) -> None:
            torch.mul(U[j0:j1, a:b], v[a:b], out=view)

        return _det_row_sums(U.shape[0], U.shape[1], fill)
    return U @ v


def combine(coeffs: Sequence[float] | Tensor, U: Tensor, *, deterministic: bool) -> Tensor:
    """sum_i coeffs[i] * U[i]; rows with a zero coefficient contribute nothing.

    Deterministic: a loop in index order, each step one multiply then one add.
    """
    c = [float(x) for x in (coeffs.tolist() if isinstance(coeffs, Tensor) else coeffs)]
    if deterministic:
        acc = torch.zeros(U.shape[1], dtype=U.dtype, device=U.device)
        tmp = torch.empty_like(acc)
        for i, ci in enumerate(c):
            if ci != 0.0:
                torch.mul(U[i], ci, out=tmp)
                acc.add_(tmp)
        return acc
    return torch.tensor(c, dtype=U.dtype, device=U.device) @ U


def rows_sum(S: Tensor, *, deterministic: bool) -> Tensor:
    """Sum over dim 0 of S; deterministic mode adds the rows one by one in order."""
    if not deterministic:
        return S.sum(dim=0)
    acc = S[0].clone()
    for i in range(1, S.shape[0]):
        acc.add_(S[i])
    return acc


def exact_sum(values: Sequence[float] | Tensor) -> float:
    """Correctly rounded sum of scalars (order-free, so identical on every machine)."""
    return math.fsum(values.tolist() if isinstance(values, Tensor) else values)


def normalized(values: Sequence[float] | Tensor) -> list[float]:
    """values / sum(values) with an exactly rounded sum; the sum must be positive."""
    vals = [float(v) for v in (values.tolist() if isinstance(values, Tensor) else values)]
    total = math.fsum(vals)
    if not total > 0.0:
        raise AggregationError("cannot normalise weights that sum to zero")
    return [v / total for v in vals]


def det_pow(x: float, p: float) -> float:
    """x ** p for x > 0, bit-identical on every machine.

    libm's pow is not correctly rounded and differs between libraries and code paths
    (FMA or not), so only exponents of the form k / 2**j with j <= 4 are supported:
    j square roots (exactly rounded) followed by exponentiation by squaring.
    """
    if not x > 0.0:
        raise AggregationError(f"det_pow needs a positive base, got {x}")
    for level in range(_MAX_ROOT_LEVEL + 1):
        scaled = p * (1 << level)
        if scaled == math.floor(scaled):
            base = x
            for _ in range(level):
                base = math.sqrt(base)
            result = _int_pow(base, abs(int(scaled)))
            return 1.0 / result if scaled < 0 else result
    raise AggregationError(
        f"deterministic mode supports exponents that are multiples of 1/16, got {p}; "
        "use such an exponent or deterministic=False"
    )


def _int_pow(base: float, k: int) -> float:
    """base ** k by binary exponentiation (a fixed sequence of exactly rounded products)."""
    result = 1.0
    while k:
        if k & 1:
            result *= base
        base *= base
        k >>= 1
    return result
