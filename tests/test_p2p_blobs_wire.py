"""The blob exchange wire format, against an in-memory stream."""

from __future__ import annotations

import pytest
import trio

from flchain.node import blobs
from flchain.node.blobs import BlobProtocolError, Status


class FakeStream:
    """Serves `incoming` in chunks of at most `chunk` bytes; records writes."""

    def __init__(self, incoming: bytes = b"", chunk: int = 3) -> None:
        self.incoming = incoming
        self.chunk = chunk
        self.written = b""
        self.writes: list[int] = []  # the size of each write call
        self.read_bytes = 0

    async def read(self, n: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        size = min(self.chunk, len(self.incoming), n if n is not None else self.chunk)
        data, self.incoming = self.incoming[:size], self.incoming[size:]
        self.read_bytes += len(data)
        return data

    async def write(self, data: bytes) -> None:
        await trio.lowlevel.checkpoint()
        self.written += data
        self.writes.append(len(data))

    async def close(self) -> None:
        await trio.lowlevel.checkpoint()

    async def reset(self) -> None:
        await trio.lowlevel.checkpoint()


def _run(fn, *args):  # type: ignore[no-untyped-def]
    return trio.run(fn, *args)


def test_response_bytes_are_status_length_payload() -> None:
    stream = FakeStream()
    _run(blobs.write_response, stream, Status.OK, b"hello")
    assert stream.written == b"\x00" + (5).to_bytes(8, "big") + b"hello"
    refused = FakeStream()
    _run(blobs.write_response, refused, Status.REFUSED)
    assert refused.written == b"\x02" + bytes(8)


@pytest.mark.parametrize("size", [0, 1, blobs.CHUNK - 9, blobs.CHUNK - 8, 605_000])
def test_a_response_goes_out_in_as_few_full_frames_as_its_bytes_need(size: int) -> None:
    """Each write is one yamux frame; the 9-byte header shares the first one, since a frame of
    its own costs the other end a read and a dispatch like a full one."""
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    stream = FakeStream()
    _run(blobs.write_response, stream, Status.OK, payload)
    assert stream.written == b"\x00" + size.to_bytes(8, "big") + payload
    assert max(stream.writes) <= blobs.CHUNK
    assert len(stream.writes) == -(-(size + 9) // blobs.CHUNK)


def test_request_is_the_bare_digest() -> None:
    stream = FakeStream()
    _run(blobs.write_request, stream, b"\x07" * 32)
    assert stream.written == b"\x07" * 32
    with pytest.raises(ValueError, match="32 bytes"):
        _run(blobs.write_request, stream, b"\x07" * 31)
    with pytest.raises(ValueError, match="payload"):
        _run(blobs.write_response, stream, Status.NOT_FOUND, b"x")


def test_reads_reassemble_chunks() -> None:
    digest = bytes(range(32))
    assert _run(blobs.read_request, FakeStream(digest, chunk=5)) == digest
    payload = bytes(range(200))
    response = b"\x00" + len(payload).to_bytes(8, "big") + payload
    assert _run(blobs.read_response, FakeStream(response, chunk=7), 1000) == payload


def test_oversize_length_is_refused_before_reading_the_payload() -> None:
    stream = FakeStream(b"\x00" + (10**9).to_bytes(8, "big") + b"x" * 100, chunk=100)
    with pytest.raises(BlobProtocolError) as info:
        _run(blobs.read_response, stream, 1000)
    assert info.value.reason == "oversize"
    assert stream.read_bytes == blobs.HEADER.size


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (b"\x01" + bytes(8), "not_found"),
        (b"\x02" + bytes(8), "refused"),
        (b"\x04" + bytes(8), "busy"),
        (b"\x09" + bytes(8), "bad_status"),
        (b"\x01" + (3).to_bytes(8, "big") + b"abc", "bad_status"),
        (b"\x00" + (10).to_bytes(8, "big") + b"short", "truncated"),
        (b"\x00\x00", "truncated"),
        (b"", "truncated"),
    ],
)
def test_bad_responses_name_the_reason(response: bytes, reason: str) -> None:
    with pytest.raises(BlobProtocolError) as info:
        _run(blobs.read_response, FakeStream(response), 1000)
    assert info.value.reason == reason


def test_short_request_is_truncated() -> None:
    with pytest.raises(BlobProtocolError) as info:
        _run(blobs.read_request, FakeStream(b"\x01" * 31))
    assert info.value.reason == "truncated"


def test_stream_errors_become_protocol_errors() -> None:
    class Exploding(FakeStream):
        async def read(self, n: int | None = None) -> bytes:
            raise ConnectionResetError("peer went away")

    with pytest.raises(BlobProtocolError, match="peer went away"):
        _run(blobs.read_request, Exploding())
