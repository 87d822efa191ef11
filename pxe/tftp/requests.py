"""What the listening port does with a datagram; how an admitted request becomes a transfer.

Pure decisions (the file source is the policy object passed in); the adapter only sends what these
return.
"""

from __future__ import annotations

from dataclasses import dataclass

from pxe.tftp.codec import (
    ErrorCode,
    TftpReadRequest,
    TftpWriteRequest,
    build_error,
    parse_packet,
)
from pxe.tftp.files import FileRefusal, FileSource, ServedFile, SharedFileCache, open_netascii
from pxe.tftp.machine import ReadTransfer, TransferSettings
from pxe.tftp.options import OptionLimits, negotiate
from wds.errors import RemoteProtocolError

MODES = ("octet", "netascii")


@dataclass(frozen=True)
class Drop:
    """Not a request we answer (garbage, a stray DATA/ACK): dropped silently, logged at DEBUG."""

    reason: str


@dataclass(frozen=True)
class Reject:
    """A request refused with an ERROR packet; ``reason`` goes to the INFO log."""

    datagram: bytes
    reason: str


@dataclass(frozen=True)
class Accept:
    request: TftpReadRequest


def classify_request(data: bytes) -> Accept | Reject | Drop:
    """Decide on one datagram that reached the listening port."""
    try:
        packet = parse_packet(data)
    except RemoteProtocolError as exc:
        return Drop(str(exc))
    if isinstance(packet, TftpWriteRequest):
        # wds only serves: RFC 1350 error 2 (access violation) for any write request.
        return Reject(
            build_error(
                ErrorCode.ACCESS_VIOLATION,
                "write requests are not accepted: this server is read-only",
            ),
            f"write request for {packet.filename!r} refused",
        )
    if not isinstance(packet, TftpReadRequest):
        return Drop(f"{type(packet).__name__} sent to the listening port")
    mode = packet.mode.lower()  # RFC 1350: mode names are case-insensitive
    if mode not in MODES:
        return Reject(
            build_error(
                ErrorCode.ILLEGAL_OPERATION,
                f"transfer mode {packet.mode!r} is not supported; use octet or netascii",
            ),
            f"read request for {packet.filename!r} in mode {packet.mode!r} refused",
        )
    return Accept(packet)


@dataclass
class PreparedTransfer:
    transfer: ReadTransfer
    served: ServedFile
    mode: str


def prepare_transfer(
    request: TftpReadRequest,
    client: tuple[str, int],
    *,
    source: FileSource,
    cache: SharedFileCache,
    limits: OptionLimits,
    settings: TransferSettings,
) -> PreparedTransfer | Reject:
    """Open the file through the policy, negotiate options, and build the transfer machine."""
    opened = source.open(request.filename, client)
    if isinstance(opened, ServedFile) and request.mode.lower() == "netascii":
        opened = open_netascii(opened, cache)
    if isinstance(opened, FileRefusal):
        return Reject(
            build_error(opened.code, opened.message),
            f"read request for {request.filename!r} refused: {opened.message}",
        )
    negotiated = negotiate(request.options, file_size=opened.size, limits=limits)
    transfer = ReadTransfer(opened.data, negotiated, settings, client)
    return PreparedTransfer(transfer, opened, request.mode.lower())
