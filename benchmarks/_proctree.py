"""CPU seconds a devnet's processes have used so far, by role (Linux /proc; None elsewhere).

A devnet is a launcher (`flchain devnet up`), a chain process and the node processes. The node
host forks the nodes and exits, so they are no longer the launcher's descendants: they are
found by their output, a log file in the devnet's directory. Benchmarks read the CPU at two
moments and divide by the rounds between them: what a round costs the machine, which the wall
clock alone cannot say when N processes share a few cores.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

PROC = Path("/proc")
ROLES = ("nodes", "chain", "other")


def usable_cores() -> int:
    """The CPUs this process may run on (what the devnet's processes share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def devnet_cpu(root: int, workdir: Path) -> dict[str, float] | None:
    """CPU seconds (user + system) by role of `root`, its live descendants and every process
    whose standard output is a file under `workdir`; None where /proc cannot be read. Exited
    processes are not counted: take both readings while the devnet runs."""
    if not PROC.is_dir():
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    used: dict[int, float] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited meanwhile
            continue
        # the command name is in parentheses and may hold spaces: fields start after it
        fields = stat[stat.rindex(")") + 2 :].split()
        pid = int(entry.name)
        parent[pid] = int(fields[1])
        used[pid] = (int(fields[11]) + int(fields[12])) / ticks
    children: dict[int, list[int]] = defaultdict(list)
    for pid, ppid in parent.items():
        children[ppid].append(pid)
    members: set[int] = set()
    todo = [root] if root in used else []
    while todo:
        pid = todo.pop()
        members.add(pid)
        todo += children.get(pid, [])
    members |= {pid for pid in used if _writes_under(pid, workdir)}
    out = dict.fromkeys(ROLES, 0.0)
    for pid in members:
        out[_role(pid)] += used[pid]
    return out


def _writes_under(pid: int, workdir: Path) -> bool:
    try:
        return Path(os.readlink(PROC / str(pid) / "fd" / "1")).is_relative_to(workdir)
    except OSError:  # exited, or not ours to read
        return False


def _role(pid: int) -> str:
    try:
        argv = (PROC / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return "other"
    words = {a.decode(errors="replace") for a in argv}
    if "chain" in words and "serve" in words:
        return "chain"
    if "flchain.devnet.nodehost" in words or ("node" in words and "run" in words):
        return "nodes"
    return "other"
