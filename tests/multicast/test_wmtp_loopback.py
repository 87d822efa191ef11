"""Adapter tier: real sockets, multicast on loopback (LAB.md: group in 239.0.0.0/8 on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import socket
from pathlib import Path

import pytest
from wmtp_harness import CHUNK, make_manifest

from multicast.events import SessionFinished
from multicast.net import (
    ReceiverService,
    SenderService,
    open_feedback_socket,
    open_group_socket,
    open_sender_socket,
)
from multicast.output import ImageOutput
from multicast.receiver import Receiver
from multicast.sender import Event, Sender, SenderSettings

LOOPBACK = "127.0.0.1"


class _Source:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self, offset: int, length: int) -> bytes:
        return self.data[offset : offset + length]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def _group_for_this_run() -> str:
    # 239.0.0.0/8 only (LAB.md); a per-run group keeps parallel runs apart
    return f"239.255.{random.randint(1, 254)}.{os.getpid() % 250 + 1}"


def _multicast_loopback_works(group: str, port: int) -> bool:
    try:
        rx = open_group_socket(group, port, LOOPBACK)
        tx = open_sender_socket(LOOPBACK)
    except OSError:
        return False
    try:
        tx.sendto(b"probe", (group, port))
        rx.settimeout(1.0)
        rx.setblocking(True)
        return rx.recv(16) == b"probe"
    except OSError:
        return False
    finally:
        rx.close()
        tx.close()


def test_loopback_multicast_two_receivers_byte_exact(tmp_path: Path) -> None:
    group, port = _group_for_this_run(), _free_port()
    if not _multicast_loopback_works(group, port):
        pytest.skip("multicast on 127.0.0.1 does not work on this host")
    data = random.Random(21).randbytes(16 * CHUNK + 777)  # ~1 MiB, 17 chunks
    manifest, digest = make_manifest(data)
    events: list[Event] = []
    stats: list[Sender] = []

    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        settings = SenderSettings(max_rate=20e6, linger=0.2, announce_interval=0.1)
        sender = Sender(
            manifest,
            manifest_digest=digest,
            source=_Source(data),
            settings=settings,
            now=loop.time(),
        )
        service = SenderService(
            sender, open_sender_socket(LOOPBACK), (group, port), on_event=events.append
        )
        receivers = []
        for i in range(2):
            machine = Receiver(
                manifest, manifest_digest=digest, rng=random.Random(i), now=loop.time()
            )
            out = ImageOutput(tmp_path / f"r{i}.wim", manifest, sync=False)
            receivers.append(
                ReceiverService(
                    machine,
                    out,
                    open_group_socket(group, port, LOOPBACK),
                    open_feedback_socket(LOOPBACK),
                )
            )
        stats.append(sender)
        codes = await asyncio.gather(
            service.run(timeout=20.0), *(r.run(timeout=20.0) for r in receivers)
        )
        for r in receivers:
            r.output.close()
        return codes[1:]

    codes = asyncio.run(main())
    assert codes == [0, 0]
    for i in range(2):
        got = (tmp_path / f"r{i}.wim").read_bytes()
        assert hashlib.sha256(got).digest() == manifest.image_sha256
    assert any(isinstance(e, SessionFinished) and e.completed == 2 for e in events)
    blocks = sum(manifest.blocks_in_chunk(i) for i in range(manifest.chunk_count))
    print(f"DATA sent {stats[0].data_sent} for {blocks} blocks, {stats[0].repairs_sent} repairs")
