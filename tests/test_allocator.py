"""A node's large per-round buffers come from one reused heap (flchain.allocator).

Whether a process faults its buffers afresh every round depends on the load (the devnet
figures are in flchain/allocator.py's docstring); what the settings guarantee, and what is
checked here in a fresh process, is where glibc places a round-sized block: in the main heap,
from any thread, instead of in a mapping of its own that is handed back when freed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from flchain.allocator import retain_freed_memory

_PROBE = """
import ctypes, json, sys, threading
from flchain.allocator import retain_freed_memory
applied = retain_freed_memory() if sys.argv[1] == "on" else False
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]

def heap():
    for line in open("/proc/self/maps"):
        if line.rstrip().endswith("[heap]"):
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            return lo, hi
    return 0, 0

def in_heap(pointer):
    lo, hi = heap()
    return lo <= pointer < hi

size = 20 * 1024 * 1024  # a 16-member aggregation's float64 stack is ~19 MB
found = {"main": in_heap(libc.malloc(size))}
def worker():
    found["thread"] = in_heap(libc.malloc(size))
t = threading.Thread(target=worker); t.start(); t.join()
print(json.dumps({"applied": applied, **found}))
"""

glibc_only = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not os.confstr("CS_GNU_LIBC_VERSION"),
    reason="glibc's mallopt only",
)


def _probe(mode: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_"))}
    env.pop("LD_PRELOAD", None)
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@glibc_only
def test_round_sized_blocks_come_from_the_main_heap_in_every_thread():
    default = _probe("off")
    assert default == {"applied": False, "main": False, "thread": False}  # own mappings
    assert _probe("on") == {"applied": True, "main": True, "thread": True}


@glibc_only
@pytest.mark.parametrize("name", ["MALLOC_ARENA_MAX", "GLIBC_TUNABLES", "LD_PRELOAD"])
def test_allocator_settings_made_by_the_user_are_left_alone(monkeypatch, name):
    monkeypatch.setenv(name, "4" if name == "MALLOC_ARENA_MAX" else "")
    assert retain_freed_memory() is False
