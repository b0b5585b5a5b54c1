"""flchain.devnet: the local Ethereum chain that FLChain runs on.

- `chain.DevChain`: eth-tester's py-evm backend with mining, time travel, snapshots and a
  replay journal (`journal`); `genesis` builds block 0, `execution` runs eth_call/estimates.
- `rpc_server.DevnetServer`: the Ethereum JSON-RPC server over HTTP (`jsonrpc` dispatch,
  `rpc_methods` handlers, `serializers`, `filters`, `fees`, `signer` for dev accounts).
- `anvil.spawn_anvil`: run foundry's anvil instead; `cli.chain`: the `flchain chain` commands.

Import submodules explicitly (`from flchain.devnet.chain import DevChain`): py-evm is slow to
import and the CLI only pays for it when a chain actually starts.
"""
