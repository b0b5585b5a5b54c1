"""The `flchain` command: one click group over the command modules in `flchain.commands`.

Subcommands are imported only when used, so `flchain --help` does not pay for torch, web3 and
libp2p imports it does not need.
"""

from __future__ import annotations

import importlib
import sys

import click

from flchain import __version__
from flchain.fast_exit import exit_now

# name -> (module, attribute, one-line help shown by `flchain --help`)
_COMMANDS: dict[str, tuple[str, str, str]] = {
    "simulate": (
        "flchain.commands.simulate",
        "simulate_command",
        "Run a federated experiment with Byzantine peers in one process.",
    ),
    "devnet": ("flchain.commands.devnet", "devnet", "A complete local network in one command."),
    "node": ("flchain.commands.node", "node", "Run one node daemon: keys, the daemon, its status."),
    "chain": ("flchain.commands.chain", "chain", "Serve a local Ethereum JSON-RPC chain (py-evm)."),
    "contract": ("flchain.commands.contract", "contract", "Deploy the FLChain contract."),
    "task": (
        "flchain.commands.task",
        "task",
        "Create tasks on FLChain, fund their rewards, withdraw payouts.",
    ),
    "ledger": (
        "flchain.commands.ledger",
        "ledger",
        "Inspect and verify the on-chain model ledger.",
    ),
    "bench": (
        "flchain.commands.bench",
        "bench",
        "Measure flchain's building blocks on this machine.",
    ),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in _COMMANDS:
            return None
        module, attr, _ = _COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, _COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(
    cls=_LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, "-V", "--version", prog_name="flchain")
def cli() -> None:
    """flchain: decentralized federated learning.

    Peers train locally, exchange model updates peer to peer over libp2p and agree on every
    global model on an Ethereum smart contract. Try `make demo`, then `flchain devnet up
    --help`, `flchain simulate --help` and `flchain ledger --help`.
    """


def main() -> None:
    """Console-script entry point.

    A command that loaded torch (simulate, devnet up) spent about half a second after its
    work was done in the interpreter's teardown, freeing torch's modules one by one. Once
    the command has returned, its output is flushed and its logs are closed, nothing is left
    to do: such a process ends there (`flchain.fast_exit`), with the command's exit status."""
    try:
        cli(prog_name="flchain")
        code: object = 0
    except SystemExit as exit_:  # click ends every command so, usage errors included
        code = exit_.code
    if "torch" not in sys.modules:
        sys.exit(code)
    exit_now(code)


if __name__ == "__main__":
    main()
