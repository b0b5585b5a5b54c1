"""Peer-id proofs: a member shows it holds the libp2p key of the peer id it registers.

The contract cannot check an Ed25519 signature, so it does not keep peer ids unique: anyone
may register any peer id, and a squatter can no longer keep the owner out. Instead `join`
logs a signature by the peer id's key over (chain id, contract, task, member address), and
every node verifies it before it treats the member as a gossip or blob peer. A proof is
bound to one membership: it fails for another chain, contract, task or address, so a
squatter cannot copy the owner's proof either.

libp2p Ed25519 peer ids embed the public key (an identity multihash), so the peer id alone
is enough to verify; peer ids of other key types (hashed RSA keys, secp256k1) are refused.
"""

from __future__ import annotations

from eth_utils import to_canonical_address
from libp2p.crypto.keys import KeyPair, KeyType, PrivateKey
from libp2p.peer.id import ID

DOMAIN = b"flchain peer-id proof v1\x00"
PROOF_BYTES = 64  # an Ed25519 signature


def message(chain_id: int, contract: str, task_id: int, member_address: str) -> bytes:
    """What the peer id's key signs: a domain tag, then chain id, contract, task id and
    member address in fixed widths (so no two different tuples give the same bytes)."""
    if not 0 <= chain_id < 2**256 or not 0 <= task_id < 2**256:
        raise ValueError("chain id and task id must be uint256")
    return (
        DOMAIN
        + chain_id.to_bytes(32, "big")
        + to_canonical_address(contract)
        + task_id.to_bytes(32, "big")
        + to_canonical_address(member_address)
    )


def sign(
    key: KeyPair | PrivateKey, chain_id: int, contract: str, task_id: int, member_address: str
) -> bytes:
    """The proof for one membership, signed with the node's libp2p key (pair)."""
    private = key.private_key if isinstance(key, KeyPair) else key
    if private.get_type() != KeyType.Ed25519:
        raise ValueError(f"peer-id proofs need an Ed25519 libp2p key, got {private.get_type()}")
    return bytes(private.sign(message(chain_id, contract, task_id, member_address)))


def verify(
    peer_id: str,
    proof: bytes,
    chain_id: int,
    contract: str,
    task_id: int,
    member_address: str,
) -> bool:
    """True when `proof` is the signature of `peer_id`'s Ed25519 key over this membership.
    Anything malformed (peer id, key type, proof length, addresses) is simply False."""
    try:
        if not isinstance(proof, bytes | bytearray) or len(proof) != PROOF_BYTES:
            return False
        public = ID.from_base58(peer_id).extract_public_key()
        if public is None or public.get_type() != KeyType.Ed25519:
            return False
        signed = message(chain_id, contract, task_id, member_address)
        return bool(public.verify(signed, bytes(proof)))
    except Exception:  # any decoding trouble in a chain-supplied value means "not proven"
        return False
