"""Yamux receive credit returned in batches, as go-yamux returns it.

py-libp2p 0.8's yamux stream sends a WINDOW_UPDATE frame after every read that consumed
anything (its `_auto_tune_and_send_window_update`, branches "partial slack" and "release on
read"), although its docstring says it mirrors go-yamux, which sends one only once the
consumed, unreturned credit reaches half the window. On a devnet most reads are gossip RPCs
of a few hundred bytes, so about 60% of the frames a node wrote were window updates (a
10-node devnet, counted with a profiler), each one encrypted, sent, received, decrypted and
dispatched. `install` makes a read that leaves less than the threshold unreturned only
record it; the library's own method still decides everything else (growing the window,
auto-tuning, the update itself), so flow control stays the library's.

Why this cannot stall a sender: credit held back is under half the window, so a sender
whose window reached zero has at least half a window unread at the receiver, which is
back-pressure the library applied before too.

This is library behaviour patched from outside: it checks that the method and fields it
relies on exist and leaves the library alone otherwise (`install` returns False). Upstream
should batch in `_auto_tune_and_send_window_update` itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from libp2p.stream_muxer.yamux.yamux import YamuxStream

from flchain.node.library_patch import wrap_once

_METHOD = "_auto_tune_and_send_window_update"
_FIELDS = ("_pending_recv_release", "target_recv_window", "recv_window", "window_lock")


def install() -> bool:
    """Patch `YamuxStream` once; True if batching is (now) in place."""
    return wrap_once(
        YamuxStream,
        _METHOD,
        _batched,
        what="yamux credit batching",
        expected=lambda: callable(getattr(YamuxStream, "_grow_threshold", None)),
    )


def _batched(
    original: Callable[..., Awaitable[None]],
) -> Callable[..., Awaitable[None]]:
    async def send_credit_in_batches(self: Any, *, bytes_read: int = 0) -> None:
        if not all(hasattr(self, name) for name in _FIELDS):
            await original(self, bytes_read=bytes_read)
            return
        async with self.window_lock:
            buffered = len(self.conn.stream_buffers.get(self.stream_id, b""))
            unreturned = self.target_recv_window - (self.recv_window + buffered)
            threshold = self._grow_threshold()
            if 0 < unreturned < threshold and (self._pending_recv_release + bytes_read < threshold):
                self._pending_recv_release += bytes_read
                return
        await original(self, bytes_read=bytes_read)

    return send_credit_in_batches
