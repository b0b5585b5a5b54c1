"""The `flchain` command: one click group; each area of the product registers its own group."""

from __future__ import annotations

import click

from flchain import __version__
from flchain.cli_simulate import simulate_command
from flchain.devnet.cli import chain as chain_group
from flchain.devnet.devnet_cli import devnet as devnet_group
from flchain.node.cli import node as node_group


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="flchain")
def cli() -> None:
    """flchain: decentralized federated learning.

    Peers train locally, exchange model updates peer to peer and agree on every global model on
    an Ethereum smart contract. Start with `flchain simulate --help` for in-process experiments.
    """


cli.add_command(simulate_command)
cli.add_command(chain_group)
cli.add_command(node_group)
cli.add_command(devnet_group)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="flchain")


if __name__ == "__main__":
    main()
