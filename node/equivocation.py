"""The `equivocate` protocol attack: serve different bytes for the same digest to different
peers.

The attacker commits one digest on chain, then answers every second blob request with tampered
bytes. Honest nodes re-hash what they receive, count the mismatch and fetch the blob from a
peer that already has the right bytes, so the attack costs them a retry, never a wrong model.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

from flchain.node import blobs
from flchain.node.p2p import P2PNode

log = logging.getLogger("flchain.node.attack")


def install_equivocating_server(p2p: P2PNode) -> None:
    """Replace the node's blob handler with one that lies to every second requester."""
    served = itertools.count()

    async def serve(stream: Any) -> None:
        try:
            digest = await blobs.read_request(stream)
            data = p2p.store.get(digest)
            if data is None:
                await blobs.write_response(stream, blobs.Status.NOT_FOUND)
            else:
                if next(served) % 2 == 1 and data:
                    data = data[:-1] + bytes([data[-1] ^ 0xFF])
                await blobs.write_response(stream, blobs.Status.OK, data)
            await stream.close()
        except Exception as exc:  # a broken request must not take the attacker down either
            log.debug("equivocating serve failed: %s", exc)
            try:
                await stream.reset()
            except Exception as reset_exc:
                log.debug("reset failed: %s", reset_exc)

    p2p.set_blob_handler(serve)
