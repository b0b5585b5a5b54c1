"""flchain.node: the node daemon's building blocks.

- `identity`: node keys (eth keystore, libp2p Ed25519, X25519) in a 0700 directory.
- `messages`: the gossip announcement schema and its canonical encoding.
- `gossip`: acceptance rules for announcements (membership, round window, replays).
- `blobs`: the `/flchain/blob/1.0.0` request/response wire format.
- `blobstore`: content-addressed blob storage on disk.
- `metrics`: counters and gauges, as JSON and Prometheus text.
- `p2p`: `P2PNode`, the libp2p host that ties gossip and blob exchange together.

Names are re-exported lazily so that `import flchain.node.metrics` does not pay for
importing py-libp2p.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "NodeIdentity": "identity",
    "IdentityError": "identity",
    "init_node_dir": "identity",
    "load_node_identity": "identity",
    "read_password": "identity",
    "Announcement": "messages",
    "MessageError": "messages",
    "TaskPolicy": "gossip",
    "round_window": "gossip",
    "topic_for": "gossip",
    "BlobStore": "blobstore",
    "BlobStoreError": "blobstore",
    "Metrics": "metrics",
    "BlobNotFound": "p2p",
    "Delivery": "p2p",
    "P2PConfig": "p2p",
    "P2PConfigError": "p2p",
    "P2PError": "p2p",
    "P2PNode": "p2p",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'flchain.node' has no attribute {name!r}")
    return getattr(importlib.import_module(f"flchain.node.{module}"), name)
