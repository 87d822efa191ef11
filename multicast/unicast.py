"""Unicast top-up: fetch missing chunks with HTTP range requests (PROTOCOL.md sections 7-8).

A redirected (slow) receiver fetches each chunk it still lacks with ``GET <path>`` and
``Range: bytes=<start>-<end>`` and hands it to :meth:`Receiver.receive_chunk`, which verifies it
against the signed manifest exactly like a multicast-assembled chunk. The HTTP/1.1 response head
is parsed by :func:`parse_range_head` (bounded, strict: only ``206`` with the exact
``Content-Range`` and ``Content-Length`` asked for); the body is read with ``readexactly``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence

from multicast.receiver import Event, Receiver, ReceiverState
from wds.errors import RemoteProtocolError

#: a response head larger than this is refused (RFC 9112 sets no limit; we need a few lines)
MAX_HEAD = 16 * 1024
MAX_ATTEMPTS = 3

_STATUS = re.compile(rb"^HTTP/1\.[01] (\d{3})(?: [^\r\n]*)?$")
_CONTENT_RANGE = re.compile(rb"^bytes (\d{1,15})-(\d{1,15})/(\d{1,15}|\*)$")

Fetch = Callable[[int, int], Awaitable[bytes]]


class BadHttpResponse(RemoteProtocolError):
    """The HTTP server's answer to a range request is not the range asked for."""


def build_range_request(host: str, path: str, start: int, length: int) -> bytes:
    if not path.startswith("/") or any(c in path for c in "\r\n "):
        raise ValueError(f"bad request path {path!r}")
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nRange: bytes={start}-{start + length - 1}\r\n"
        "Accept-Encoding: identity\r\nConnection: close\r\nUser-Agent: wds-multicast\r\n\r\n"
    ).encode("ascii")


def parse_range_head(head: bytes, start: int, length: int) -> None:
    """Check a response head (through the blank line) answers ``bytes=start-(start+length-1)``."""
    if len(head) > MAX_HEAD or not head.endswith(b"\r\n\r\n"):
        raise BadHttpResponse("response head too long or not terminated")
    lines = head[:-4].split(b"\r\n")
    status = _STATUS.match(lines[0])
    if status is None:
        raise BadHttpResponse("not an HTTP/1.x status line")
    if status.group(1) != b"206":
        raise BadHttpResponse(f"status {status.group(1).decode()}, expected 206 Partial Content")
    fields: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise BadHttpResponse("malformed header line")
        key = name.lower()
        if key in fields and key in (b"content-length", b"content-range"):
            raise BadHttpResponse(f"{name.decode(errors='replace')} repeated")
        fields[key] = value.strip()
    if b"transfer-encoding" in fields:
        raise BadHttpResponse("transfer-encoding on a range response is not supported")
    rng = _CONTENT_RANGE.match(fields.get(b"content-range", b""))
    if rng is None or (int(rng.group(1)), int(rng.group(2))) != (start, start + length - 1):
        raise BadHttpResponse("Content-Range is not the range asked for")
    if fields.get(b"content-length") != str(length).encode():
        raise BadHttpResponse("Content-Length is not the length asked for")


def parse_whole_head(head: bytes, max_length: int) -> int:
    """Check a ``200`` response head for a whole resource; return its Content-Length."""
    if len(head) > MAX_HEAD or not head.endswith(b"\r\n\r\n"):
        raise BadHttpResponse("response head too long or not terminated")
    lines = head[:-4].split(b"\r\n")
    status = _STATUS.match(lines[0])
    if status is None or status.group(1) != b"200":
        raise BadHttpResponse(f"expected 200 OK, got {lines[0][:40]!r}")
    lengths = [
        value.strip()
        for name, sep, value in (line.partition(b":") for line in lines[1:])
        if sep and name.strip().lower() == b"content-length"
    ]
    if len(lengths) != 1 or not lengths[0].isdigit() or len(lengths[0]) > 15:
        raise BadHttpResponse("exactly one numeric Content-Length is required")
    length = int(lengths[0])
    if length > max_length:
        raise BadHttpResponse(f"{length} bytes announced, more than the {max_length} allowed")
    return length


async def fetch_whole(host: str, port: int, path: str, *, max_length: int, timeout: float) -> bytes:
    """GET a whole resource (the manifest), bounded by ``max_length`` bytes and ``timeout``."""

    async def fetch() -> bytes:
        reader, writer = await asyncio.open_connection(host, port, limit=MAX_HEAD)
        try:
            request = build_range_request(host, path, 0, 1).replace(b"Range: bytes=0-0\r\n", b"")
            writer.write(request)
            await writer.drain()
            try:
                head = await reader.readuntil(b"\r\n\r\n")
                length = parse_whole_head(head, max_length)
                return await reader.readexactly(length)
            except (asyncio.LimitOverrunError, asyncio.IncompleteReadError):
                raise BadHttpResponse("the response ended early or its head is too long") from None
        finally:
            writer.close()

    return await asyncio.wait_for(fetch(), timeout)


async def fetch_range(
    host: str, port: int, path: str, start: int, length: int, *, timeout: float = 30.0
) -> bytes:
    """One range over one connection (``Connection: close``), bounded in time and size."""

    async def fetch() -> bytes:
        reader, writer = await asyncio.open_connection(host, port, limit=MAX_HEAD)
        try:
            writer.write(build_range_request(host, path, start, length))
            await writer.drain()
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.LimitOverrunError, asyncio.IncompleteReadError):
                raise BadHttpResponse("no complete response head") from None
            parse_range_head(head, start, length)
            try:
                return await reader.readexactly(length)
            except asyncio.IncompleteReadError:
                raise BadHttpResponse("the body ended before the range did") from None
        finally:
            writer.close()

    return await asyncio.wait_for(fetch(), timeout)


async def top_up(
    receiver: Receiver,
    fetch: Fetch,
    clock: Callable[[], float],
    on_events: Callable[[Sequence[Event]], None],
) -> bool:
    """Fetch every chunk the receiver lacks; True when it is complete.

    Each chunk gets :data:`MAX_ATTEMPTS` tries (a network error or a chunk failing its SHA-256
    costs one); after that the top-up gives up and the on-disk bitmap lets a rerun resume.
    """
    m = receiver.manifest
    for index in range(m.chunk_count):
        for _ in range(MAX_ATTEMPTS):
            if receiver.has_chunk(index) or receiver.state is ReceiverState.DONE:
                break
            try:
                data = await fetch(index * m.chunk_size, m.chunk_length(index))
            except (OSError, TimeoutError, RemoteProtocolError):
                continue
            on_events(receiver.receive_chunk(index, data, clock()))
        if not receiver.has_chunk(index) and receiver.state is not ReceiverState.DONE:
            return False
    return receiver.state is ReceiverState.DONE


async def fetch_missing(
    receiver: Receiver,
    fetch: Fetch,
    clock: Callable[[], float],
    on_events: Callable[[Sequence[Event]], Awaitable[None]],
    *,
    parallel: int = 4,
) -> bool:
    """``--unicast``: fetch every missing chunk over ``parallel`` connections; True if complete.

    The same verification as :func:`top_up` (:meth:`Receiver.receive_chunk`); several requests
    in flight keep a TCP connection's slow start and the per-request round trip off the critical
    path. ``on_events`` is awaited, so a slow disk holds the fetchers back (bounded memory: at
    most ``parallel`` chunks in hand).
    """
    m = receiver.manifest
    todo = iter([i for i in range(m.chunk_count) if not receiver.has_chunk(i)])

    async def worker() -> bool:
        for index in todo:
            for _ in range(MAX_ATTEMPTS):
                if receiver.has_chunk(index):
                    break
                try:
                    data = await fetch(index * m.chunk_size, m.chunk_length(index))
                except (OSError, TimeoutError, RemoteProtocolError):
                    continue
                await on_events(receiver.receive_chunk(index, data, clock()))
            if not receiver.has_chunk(index):
                return False
        return True

    results = await asyncio.gather(*(worker() for _ in range(max(1, parallel))))
    return all(results) and receiver.state is ReceiverState.DONE
