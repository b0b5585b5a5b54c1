"""`flchain contract deploy`: put FLChain on any chain (the committed artifact)."""

from __future__ import annotations

from pathlib import Path

import click

from flchain.commands.access import connect, json_option, key_options, load_account, rpc_option
from flchain.commands.output import cli_errors, echo_json
from flchain.contracts.artifact import load_artifact

# ---------------------------------------------------------------- flchain contract


@click.group("contract")
def contract() -> None:
    """Deploy the FLChain contract to any Ethereum JSON-RPC endpoint."""


@contract.command("deploy")
@rpc_option
@key_options
@json_option
def deploy_command(
    rpc: str, key: str | None, key_file: Path | None, password_file: Path | None, as_json: bool
) -> None:
    """Deploy FLChain from the key's account; prints the address, tx hash, block and gas."""
    with cli_errors():
        account = load_account(key, key_file, password_file)
        w3 = connect(rpc)
        from hexbytes import HexBytes
        from web3 import Web3

        from flchain.contracts.sender import TransactionSender

        sender = TransactionSender(w3, account)
        receipt = sender.send(None, load_artifact().deploy_data(), what="deploy FLChain")
        result = {
            "address": Web3.to_checksum_address(receipt["contractAddress"]),
            "tx_hash": HexBytes(receipt["transactionHash"]).to_0x_hex(),
            "block_number": int(receipt["blockNumber"]),
            "gas_used": int(receipt["gasUsed"]),
            "chain_id": sender.chain_id,
            "deployer": account.address,
        }
    if as_json:
        echo_json(result)
        return
    click.echo(f"FLChain deployed at {result['address']}")
    click.echo(f"  tx {result['tx_hash']} in block {result['block_number']}")
    click.echo(f"  gas used {result['gas_used']}, chain id {result['chain_id']}")
