"""The bytes the network protocol attacks send, built without any network code.

The node (`flchain.node.protocol_attacks`) decides where they go; keeping the payloads here
lets tests check each one is what the attack claims without starting a node.
"""

from __future__ import annotations

import random
from typing import Final

from flchain.config import MAX_SAMPLES_LIMIT

# The largest sample count the contract takes (2**64 - 1): `liesamples` claims it every round.
LIE_SAMPLES: Final = MAX_SAMPLES_LIMIT
# Nested-bracket bodies the `deepjson` attack posts to the chain's JSON-RPC endpoint: the
# issue's 75 KB body that killed `chain serve`, and two larger ones.
DEEPJSON_SIZES: Final = (75 * 1024, 1024 * 1024, 8 * 1024 * 1024)
# Every `blobflood` junk blob starts with this, so anyone can tell junk from real blobs.
JUNK_MARKER: Final = b"flchain blobflood junk\n"

_RPC_HEAD: Final = b'{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":'


def nested_brackets(size: int) -> bytes:
    """Exactly `size` bytes of balanced `[[[...]]]`: valid JSON nested size // 2 deep."""
    if size < 2:
        raise ValueError(f"a nested payload needs at least 2 bytes, got {size}")
    depth = size // 2
    return b"[" * depth + b"]" * depth + (b" " if size % 2 else b"")


def nested_rpc_request(size: int) -> bytes:
    """A JSON-RPC request of exactly `size` bytes whose params nest as deep as that allows."""
    inner = size - len(_RPC_HEAD) - 1
    if inner < 2:
        raise ValueError(f"a nested JSON-RPC request needs at least {len(_RPC_HEAD) + 3} bytes")
    return _RPC_HEAD + nested_brackets(inner) + b"}"


def nested_bundle(bundle: bytes, header: bytes) -> bytes:
    """A secure-mode ciphertext bundle with its JSON header replaced by `header`.

    The bundle layout (crypto/ciphertext.py): 4-byte magic, 1-byte version, 4-byte
    big-endian header length, the header, the body; magic, version and body are kept."""
    if len(bundle) < 9:
        raise ValueError("not a ciphertext bundle: shorter than its 9-byte prefix")
    old = int.from_bytes(bundle[5:9], "big")
    body = bundle[9 + old :]
    return bundle[:5] + len(header).to_bytes(4, "big") + header + body


def junk_blob(size: int, rng: random.Random) -> bytes:
    """`size` bytes of junk (marker first) for `blobflood` to announce and serve."""
    if size < len(JUNK_MARKER):
        raise ValueError(f"a junk blob needs at least {len(JUNK_MARKER)} bytes")
    return JUNK_MARKER + rng.randbytes(size - len(JUNK_MARKER))
