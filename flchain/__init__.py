"""flchain: decentralized federated learning on libp2p and an Ethereum smart contract."""

import os
from importlib.metadata import PackageNotFoundError, version
from importlib.util import find_spec

# Keccak-256 for web3, eth-account and py-evm: eth-hash picks pycryptodome when both of its
# backends are installed, and pysha3's C hash takes 0.75 us against 3.6 us (a devnet chain
# hashes on every SHA3 opcode and trie node: 16% of its CPU). Set before the first hash;
# an ETH_HASH_BACKEND the user set wins.
if find_spec("sha3") is not None:
    os.environ.setdefault("ETH_HASH_BACKEND", "pysha3")

try:
    __version__ = version("flchain")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
