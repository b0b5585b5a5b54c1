"""Whether a node's account can pay for its part in a task, and moving ETH to it.

A node pays the task's stake when it joins and gas for every commit and vote. An unfunded
node used to retry its join every two seconds with the chain's "insufficient funds" error;
now it says once what to send where (`fund 0x... (balance 0 ETH, needs about X ETH for stake
and gas)`), re-reads its balance with a growing pause and joins once the ETH is there.
`flchain node fund` sends that ETH (`send_eth`), from a key or a devnet's unlocked account.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio
from eth_account.signers.local import LocalAccount
from web3 import Web3

from flchain.contracts import ContractRevert, FLChainClient, TaskStatus
from flchain.contracts.client import OPEN_ROUND_GAS, finalize_gas_bound
from flchain.contracts.sender import DEFAULT_PRIORITY_FEE, TransactionSender
from flchain.node.events import emit
from flchain.node.status import redact_url
from flchain.units import format_eth

log = logging.getLogger(__name__)

# Gas a member spends in an average round: a commit (80k) and a vote (95k; the one vote in
# n that finalizes costs 0.5M-1M): docs/benchmarks.md, "Gas per FLChain entry point".
ROUND_GAS = 250_000
# The join's gas limit (the client sends it with at least OPEN_ROUND_GAS: it may open round 1).
JOIN_GAS = OPEN_ROUND_GAS
# Balance re-checks while unfunded: first after FIRST_WAIT seconds, doubling up to MAX_WAIT.
FIRST_WAIT = 1.0
MAX_WAIT = 15.0


class FundError(ValueError):
    """A transfer that cannot be made as asked (no such dev account, failed on chain)."""


@dataclass(frozen=True)
class FundsNeed:
    """An account's balance against what the task will cost it (all in wei).

    `minimum` is what it must hold before it can take part at all: the stake and the gas
    limits of a join and of one (possibly finalizing) vote, at today's fee; `enough` adds gas
    for every round left, so that the node does not run dry halfway."""

    address: str
    balance: int
    minimum: int
    enough: int
    stake: int
    rounds_left: int
    member: bool

    @property
    def funded(self) -> bool:
        return self.balance >= self.minimum

    @property
    def suggested(self) -> int:
        """What to send: the shortfall up to `enough`, rounded up to two significant digits."""
        return round_up(max(self.enough - self.balance, 0))


def round_up(wei: int) -> int:
    """`wei` rounded up to two significant digits, so hints read 0.053 ETH, not
    0.052734375 ETH."""
    if wei <= 0:
        return 0
    step = 10 ** max(0, len(str(wei)) - 2)
    return math.ceil(wei / step) * step


def fee_per_gas(w3: Web3) -> int:
    """The most a transaction of ours pays per gas now: 2 x base fee + tip, as the node's
    TransactionSender bids (the legacy gas price on a chain without a base fee)."""
    block = w3.eth.get_block("latest")
    base_fee = block.get("baseFeePerGas")
    if base_fee is None:
        return int(w3.eth.gas_price)
    try:
        tip = int(w3.eth.max_priority_fee)
    except Exception:  # an endpoint without eth_maxPriorityFeePerGas
        tip = DEFAULT_PRIORITY_FEE
    return 2 * int(base_fee) + tip


def funds_need(client: FLChainClient, task_id: int) -> FundsNeed:
    """Read the account's balance, the task's stake, rounds and member cap, and the fee
    (blocking: several RPC calls)."""
    task = client.get_task(task_id)
    try:
        client.member_index(task_id, client.account)
        member = True
    except ContractRevert:
        member = False
    fee = fee_per_gas(client.w3)
    stake = 0 if member else int(task.stake)
    join = 0 if member else JOIN_GAS
    vote = finalize_gas_bound(int(task.max_members))
    rounds_left = max(1, int(task.max_rounds) - max(0, int(task.current_round) - 1))
    minimum = stake + fee * (join + vote)
    enough = max(minimum, stake + fee * (join + rounds_left * ROUND_GAS))
    if task.status not in (TaskStatus.REGISTERING, TaskStatus.RUNNING):
        minimum = enough = 0  # nothing left to pay for: the node only fetches the final model
    balance = int(client.w3.eth.get_balance(client.account))
    return FundsNeed(client.account, balance, minimum, enough, stake, rounds_left, member)


def fund_commands(need: FundsNeed, rpc_url: str) -> tuple[str, str]:
    """Commands that would fund this node: `flchain node fund`, and foundry's cast."""
    amount = format_eth(need.suggested)
    rpc = redact_url(rpc_url)
    return (
        f"flchain node fund {need.address} --rpc {rpc} --amount {amount} --from-key KEYFILE",
        f"cast send {need.address} --value {amount}ether --rpc-url {rpc} --private-key 0x...",
    )


async def wait_for_funds(
    client: FLChainClient,
    task_id: int,
    rpc_url: str,
    *,
    on_wait: Callable[[str], None] | None = None,
    sleep: Callable[[float], Awaitable[Any]] = trio.sleep,
) -> FundsNeed:
    """Return once the account holds `FundsNeed.minimum`. Until then: say once what to fund
    (an `unfunded` event, a warning), again only when the balance changes, and re-read the
    balance after FIRST_WAIT seconds, doubling up to MAX_WAIT. A chain that does not answer
    is retried the same way, its error reported once per distinct message. `on_wait` gets
    the hint (the daemon shows it in /status)."""
    delay = FIRST_WAIT
    told: int | None = None  # the balance last reported
    last_error: str | None = None
    while True:
        try:
            need = await trio.to_thread.run_sync(funds_need, client, task_id)
        except Exception as exc:  # chain down or slow: the join would fail too
            error = f"{type(exc).__name__}: {exc}"
            if error != last_error:
                log.warning("cannot read the balance of %s: %s; retrying", client.account, error)
                last_error = error
        else:
            last_error = None
            if need.funded:
                if told is not None:
                    emit("funded", address=need.address, balance_wei=need.balance)
                elif need.balance < need.enough:
                    emit(
                        "low_funds",
                        level=logging.WARNING,
                        address=need.address,
                        balance_wei=need.balance,
                        enough_wei=need.enough,
                        rounds=need.rounds_left,
                    )
                return need
            if need.balance != told:
                command, cast = fund_commands(need, rpc_url)
                emit(
                    "unfunded",
                    level=logging.WARNING,
                    address=need.address,
                    balance_wei=need.balance,
                    needs_wei=need.suggested,
                    minimum_wei=need.minimum,
                    stake_wei=need.stake,
                    member=need.member,
                    command=command,
                    cast=cast,
                )
                if on_wait is not None:
                    on_wait(
                        f"fund {need.address}: balance {format_eth(need.balance)} ETH, needs "
                        f"about {format_eth(need.suggested)} ETH"
                    )
                told = need.balance
        await sleep(delay)
        delay = min(delay * 2, MAX_WAIT)


# ---------------------------------------------------------------- sending ETH (`node fund`)


@dataclass(frozen=True)
class Transfer:
    """A mined ETH transfer."""

    sender: str
    to: str
    value: int
    tx_hash: str
    block_number: int
    balance: int  # the recipient's balance after it

    def as_dict(self) -> dict[str, Any]:
        return {
            "from": self.sender,
            "to": self.to,
            "value_wei": self.value,
            "value_eth": format_eth(self.value),
            "tx_hash": self.tx_hash,
            "block_number": self.block_number,
            "balance_wei": self.balance,
        }


def send_eth(
    w3: Web3,
    to: str,
    value: int,
    *,
    account: LocalAccount | None = None,
    dev_account: int | None = None,
    timeout: float = 120.0,
) -> Transfer:
    """Send `value` wei to `to` and wait for it to be mined: signed locally by `account`, or
    by the endpoint for its unlocked account number `dev_account` (anvil, `flchain chain
    serve`: eth_accounts / eth_sendTransaction). FundError says why it cannot."""
    if (account is None) == (dev_account is None):
        raise FundError("give a signing key or a dev account, not both or neither")
    to = Web3.to_checksum_address(to)
    if account is not None:
        receipt: Any = TransactionSender(w3, account, receipt_timeout=timeout).send(
            to, "0x", value=value, what="fund"
        )
        sender = account.address
    else:
        assert dev_account is not None
        unlocked = list(w3.eth.accounts)
        if not 0 <= dev_account < len(unlocked):
            raise FundError(
                f"the endpoint has {len(unlocked)} unlocked account(s) (eth_accounts), so no "
                f"--dev-account {dev_account}: it works on a devnet (anvil, flchain chain "
                "serve); elsewhere use --from-key"
            )
        sender = Web3.to_checksum_address(unlocked[dev_account])
        tx_hash = w3.eth.send_transaction({"from": sender, "to": to, "value": value})
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout)
        if int(receipt["status"]) != 1:
            raise FundError(f"the transfer {tx_hash.to_0x_hex()} failed on chain")
    return Transfer(
        sender=sender,
        to=to,
        value=value,
        tx_hash="0x" + bytes(receipt["transactionHash"]).hex(),
        block_number=int(receipt["blockNumber"]),
        balance=int(w3.eth.get_balance(to)),
    )
