"""Tier 3: the ProxyDHCP asyncio adapter on real loopback sockets (ports chosen by the kernel).

Every request here makes the server answer by unicast to 127.0.0.1 (ciaddr or giaddr set), never
by broadcast: nothing leaves loopback.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from ipaddress import IPv4Address
from typing import Any

import pytest
from dhcp_strategies import discover

from pxe.dhcp.codec import DhcpOption, DhcpPacket, build_packet, parse_packet
from pxe.dhcp.policy import ConfigBootPolicy
from pxe.dhcp.server import ProxyDhcpServer, ServerPorts, run_proxy_dhcp
from wds.config import PxeConfig, parse_config

LOOPBACK = IPv4Address("127.0.0.1")
TIMEOUT = 5.0


class _Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.put_nowait((data, addr))


@dataclass
class Lab:
    server: ProxyDhcpServer
    ports: ServerPorts
    transport: asyncio.DatagramTransport
    client: _Client
    client_port: int

    def send(self, packet: DhcpPacket, port: int) -> None:
        self.transport.sendto(build_packet(packet), ("127.0.0.1", port))

    async def reply(self) -> tuple[DhcpPacket, tuple[str, int]]:
        data, addr = await asyncio.wait_for(self.client.received.get(), TIMEOUT)
        return parse_packet(data), addr

    async def nothing(self, seconds: float = 0.2) -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(self.client.received.get(), seconds)


@asynccontextmanager
async def lab(**server_kw: Any) -> AsyncIterator[Lab]:
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_datagram_endpoint(_Client, local_addr=("127.0.0.1", 0))
    client_port = transport.get_extra_info("sockname")[1]
    policy = ConfigBootPolicy(PxeConfig(), http_url="http://127.0.0.1:8080/")
    server_kw.setdefault("server_ip", LOOPBACK)
    server = ProxyDhcpServer(
        policy,
        bind_address="127.0.0.1",
        dhcp_port=0,
        pxe_port=0,
        client_port=client_port,
        relay_port=client_port,
        **server_kw,
    )
    ports = await server.start()
    try:
        yield Lab(server, ports, transport, client, client_port)
    finally:
        await server.stop()
        transport.close()


def run(test: Callable[[], Any]) -> None:
    asyncio.run(asyncio.wait_for(test(), 30))


def test_proxy_offer_over_loopback() -> None:
    async def scenario() -> None:
        async with lab() as env:
            env.send(discover(ciaddr=LOOPBACK), env.ports.dhcp)
            offer, addr = await env.reply()
            assert addr == ("127.0.0.1", env.ports.dhcp)  # from the DHCP socket
            assert offer.option(53) == b"\x02" and offer.file == b"undionly.kpxe"
            assert offer.option(54) == LOOPBACK.packed and offer.xid == 0x1234ABCD
            assert env.server.replies_sent == 1

    run(scenario)


def test_server_ip_comes_from_the_arrival_interface_when_not_configured() -> None:
    async def scenario() -> None:
        async with lab(server_ip=None) as env:
            env.send(discover(ciaddr=LOOPBACK), env.ports.dhcp)
            offer, _ = await env.reply()
            assert offer.option(54) == LOOPBACK.packed and offer.siaddr == LOOPBACK

    run(scenario)


def test_port_4011_ack_goes_back_to_the_source_port() -> None:
    async def scenario() -> None:
        async with lab() as env:
            request = discover(
                vendor_class=b"PXEClient:Arch:00007:UNDI:003000",
                arch=7,
                message_type=3,
                ciaddr=LOOPBACK,
                flags=0,
            )
            env.send(request, env.ports.pxe)
            ack, addr = await env.reply()
            assert addr == ("127.0.0.1", env.ports.pxe)
            assert ack.option(53) == b"\x05" and ack.file == b"ipxe.efi"

    run(scenario)


def test_relayed_request_answered_to_the_relay() -> None:
    async def scenario() -> None:
        async with lab() as env:
            agent = bytes((1, 3)) + b"lab"
            env.send(discover(giaddr=LOOPBACK, extra=(DhcpOption(82, agent),)), env.ports.dhcp)
            offer, _ = await env.reply()
            assert offer.giaddr == LOOPBACK and offer.option(82) == agent

    run(scenario)


def test_malformed_and_foreign_packets_are_dropped_with_a_debug_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="pxe.dhcp.server")

    async def scenario() -> None:
        async with lab() as env:
            env.transport.sendto(b"\x01garbage", ("127.0.0.1", env.ports.dhcp))
            truncated = build_packet(discover(ciaddr=LOOPBACK))[:250]
            env.transport.sendto(truncated, ("127.0.0.1", env.ports.dhcp))
            env.send(discover(vendor_class=b"MSFT 5.0", ciaddr=LOOPBACK), env.ports.dhcp)
            env.send(discover(ciaddr=LOOPBACK), env.ports.dhcp)  # the server still answers
            offer, _ = await env.reply()
            assert offer.option(53) == b"\x02"
            await env.nothing()
            assert env.server.packets_dropped == 3

    run(scenario)
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any("shorter than the BOOTP header" in m for m in debug)
    assert any("truncated" in m or "without the End option" in m for m in debug)
    assert any(
        "not a PXE client: no option 60 PXEClient" in m and "52:54:00:18:00:01" in m for m in debug
    )


def test_delay_holds_the_reply_back() -> None:
    async def scenario() -> None:
        async with lab(delay=0.2) as env:
            start = time.monotonic()
            env.send(discover(ciaddr=LOOPBACK), env.ports.dhcp)
            await env.reply()
            assert time.monotonic() - start >= 0.19

    run(scenario)


def test_stop_cancels_delayed_replies() -> None:
    async def scenario() -> None:
        async with lab(delay=0.3) as env:
            env.send(discover(ciaddr=LOOPBACK), env.ports.dhcp)
            await asyncio.sleep(0.05)
            await env.server.stop()
            await env.nothing(0.5)
            assert env.server.replies_sent == 0

    run(scenario)


def test_busy_port_raises_and_leaves_nothing_open() -> None:
    async def scenario() -> None:
        async with lab() as env:
            policy = ConfigBootPolicy(replace(PxeConfig()), http_url="http://127.0.0.1/")
            other = ProxyDhcpServer(
                policy,
                server_ip=LOOPBACK,
                bind_address="127.0.0.1",
                dhcp_port=0,
                pxe_port=env.client_port,
            )
            with pytest.raises(OSError):
                await other.start()

    run(scenario)


def test_run_proxy_dhcp_from_config() -> None:
    config = parse_config(
        '[server]\naddress = "127.0.0.1"\n[pxe]\ndhcp_port = 0\npxe_port = 0\n[http]\nport = 8088\n'
    )

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        transport, client = await loop.create_datagram_endpoint(
            _Client, local_addr=("127.0.0.1", 0)
        )
        port = transport.get_extra_info("sockname")[1]
        ready: asyncio.Future[ServerPorts] = loop.create_future()
        stop = asyncio.Event()
        task = asyncio.create_task(
            run_proxy_dhcp(config, ready=ready, stop=stop, client_port=port, relay_port=port)
        )
        try:
            ports = await asyncio.wait_for(ready, TIMEOUT)
            request = discover(ciaddr=LOOPBACK, extra=(DhcpOption(77, b"iPXE"),))
            transport.sendto(build_packet(request), ("127.0.0.1", ports.dhcp))
            data, _ = await asyncio.wait_for(client.received.get(), TIMEOUT)
            assert parse_packet(data).file == b"http://127.0.0.1:8088/boot.ipxe"
        finally:
            stop.set()
            await asyncio.wait_for(task, TIMEOUT)
            transport.close()

    run(scenario)
