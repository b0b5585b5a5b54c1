"""The devnet tells every node where the others listen (`node run --peers-file`)."""

from __future__ import annotations

from pathlib import Path

from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from flchain.devnet.launcher import node_args, write_peers_file
from flchain.devnet.manifest import PEERS_FILE
from flchain.node.p2p import load_peers_file


def _node(i: int, tmp_path: Path) -> dict:
    peer_id = ID.from_pubkey(create_new_key_pair().public_key).to_base58()
    return {
        "name": f"node-{i}",
        "dir": str(tmp_path / f"node-{i}"),
        "port": 20000 + i,
        "peer_id": peer_id,
        "data": "digits#shard=0/3",
        "seed": 0,
        "attack": None,
    }


def test_every_node_is_given_the_file_with_every_nodes_address(tmp_path: Path) -> None:
    nodes = [_node(i, tmp_path) for i in range(3)]
    path = write_peers_file(tmp_path, nodes)
    assert path == (tmp_path / PEERS_FILE).resolve()
    assert load_peers_file(path) == tuple(
        f"/ip4/127.0.0.1/tcp/{n['port']}/p2p/{n['peer_id']}" for n in nodes
    )
    manifest = {
        "nodes": nodes,
        "rpc_url": "http://127.0.0.1:8545",
        "task_id": 1,
        "contract": "0x" + "11" * 20,
        "peers_file": str(path),
    }
    for node in nodes:
        args = node_args(manifest, node)
        assert args[args.index("--peers-file") + 1] == str(path)
