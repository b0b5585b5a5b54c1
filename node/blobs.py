"""The blob exchange wire protocol `/flchain/blob/1.0.0`: fetch bytes by sha256.

Request:  exactly 32 bytes, the digest. The client then half-closes its side.
Response: 1 status byte, an 8-byte big-endian length, then `length` bytes of payload;
          the payload is empty unless the status is OK.

`/flchain/blob-session/1.0.0` carries the same requests and responses, one after another on
one stream, until the client closes it or it stays idle for the server's session timeout.
Every fetch on a stream of its own cost eight more frames than its payload needed (the
stream's open and acknowledgement, four of multistream-select, a close from each side), a
third of the frames of a 605 KB update, and each frame costs both ends about as much CPU
whatever its size. Clients offer the session protocol first and fall back to one request per
stream with servers that do not speak it.

Blobs are model updates of up to tens of MiB, far over gossipsub's ~1 MiB message limit,
hence a separate request/response protocol. Nothing here trusts the other side: the server
gives a client a few seconds to send its request, the client refuses a length over its
limit before reading a byte of payload, and the caller re-hashes what arrives (see
`flchain.node.p2p.P2PNode.fetch_blob`). The functions work on any object with libp2p's
stream methods (`read`, `write`, `close`, `reset`), so they can be tested with fakes.
"""

from __future__ import annotations

import enum
import struct
from typing import Final, Protocol

from libp2p.security.noise.io import MAX_PLAINTEXT_LENGTH as NOISE_MAX_PLAINTEXT
from libp2p.stream_muxer.yamux.yamux import HEADER_SIZE as YAMUX_HEADER
from libp2p.stream_muxer.yamux.yamux import MAX_MESSAGE_SIZE as YAMUX_MAX_FRAME

PROTOCOL_ID: Final = "/flchain/blob/1.0.0"
SESSION_PROTOCOL_ID: Final = "/flchain/blob-session/1.0.0"
# What a client offers, in order of preference, and what a server answers.
PROTOCOL_IDS: Final = (SESSION_PROTOCOL_ID, PROTOCOL_ID)
DIGEST_BYTES: Final = 32
HEADER: Final = struct.Struct(">BQ")  # status, payload length
# Bytes per read and write call: one yamux frame that fits one Noise message (the nodes speak
# Noise and yamux only, node/p2p.py). A write of 64 KiB went out as a full frame plus a 12-byte
# one, and each tiny frame cost a read and a window update at the other end: a 605 KB update
# took about 60 frames instead of 40, and a third more CPU (28 ms against 21 ms for both ends).
# A full frame (64 KiB and its 12-byte header) is also 29 bytes over Noise's 65,519-byte
# plaintext limit, so each went out as two encrypted messages, the second of 29 bytes. Writes
# of 1 MiB moved an update with as little CPU between two idle nodes, but on a loaded devnet
# (10 nodes on 2 cores) a transfer then stalled in half the runs (costing the round 15 s).
CHUNK: Final = min(YAMUX_MAX_FRAME, NOISE_MAX_PLAINTEXT) - YAMUX_HEADER


class Status(enum.IntEnum):
    """The response status byte."""

    OK = 0
    NOT_FOUND = 1
    REFUSED = 2  # the requester is not a member of any task this node serves
    BAD_REQUEST = 3
    BUSY = 4  # too many transfers in progress; try another provider
    TOO_LARGE = 5  # the blob is over this server's size limit
    # Commit, then reveal: the blob is the server's own update of a round whose submit phase
    # has not closed yet; ask again once it has (the client's reason is "not_revealed").
    NOT_REVEALED = 6


class BlobProtocolError(ValueError):
    """The other side broke the protocol; `reason` is the metrics label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class Stream(Protocol):
    """The subset of libp2p's INetStream this protocol uses."""

    async def read(self, n: int | None = None) -> bytes: ...

    async def write(self, data: bytes) -> None: ...

    async def close(self) -> None: ...

    async def reset(self) -> None: ...


async def read_exact(stream: Stream, n: int, *, what: str) -> bytes:
    """Read exactly `n` bytes; an early end of stream is a `BlobProtocolError`."""
    parts: list[bytes] = []
    remaining = n
    while remaining > 0:
        try:
            chunk = await stream.read(min(remaining, CHUNK))
        except Exception as exc:  # py-libp2p signals EOF and resets with several types
            raise BlobProtocolError("truncated", f"{what}: stream ended ({exc!r})") from exc
        if not chunk:
            raise BlobProtocolError("truncated", f"{what}: stream ended after {n - remaining}/{n}")
        if len(chunk) > remaining:  # a misbehaving stream returned more than asked
            raise BlobProtocolError("bad_stream", f"{what}: read returned too many bytes")
        parts.append(chunk)
        remaining -= len(chunk)
    return b"".join(parts)


async def read_request(stream: Stream) -> bytes:
    """Server side: the requested digest."""
    return await read_exact(stream, DIGEST_BYTES, what="request")


async def read_next_request(stream: Stream) -> bytes | None:
    """Server side of a session: the next requested digest, or None when the client ended
    the session (closed or reset its stream) before the first byte of another request."""
    try:
        first = await stream.read(DIGEST_BYTES)
    except Exception:  # py-libp2p ends a stream with several exception types
        return None
    if not first:
        return None
    if len(first) > DIGEST_BYTES:
        raise BlobProtocolError("bad_stream", "request: read returned too many bytes")
    if len(first) == DIGEST_BYTES:
        return first
    return first + await read_exact(stream, DIGEST_BYTES - len(first), what="request")


async def write_response(stream: Stream, status: Status, payload: bytes = b"") -> None:
    """Server side: the status, length and payload (payload only with OK)."""
    if status is not Status.OK and payload:
        raise ValueError("only an OK response carries a payload")
    # The header rides in the first frame: on its own it was a frame of 9 bytes, which the
    # other end read, decrypted and dispatched like a full one.
    await stream.write(HEADER.pack(status, len(payload)) + payload[: CHUNK - HEADER.size])
    for start in range(CHUNK - HEADER.size, len(payload), CHUNK):
        await stream.write(payload[start : start + CHUNK])


async def write_request(stream: Stream, digest: bytes) -> None:
    """Client side: send the digest."""
    if len(digest) != DIGEST_BYTES:
        raise ValueError(f"a digest is {DIGEST_BYTES} bytes, got {len(digest)}")
    await stream.write(digest)


async def read_response(stream: Stream, max_bytes: int) -> bytes:
    """Client side: the payload of an OK response of at most `max_bytes`.

    Any other status, an unknown status byte, a length over `max_bytes` or a short
    payload raises `BlobProtocolError` whose reason names what went wrong.
    """
    status_byte, length = HEADER.unpack(await read_exact(stream, HEADER.size, what="header"))
    try:
        status = Status(status_byte)
    except ValueError as exc:
        raise BlobProtocolError("bad_status", f"unknown status byte {status_byte}") from exc
    if status is not Status.OK:
        if length:
            raise BlobProtocolError("bad_status", f"{status.name} with a {length}-byte payload")
        raise BlobProtocolError(status.name.lower(), f"provider answered {status.name}")
    if length > max_bytes:
        raise BlobProtocolError("oversize", f"provider offers {length} bytes > limit {max_bytes}")
    return await read_exact(stream, length, what="payload")
