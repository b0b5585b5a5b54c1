"""Wall-clock round times of a running devnet, as a reader of its chain sees them.

Block timestamps are the chain's clock, not the wall clock (the devnet's blocks are at least a
second apart and run ahead under load), so benchmarks time rounds with this watcher instead:
it polls the task's finalized round every `interval` seconds and notes the wall time
(`time.time()`) at which each round first shows as finalized, and, given the devnet's process
(`cpu_root`), the CPU its processes had used by then (`benchmarks/_proctree.py`). It also notes
when the task first counts `members` members, to time the start-up against the moment the chain
served (`chain_up`).
"""

from __future__ import annotations

import itertools
import statistics
import sys
import threading
import time
from pathlib import Path

try:
    from benchmarks._proctree import devnet_cpu
except ModuleNotFoundError:  # run as a script
    from _proctree import devnet_cpu

POLL_SECONDS = 0.2


class ChainWatch:
    """Start with `start()` before `devnet up` runs in `workdir`; `stop()` after it ends.
    `finalized[r]` is the wall time, in seconds since `started`, at which round r finalized;
    `cpu[r]` the CPU seconds by role the devnet (`cpu_root`, the `devnet up` process, once set) had
    used then; `joined` when the task first counted `members` members."""

    def __init__(
        self,
        workdir: Path,
        started: float,
        interval: float = POLL_SECONDS,
        *,
        members: int | None = None,
    ) -> None:
        self.workdir = workdir
        self.started = started
        self.interval = interval
        self.members = members
        self.joined: float | None = None
        self.finalized: dict[int, float] = {}
        self.cpu_root: int | None = None
        self.cpu: dict[int, dict[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> ChainWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _client(self) -> tuple[object, int] | None:
        from eth_account import Account
        from web3 import Web3

        from flchain.contracts import FLChainClient
        from flchain.devnet.manifest import DevnetError, read_manifest

        try:
            manifest = read_manifest(self.workdir)
            w3 = Web3(Web3.HTTPProvider(manifest["rpc_url"], request_kwargs={"timeout": 5}))
            return FLChainClient(w3, manifest["contract"], Account.create()), int(
                manifest["task_id"]
            )
        except (DevnetError, OSError, ValueError, KeyError):
            return None  # not written yet

    def _run(self) -> None:
        found = None
        while not self._stop.is_set():
            found = found or self._client()
            if found is not None:
                client, task_id = found
                try:
                    task = client.get_task(task_id)  # type: ignore[attr-defined]
                    done, counted = task.global_round, task.n_members
                except Exception:  # the chain is starting or gone: look again
                    done = counted = 0
                now = time.time() - self.started
                if self.joined is None and self.members and counted >= self.members:
                    self.joined = now
                if done and done not in self.finalized and self.cpu_root is not None:
                    used = devnet_cpu(self.cpu_root, self.workdir.resolve())
                    if used is not None:
                        self.cpu[done] = used
                for r in range(1, done + 1):
                    self.finalized.setdefault(r, now)
            self._stop.wait(self.interval)


def median_round(finalized: dict[int, float], rounds: int) -> float:
    """Median wall time between consecutive finalizations, rounds 2..`rounds` (round 1 would
    include the start-up)."""
    ends = [finalized[r] for r in range(1, rounds + 1)]
    return statistics.median(b - a for a, b in itertools.pairwise(ends))


def slowest_training(summary: dict, rounds: int) -> float:
    """The slowest node's mean training seconds per round (from `devnet up --json`'s node
    metrics): the part of a round no protocol can save, since every update waits for it."""
    return max(
        n["metrics"].get("round_seconds_total", {}).get("train", 0.0) / rounds
        for n in summary["nodes"]
    )


def devnet_up_command(workdir: Path, *args: str) -> list[str]:
    """`flchain devnet up` in `workdir` (replacing what is there) with `args`, as a process
    of this interpreter: what the devnet benchmarks run and watch."""
    return [
        sys.executable,
        "-m",
        "flchain.cli",
        "devnet",
        "up",
        "--dir",
        str(workdir),
        "--force",
        *args,
    ]


def chain_up(workdir: Path, started: float) -> float | None:
    """When the devnet's chain served, in seconds since `started`: the time its ready line was
    written (`devnet/chainproc.py`); None without one."""
    from flchain.devnet.chainproc import CHAIN_READY_FILE

    try:
        return (workdir / CHAIN_READY_FILE).stat().st_mtime - started
    except OSError:
        return None


def cpu_per_round(cpu: dict[int, dict[str, float]], rounds: int) -> dict[str, float] | None:
    """CPU seconds per round by role over rounds 2..`rounds` (as `median_round` times them),
    or None without both readings."""
    if 1 not in cpu or rounds not in cpu or rounds < 2:
        return None
    return {role: (cpu[rounds][role] - cpu[1][role]) / (rounds - 1) for role in cpu[1]}


def training_cpu(summary: dict, rounds: int) -> float:
    """CPU seconds all nodes together spent training per round (`train_cpu_seconds_total`)."""
    return sum(n["metrics"].get("train_cpu_seconds_total", 0.0) for n in summary["nodes"]) / rounds
