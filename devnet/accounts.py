"""Deterministic dev accounts derived from a BIP-39 mnemonic, as anvil and hardhat do.

With the default mnemonic and path the keys are the well-known anvil/hardhat ones, so tools and
tutorials that hard-code `0xf39F...2266` work against the devnet unchanged.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

DEFAULT_MNEMONIC = "test test test test test test test test test test test junk"
DEFAULT_DERIVATION_PATH = "m/44'/60'/0'/0/"
MAX_ACCOUNTS = 1000


class AccountConfigError(ValueError):
    """The mnemonic, seed, derivation path or account count is unusable."""


@dataclass(frozen=True)
class DevAccount:
    """One funded dev account: checksummed address and raw 32-byte private key."""

    address: str
    private_key: bytes = field(repr=False)

    @property
    def canonical_address(self) -> bytes:
        """The 20 address bytes, as py-evm wants them."""
        return bytes.fromhex(self.address[2:])

    @property
    def private_key_hex(self) -> str:
        """The key as 0x-hex, the form cast and web3 accept."""
        return "0x" + self.private_key.hex()


def derive_accounts(
    mnemonic: str = DEFAULT_MNEMONIC,
    count: int = 10,
    derivation_path: str = DEFAULT_DERIVATION_PATH,
) -> list[DevAccount]:
    """Derive `count` accounts at `derivation_path` + index (0, 1, ...)."""
    if not 0 <= count <= MAX_ACCOUNTS:
        raise AccountConfigError(f"account count must be in [0, {MAX_ACCOUNTS}], got {count}")
    if not derivation_path.startswith("m/") or not derivation_path.endswith("/"):
        raise AccountConfigError(
            f"derivation path prefix must look like \"m/44'/60'/0'/0/\", got {derivation_path!r}"
        )
    from eth_account import Account  # eth_account: only when keys are derived
    from eth_utils import ValidationError as EthValidationError

    Account.enable_unaudited_hdwallet_features()
    accounts = []
    for index in range(count):
        try:
            local = Account.from_mnemonic(mnemonic, account_path=f"{derivation_path}{index}")
        except EthValidationError as exc:
            raise AccountConfigError(f"invalid mnemonic: {exc}") from exc
        except ValueError as exc:
            raise AccountConfigError(f"invalid derivation path {derivation_path!r}: {exc}") from exc
        accounts.append(DevAccount(address=local.address, private_key=bytes(local.key)))
    return accounts


def mnemonic_from_seed(seed: int) -> str:
    """A 12-word mnemonic determined by an integer seed, for reproducible non-default keys.

    Like anvil's `--mnemonic-seed-unsafe`: convenient for tests, worthless as a secret.
    """
    if seed < 0:
        raise AccountConfigError(f"seed must be non-negative, got {seed}")
    from eth_account.hdaccount.mnemonic import Language, Mnemonic

    entropy = hashlib.sha256(f"flchain-devnet-seed:{seed}".encode()).digest()[:16]
    return Mnemonic(Language.ENGLISH).to_mnemonic(entropy)
