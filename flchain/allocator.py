"""Keep freed memory in the process, so that a round's large tensors do not fault every round.

A node allocates and frees the same large buffers every round: the decoded updates, their
float64 stack and the distance scratch of an aggregation (tens of MB at N = 16), the
evaluation's activations, the blobs it fetches. glibc's malloc hands blocks over its mmap
threshold straight back to the kernel when they are freed, and trims the heap's free top
above its trim threshold; the next round's allocation then gets fresh pages, which the kernel
zeroes on first touch. Measured at N = 16 (`flchain devnet up`, perf): 10,000 page faults per
aggregation, page zeroing 5% of the machine's CPU, an aggregation 26 ms instead of 10 ms.

`retain_freed_memory` sets three of glibc's `mallopt` knobs: blocks up to 32 MiB (the
largest mmap threshold glibc takes) come from the heap; up to 64 MiB of free heap top is
kept; and every thread allocates from the one main heap. The last matters as much as the
others: the aggregation runs in a worker thread, whose own arena is made of 64 MiB heaps
that glibc unmaps as soon as they are empty, so with per-thread arenas a node still faulted
thousands of pages a round and its resident size crept up round after round (485 -> 541 MB
over five rounds at N = 16; 412 MB and flat with one heap, about 20 faults a round). The
threads that allocate large blocks are few and short (aggregation, evaluation, blob I/O), so
one heap's lock costs nothing measurable. The cost is that a process keeps the memory of its
peak rather than handing it back between rounds.

PyTorch's own advice for CPU work is another allocator (jemalloc or tcmalloc) loaded with
LD_PRELOAD; neither comes from PyPI, so this sets glibc's knobs instead. Elsewhere (musl,
macOS, an allocator preloaded over glibc's) it does nothing, and settings the user made
through glibc's MALLOC_* environment variables are left alone.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from typing import Final

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3
_M_ARENA_MAX: Final = -8
MMAP_THRESHOLD: Final = 32 * 1024 * 1024  # glibc's largest (HEAP_MAX_SIZE / 2 on 64 bit)
TRIM_THRESHOLD: Final = 64 * 1024 * 1024


def retain_freed_memory() -> bool:
    """One heap for all threads, fixed mmap and trim thresholds (see the module docstring);
    True if glibc took them. Call it early in a process that trains or aggregates, before it
    starts threads; forked children inherit it."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    if any(name.startswith(("MALLOC_", "GLIBC_TUNABLES", "LD_PRELOAD")) for name in os.environ):
        return False  # the user tuned or replaced the allocator
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(
        mallopt(_M_ARENA_MAX, 1)
        and mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
