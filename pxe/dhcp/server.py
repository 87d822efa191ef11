"""The asyncio adapter of the ProxyDHCP server: two UDP sockets, :func:`decide`, ``sendmsg``.

No protocol decision is made here. Each datagram on the DHCP port (67) or the PXE port (4011) is
parsed and handed to :func:`pxe.dhcp.decide.decide`; a malformed packet (``RemoteProtocolError``)
or an :class:`Ignore` is logged at DEBUG with its reason and dropped; a :class:`Reply` is sent to
its destination, after ``delay`` seconds if configured (bounded: at most ``MAX_PENDING`` replies
wait at once).

The sockets are non-blocking and watched with ``loop.add_reader`` so that each datagram comes with
IP_PKTINFO: the interface it arrived on and that interface's address. The address is the
``server_ip`` clients are told (option 54, siaddr) unless one is configured, and the reply leaves
through the same interface (``sendmsg`` with IP_PKTINFO), which matters for broadcasts on a host
with several interfaces.

What the server learns on the way goes to an optional :class:`wds.context.EventSink`
(:attr:`ProxyDhcpServer.events`): a "booted" event for each reply sent (architecture and boot
file, by MAC), and the address of each DHCPREQUEST seen (:func:`pxe.dhcp.decide.observe`), so
later TFTP and HTTP requests from that address are put down to the right device.
:attr:`ProxyDhcpServer.requests_by_arch` counts boot requests (PXE DISCOVERs) per architecture
name for ``/metrics``; its keys are bounded by the IANA table (unregistered codes are all
"unassigned").
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import MutableMapping
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

from pxe.dhcp.codec import MAX_PACKET_SIZE, ZERO_ADDRESS, DhcpPacket, parse_packet
from pxe.dhcp.decide import (
    DHCP_CLIENT_PORT,
    DHCP_SERVER_PORT,
    BootPolicy,
    Ignore,
    PortKind,
    Reply,
    decide,
    observe,
)
from pxe.dhcp.policy import ConfigBootPolicy, DeviceLookup, StoreBootPolicy
from pxe.tftp.netif import IP_PKTINFO, PKTINFO_SPACE, parse_pktinfo
from wds.config import Config
from wds.context import EventSink
from wds.devices import DeviceStore
from wds.errors import RemoteProtocolError

__all__ = [
    "MAX_PENDING",
    "ProxyDhcpServer",
    "ServerPorts",
    "proxy_dhcp_from_config",
    "run_proxy_dhcp",
]

log = logging.getLogger(__name__)

#: delayed replies waiting at once; more are dropped (a flood must not grow memory)
MAX_PENDING = 256
#: datagrams read per readiness callback before yielding to the loop
READ_BATCH = 64
#: receive buffer asked for each socket: a burst of DISCOVERs (a lab powering on, a storm) waits
#: in the kernel instead of being dropped while the loop is busy (about 3,000 DISCOVERs)
RECEIVE_BUFFER = 4 << 20
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # Linux; Python 3.11 lacks the name
_IN_PKTINFO = struct.Struct("=i4s4s")


class _PacketLog(logging.LoggerAdapter[logging.Logger]):
    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        extra = self.extra or {}
        prefix = f"[{extra.get('peer')} {extra.get('mac', '-')} xid={extra.get('xid', '-')}]"
        return f"{prefix} {msg}", kwargs


@dataclass(frozen=True)
class ServerPorts:
    """The ports actually bound (port 0 in the config means: any free port)."""

    dhcp: int
    pxe: int


@dataclass(frozen=True)
class _Arrival:
    """Where a datagram came from and in on."""

    sock: socket.socket
    port_kind: PortKind
    peer: tuple[str, int]
    ifindex: int  # 0 = unknown
    local: IPv4Address | None  # the interface's address (IP_PKTINFO spec_dst)


class ProxyDhcpServer:
    """Listens on ``dhcp_port`` and ``pxe_port``; see the module docstring.

    ``server_ip`` None = the address of the interface each request arrived on. ``client_port``
    and ``relay_port`` replace the well-known ports 68 and 67 of reply destinations: tests and
    labs run clients and relays on other ports.
    """

    def __init__(
        self,
        policy: BootPolicy,
        *,
        server_ip: IPv4Address | None = None,
        bind_address: str = "0.0.0.0",
        dhcp_port: int = DHCP_SERVER_PORT,
        pxe_port: int = 4011,
        interface: str = "",
        delay: float = 0.0,
        client_port: int = DHCP_CLIENT_PORT,
        relay_port: int = DHCP_SERVER_PORT,
        events: EventSink | None = None,
    ) -> None:
        self._policy = policy
        self._server_ip = server_ip
        self._bind_address = bind_address
        self._ports = (dhcp_port, pxe_port)
        self._interface = interface
        self._delay = delay
        self._client_port = client_port
        self._relay_port = relay_port
        self._sockets: list[socket.socket] = []
        self._pending: set[asyncio.TimerHandle] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.replies_sent = 0
        self.packets_dropped = 0
        #: boot requests (PXE DISCOVERs) per architecture name, e.g. {"x64 UEFI": 3}
        self.requests_by_arch: dict[str, int] = {}
        #: where "booted" events and DHCPREQUEST addresses go; None = nowhere
        self.events = events

    async def start(self) -> ServerPorts:
        """Bind both sockets; returns the bound ports. Raises OSError if a port is taken."""
        self._loop = asyncio.get_running_loop()
        bound: list[int] = []
        try:
            kinds: tuple[PortKind, PortKind] = ("dhcp", "pxe")
            for port, kind in zip(self._ports, kinds, strict=True):
                sock = self._socket(port)
                self._sockets.append(sock)
                self._loop.add_reader(sock.fileno(), self._readable, sock, kind)
                bound.append(sock.getsockname()[1])
        except BaseException:
            await self.stop()
            raise
        log.info("ProxyDHCP on %s ports %s and %s", self._bind_address, *bound)
        return ServerPorts(*bound)

    async def stop(self) -> None:
        for handle in self._pending:
            handle.cancel()
        self._pending.clear()
        for sock in self._sockets:
            if self._loop is not None:
                self._loop.remove_reader(sock.fileno())
            sock.close()
        self._sockets.clear()

    def _socket(self, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)  # replies to 255.255.255.255
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            _grow_receive_buffer(sock)
            if self._interface:
                sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self._interface.encode() + b"\0"
                )
            sock.bind((self._bind_address, port))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    def _readable(self, sock: socket.socket, port_kind: PortKind) -> None:
        for _ in range(READ_BATCH):
            try:
                data, ancdata, _flags, addr = sock.recvmsg(MAX_PACKET_SIZE + 1, PKTINFO_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. ICMP errors reported on the socket
                log.debug("%s socket error: %s", port_kind, exc)
                return
            info = parse_pktinfo(ancdata)
            ifindex, local = (info[0], IPv4Address(info[1])) if info else (0, None)
            self._received(_Arrival(sock, port_kind, addr, ifindex, local), data)

    def _received(self, arrival: _Arrival, data: bytes) -> None:
        peer = f"{arrival.peer[0]}:{arrival.peer[1]}"
        try:
            request = parse_packet(data)
        except RemoteProtocolError as exc:
            self.packets_dropped += 1
            log.debug(
                "[%s] dropped %d bytes on the %s port: %s", peer, len(data), arrival.port_kind, exc
            )
            return
        mac, xid = request.hardware_address.hex(":"), f"{request.xid:#010x}"
        packet_log = _PacketLog(log, {"peer": peer, "mac": mac, "xid": xid})
        self._observe(request, arrival.port_kind)
        server_ip = self._server_ip or arrival.local
        if server_ip is None:
            self.packets_dropped += 1
            packet_log.debug("ignored: no local address for the interface it came in on")
            return
        result = decide(
            request,
            self._policy,
            server_ip=server_ip,
            port_kind=arrival.port_kind,
            source_port=arrival.peer[1],
        )
        if isinstance(result, Ignore):
            self.packets_dropped += 1
            packet_log.debug("ignored on the %s port: %s", arrival.port_kind, result.reason)
            return
        if self._delay <= 0:
            self._send(arrival, result, packet_log)
            return
        if len(self._pending) >= MAX_PENDING:
            self.packets_dropped += 1
            packet_log.info("dropped: %d delayed replies already waiting", MAX_PENDING)
            return
        assert self._loop is not None
        handle: asyncio.TimerHandle | None = None

        def fire() -> None:
            assert handle is not None
            self._pending.discard(handle)
            self._send(arrival, result, packet_log)

        handle = self._loop.call_later(self._delay, fire)
        self._pending.add(handle)

    def _observe(self, request: DhcpPacket, port_kind: PortKind) -> None:
        sighting = observe(request, port_kind=port_kind)
        if sighting is None:
            return
        if sighting.arch is not None:
            name = sighting.arch.name
            self.requests_by_arch[name] = self.requests_by_arch.get(name, 0) + 1
        if sighting.address is not None and self.events is not None:
            self.events.remember_address(str(sighting.address), sighting.mac)

    def _send(self, arrival: _Arrival, reply: Reply, packet_log: _PacketLog) -> None:
        if arrival.sock.fileno() < 0:
            return  # stopped
        dest = reply.destination
        port = dest.port
        if dest.relay:
            port = self._relay_port
        elif port == DHCP_CLIENT_PORT:
            port = self._client_port
        ancillary = []
        if arrival.ifindex:
            # out of the interface the request came in on (matters for 255.255.255.255)
            pktinfo = _IN_PKTINFO.pack(arrival.ifindex, bytes(4), bytes(4))
            ancillary.append((socket.IPPROTO_IP, IP_PKTINFO, pktinfo))
        try:
            arrival.sock.sendmsg([reply.payload], ancillary, 0, (str(dest.address), port))
        except OSError as exc:
            packet_log.warning("%s to %s:%d not sent: %s", reply.kind, dest.address, port, exc)
            return
        self.replies_sent += 1
        named = reply.packet.file or reply.packet.option(67) or b"boot file on port 4011"
        boot_file = named.decode("utf-8", "replace")
        packet_log.info(
            "%s to %s:%d: %s (%s)", reply.kind, dest.address, port, boot_file, reply.client.arch
        )
        gave_file = bool(reply.packet.file or reply.packet.option(67))
        if self.events is not None and gave_file:  # else a port-4011 offer: the PxeAck follows
            self.events.record(
                "booted", f"{reply.kind} {boot_file} ({reply.client.arch})", mac=reply.client.mac
            )


def proxy_dhcp_from_config(
    config: Config,
    *,
    devices: DeviceLookup | None = None,
    store: DeviceStore | None = None,
    client_port: int = DHCP_CLIENT_PORT,
    relay_port: int = DHCP_SERVER_PORT,
    events: EventSink | None = None,
) -> ProxyDhcpServer:
    """The server ``config`` describes (not started).

    Binds ``[server] address`` (and ``interface``); the address clients are told is that address,
    or with 0.0.0.0 the address of the interface each request arrives on. With ``store`` the
    policy is :class:`StoreBootPolicy` (device records, approval workflow), else
    :class:`ConfigBootPolicy` over ``devices``. ``[pxe] delay`` holds every reply back.
    ``events`` receives "booted" events and DHCPREQUEST addresses.
    """
    pxe = config.pxe
    address = IPv4Address(config.server.address)
    policy: BootPolicy
    if store is not None:
        policy = StoreBootPolicy(pxe, store, http_port=config.http.port)
    else:
        policy = ConfigBootPolicy(pxe, http_port=config.http.port, devices=devices)
    return ProxyDhcpServer(
        policy,
        server_ip=None if address == ZERO_ADDRESS else address,
        bind_address=str(address),
        dhcp_port=pxe.dhcp_port,
        pxe_port=pxe.pxe_port,
        interface=config.server.interface,
        delay=pxe.delay,
        client_port=client_port,
        relay_port=relay_port,
        events=events,
    )


def _grow_receive_buffer(sock: socket.socket) -> None:
    """Ask for RECEIVE_BUFFER; as root past net.core.rmem_max (SO_RCVBUFFORCE), else up to it."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, RECEIVE_BUFFER)
    except OSError:  # not CAP_NET_ADMIN: the kernel caps SO_RCVBUF at rmem_max
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)


async def run_proxy_dhcp(
    config: Config,
    *,
    devices: DeviceLookup | None = None,
    store: DeviceStore | None = None,
    ready: asyncio.Future[ServerPorts] | None = None,
    stop: asyncio.Event | None = None,
    client_port: int = DHCP_CLIENT_PORT,
    relay_port: int = DHCP_SERVER_PORT,
) -> None:
    """Serve ``[pxe]`` until ``stop`` is set (or the task is cancelled); ``ready`` gets the ports.

    See :func:`proxy_dhcp_from_config`.
    """
    server = proxy_dhcp_from_config(
        config, devices=devices, store=store, client_port=client_port, relay_port=relay_port
    )
    ports = await server.start()
    if ready is not None and not ready.done():
        ready.set_result(ports)
    try:
        await (stop or asyncio.Event()).wait()
    finally:
        await server.stop()
