"""Yamux credit goes back in batches (node/yamux_credit.py), and transfers still flow."""

from __future__ import annotations

import os
from pathlib import Path

import trio
from libp2p.stream_muxer.yamux.yamux import YamuxStream

from flchain.node import yamux_credit
from tests.test_p2p_network import _run


def test_small_reads_return_credit_in_batches_and_big_transfers_still_flow(
    tmp_path: Path, monkeypatch
) -> None:
    assert yamux_credit.install() is True  # in place, and installing again changes nothing
    updates = 0
    original = YamuxStream.send_window_update

    async def counted(self, increment: int, skip_lock: bool = False) -> None:
        nonlocal updates
        updates += 1
        await original(self, increment, skip_lock)

    monkeypatch.setattr(YamuxStream, "send_window_update", counted)

    async def scenario(net) -> None:
        nonlocal updates
        a, b, _ = net.members
        updates = 0
        small = [b.store.put(os.urandom(1000)) for _ in range(40)]
        for digest in small:
            assert len(await a.fetch_blob(digest, [b.peer_id], try_connected=False)) == 1000
        # 40 requests and 40 answers read, each a read that consumed credit: a window
        # update after each would be 80 frames
        assert updates < 10, updates
        payload = os.urandom(3 * 2**20)  # over ten times the initial 256 KiB window
        digest = b.store.put(payload)
        with trio.fail_after(30):
            assert await a.fetch_blob(digest, [b.peer_id], try_connected=False) == payload

    _run(tmp_path, scenario)
