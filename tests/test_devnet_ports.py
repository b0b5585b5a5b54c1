"""The ports a devnet's listeners get: free, and outside the range the OS hands out for
outgoing connections, so none is taken between the choice and the listen."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from flchain.devnet import ports


def _listen(port: int) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()


def test_listen_ports_are_free_and_below_the_ephemeral_range() -> None:
    low, high = ports.ephemeral_range()
    assert 0 < low <= high
    chosen = {ports.free_listen_port() for _ in range(20)}
    for port in chosen:
        assert ports.LOWEST_PORT <= port < low
        _listen(port)  # free indeed
    assert len(chosen) > 1  # drawn at random, not one fixed port


def test_without_the_kernels_range_the_iana_range_is_avoided(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(ports, "EPHEMERAL_RANGE_FILE", tmp_path / "missing")
    assert ports.ephemeral_range() == ports.IANA_EPHEMERAL
    assert ports.LOWEST_PORT <= ports.free_listen_port() < ports.IANA_EPHEMERAL[0]


def test_a_range_starting_low_leaves_the_choice_to_the_os(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    narrow = tmp_path / "range"
    narrow.write_text("1024\t65535\n")
    monkeypatch.setattr(ports, "EPHEMERAL_RANGE_FILE", narrow)
    port = ports.free_listen_port()
    assert 1024 <= port <= 65535
    _listen(port)
