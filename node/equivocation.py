"""The `equivocate` protocol attack: serve different bytes for the same digest to different
peers.

The attacker commits one digest on chain, then answers half of its peers (by peer id) with the
true blob and the other half with tampered bytes. Honest nodes re-hash what they receive, count
the mismatch and fetch the blob from a peer that already has the right bytes, so the attack
costs them a retry, never a wrong model.
"""

from __future__ import annotations

import hashlib
import logging

from libp2p.custom_types import TProtocol

from flchain.node import blobs
from flchain.node.p2p import P2PNode

log = logging.getLogger("flchain.node.attack")


def _gets_the_lie(peer_id: str) -> bool:
    return hashlib.sha256(peer_id.encode()).digest()[0] % 2 == 1


def install_equivocating_server(p2p: P2PNode) -> None:
    """Replace the node's blob handler with one that lies to half of the requesters."""

    async def serve(stream) -> None:
        try:
            peer = stream.muxed_conn.peer_id.to_base58()
            digest = await blobs.read_request(stream)
            data = p2p.store.get(digest)
            if data is None:
                await blobs.write_response(stream, blobs.Status.NOT_FOUND)
            else:
                if _gets_the_lie(peer) and data:
                    data = data[:-1] + bytes([data[-1] ^ 0xFF])
                await blobs.write_response(stream, blobs.Status.OK, data)
            await stream.close()
        except Exception as exc:
            log.debug("equivocating serve failed: %s", exc)
            try:
                await stream.reset()
            except Exception as reset_exc:
                log.debug("reset failed: %s", reset_exc)

    p2p.host.set_stream_handler(TProtocol(blobs.PROTOCOL_ID), serve)
