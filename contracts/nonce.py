"""Thread-safe nonces for one account that signs locally.

A node's worker threads send transactions concurrently (a vote while an alarm goes out),
so asking the node for the nonce before each send would hand two threads the same one.
The manager keeps a local counter under a lock, seeded from (and, after a nonce error or
a failed send, resynced with) `eth_getTransactionCount(address, "pending")`. Holding the
lock from nonce choice to send keeps the sends in nonce order, so no gap can stall later
transactions.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class NonceManager:
    """Hands out consecutive nonces; `fetch_pending` returns the node's pending count."""

    def __init__(self, fetch_pending: Callable[[], int]) -> None:
        self._fetch_pending = fetch_pending
        self._lock = threading.RLock()
        self._next: int | None = None

    @contextmanager
    def reserve(self) -> Iterator[int]:
        """Hold the account's send lock and yield the nonce to use.

        Leaving the block normally consumes the nonce; an exception leaves the counter to
        be resynced from the node on the next reservation (the send may not have arrived).
        """
        with self._lock:
            if self._next is None:
                self._next = int(self._fetch_pending())
            nonce = self._next
            try:
                yield nonce
            except BaseException:
                self._next = None
                raise
            self._next = nonce + 1

    def resync(self) -> None:
        """Forget the local counter (after a nonce error, or a chain snapshot revert)."""
        with self._lock:
            self._next = None

    @property
    def peek(self) -> int | None:
        """The nonce the next reservation will use, when known locally."""
        with self._lock:
            return self._next
