"""Scale: 100 clients fetch one 32 MiB file at once from `wds tftp` running as a subprocess.

Every client gets the exact bytes (SHA-256) and the server's memory stays bounded: the file is
mapped once and shared (its pages show up once, as RssFile), and nothing is copied per client
(RssAnon, the server's own heap, grows by far less than one copy of the file).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import struct
import sys
import time
from pathlib import Path
from typing import cast

import pytest

CLIENTS = 100
FILE_SIZE = 32 * 1024 * 1024
BLKSIZE = 8192
WINDOWSIZE = 16
MiB = 1024 * 1024


def rrq(name: str, options: dict[str, int]) -> bytes:
    parts = [name, "octet"]
    for k, v in options.items():
        parts += [k, str(v)]
    return b"\x00\x01" + b"".join(p.encode() + b"\0" for p in parts)


def ack(block: int) -> bytes:
    return struct.pack(">HH", 4, block & 0xFFFF)


class Client(asyncio.DatagramProtocol):
    """RFC 7440 receiver: ACK each window and the end, re-ACK on a gap or a timeout."""

    def __init__(self, done: asyncio.Future[str]) -> None:
        self.done = done
        self.digest = hashlib.sha256()
        self.transport: asyncio.DatagramTransport | None = None
        self.tid: tuple[str, int] | None = None
        self.expected = 1
        self.since_ack = 0
        self.gap_acked = False
        self.last_progress = time.monotonic()
        self.received = 0
        self.reacks = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def send(self, data: bytes) -> None:
        assert self.transport is not None and self.tid is not None
        self.transport.sendto(data, self.tid)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.done.done():
            return
        if self.tid is None:
            self.tid = addr
        opcode = data[1]
        if opcode == 6:  # OACK
            self.last_progress = time.monotonic()
            self.send(ack(0))
            return
        if opcode == 5:
            self.done.set_exception(AssertionError(f"server error {data!r}"))
            return
        block = (data[2] << 8) | data[3]
        if block != self.expected & 0xFFFF:
            if not self.gap_acked:
                self.gap_acked = True
                self.send(ack(self.expected - 1))
            return
        payload = memoryview(data)[4:]
        self.digest.update(payload)
        self.received += len(payload)
        self.expected += 1
        self.since_ack += 1
        self.gap_acked = False
        self.last_progress = time.monotonic()
        last = len(payload) < BLKSIZE
        if last or self.since_ack >= WINDOWSIZE:
            self.send(ack(block))
            self.since_ack = 0
        if last:
            self.done.set_result(self.digest.hexdigest())

    async def watchdog(self) -> None:
        """Re-ACK after 0.3 s without progress (bounded), like a real client's timeout."""
        while not self.done.done():
            await asyncio.sleep(0.1)
            if self.tid is not None and time.monotonic() - self.last_progress > 0.3:
                self.reacks += 1
                if self.reacks > 200:
                    self.done.set_exception(AssertionError("client gave up"))
                    return
                self.last_progress = time.monotonic()
                self.send(ack(self.expected - 1))


def memory(pid: int) -> dict[str, int]:
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                fields[key] = int(value.split()[0]) * 1024
    return fields


async def scale_run(root: Path) -> tuple[list[str], dict[str, int], dict[str, int]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wds.cli.main",
        "tftp",
        "--root",
        str(root),
        "--listen",
        "127.0.0.1",
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        assert line.startswith("wds tftp: serving "), line
        port = int(line.rsplit(":", 1)[1])
        baseline = memory(proc.pid)
        peak = dict(baseline)
        loop = asyncio.get_running_loop()
        clients: list[Client] = []
        transports = []
        for i in range(CLIENTS):
            done: asyncio.Future[str] = loop.create_future()
            # one loopback address per client: 100 machines, default per-client caps apply
            transport, client = await loop.create_datagram_endpoint(
                lambda d=done: Client(d), local_addr=(f"127.0.1.{i + 1}", 0)
            )
            transports.append(transport)
            clients.append(client)
        options = {"blksize": BLKSIZE, "windowsize": WINDOWSIZE, "tsize": 0}
        for t in transports:
            t.sendto(rrq("image.bin", options), ("127.0.0.1", port))
        watchdogs = [asyncio.create_task(c.watchdog()) for c in clients]
        pending = {c.done for c in clients}
        deadline = loop.time() + 60
        while pending and loop.time() < deadline:
            _, pending = await asyncio.wait(pending, timeout=0.05)
            for k, v in memory(proc.pid).items():
                peak[k] = max(peak[k], v)
        for w in watchdogs:
            w.cancel()
        for t in transports:
            t.close()
        assert not pending, f"{len(pending)} clients did not finish"
        return [c.done.result() for c in clients], baseline, peak
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


@pytest.mark.slow
def test_hundred_clients_one_file(tmp_path: Path) -> None:
    data = os.urandom(FILE_SIZE)
    (tmp_path / "image.bin").write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    del data
    started = time.monotonic()
    digests, baseline, peak = asyncio.run(scale_run(tmp_path))
    elapsed = time.monotonic() - started
    assert digests == [expected] * CLIENTS
    anon = peak["RssAnon"] - baseline["RssAnon"]
    file_pages = peak["RssFile"] - baseline["RssFile"]
    print(
        f"\n{CLIENTS} x {FILE_SIZE // MiB} MiB in {elapsed:.1f} s "
        f"({CLIENTS * FILE_SIZE / elapsed / MiB:.0f} MiB/s total); server RssAnon +{anon / MiB:.1f}"
        f" MiB, RssFile +{file_pages / MiB:.1f} MiB"
    )
    # no per-client copies: the heap grows by much less than one copy of the file
    assert anon < 64 * MiB
    # the shared mapping is counted once, not once per client
    assert file_pages < FILE_SIZE + 16 * MiB
