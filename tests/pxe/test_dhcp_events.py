"""What the ProxyDHCP server reports besides its answers: events, addresses, requests by arch."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address
from pathlib import Path

from dhcp_strategies import discover
from test_dhcp_server import LOOPBACK, lab, run

from pxe.dhcp.codec import DhcpOption
from pxe.dhcp.decide import Sighting, observe
from wds.devices import DeviceEvents, DeviceStore

MAC = "52:54:00:18:00:01"  # dhcp_strategies.discover's chaddr


class RecordingSink:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str | None, str | None]] = []
        self.addresses: list[tuple[str, str]] = []

    def record(
        self, kind: str, detail: str, *, mac: str | None = None, ip: str | None = None
    ) -> None:
        self.events.append((kind, detail, mac, ip))

    def remember_address(self, ip: str, mac: str) -> None:
        self.addresses.append((ip, mac))


def test_observe_learns_addresses_from_requests_and_arches_from_discovers() -> None:
    requested = DhcpOption(50, IPv4Address("198.18.0.20").packed)
    request = discover(message_type=3, vendor_class=None, extra=(requested,))
    assert observe(request, port_kind="dhcp") == Sighting(MAC, address=IPv4Address("198.18.0.20"))
    renewing = discover(message_type=3, ciaddr=IPv4Address("198.18.0.21"))
    assert observe(renewing, port_kind="dhcp") == Sighting(MAC, address=IPv4Address("198.18.0.21"))
    sighting = observe(discover(arch=7), port_kind="dhcp")
    assert sighting is not None and sighting.arch is not None
    assert sighting.arch.name == "x64 UEFI" and sighting.address is None
    on_4011 = discover(message_type=3, ciaddr=IPv4Address("198.18.0.22"), extra=(requested,))
    assert observe(on_4011, port_kind="pxe") == Sighting(MAC, address=IPv4Address("198.18.0.22"))
    # nothing to learn: a REQUEST without an address, a non-PXE DISCOVER, option 50 on port 4011,
    # a DISCOVER on port 4011, a bad option 50
    assert observe(discover(message_type=3), port_kind="dhcp") is None
    assert observe(discover(vendor_class=None), port_kind="dhcp") is None
    assert observe(discover(message_type=3, extra=(requested,)), port_kind="pxe") is None
    assert observe(discover(), port_kind="pxe") is None
    bad = DhcpOption(50, b"\x01\x02")
    assert observe(discover(message_type=3, extra=(bad,)), port_kind="dhcp") is None


def test_answered_discover_is_a_booted_event_and_counted_by_arch() -> None:
    async def scenario() -> None:
        sink = RecordingSink()
        async with lab(events=sink) as env:
            env.send(discover(ciaddr=LOOPBACK), env.ports.dhcp)
            await env.reply()
            env.send(discover(ciaddr=LOOPBACK, arch=7), env.ports.dhcp)
            await env.reply()
            env.send(discover(ciaddr=LOOPBACK, arch=0x7777), env.ports.dhcp)  # not answered
            await env.nothing()
            assert env.server.requests_by_arch == {"x86 BIOS": 1, "x64 UEFI": 1, "unassigned": 1}
        # the UEFI client's offer names no file (it asks on port 4011): only the BIOS one booted
        booted = [(kind, mac) for kind, _, mac, _ in sink.events]
        assert booted == [("booted", MAC)]
        assert "undionly.kpxe" in sink.events[0][1] and "x86 BIOS" in sink.events[0][1]

    run(scenario)


def test_dhcprequest_seen_on_port_67_remembers_the_address() -> None:
    async def scenario() -> None:
        sink = RecordingSink()
        async with lab(events=sink) as env:
            requested = DhcpOption(50, IPv4Address("198.18.0.20").packed)
            env.send(discover(message_type=3, extra=(requested,)), env.ports.dhcp)
            await env.nothing(0.3)
        assert sink.addresses == [("198.18.0.20", MAC)]

    run(scenario)


def test_events_reach_the_device_history(tmp_path: Path) -> None:
    async def scenario() -> None:
        with DeviceStore.open(tmp_path) as store:
            async with lab(events=DeviceEvents(store)) as env:
                requested = DhcpOption(50, IPv4Address("198.18.0.20").packed)
                env.send(discover(message_type=3, extra=(requested,)), env.ports.dhcp)
                env.send(discover(ciaddr=LOOPBACK), env.ports.dhcp)
                await env.reply()
                await asyncio.sleep(0.05)
            assert store.mac_for("198.18.0.20") == MAC
            assert [e.kind for e in store.events(MAC)] == ["booted"]

    run(scenario)


def test_port4011_offer_is_no_booted_event_the_ack_is() -> None:
    async def scenario() -> None:
        sink = RecordingSink()
        async with lab(events=sink) as env:
            uefi = b"PXEClient:Arch:00007:UNDI:003000"
            env.send(discover(ciaddr=LOOPBACK, arch=7, vendor_class=uefi), env.ports.dhcp)
            offer, _ = await env.reply()
            assert offer.file == b""  # [pxe] proxy_mode auto: UEFI asks on port 4011
            request = discover(vendor_class=uefi, arch=7, message_type=3, ciaddr=LOOPBACK, flags=0)
            env.send(request, env.ports.pxe)
            ack, _ = await env.reply()
            assert ack.file == b"ipxe.efi"
        assert [(kind, mac) for kind, _, mac, _ in sink.events] == [("booted", MAC)]
        assert "PxeAck ipxe.efi" in sink.events[0][1]

    run(scenario)
