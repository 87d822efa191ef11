"""Robustness: a DISCOVER storm on loopback does not take the server's loop down.

10,000 DISCOVERs from 1,000 MACs (10 each, distinct xids) are sent from a thread in bounded
bursts while the server runs on the asyncio loop; the answers are counted by a second thread.
Afterwards the server still answers an ordinary request at once. The second test does the same
with the device store and ``record_pending``: 1,000 unknown MACs become 1,000 pending records, none
is answered, and a prestaged device is still answered right after the storm.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
from dhcp_strategies import discover

from pxe.dhcp.codec import DhcpOption, build_packet, parse_packet
from pxe.dhcp.decide import BootPolicy
from pxe.dhcp.policy import ConfigBootPolicy, StoreBootPolicy
from pxe.dhcp.server import ProxyDhcpServer
from wds.config import PxeConfig
from wds.devices import DeviceStore

LOOPBACK = IPv4Address("127.0.0.1")
MACS = 1_000
PER_MAC = 10
BURST = 50  # datagrams per burst, then a pause: bounded in count and in rate (about 2,500/s)
PAUSE = 0.02


def storm_packets() -> list[bytes]:
    base = discover(ciaddr=LOOPBACK)  # unicast answers to 127.0.0.1: nothing leaves loopback
    packets = []
    for round_ in range(PER_MAC):
        for n in range(MACS):
            mac = bytes.fromhex("5254001a") + n.to_bytes(2, "big")
            options = tuple(  # each machine its own UUID (option 97), as real ones have
                DhcpOption(97, b"\0" + bytes(14) + n.to_bytes(2, "big")) if o.code == 97 else o
                for o in base.options
            )
            packet = replace(base, xid=(round_ << 16) | n, chaddr=mac + bytes(10), options=options)
            packets.append(build_packet(packet))
    return packets


class Counter:
    """Counts answers on a socket until told to stop (bounded by its own deadline)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:  # as root past net.core.rmem_max, so that the counter itself loses nothing
            self.sock.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        self.xids: set[int] = set()
        self.count = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + 60
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                data = self.sock.recv(2048)
            except TimeoutError:
                continue
            self.count += 1
            self.xids.add(parse_packet(data).xid)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()


def send_storm(port: int, packets: list[bytes], burst: int, pause: float) -> float:
    """Send every packet once (bounded: len(packets) sends); returns the seconds it took."""
    start = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for at in range(0, len(packets), burst):
            for data in packets[at : at + burst]:
                sock.sendto(data, ("127.0.0.1", port))
            time.sleep(pause)
    return time.monotonic() - start


async def one_answer(server_port: int, counter_port: int, xid: int) -> bytes:
    """An ordinary DISCOVER after the storm, answered to the (now closed) counter's port."""
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", counter_port))
        sock.setblocking(False)
        request = replace(discover(ciaddr=LOOPBACK), xid=xid)
        sock.sendto(build_packet(request), ("127.0.0.1", server_port))
        data = await asyncio.wait_for(loop.sock_recv(sock, 2048), 2.0)
    return data


def run(test: Callable[[], Any]) -> None:
    asyncio.run(asyncio.wait_for(test(), 120))


async def storm(
    policy: BootPolicy, burst: int = BURST, pause: float = PAUSE
) -> tuple[ProxyDhcpServer, Counter, int]:
    counter = Counter()
    server = ProxyDhcpServer(
        policy,
        server_ip=LOOPBACK,
        bind_address="127.0.0.1",
        dhcp_port=0,
        pxe_port=0,
        client_port=counter.port,
    )
    ports = await server.start()
    await asyncio.to_thread(send_storm, ports.dhcp, storm_packets(), burst, pause)
    for _ in range(50):  # the server drains what is queued (bounded wait)
        await asyncio.sleep(0.1)
        if server.replies_sent + server.packets_dropped >= MACS * PER_MAC:
            break
    await asyncio.sleep(0.3)
    counter.close()
    return server, counter, ports.dhcp


@pytest.mark.parametrize(
    ("burst", "pause", "answered"),
    [
        (BURST, PAUSE, 0.99),  # paced at about 2,500/s: (nearly) every DISCOVER answered
        (MACS * PER_MAC, 0.0, 0.05),  # all 10,000 at once: the kernel drops what does not fit
    ],
    ids=["paced", "flood"],
)
def test_storm_of_10000_discovers_from_1000_macs_is_answered(
    burst: int, pause: float, answered: float
) -> None:
    async def scenario() -> None:
        policy = ConfigBootPolicy(PxeConfig(), http_url="http://127.0.0.1/")
        server, counter, dhcp_port = await storm(policy, burst, pause)
        try:
            total = MACS * PER_MAC
            # every DISCOVER that reached the server was answered
            assert server.packets_dropped == 0
            assert counter.count == server.replies_sent
            assert counter.count >= answered * total, (counter.count, total)
            assert len(counter.xids) == counter.count  # one answer per request, none doubled
            # the loop is alive: an ordinary request is answered at once
            offer = parse_packet(await one_answer(dhcp_port, counter.port, 0xABCDEF))
            assert offer.xid == 0xABCDEF and offer.file == b"undionly.kpxe"
        finally:
            await server.stop()

    run(scenario)


def test_storm_with_record_pending_records_and_stays_responsive(tmp_path: Path) -> None:
    async def scenario() -> None:
        with DeviceStore.open(tmp_path) as store:
            store.prestage(mac="52:54:00:18:00:01")  # discover()'s MAC
            config = PxeConfig(record_pending=True)
            server, counter, dhcp_port = await storm(StoreBootPolicy(config, store))
            try:
                assert counter.count == 0 and server.replies_sent == 0
                pending = [d for d in store.list() if d.state == "pending"]
                assert len(pending) == MACS
                offer = parse_packet(await one_answer(dhcp_port, counter.port, 0x1))
                assert offer.xid == 0x1
            finally:
                await server.stop()

    run(scenario)
