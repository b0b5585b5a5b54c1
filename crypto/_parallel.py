"""Run big-integer work across processes: gmpy2 holds the GIL, so threads would not help.

Workers are forked where the platform allows it: the children only do gmpy2 arithmetic on
their arguments, and forking avoids re-importing the caller's main module in every worker
(for the `flchain` CLI that pulls in torch and costs seconds per worker). Forked children also
inherit tables built in the parent, such as the fixed-base exponentiation tables.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

from flchain.crypto.errors import CryptoError

T = TypeVar("T")
R = TypeVar("R")

__all__ = ["chunked", "parallel_map", "resolve_workers"]


def resolve_workers(workers: int | None) -> int:
    """`None` means every CPU; anything else must be an int >= 1."""
    if workers is None:
        return max(1, os.cpu_count() or 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise CryptoError(f"workers must be an int >= 1 or None, got {workers!r}")
    return workers


def chunked(items: Sequence[T], parts: int) -> list[Sequence[T]]:
    """Split `items` into at most `parts` contiguous, nearly equal, non-empty chunks."""
    parts = max(1, min(parts, len(items)))
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for i in range(parts):
        stop = start + size + (1 if i < extra else 0)
        out.append(items[start:stop])
        start = stop
    return out


def _context() -> multiprocessing.context.BaseContext:
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else None)


def parallel_map(func: Callable[[T], R], jobs: Sequence[T], workers: int) -> list[R]:
    """`[func(job) for job in jobs]`, in order, on up to `workers` processes.

    Runs inline when there is one worker or one job, so small inputs pay no process start-up.
    `func` must be a module-level function (it is sent to the workers by reference).
    """
    if workers <= 1 or len(jobs) <= 1:
        return [func(job) for job in jobs]
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=_context()) as pool:
        return list(pool.map(func, jobs))
