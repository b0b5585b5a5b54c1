"""Fee market answers: eth_feeHistory, eth_gasPrice and eth_maxPriorityFeePerGas.

The devnet has no competition for block space, so the suggested tip is a constant 1 gwei (what
eth-tester and anvil default to) and the gas price is the next base fee plus that tip.
"""

from __future__ import annotations

from typing import Any

from flchain.devnet.chain import DevChain
from flchain.devnet.encoding import BlockTag, to_quantity
from flchain.devnet.errors import InvalidParamsError
from flchain.devnet.serializers import effective_gas_price

SUGGESTED_PRIORITY_FEE = 10**9
MAX_HISTORY_BLOCKS = 1024
MAX_PERCENTILES = 100


def suggested_gas_price(chain: DevChain) -> int:
    """A legacy gas price that is accepted in the next block."""
    return chain.next_base_fee() + SUGGESTED_PRIORITY_FEE


def fee_history(
    chain: DevChain, block_count: int, newest: BlockTag, percentiles: list[float] | None
) -> dict[str, Any]:
    """eth_feeHistory: base fees (one more than blocks), gas-used ratios and tip percentiles."""
    if not 1 <= block_count <= MAX_HISTORY_BLOCKS:
        message = f"blockCount must be in [1, {MAX_HISTORY_BLOCKS}], got {block_count}"
        raise InvalidParamsError(message)
    _check_percentiles(percentiles)
    with chain.lock:
        head = chain.block_number
        newest_number = head if newest == "pending" else chain.resolve_block_number(newest)
        oldest = max(0, newest_number - block_count + 1)
        base_fees: list[str] = []
        ratios: list[float] = []
        rewards: list[list[str]] = []
        for number in range(oldest, newest_number + 1):
            block = chain.get_block(number)
            if block is None:
                raise InvalidParamsError(f"block {number} does not exist")
            header = block.header
            base_fees.append(to_quantity(header.base_fee_per_gas))
            ratios.append(header.gas_used / header.gas_limit)
            if percentiles is not None:
                rewards.append([to_quantity(r) for r in _block_rewards(chain, block, percentiles)])
        following = chain.get_block(newest_number + 1) if newest_number < head else None
        next_fee = following.header.base_fee_per_gas if following else chain.next_base_fee()
        base_fees.append(to_quantity(next_fee))
    result: dict[str, Any] = {
        "oldestBlock": to_quantity(oldest),
        "baseFeePerGas": base_fees,
        "gasUsedRatio": ratios,
    }
    if percentiles is not None:
        result["reward"] = rewards
    return result


def _check_percentiles(percentiles: list[float] | None) -> None:
    if percentiles is None:
        return
    if len(percentiles) > MAX_PERCENTILES:
        raise InvalidParamsError(f"at most {MAX_PERCENTILES} reward percentiles")
    previous = -1.0
    for value in percentiles:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidParamsError("reward percentiles must be numbers")
        if not 0 <= value <= 100 or value < previous:
            raise InvalidParamsError("reward percentiles must increase within [0, 100]")
        previous = value


def _block_rewards(chain: DevChain, block: Any, percentiles: list[float]) -> list[int]:
    """Tips paid at each gas-weighted percentile of the block, as geth computes them."""
    if not block.transactions:
        return [0] * len(percentiles)
    receipts = chain.get_receipts(block)
    base_fee = block.header.base_fee_per_gas
    paid = []
    previous = 0
    for tx, receipt in zip(block.transactions, receipts, strict=True):
        paid.append((effective_gas_price(tx, base_fee) - base_fee, receipt.gas_used - previous))
        previous = receipt.gas_used
    paid.sort()
    total = sum(gas for _, gas in paid)
    rewards = []
    for percentile in percentiles:
        threshold = total * percentile / 100
        cumulative = 0
        chosen = paid[-1][0]
        for tip, gas in paid:
            cumulative += gas
            if cumulative >= threshold:
                chosen = tip
                break
        rewards.append(chosen)
    return rewards
