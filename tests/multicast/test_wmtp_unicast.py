"""Unicast top-up: the HTTP range response parser, and a redirected receiver completing by HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wmtp_harness import CHUNK, SENDER, make_manifest

from multicast.codec import Announce, Redirect, RedirectReason, SenderState, build_datagram
from multicast.events import ChunkRejected, SwitchToUnicast, TransferComplete, WriteChunk
from multicast.receiver import Event, Receiver, ReceiverState
from multicast.unicast import (
    BadHttpResponse,
    build_range_request,
    fetch_range,
    fetch_whole,
    parse_range_head,
    parse_whole_head,
    top_up,
)
from wds.errors import RemoteProtocolError

GOOD = (
    b"HTTP/1.1 206 Partial Content\r\n"
    b"Content-Range: bytes 100-199/1000\r\n"
    b"Content-Length: 100\r\n\r\n"
)


def test_range_request_bytes() -> None:
    assert build_range_request("198.18.0.1", "/sessions/x/image", 100, 100) == (
        b"GET /sessions/x/image HTTP/1.1\r\nHost: 198.18.0.1\r\nRange: bytes=100-199\r\n"
        b"Accept-Encoding: identity\r\nConnection: close\r\nUser-Agent: wds-multicast\r\n\r\n"
    )
    with pytest.raises(ValueError):
        build_range_request("h", "/a b\r\nX: y", 0, 1)


def test_good_range_head_accepted() -> None:
    parse_range_head(GOOD, 100, 100)
    parse_range_head(GOOD.replace(b"/1000", b"/*").replace(b"Length:", b"length:"), 100, 100)


@pytest.mark.parametrize(
    "head, reason",
    [
        (GOOD.replace(b"206 Partial Content", b"200 OK"), "status 200"),
        (GOOD.replace(b"100-199", b"0-99"), "Content-Range"),
        (GOOD.replace(b"Length: 100", b"Length: 101"), "Content-Length"),
        (GOOD[:-2] + b"Transfer-Encoding: chunked\r\n\r\n", "transfer-encoding"),
        (GOOD[:-2] + b"Content-Length: 100\r\n\r\n", "repeated"),
        (GOOD[:-2], "not terminated"),
        (b"ICY 206 OK\r\n\r\n", "status line"),
        (GOOD[:-2] + b"X" * 20000 + b"\r\n\r\n", "too long"),
        (GOOD[:-2] + b"no colon\r\n\r\n", "malformed"),
    ],
)
def test_bad_range_heads_refused(head: bytes, reason: str) -> None:
    with pytest.raises(BadHttpResponse, match=reason):
        parse_range_head(head, 100, 100)


@given(st.binary(max_size=300))
def test_fuzz_range_head(blob: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        parse_range_head(blob + b"\r\n\r\n", 100, 100)


class RangeServer:
    """A tiny HTTP/1.1 range server for the test; ``faults`` maps a start offset to a fault."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.faults: dict[int, str] = {}
        self.requests = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.requests += 1
        m = re.search(rb"Range: bytes=(\d+)-(\d+)", head)
        if m is None:  # a whole GET (the manifest)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(self.data))
            writer.write(self.data)
            await writer.drain()
            writer.close()
            return
        start, end = int(m[1]), int(m[2])
        body = self.data[start : end + 1]
        fault = self.faults.pop(start, None)
        if fault == "corrupt":
            body = bytes(b ^ 0x5A for b in body)
        if fault == "full":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(self.data))
            writer.write(self.data)
        elif fault == "short":
            writer.write(b"HTTP/1.1 206 Partial Content\r\n")
            writer.write(b"Content-Range: bytes %d-%d/%d\r\n" % (start, end, len(self.data)))
            writer.write(b"Content-Length: %d\r\n\r\n" % len(body) + body[:10])
        else:
            writer.write(b"HTTP/1.1 206 Partial Content\r\n")
            writer.write(b"Content-Range: bytes %d-%d/%d\r\n" % (start, end, len(self.data)))
            writer.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
        writer.close()


def _redirected_receiver(data: bytes) -> Receiver:
    manifest, digest = make_manifest(data)
    r = Receiver(manifest, manifest_digest=digest, rng=random.Random(1), now=0.0)
    announce = Announce(manifest.session_id, SenderState.RUNNING, 1, 1000, 0, digest)
    r.receive(build_datagram(announce), SENDER, 0.0)
    redirect = Redirect(manifest.session_id, r.receiver_id, RedirectReason.SLOW)
    assert r.receive(build_datagram(redirect), SENDER, 0.1) == [SwitchToUnicast()]
    assert r.state is ReceiverState.UNICAST
    return r


def test_redirected_receiver_completes_over_http_despite_faults() -> None:
    data = random.Random(5).randbytes(4 * CHUNK + 10)
    receiver = _redirected_receiver(data)
    server = RangeServer(data)
    server.faults = {CHUNK: "corrupt", 2 * CHUNK: "full", 3 * CHUNK: "short"}
    events: list[Event] = []

    async def main() -> bool:
        srv = await asyncio.start_server(server.handle, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        fetch = functools.partial(fetch_range, "127.0.0.1", port, "/image", timeout=5.0)
        async with srv:
            return await top_up(receiver, fetch, lambda: 1.0, events.extend)

    assert asyncio.run(main()) is True
    written = {e.index: e.data for e in events if isinstance(e, WriteChunk)}
    assert b"".join(written[i] for i in range(5)) == data
    assert [e for e in events if isinstance(e, ChunkRejected)] == [ChunkRejected(1)]
    assert TransferComplete() in events and receiver.rejected_chunks == 1
    assert server.requests == 5 + 3  # one retry per fault


def test_top_up_gives_up_after_bounded_attempts() -> None:
    data = random.Random(6).randbytes(2 * CHUNK)
    receiver = _redirected_receiver(data)
    calls: list[int] = []

    async def broken(start: int, length: int) -> bytes:
        calls.append(start)
        raise BadHttpResponse("nope")

    assert asyncio.run(top_up(receiver, broken, lambda: 1.0, lambda e: None)) is False
    assert calls == [0, 0, 0]


def test_whole_get_head() -> None:
    assert parse_whole_head(b"HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n", 100) == 42
    for bad in (
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 101\r\n\r\n",
    ):
        with pytest.raises(BadHttpResponse):
            parse_whole_head(bad, 100)


@given(st.binary(max_size=300))
def test_fuzz_whole_head(blob: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        parse_whole_head(blob + b"\r\n\r\n", 1000)


def test_fetch_whole_is_bounded() -> None:
    server = RangeServer(b"m" * 5000)

    async def main() -> tuple[bytes, str]:
        srv = await asyncio.start_server(server.handle, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        async with srv:
            got = await fetch_whole("127.0.0.1", port, "/m", max_length=5000, timeout=5.0)
            try:
                await fetch_whole("127.0.0.1", port, "/m", max_length=4999, timeout=5.0)
            except BadHttpResponse as exc:
                return got, str(exc)
        return got, ""

    got, refusal = asyncio.run(main())
    assert got == b"m" * 5000 and "more than" in refusal


def test_redirected_receiver_does_not_spin_on_nak_timers() -> None:
    # multicast DATA may still arrive after a REDIRECT; its gaps must not arm a timer that is
    # never served (the adapter would spin on a timer in the past)
    from multicast.codec import DataBlock

    data = random.Random(7).randbytes(2 * CHUNK)
    receiver = _redirected_receiver(data)
    m = receiver.manifest
    for block in (0, 5):  # blocks 1..4 missing: gaps
        payload = data[block * m.block_size : (block + 1) * m.block_size]
        dgram = build_datagram(DataBlock(m.session_id, block, 0, block, payload))
        receiver.receive(dgram, SENDER, 1.0)
    receiver.handle_timer(1.5)
    timer = receiver.next_timer()
    assert timer is not None and timer > 1.5


def test_resume_bitmap_of_the_wrong_size_is_a_local_error() -> None:
    from wds.errors import LocalProtocolError

    manifest, digest = make_manifest(b"x" * CHUNK)
    with pytest.raises(LocalProtocolError):
        Receiver(manifest, manifest_digest=digest, rng=random.Random(1), now=0.0, have=b"\0\0")
