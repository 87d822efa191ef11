"""Tier 4 (namespace lab): the ProxyDHCP server across a real link, with broadcast.

Two namespaces joined by a veth pair (LAB.md): ``srv`` runs :class:`ProxyDhcpServer` bound to
0.0.0.0:67 and :4011 on its ``eth0``, ``cli`` replays the golden packets real firmware sent, from
port 68 to 255.255.255.255:67 and from port 4011 to the server's port 4011, as the firmware did.
This is the path the loopback tests cannot take: broadcast requests in, broadcast ProxyOffers out,
SO_BINDTODEVICE, and a PxeAck to the client's port 4011. The lab guard additionally lets
255.255.255.255 out (a veth pair between two lab namespaces; nothing routes it further).

Booting real firmware through the server (QEMU) is ``test_boot_lab.py``; ``boot_lab.py`` is the
script for experiments beyond it.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from dhcp_strategies import golden, golden_names
from lab import netns
from lab.fixtures import lab, stale_labs_removed

from pxe.dhcp.codec import build_packet, parse_packet

__all__ = ["lab", "stale_labs_removed"]  # fixtures used by name below

ROOT = Path(__file__).resolve().parents[2]

SERVER = """
import asyncio, logging, sys
from ipaddress import IPv4Address
from pxe.dhcp.policy import ConfigBootPolicy
from pxe.dhcp.server import ProxyDhcpServer
from wds.config import PxeConfig
logging.basicConfig(level=logging.DEBUG, stream=sys.stdout, format="%(name)s %(message)s")
ip = IPv4Address(sys.argv[1])
policy = ConfigBootPolicy(PxeConfig(), http_url=f"http://{ip}:8080/")
async def main():
    # no server_ip, no interface: both come from IP_PKTINFO of each request
    server = ProxyDhcpServer(policy)
    await server.start()
    print("READY", flush=True)
    await asyncio.sleep(60)  # bounded; the lab stops it long before
asyncio.run(main())
"""

# Send one datagram from (0.0.0.0 or ADDRESS):PORT on eth0, print the first reply as
# "SOURCE-IP SOURCE-PORT HEX". Bounded: 3 tries of 2 s.
CLIENT = """
import socket, sys
data, src, sport, dest, dport = bytes.fromhex(sys.argv[1]), sys.argv[2], int(sys.argv[3]), \
    sys.argv[4], int(sys.argv[5])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
s.bind((src, sport))
s.settimeout(2.0)
for _ in range(3):
    s.sendto(data, (dest, dport))
    try:
        reply, addr = s.recvfrom(4096)
    except TimeoutError:
        continue
    print(addr[0], addr[1], reply.hex())
    break
"""


def exchange(
    cli: netns.Namespace, data: bytes, src: str, sport: int, dest: str, dport: int
) -> tuple[str, int, bytes]:
    out = cli.run(
        [sys.executable, "-c", CLIENT, data.hex(), src, str(sport), dest, str(dport)],
        timeout=20,
    ).stdout.split()
    assert len(out) == 3, f"no reply to the packet sent to {dest}:{dport}"
    return out[0], int(out[1]), bytes.fromhex(out[2])


@pytest.mark.root
@pytest.mark.lab
def test_golden_packets_answered_across_a_link(lab: netns.Lab) -> None:
    srv, cli = lab.pair("srv", "cli")
    for ns in (srv, cli):
        ns.run(
            [
                *("nft", "insert", "rule", "inet", netns.GUARD_TABLE, "output"),
                *("ip", "daddr", "255.255.255.255", "accept"),
            ]
        )
    server = srv.popen(
        [sys.executable, "-c", SERVER, srv.addr()], cwd=ROOT, stderr=subprocess.STDOUT
    )
    assert server.stdout is not None
    netns.wait_for_line(server.stdout, "READY", timeout=20)
    server_ip = IPv4Address(srv.addr())

    for name in [n for n in golden_names() if n.endswith("_discover.hex")]:
        request = parse_packet(golden(name))
        source, port, data = exchange(cli, golden(name), "0.0.0.0", 68, "255.255.255.255", 67)
        offer = parse_packet(data)
        assert (IPv4Address(source), port) == (server_ip, 67), name
        assert offer.xid == request.xid and offer.chaddr == request.chaddr, name
        assert offer.option(53) == b"\x02" and offer.option(54) == server_ip.packed, name
        assert offer.siaddr == server_ip and len(data) >= 300, name
        if b"HTTPClient" in (request.option(60) or b""):
            assert offer.file == f"http://{server_ip}:8080/boot/ipxe.efi".encode(), name
        elif request.option(77) == b"iPXE":
            assert offer.file == f"http://{server_ip}:8080/boot.ipxe".encode(), name
        else:
            assert offer.file == b"" and offer.option(43) is None, name  # EDK2: port 4011

    # EDK2's real port 4011 request, re-addressed to this lab's client
    captured = parse_packet(golden("ovmf_edk2_virtio_pxeclient_arch7_undi003000_request4011.hex"))
    request = replace(captured, ciaddr=IPv4Address(cli.addr()))
    source, port, data = exchange(
        cli, build_packet(request, min_size=0, max_size=1500), cli.addr(), 4011, srv.addr(), 4011
    )
    ack = parse_packet(data)
    assert (IPv4Address(source), port) == (server_ip, 4011)
    assert ack.option(53) == b"\x05" and ack.file == b"ipxe.efi" and ack.xid == request.xid
    assert srv.guard_drops() == 0 and cli.guard_drops() == 0
