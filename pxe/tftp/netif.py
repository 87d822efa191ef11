"""Linux interface facts the TFTP adapter needs: IP_PKTINFO parsing and interface MTUs."""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct
import time

# <linux/in.h>: struct in_pktinfo { int ipi_ifindex; struct in_addr ipi_spec_dst, ipi_addr; }
_IN_PKTINFO = struct.Struct("=i4s4s")
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
#: <linux/sockios.h>
SIOCGIFMTU = 0x8921
#: ancillary buffer for one in_pktinfo
PKTINFO_SPACE = socket.CMSG_SPACE(_IN_PKTINFO.size)
#: an interface's MTU is looked up again after this many seconds
MTU_TTL = 30.0


def parse_pktinfo(ancdata: list[tuple[int, int, bytes]]) -> tuple[int, str] | None:
    """(ifindex, local address the datagram was sent to) from recvmsg ancillary data.

    For a broadcast or multicast destination the address is the interface's own (ipi_spec_dst),
    which is the address a reply must come from.
    """
    for level, kind, data in ancdata:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= _IN_PKTINFO.size:
            ifindex, spec_dst, dst = _IN_PKTINFO.unpack_from(data)
            addr = ipaddress.IPv4Address(dst)
            if addr.is_multicast or addr == ipaddress.IPv4Address("255.255.255.255"):
                addr = ipaddress.IPv4Address(spec_dst)
            return ifindex, str(addr)
    return None


def interface_mtu(ifindex: int) -> int | None:
    """MTU of interface ``ifindex`` via /sys/class/net, else SIOCGIFMTU; None when unknown."""
    try:
        name = socket.if_indextoname(ifindex)
    except OSError:
        return None
    try:
        with open(f"/sys/class/net/{name}/mtu", encoding="ascii") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        pass
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            ifreq = struct.pack("16si12x", name.encode()[:15], 0)
            result = fcntl.ioctl(s.fileno(), SIOCGIFMTU, ifreq)
            mtu: int = struct.unpack_from("16si", result)[1]
            return mtu
    except OSError:
        return None


class MtuCache:
    """MTU per interface index, looked up at most every :data:`MTU_TTL` seconds."""

    def __init__(self) -> None:
        self._cache: dict[int, tuple[float, int | None]] = {}

    def get(self, ifindex: int) -> int | None:
        now = time.monotonic()
        hit = self._cache.get(ifindex)
        if hit is not None and now - hit[0] < MTU_TTL:
            return hit[1]
        mtu = interface_mtu(ifindex)
        if len(self._cache) > 1024:
            self._cache.clear()
        self._cache[ifindex] = (now, mtu)
        return mtu
