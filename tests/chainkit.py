"""What the contract tests share: labelled digests, a revert check and one deployed FLChain per
chain kind with an owner, members and an outsider (tests/test_contract*.py, test_economics.py)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from flchain.contracts import ContractRevert, FLChainClient
from flchain.contracts.testing import LocalChain, open_chain


def digest(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


INITIAL = digest("initial model")


@contextmanager
def reverts(reason: str) -> Iterator[None]:
    with pytest.raises(ContractRevert) as info:
        yield
    assert info.value.reason == reason


@contextmanager
def deployed(
    request: pytest.FixtureRequest, n_members: int
) -> Iterator[tuple[LocalChain, FLChainClient, list[FLChainClient], FLChainClient]]:
    """A fresh chain of the fixture's kind (request.param: "eth-tester" or "anvil") with FLChain
    deployed: (chain, owner client, member clients, outsider client)."""
    anvil = request.getfixturevalue("anvil_bin") if request.param == "anvil" else None
    with open_chain(request.param, anvil) as chain:
        owner_key, outsider_key, *member_keys = chain.new_accounts(n_members + 2)
        owner = FLChainClient.deploy(chain.w3, owner_key)
        members = [FLChainClient(chain.w3, owner.address, key) for key in member_keys]
        outsider = FLChainClient(chain.w3, owner.address, outsider_key)
        yield chain, owner, members, outsider
