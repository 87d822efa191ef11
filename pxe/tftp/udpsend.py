"""Sending DATA bursts: UDP generic segmentation offload, or one datagram at a time."""

from __future__ import annotations

import errno
import socket
import struct

#: UDP generic segmentation offload (<linux/udp.h>): one sendmsg, many datagrams
SOL_UDP = getattr(socket, "SOL_UDP", 17)
UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)
#: UDP_MAX_SEGMENTS of the kernel
GSO_MAX_SEGMENTS = 64
_GSO_UNSUPPORTED = {errno.EIO, errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP, errno.EMSGSIZE}
_GSO_CMSG: dict[int, list[tuple[int, int, bytes]]] = {}


def send_segmented(
    sock: socket.socket, iov: list[bytes | memoryview], size: int, client: tuple[str, int]
) -> None:
    """Send the buffers of ``iov`` as datagrams of ``size`` bytes in one ``sendmsg``."""
    ancillary = _GSO_CMSG.get(size)
    if ancillary is None:
        ancillary = _GSO_CMSG[size] = [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", size))]
    sock.sendmsg(iov, ancillary, 0, client)


def gso_unsupported(exc: OSError) -> bool:
    """The kernel or the route refused segmentation offload (old kernel, MTU below a segment)."""
    return exc.errno in _GSO_UNSUPPORTED


def send_each(sock: socket.socket, iov: list[bytes | memoryview], client: tuple[str, int]) -> None:
    """Send a datagram group one datagram (header + payload, two buffers) at a time."""
    join = b"".join
    for i in range(0, len(iov), 2):
        sock.sendto(join(iov[i : i + 2]), client)
