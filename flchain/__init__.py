"""flchain: decentralized federated learning on libp2p and an Ethereum smart contract."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("flchain")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
