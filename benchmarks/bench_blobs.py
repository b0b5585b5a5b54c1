"""CPU per blob fetch between two nodes in one process: blob sessions (one stream carries
every fetch from a provider) against a stream per fetch (`/flchain/blob/1.0.0`), side by side
in one run, for a model update of the devnet's CNN (605 KB) and a small blob (1 KB).

Both nodes run in this process, so the CPU time counts both ends of every transfer: the
fetcher's and the provider's. Results go to docs/benchmarks.md.

    python benchmarks/bench_blobs.py [--fetches 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from flchain.node import blobs
from flchain.node.blobstore import BlobStore
from flchain.node.gossip import round_window
from flchain.node.p2p import P2PConfig, P2PNode

try:
    from benchmarks._report import machine, write_section
except ModuleNotFoundError:  # run as a script: benchmarks/ is on sys.path, not the repo root
    from _report import machine, write_section

TASK = 1
SIZES = {"update (605 KB)": 605_000, "small (1 KB)": 1_000}
MODES = ("session", "stream per fetch")


@contextlib.contextmanager
def _offered(protocols: tuple[str, ...]) -> Iterator[None]:
    """What the fetcher offers: both protocols (the node's default) or only the single one."""
    saved = blobs.PROTOCOL_IDS
    blobs.PROTOCOL_IDS = protocols  # type: ignore[misc]
    try:
        yield
    finally:
        blobs.PROTOCOL_IDS = saved  # type: ignore[misc]


async def _end_kept_sessions(node: P2PNode) -> None:
    """Close the session streams `node` kept (a kept stream is reused whatever it offers)."""
    while node._idle_sessions:
        _, (stream, _) = node._idle_sessions.popitem()
        await stream.close()


async def _cpu_per_fetch(fetcher: P2PNode, provider: P2PNode, size: int, count: int) -> float:
    digests = [provider.store.put(os.urandom(size)) for _ in range(count + 2)]
    provider.start_round()  # each measurement is a round of its own: a fresh byte budget
    for digest in digests[:2]:  # warm up: the connection, the session, the caches
        await fetcher.fetch_blob(digest, [provider.peer_id], try_connected=False)
    started = time.process_time()
    for digest in digests[2:]:
        await fetcher.fetch_blob(digest, [provider.peer_id], try_connected=False)
    return (time.process_time() - started) / count


async def _measure(root: Path, fetches: int, repeats: int) -> dict[tuple[str, str], list[float]]:
    keys = [create_new_key_pair() for _ in range(2)]
    ids = {ID.from_pubkey(k.public_key).to_base58() for k in keys}
    results: dict[tuple[str, str], list[float]] = {}
    async with contextlib.AsyncExitStack() as stack:
        nodes: list[P2PNode] = []
        for index, keypair in enumerate(keys):
            config = P2PConfig(bootstrap=tuple(n.addrs[0] for n in nodes))
            store = BlobStore(root / f"node{index}")
            nodes.append(await stack.enter_async_context(P2PNode(keypair, store, config=config)))
        for node in nodes:
            await node.join_task(TASK, is_member=ids.__contains__, round_ok=round_window(lambda: 1))
        fetcher, provider = nodes
        with trio.fail_after(10):
            while provider.peer_id not in fetcher.connected_peers():
                await trio.sleep(0.05)
        for _ in range(repeats):
            for label, size in SIZES.items():
                for mode in MODES:
                    offered = blobs.PROTOCOL_IDS if mode == "session" else (blobs.PROTOCOL_ID,)
                    await _end_kept_sessions(fetcher)  # each mode starts without one
                    with _offered(offered):
                        cpu = await _cpu_per_fetch(fetcher, provider, size, fetches)
                    results.setdefault((label, mode), []).append(cpu)
                    print(f"{label:16} {mode:17} {cpu * 1e3:6.2f} ms CPU/fetch", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fetches", type=int, default=100, help="fetches per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per cell")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = trio.run(_measure, Path(tmp), args.fetches, args.repeats)
    lines = [
        "## Blob fetches: sessions against a stream per fetch",
        "",
        f"`make bench-blobs` on {machine()}: two nodes in one process (Noise, yamux), "
        f"{args.fetches} fetches one after another, CPU time of both ends per fetch, median "
        f"of {args.repeats} measurements, the two modes alternating in one run.",
        "",
        "| blob | session | stream per fetch | saved |",
        "|---|---:|---:|---:|",
    ]
    for label in SIZES:
        session = statistics.median(results[(label, "session")]) * 1e3
        single = statistics.median(results[(label, "stream per fetch")]) * 1e3
        saved = 1 - session / single
        lines.append(f"| {label} | {session:.2f} ms | {single:.2f} ms | {saved:.0%} |")
    print(f"wrote {write_section('blobs', chr(10).join(lines))}")


if __name__ == "__main__":
    main()
