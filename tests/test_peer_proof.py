"""Peer-id proofs (node/peer_proof.py): a proof holds for exactly one (chain, contract, task,
member address) and only for the peer id whose key signed it; nothing malformed verifies; a
node keeps only members whose proof verifies as its gossip and blob peers."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.secp256k1 import create_new_key_pair as new_secp256k1_key_pair
from libp2p.peer.id import ID

from flchain.contracts import MemberInfo, MemberStatus
from flchain.node import peer_proof
from flchain.node.engine import RoundEngine
from flchain.node.metrics import Metrics

CHAIN, TASK = 1337, 7
CONTRACT = "0x" + "c0" * 20
MEMBER = "0x" + "a1" * 20


@pytest.fixture(scope="module")
def signed() -> tuple[str, bytes]:
    """A peer id and its proof for (CHAIN, CONTRACT, TASK, MEMBER)."""
    key = create_new_key_pair(b"\x01" * 32)
    peer = ID.from_pubkey(key.public_key).to_base58()
    return peer, peer_proof.sign(key, CHAIN, CONTRACT, TASK, MEMBER)


def test_a_proof_verifies_for_its_own_membership(signed: tuple[str, bytes]) -> None:
    peer, proof = signed
    assert len(proof) == peer_proof.PROOF_BYTES
    assert peer_proof.verify(peer, proof, CHAIN, CONTRACT, TASK, MEMBER)
    # Address case does not matter (checksummed or not, it is the same account).
    assert peer_proof.verify(peer, proof, CHAIN, CONTRACT.upper().replace("0X", "0x"), TASK, MEMBER)


@pytest.mark.parametrize(
    "changed",
    [
        {"chain_id": CHAIN + 1},
        {"contract": "0x" + "c1" * 20},
        {"task_id": TASK + 1},
        {"member_address": "0x" + "a2" * 20},
    ],
)
def test_a_proof_fails_for_any_other_membership(signed: tuple[str, bytes], changed: dict) -> None:
    peer, proof = signed
    where = {"chain_id": CHAIN, "contract": CONTRACT, "task_id": TASK, "member_address": MEMBER}
    assert not peer_proof.verify(peer, proof, **{**where, **changed})


def test_another_key_or_a_damaged_proof_fails(signed: tuple[str, bytes]) -> None:
    peer, proof = signed
    other = create_new_key_pair(b"\x02" * 32)
    squatter = peer_proof.sign(other, CHAIN, CONTRACT, TASK, MEMBER)
    assert not peer_proof.verify(peer, squatter, CHAIN, CONTRACT, TASK, MEMBER)
    flipped = proof[:-1] + bytes([proof[-1] ^ 1])
    for bad in (flipped, proof[:-1], proof + b"\x00", b"", bytes(64)):
        assert not peer_proof.verify(peer, bad, CHAIN, CONTRACT, TASK, MEMBER)


def test_malformed_chain_values_are_simply_unproven(signed: tuple[str, bytes]) -> None:
    _, proof = signed
    secp = new_secp256k1_key_pair()
    for peer in ("", "not base58 0OIl", "12D3KooW", ID.from_pubkey(secp.public_key).to_base58()):
        assert not peer_proof.verify(peer, proof, CHAIN, CONTRACT, TASK, MEMBER)
    peer = signed[0]
    assert not peer_proof.verify(peer, proof, CHAIN, "not an address", TASK, MEMBER)
    assert not peer_proof.verify(peer, proof, -1, CONTRACT, TASK, MEMBER)
    with pytest.raises(ValueError, match="Ed25519"):
        peer_proof.sign(secp, CHAIN, CONTRACT, TASK, MEMBER)


def test_the_signed_message_is_domain_separated_and_fixed_width() -> None:
    message = peer_proof.message(CHAIN, CONTRACT, TASK, MEMBER)
    assert message.startswith(peer_proof.DOMAIN)
    assert len(message) == len(peer_proof.DOMAIN) + 32 + 20 + 32 + 20


class _Chain:
    """Just what RoundEngine.refresh_members reads from FLChainClient."""

    def __init__(self, members: list[MemberInfo], proofs: dict[int, bytes]) -> None:
        self.address, self.account = CONTRACT, MEMBER
        self.w3 = SimpleNamespace(eth=SimpleNamespace(chain_id=CHAIN))
        self._members, self._proofs = members, proofs

    def members(self, task_id: int) -> list[MemberInfo]:
        return self._members

    def member_proofs(self, task_id: int) -> dict[int, bytes]:
        return self._proofs


def test_a_node_ignores_the_squatter_of_a_peer_id_and_keeps_the_owner() -> None:
    owner_key, squatter_key = create_new_key_pair(b"\x03" * 32), create_new_key_pair(b"\x04" * 32)
    peer = ID.from_pubkey(owner_key.public_key).to_base58()
    accounts = ["0x" + "5a" * 20, "0x" + "0b" * 20]  # squatter joined first, then the owner
    members = [
        MemberInfo(i, accounts[i], peer.encode(), bytes(32), MemberStatus.ACTIVE, 1, 1000)
        for i in range(2)
    ]
    proofs = {
        0: peer_proof.sign(squatter_key, CHAIN, CONTRACT, TASK, accounts[0]),
        1: peer_proof.sign(owner_key, CHAIN, CONTRACT, TASK, accounts[1]),
    }
    metrics = Metrics()
    engine = RoundEngine(
        client=_Chain(members, proofs),  # type: ignore[arg-type]
        task_id=TASK,
        learner=SimpleNamespace(dp_noise=0.0),  # type: ignore[arg-type]
        p2p=None,  # type: ignore[arg-type]
        store=None,  # type: ignore[arg-type]
        metrics=metrics,
        peer_id="me",
    )
    trio.run(engine.refresh_members)
    assert engine.is_member(peer)
    assert engine.address_of(peer) == accounts[1]  # gossip from the peer is the owner's
    assert engine._peer_of == {1: peer}  # blobs of member 0 are asked of nobody
    assert engine._proven == {0: False, 1: True}
    assert metrics.get("members_unproven") == 1
    assert metrics.get("members") == 1
