"""A peer's signed peer record checked once, not on every gossip RPC it sends.

py-libp2p 0.8's pubsub puts the sender's signed peer record (an Envelope of about 200 bytes)
into every RPC it writes, and the receiver verifies it on every RPC it reads
(`maybe_consume_signed_record`: parse, an Ed25519 signature check, then the peerstore's
addresses cleared and stored again), about 50 us each. In a small task gossipsub's mesh spans
nearly every pair, so each member reads each announcement from most of the others: about 90
RPCs per node and round at N = 10, each carrying the same record its sender sent before.

`install` wraps that function: a record whose bytes are those the same peer sent in its last
RPC, accepted by the library less than `RECHECK` seconds ago on the same host, is accepted
again without being parsed and verified. Identical bytes verify identically, and the
peerstore already holds what they say; a record that changes, a failed one, and one older
than `RECHECK` (so its addresses' TTL is refreshed) go through the library's own function.

This is library behaviour patched from outside: it checks that the function exists and
leaves the library alone otherwise (`install` returns False). Upstream could cache the
verified envelope per peer itself.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from typing import Any, Final

import libp2p.pubsub.pubsub as pubsub_module

from flchain.node.library_patch import wrap_once

_FUNCTION: Final = "maybe_consume_signed_record"
# How long an accepted record is taken on its bytes; well under the 2-hour address TTL the
# library gives it.
RECHECK: Final = 60.0
# Peers remembered per host; past this the memory starts over (members only ever reach a
# node's pubsub, so this bounds a churn of peer ids, not a working set).
MAX_PEERS: Final = 4096

Consume = Callable[[Any, Any, Any], bool]


def install() -> bool:
    """Wrap pubsub's record check once; True if the cache is (now) in place."""
    return wrap_once(pubsub_module, _FUNCTION, cached_consume, what="signed-record cache")


def cached_consume(original: Consume, clock: Callable[[], float] = time.monotonic) -> Consume:
    """`original` (msg, host, peer_id) -> bool, remembering per host the last record each
    peer had accepted."""
    accepted: weakref.WeakKeyDictionary[Any, dict[Any, tuple[bytes, float]]] = (
        weakref.WeakKeyDictionary()
    )

    def consume(msg: Any, host: Any, peer_id: Any) -> bool:
        if not msg.HasField("senderRecord"):
            return True  # what the library answers for an RPC without a record
        record = bytes(msg.senderRecord)
        known = accepted.setdefault(host, {})
        last = known.get(peer_id)
        now = clock()
        if last is not None and last[0] == record and now - last[1] < RECHECK:
            return True
        ok = bool(original(msg, host, peer_id))
        if ok:
            if len(known) >= MAX_PEERS and peer_id not in known:
                known.clear()
            known[peer_id] = (record, now)
        else:
            known.pop(peer_id, None)
        return ok

    return consume
