"""The asyncio adapter of the ProxyDHCP server: two UDP sockets, :func:`decide`, ``sendto``.

No protocol decision is made here. Each datagram on the DHCP port (67) or the PXE port (4011) is
parsed and handed to :func:`pxe.dhcp.decide.decide`; a malformed packet (``RemoteProtocolError``)
or an :class:`Ignore` is logged at DEBUG with its reason and dropped; a :class:`Reply` is sent to
its destination, after ``delay`` seconds if configured (bounded: at most ``MAX_PENDING`` replies
wait at once).

``server_ip`` is the address clients are told (option 54, siaddr): the address of the interface
the server listens on. A server bound to 0.0.0.0 must be given it explicitly.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import MutableMapping
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any, cast

from pxe.dhcp.codec import parse_packet
from pxe.dhcp.decide import (
    DHCP_CLIENT_PORT,
    DHCP_SERVER_PORT,
    BootPolicy,
    Ignore,
    PortKind,
    Reply,
    decide,
)
from wds.errors import RemoteProtocolError

__all__ = ["MAX_PENDING", "ProxyDhcpServer", "ServerPorts"]

log = logging.getLogger(__name__)

#: delayed replies waiting at once; more are dropped (a flood must not grow memory)
MAX_PENDING = 256


class _PacketLog(logging.LoggerAdapter[logging.Logger]):
    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        extra = self.extra or {}
        return (
            f"[{extra.get('peer')} {extra.get('mac', '-')} xid={extra.get('xid', '-')}] {msg}",
            kwargs,
        )


@dataclass(frozen=True)
class ServerPorts:
    """The ports actually bound (port 0 in the config means: any free port)."""

    dhcp: int
    pxe: int


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, server: ProxyDhcpServer, port_kind: PortKind) -> None:
        self.server = server
        self.port_kind = port_kind
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's selector datagram transport does not subclass DatagramTransport in 3.11
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.server._received(self, data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("%s socket error: %s", self.port_kind, exc)


class ProxyDhcpServer:
    """Listens on ``dhcp_port`` and ``pxe_port``; see the module docstring.

    ``client_port`` and ``relay_port`` replace the well-known ports 68 and 67 of reply
    destinations: tests and labs run clients and relays on other ports.
    """

    def __init__(
        self,
        policy: BootPolicy,
        *,
        server_ip: IPv4Address,
        bind_address: str = "0.0.0.0",
        dhcp_port: int = DHCP_SERVER_PORT,
        pxe_port: int = 4011,
        interface: str = "",
        delay: float = 0.0,
        client_port: int = DHCP_CLIENT_PORT,
        relay_port: int = DHCP_SERVER_PORT,
    ) -> None:
        self._policy = policy
        self._server_ip = server_ip
        self._bind_address = bind_address
        self._ports = (dhcp_port, pxe_port)
        self._interface = interface
        self._delay = delay
        self._client_port = client_port
        self._relay_port = relay_port
        self._endpoints: list[_Endpoint] = []
        self._pending: set[asyncio.TimerHandle] = set()
        self.replies_sent = 0
        self.packets_dropped = 0

    async def start(self) -> ServerPorts:
        """Bind both sockets; returns the bound ports. Raises OSError if a port is taken."""
        loop = asyncio.get_running_loop()
        bound: list[int] = []
        try:
            for port, kind in zip(self._ports, ("dhcp", "pxe"), strict=True):
                sock = self._socket(port)
                _, endpoint = await loop.create_datagram_endpoint(
                    lambda kind=kind: _Endpoint(self, kind),  # type: ignore[misc]
                    sock=sock,
                )
                self._endpoints.append(endpoint)
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
        for endpoint in self._endpoints:
            if endpoint.transport is not None:
                endpoint.transport.close()
        self._endpoints.clear()

    def _socket(self, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)  # replies to 255.255.255.255
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

    def _received(self, endpoint: _Endpoint, data: bytes, addr: tuple[Any, int]) -> None:
        peer = f"{addr[0]}:{addr[1]}"
        try:
            request = parse_packet(data)
        except RemoteProtocolError as exc:
            self.packets_dropped += 1
            log.debug(
                "[%s] dropped %d bytes on the %s port: %s", peer, len(data), endpoint.port_kind, exc
            )
            return
        packet_log = _PacketLog(
            log,
            {"peer": peer, "mac": request.hardware_address.hex(":"), "xid": f"{request.xid:#010x}"},
        )
        result = decide(
            request,
            self._policy,
            server_ip=self._server_ip,
            port_kind=endpoint.port_kind,
            source_port=addr[1],
        )
        if isinstance(result, Ignore):
            self.packets_dropped += 1
            packet_log.debug("ignored on the %s port: %s", endpoint.port_kind, result.reason)
            return
        if self._delay <= 0:
            self._send(endpoint, result, packet_log)
            return
        if len(self._pending) >= MAX_PENDING:
            self.packets_dropped += 1
            packet_log.info("dropped: %d delayed replies already waiting", MAX_PENDING)
            return
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle | None = None

        def fire() -> None:
            assert handle is not None
            self._pending.discard(handle)
            self._send(endpoint, result, packet_log)

        handle = loop.call_later(self._delay, fire)
        self._pending.add(handle)

    def _send(self, endpoint: _Endpoint, reply: Reply, packet_log: _PacketLog) -> None:
        if endpoint.transport is None or endpoint.transport.is_closing():
            return
        dest = reply.destination
        port = dest.port
        if dest.relay:
            port = self._relay_port
        elif port == DHCP_CLIENT_PORT:
            port = self._client_port
        endpoint.transport.sendto(reply.payload, (str(dest.address), port))
        self.replies_sent += 1
        packet_log.info(
            "%s to %s:%d: %s (%s)",
            reply.kind,
            dest.address,
            port,
            reply.packet.file.decode("utf-8", "replace") or "boot file on port 4011",
            reply.client.arch,
        )
