"""Limits and access rules of the devnet JSON-RPC server, with the defaults users rely on.

Light on purpose (no py-evm import): `flchain chain serve --help` reads its defaults from here.
The defaults follow geth, the client users already trust: `--rpc.gascap` 50M gas,
`--rpc.evmtimeout` 5 s, `--http.vhosts localhost`, no CORS origins, no pre-EIP-155
transactions. The dev keys are unlocked, so a page in the user's browser must not reach them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

DEFAULT_MAX_BODY: Final = 8 * 1024 * 1024  # bytes of one HTTP request body
DEFAULT_MAX_DEPTH: Final = 64  # JSON nesting of one request body (web3 needs < 10)
DEFAULT_GAS_CAP: Final = 50_000_000  # geth's --rpc.gascap
DEFAULT_EVM_TIMEOUT: Final = 5.0  # seconds, geth's --rpc.evmtimeout
DEFAULT_VHOSTS: Final = ("localhost", "127.0.0.1", "::1")
DEFAULT_CORS_DOMAINS: Final[tuple[str, ...]] = ()
SOCKET_TIMEOUT_S: Final = 60.0  # one read or write on a client socket (and keep-alive idling)
REQUEST_READ_S: Final = 60.0  # the whole request (headers and body) of one slow client
MAX_CONNECTIONS: Final = 256  # open client connections (a thread each); more are closed at once
LOOPBACK_NAMES: Final = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


@dataclass(frozen=True)
class WsLimits:
    """Budgets of one WebSocket connection (`eth_subscribe`): a client that stops reading or
    answering costs the server a bounded queue, then its connection, never a mining delay."""

    max_subscriptions: int = 64  # eth_subscribe ids alive at once on one connection
    # mined blocks waiting to be sent; one more cuts the client off. Twice what one anvil_mine
    # may mine at once (`chain.MAX_MINE_BLOCKS`): a reading client survives any burst.
    max_queue: int = 20_000
    send_timeout: float = 10.0  # one write to the client (a client that does not read)
    ping_interval: float = 30.0  # silence after which the server pings the client
    pong_timeout: float = 30.0  # then silence after which it closes the connection

    def __post_init__(self) -> None:
        if self.max_subscriptions < 1 or self.max_queue < 1:
            raise ValueError(f"WebSocket budgets must be positive: {self}")
        if min(self.send_timeout, self.ping_interval, self.pong_timeout) <= 0:
            raise ValueError(f"WebSocket timeouts must be positive: {self}")


@dataclass(frozen=True)
class CallLimits:
    """Bounds on one eth_call / eth_estimateGas: its gas (clamped, as geth does) and time."""

    gas_cap: int = DEFAULT_GAS_CAP
    timeout: float = DEFAULT_EVM_TIMEOUT

    def __post_init__(self) -> None:
        if self.gas_cap < 21_000:
            raise ValueError(f"the RPC gas cap must be at least 21000, got {self.gas_cap}")
        if not 0 < self.timeout <= 3600:
            raise ValueError(f"the EVM timeout must be in (0, 3600] seconds, got {self.timeout}")


@dataclass(frozen=True)
class RpcPolicy:
    """Who may talk to the server and how much one request may carry."""

    max_body: int = DEFAULT_MAX_BODY
    max_depth: int = DEFAULT_MAX_DEPTH
    vhosts: tuple[str, ...] = DEFAULT_VHOSTS
    cors_domains: tuple[str, ...] = DEFAULT_CORS_DOMAINS
    allow_unprotected_txs: bool = False

    def __post_init__(self) -> None:
        if self.max_body < 1:
            raise ValueError(f"max body size must be positive, got {self.max_body}")
        if self.max_depth < 2:
            raise ValueError(f"max JSON depth must be at least 2, got {self.max_depth}")
        object.__setattr__(self, "vhosts", tuple(h.strip().lower() for h in self.vhosts))
        origins = tuple(o.strip().lower().rstrip("/") for o in self.cors_domains)
        object.__setattr__(self, "cors_domains", origins)

    def host_allowed(self, host_header: str | None) -> bool:
        """geth's --http.vhosts: the Host name (port dropped) must be listed, or `*` given.

        A missing Host header and literal IP addresses pass, as in geth: DNS rebinding, the
        attack this stops, needs a host *name* that resolves to this machine.
        """
        if host_header is None or "*" in self.vhosts:
            return True
        host = _host_name(host_header)
        if host is None:
            return False
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return host in self.vhosts
        return True

    def origin_allowed(self, origin: str) -> bool:
        """geth's --http.corsdomain: the Origin must be listed (case aside), or `*` given."""
        return "*" in self.cors_domains or origin.strip().lower() in self.cors_domains


def is_loopback(host: str) -> bool:
    """Whether a listen address only accepts connections from this machine."""
    name = host.strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def split_list(values: Iterable[str]) -> tuple[str, ...]:
    """Comma-separated option values (repeatable options too) as one tuple, blanks dropped."""
    return tuple(part.strip() for value in values for part in value.split(",") if part.strip())


def _host_name(header: str) -> str | None:
    """The host of a Host header without its port; IPv6 brackets removed; None if malformed."""
    header = header.strip().lower()
    if not header:
        return None
    if header.startswith("["):
        end = header.find("]")
        if end < 0:
            return None
        return header[1:end]
    if header.count(":") > 1:
        return header  # a bare IPv6 address (not valid in Host, but unambiguous)
    return header.split(":", 1)[0]
