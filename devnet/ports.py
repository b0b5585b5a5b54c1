"""Ports for a devnet's listeners, chosen before the processes that listen on them start.

The OS's "any free port" (bind to port 0) comes from its ephemeral range, the same range it
draws from for outgoing connections; between the choice and the listen, a connection could
take the port (it happened once, at 16 nodes dialing each other: "Address already in use").
Ports are drawn from below that range instead, where outgoing connections never land.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
IANA_EPHEMERAL = (49152, 65535)  # where the range is not readable (not Linux)
LOWEST_PORT = 10_000  # below: well-known and registered services' neighbourhood
ATTEMPTS = 64


def ephemeral_range() -> tuple[int, int]:
    """The kernel's ephemeral port range (Linux), else IANA's."""
    try:
        low, high = (int(v) for v in EPHEMERAL_RANGE_FILE.read_text().split())
    except (OSError, ValueError):
        return IANA_EPHEMERAL
    return low, high


def free_listen_port(host: str = "127.0.0.1") -> int:
    """A port on `host` that is free now and outside the ephemeral range, so no outgoing
    connection takes it before its listener starts; the OS's pick if none is found."""
    low, _ = ephemeral_range()
    if low > LOWEST_PORT:
        for _ in range(ATTEMPTS):
            port = random.randrange(LOWEST_PORT, low)
            if _bindable(host, port):
                return port
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True
