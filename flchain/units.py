"""Amounts of ether as people read them: exact, in ETH, without float rounding."""

from __future__ import annotations

WEI_PER_ETH = 10**18


def format_eth(wei: int | None) -> str:
    """Wei as ETH, exact and without trailing zeros ("0.01"); "-" for None."""
    if wei is None:
        return "-"
    whole, fraction = divmod(abs(int(wei)), WEI_PER_ETH)
    text = f"{whole}.{fraction:018d}".rstrip("0").rstrip(".")
    return f"-{text}" if int(wei) < 0 else text
