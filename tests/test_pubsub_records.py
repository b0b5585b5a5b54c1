"""A peer's signed peer record is verified once per change, not per gossip RPC
(node/pubsub_records.py), and what the library refuses is still refused."""

from __future__ import annotations

import multiaddr
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.peerstore import env_to_send_in_RPC
from libp2p.pubsub import pubsub as pubsub_module
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.utils import maybe_consume_signed_record

from flchain.node import pubsub_records

LOOPBACK = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")


def _rpc(record: bytes | None) -> rpc_pb2.RPC:
    rpc = rpc_pb2.RPC()
    if record is not None:
        rpc.senderRecord = record
    return rpc


class _Counting:
    """The library's function, counting the records it was asked to verify."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, msg, host, peer_id) -> bool:
        self.calls += 1
        return maybe_consume_signed_record(msg, host, peer_id)


def test_the_node_checks_each_record_once_and_refuses_what_the_library_refuses() -> None:
    assert pubsub_records.install() is True  # p2p installs it; installing again is a no-op
    assert getattr(pubsub_module.maybe_consume_signed_record, "_flchain_wrapped", False)

    async def main() -> None:
        hosts = [new_host(key_pair=create_new_key_pair()) for _ in range(3)]
        a, b, c = hosts
        async with a.run([LOOPBACK]), b.run([LOOPBACK]), c.run([LOOPBACK]):
            now = [0.0]
            library = _Counting()
            consume = pubsub_records.cached_consume(library, clock=lambda: now[0])
            record_a, _ = env_to_send_in_RPC(a)
            record_c, _ = env_to_send_in_RPC(c)

            for _ in range(50):  # fifty RPCs from a, each with its same record
                assert consume(_rpc(record_a), b, a.get_id()) is True
            assert library.calls == 1
            assert b.get_peerstore().get_peer_record(a.get_id()) is not None

            # a's record relayed by c is c lying about who it is: refused, every time
            assert consume(_rpc(record_a), b, c.get_id()) is False
            assert consume(_rpc(record_a), b, c.get_id()) is False
            assert library.calls == 3

            # a's record with one byte of its signature changed: refused, and the good one
            # is checked again afterwards (what was accepted is forgotten on a failure)
            forged = record_a[:-1] + bytes([record_a[-1] ^ 1])
            assert consume(_rpc(forged), b, a.get_id()) is False
            assert consume(_rpc(record_a), b, a.get_id()) is True
            assert library.calls == 5

            # another host keeps its own peerstore, so it verifies for itself
            assert consume(_rpc(record_a), c, a.get_id()) is True
            assert library.calls == 6
            # an RPC without a record passes, as the library lets it
            assert consume(_rpc(None), b, c.get_id()) is True
            assert consume(_rpc(record_c), b, c.get_id()) is True
            assert library.calls == 7

            # after RECHECK seconds the same bytes are checked again (the addresses' TTL
            # starts over in the peerstore)
            now[0] += pubsub_records.RECHECK
            assert consume(_rpc(record_a), b, a.get_id()) is True
            assert library.calls == 8

    trio.run(main)
