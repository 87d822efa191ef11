"""A small blocking TFTP client over a raw UDP socket, written for the tests (loopback only)."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

from pxe.tftp.codec import (
    TftpAck,
    TftpData,
    TftpError,
    TftpOptionAck,
    TftpPacket,
    TftpReadRequest,
    build_packet,
    parse_packet,
)


def rrq(name: str | bytes, mode: str = "octet", options: tuple[tuple[str, str], ...] = ()) -> bytes:
    """A read request; a bytes name is sent as is (for names latin-1 cannot spell)."""
    if isinstance(name, bytes):
        name = name.decode("latin-1")
    return build_packet(TftpReadRequest(name, mode, options))


@dataclass
class FetchResult:
    data: bytes | None = None
    error: TftpError | None = None
    oack: dict[str, str] | None = None
    server: tuple[str, int] | None = None  # the transfer's address (its TID)
    packets: list[TftpPacket] = field(default_factory=list)


class RawClient:
    def __init__(self, bind: str = "127.0.0.1", timeout: float = 2.0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((bind, 0))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self.timeout = timeout

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()
        return host, port

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        assert addr[0].startswith("127."), "tests send to loopback only"
        self.sock.sendto(data, addr)

    def recv(self, timeout: float | None = None) -> tuple[bytes, tuple[str, int]] | None:
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        try:
            data, addr = self.sock.recvfrom(70000)
        except TimeoutError:
            return None
        return data, (addr[0], addr[1])

    def fetch(
        self,
        server: tuple[str, int],
        name: str | bytes,
        *,
        mode: str = "octet",
        options: tuple[tuple[str, str], ...] = (),
        max_packets: int = 200_000,
        deadline: float = 30.0,
        ack_delay: float = 0.0,
    ) -> FetchResult:
        """Fetch a file (RFC 7440 windows when asked); stops on error, timeout or the last block.

        ``ack_delay`` seconds pass before each acknowledgement of a window (a slow client).
        """
        result = FetchResult()
        self.send(rrq(name, mode, options), server)
        blksize, windowsize = 512, 1
        received = bytearray()
        expected, since_ack = 1, 0
        tid: tuple[str, int] | None = None
        end = time.monotonic() + deadline
        idle = 0
        for _ in range(max_packets):
            if time.monotonic() > end:
                break
            got = self.recv()
            if got is None:
                idle += 1
                if idle > 5 or tid is None:
                    break
                self.send(build_packet(TftpAck((expected - 1) & 0xFFFF)), tid)
                continue
            idle = 0
            data, addr = got
            if tid is None:
                tid = addr
                result.server = addr
            elif addr != tid:
                continue
            packet = parse_packet(data)
            result.packets.append(packet)
            if isinstance(packet, TftpError):
                result.error = packet
                return result
            if isinstance(packet, TftpOptionAck):
                result.oack = dict(packet.options)
                blksize = int(result.oack.get("blksize", 512))
                windowsize = int(result.oack.get("windowsize", 1))
                self.send(build_packet(TftpAck(0)), tid)
                continue
            assert isinstance(packet, TftpData), packet
            if packet.block != expected & 0xFFFF:
                continue
            received += packet.payload
            expected += 1
            since_ack += 1
            last = len(packet.payload) < blksize
            if last or since_ack >= windowsize:
                if ack_delay:
                    time.sleep(ack_delay)
                self.send(build_packet(TftpAck(packet.block)), tid)
                since_ack = 0
            if last:
                result.data = bytes(received)
                return result
        return result
