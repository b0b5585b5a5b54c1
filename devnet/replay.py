"""A stopped devnet's chain, read back from its journal inside this process.

`flchain ledger --devnet DIR` and `flchain devnet status` use it once the devnet's chain
process has gone: the journal (`DIR/chain/journal.jsonl`) is replayed into an in-memory,
read-only `DevChain` (`DevChain.open_read_only`: no lock taken, nothing written), and web3
talks to it through the same JSON-RPC handlers the chain server runs, without a socket or a
process. So the ledger code cannot tell it from the running chain, and nothing is left behind.

Imports py-evm: import this module only when a replay is needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from web3 import Web3
from web3.providers.base import JSONBaseProvider
from web3.types import RPCEndpoint, RPCResponse

from flchain.devnet.chain import DevChain
from flchain.devnet.jsonrpc import JsonRpcDispatcher
from flchain.devnet.rpc_methods import EthRpc


class ReplayProvider(JSONBaseProvider):
    """A web3 provider answering from a `DevChain` in this process, through the devnet's own
    JSON-RPC dispatcher: requests and answers are encoded as they would be on the wire."""

    def __init__(self, chain: DevChain) -> None:
        super().__init__()
        self.chain = chain
        self._dispatcher = JsonRpcDispatcher(EthRpc(chain).handlers(), lock=chain.lock)

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        return self._answer(self.encode_rpc_request(method, params))

    def make_batch_request(self, requests: list[tuple[RPCEndpoint, Any]]) -> Any:
        return self._answer(self.encode_batch_rpc_request(requests))

    def is_connected(self, show_traceback: bool = False) -> bool:
        return True

    def _answer(self, body: bytes) -> Any:
        response = self._dispatcher.handle_body(body)
        if response is None:  # only a notification: web3 never sends one
            raise OSError("the replayed chain sent no answer")
        return self.decode_rpc_response(response)


def replay_web3(state_dir: Path) -> Web3:
    """A Web3 over the chain journaled in `state_dir`, replayed read-only in memory.
    JournalError (a ValueError) when there is no journal or it does not replay."""
    return Web3(ReplayProvider(DevChain.open_read_only(Path(state_dir))))
