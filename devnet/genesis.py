"""Genesis configuration of the devnet chain and the eth-tester backend built from it.

The config is everything needed to rebuild block 0 bit for bit (the journal stores it as its
first record), so a restarted chain starts from the very same genesis hash.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from eth.abc import BlockHeaderAPI
from eth.vm.base import VM
from eth_keys import keys
from eth_tester import PyEVMBackend

from flchain.devnet.accounts import (
    DEFAULT_DERIVATION_PATH,
    DEFAULT_MNEMONIC,
    MAX_ACCOUNTS,
    DevAccount,
    derive_accounts,
)

DEFAULT_CHAIN_ID = 31337
DEFAULT_GAS_LIMIT = 30_000_000
WEI_PER_ETH = 10**18
DEFAULT_BALANCE_WEI = 10_000 * WEI_PER_ETH
MAX_CHAIN_ID = 2**53 - 1  # EIP-2294's bound that wallets and JSON numbers can represent
MIN_GAS_LIMIT = 5000  # py-evm's GAS_LIMIT_MINIMUM


class GenesisError(ValueError):
    """A genesis setting is out of range or inconsistent."""


@dataclass(frozen=True)
class GenesisConfig:
    """Chain id, funded accounts and block-0 header values of a devnet chain."""

    chain_id: int = DEFAULT_CHAIN_ID
    accounts: int = 10
    balance_wei: int = DEFAULT_BALANCE_WEI
    mnemonic: str = DEFAULT_MNEMONIC
    derivation_path: str = DEFAULT_DERIVATION_PATH
    timestamp: int | None = None
    gas_limit: int = DEFAULT_GAS_LIMIT

    def __post_init__(self) -> None:
        _check_int("chain_id", self.chain_id, 1, MAX_CHAIN_ID)
        _check_int("accounts", self.accounts, 1, MAX_ACCOUNTS)
        _check_int("balance_wei", self.balance_wei, 0, 2**256 - 1)
        _check_int("gas_limit", self.gas_limit, MIN_GAS_LIMIT, 2**63 - 1)
        if self.timestamp is not None:
            _check_int("timestamp", self.timestamp, 0, 2**63 - 1)
        if not isinstance(self.mnemonic, str) or not self.mnemonic.strip():
            raise GenesisError("mnemonic must be a non-empty string")

    def to_json(self) -> dict[str, Any]:
        """A JSON object for the journal; big balances stay exact as decimal strings."""
        data = dataclasses.asdict(self)
        data["balance_wei"] = str(self.balance_wei)
        return data

    @classmethod
    def from_json(cls, data: Any) -> GenesisConfig:
        """Inverse of `to_json`, rejecting unknown or missing fields."""
        if not isinstance(data, dict):
            raise GenesisError("genesis config must be a JSON object")
        names = {field.name for field in dataclasses.fields(cls)}
        if set(data) != names:
            raise GenesisError(f"genesis config fields {sorted(data)} differ from {sorted(names)}")
        values = dict(data)
        try:
            values["balance_wei"] = int(values["balance_wei"])
        except (TypeError, ValueError):
            raise GenesisError("genesis balance_wei must be an integer") from None
        return cls(**values)


def _check_int(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise GenesisError(f"{name} must be an integer in [{low}, {high}], got {value!r}")


def build_backend(config: GenesisConfig) -> tuple[PyEVMBackend, list[DevAccount]]:
    """An eth-tester py-evm backend whose genesis funds the config's dev accounts.

    eth-tester fixes the chain id of its chain class; the chain is re-created here over the same
    database with a configured subclass, which leaves the genesis block (and its hash) as is.
    """
    if config.timestamp is None:
        raise GenesisError("the genesis timestamp must be fixed before building the chain")
    accounts = derive_accounts(config.mnemonic, config.accounts, config.derivation_path)
    state = {
        account.canonical_address: {
            "balance": config.balance_wei,
            "nonce": 0,
            "code": b"",
            "storage": {},
        }
        for account in accounts
    }
    params = PyEVMBackend.generate_genesis_params(
        overrides={"timestamp": config.timestamp, "gas_limit": config.gas_limit}
    )
    backend = PyEVMBackend(genesis_parameters=params, genesis_state=state)
    chain_class = type(backend.chain).configure(
        __name__="FlchainDevChain",
        chain_id=config.chain_id,
        vm_configuration=tuple(
            (block, _same_second_blocks(vm)) for block, vm in backend.chain.vm_configuration
        ),
    )
    backend.chain = chain_class(backend.chain.chaindb.db)
    backend.account_keys = tuple(keys.PrivateKey(account.private_key) for account in accounts)
    return backend, accounts


def _same_second_blocks(vm_class: type[VM]) -> type[VM]:
    """`vm_class`, letting a block share its parent's timestamp (Hardhat's
    allowBlocksWithSameTimestamp; Ethereum itself wants later timestamps).

    Block timestamps count whole seconds; with one block per transaction, a chain that insisted
    on parent + 1 ran ahead of the wall clock under load (195 chain seconds in 76 wall seconds),
    so phase windows closed early in real time. Blocks here carry the wall-clock second, however
    many are mined in it. Timestamps still never go backwards."""

    class SameSecond(vm_class):  # type: ignore[valid-type,misc]
        @classmethod
        def validate_header(cls, header: BlockHeaderAPI, parent_header: BlockHeaderAPI) -> None:
            if parent_header is not None and header.timestamp == parent_header.timestamp:
                # the base check wants a strictly later timestamp; it reads nothing else of it
                parent_header = parent_header.copy(timestamp=header.timestamp - 1)
            super().validate_header(header, parent_header)

    SameSecond.__name__ = SameSecond.__qualname__ = vm_class.__name__
    return SameSecond
