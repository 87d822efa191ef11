"""TFTP packets: bytes to frozen dataclasses and back (RFC 1350, RFC 2347 OACK).

construct describes every packet; callers see only the dataclasses below. Strings on the wire are
decoded as latin-1, which maps each byte to one code point, so a file name survives any bytes a
client sends and is turned back into the exact bytes when the file system is asked.

DATA and ACK are on the per-packet path of every transfer, so they also have a hand-written struct
path (:func:`data_header`, :func:`parse_ack_block`); tests check it against the construct
definitions.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

import construct as c

from wds.errors import RemoteProtocolError

#: RFC 2347: "the packet ... may not exceed 512 octets"; we accept more because some clients do send
#: longer requests, but a request is bounded by this many bytes and this many options.
MAX_REQUEST_BYTES = 1024
MAX_OPTIONS = 32
#: RFC 2348: blksize 8..65464, so a DATA payload is at most 65464 bytes.
MAX_BLKSIZE = 65464


class Opcode(enum.IntEnum):
    """RFC 1350 section 5 and RFC 2347 opcodes; names print as the RFCs spell them."""

    RRQ = 1
    WRQ = 2
    DATA = 3
    ACK = 4
    ERROR = 5
    OACK = 6

    def __str__(self) -> str:
        return self.name


class ErrorCode(enum.IntEnum):
    """RFC 1350 appendix error codes, plus RFC 2347's 8."""

    NOT_DEFINED = 0
    FILE_NOT_FOUND = 1
    ACCESS_VIOLATION = 2
    DISK_FULL = 3
    ILLEGAL_OPERATION = 4
    UNKNOWN_TRANSFER_ID = 5
    FILE_EXISTS = 6
    NO_SUCH_USER = 7
    OPTION_NEGOTIATION = 8

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class TftpReadRequest:
    """RRQ: a file name, a transfer mode and RFC 2347 options in the order the client sent them."""

    filename: str
    mode: str
    options: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class TftpWriteRequest:
    """WRQ: same layout as RRQ; wds never accepts one."""

    filename: str
    mode: str
    options: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class TftpData:
    block: int
    payload: bytes = field(repr=False)


@dataclass(frozen=True)
class TftpAck:
    block: int


@dataclass(frozen=True)
class TftpError:
    code: int
    message: str


@dataclass(frozen=True)
class TftpOptionAck:
    """OACK (RFC 2347): the options the server accepted, with the values it grants."""

    options: tuple[tuple[str, str], ...]


TftpPacket = TftpReadRequest | TftpWriteRequest | TftpData | TftpAck | TftpError | TftpOptionAck

# --------------------------------------------------------------------------------------------
# construct definitions. Every byte is modelled: a request is a run of NUL-terminated strings and
# nothing else (Terminated rejects a truncated last string instead of hiding it).

# construct's CString knows no latin-1: a NUL-terminated byte string, decoded byte for byte.
_String = c.ExprAdapter(
    c.NullTerminated(c.GreedyBytes),
    lambda obj, ctx: obj.decode("latin-1"),
    lambda obj, ctx: obj.encode("latin-1"),
)
_Strings = c.Struct("strings" / c.GreedyRange(_String), c.Terminated)
_Request = c.Struct("opcode" / c.Int16ub, "body" / _Strings)
_Data = c.Struct("opcode" / c.Const(3, c.Int16ub), "block" / c.Int16ub, "payload" / c.GreedyBytes)
_Ack = c.Struct("opcode" / c.Const(4, c.Int16ub), "block" / c.Int16ub, c.Terminated)
# RFC 1350: ERROR is opcode, code, message, NUL. Some clients omit the final NUL; see parse_packet.
_Error = c.Struct(
    "opcode" / c.Const(5, c.Int16ub), "code" / c.Int16ub, "message" / _String, c.Terminated
)
_Oack = c.Struct("opcode" / c.Const(6, c.Int16ub), "body" / _Strings)

_HEADER = struct.Struct(">HH")


def parse_packet(data: bytes) -> TftpPacket:
    """Parse one datagram. Raises :class:`RemoteProtocolError` for anything malformed."""
    if len(data) < 4:
        raise RemoteProtocolError(f"datagram of {len(data)} bytes is shorter than any TFTP packet")
    opcode = (data[0] << 8) | data[1]
    try:
        if opcode in (Opcode.RRQ, Opcode.WRQ):
            return _parse_request(opcode, data)
        if opcode == Opcode.DATA:
            d = _Data.parse(data)
            if len(d.payload) > MAX_BLKSIZE:
                raise RemoteProtocolError(f"DATA payload of {len(d.payload)} bytes > {MAX_BLKSIZE}")
            return TftpData(d.block, bytes(d.payload))
        if opcode == Opcode.ACK:
            return TftpAck(_Ack.parse(data).block)
        if opcode == Opcode.ERROR:
            if data[-1] != 0:  # tolerate a missing final NUL (seen from some PXE ROMs)
                data = bytes(data) + b"\0"
            e = _Error.parse(data)
            return TftpError(e.code, e.message)
        if opcode == Opcode.OACK:
            return TftpOptionAck(_pairs(list(_Oack.parse(data).body.strings)))
    except c.ConstructError as exc:
        raise RemoteProtocolError(f"malformed {Opcode(opcode)} packet: {exc}") from None
    raise RemoteProtocolError(f"unknown opcode {opcode}")


def _parse_request(opcode: int, data: bytes) -> TftpReadRequest | TftpWriteRequest:
    if len(data) > MAX_REQUEST_BYTES:
        raise RemoteProtocolError(f"request of {len(data)} bytes > {MAX_REQUEST_BYTES}")
    strings = list(_Request.parse(data).body.strings)
    if len(strings) < 2:
        raise RemoteProtocolError("request lacks a file name or a mode")
    filename, mode, rest = strings[0], strings[1], strings[2:]
    options = _pairs(rest)
    cls = TftpReadRequest if opcode == Opcode.RRQ else TftpWriteRequest
    return cls(filename, mode, options)


def _pairs(strings: list[str]) -> tuple[tuple[str, str], ...]:
    # Some ROMs pad the request with NUL bytes: trailing empty strings are padding, not options.
    while strings and strings[-1] == "" and (len(strings) % 2 or strings[-2] == ""):
        strings.pop()
    if len(strings) % 2:
        raise RemoteProtocolError(f"option {strings[-1]!r} has no value")
    if len(strings) // 2 > MAX_OPTIONS:
        raise RemoteProtocolError(f"{len(strings) // 2} options > {MAX_OPTIONS}")
    return tuple((strings[i], strings[i + 1]) for i in range(0, len(strings), 2))


def build_packet(packet: TftpPacket) -> bytes:
    """Serialize one packet (the construct path; DATA on the hot path uses :func:`data_header`)."""
    if isinstance(packet, TftpReadRequest | TftpWriteRequest):
        opcode = Opcode.RRQ if isinstance(packet, TftpReadRequest) else Opcode.WRQ
        strings = [packet.filename, packet.mode, *_flatten(packet.options)]
        return bytes(_Request.build({"opcode": opcode, "body": {"strings": strings}}))
    if isinstance(packet, TftpData):
        return bytes(_Data.build({"block": packet.block, "payload": packet.payload}))
    if isinstance(packet, TftpAck):
        return bytes(_Ack.build({"block": packet.block}))
    if isinstance(packet, TftpError):
        return bytes(_Error.build({"code": packet.code, "message": packet.message}))
    return bytes(_Oack.build({"body": {"strings": _flatten(packet.options)}}))


def _flatten(options: tuple[tuple[str, str], ...]) -> list[str]:
    return [s for pair in options for s in pair]


def build_error(code: int, message: str) -> bytes:
    """An ERROR packet; the message is cut to keep the packet within 512 bytes (RFC 1350)."""
    text = message.encode("latin-1", "replace")[:500].decode("latin-1")
    return build_packet(TftpError(code, text))


# --------------------------------------------------------------------------------------------
# The per-packet path: no construct, no dataclass.

#: DATA headers for every block number, built once: a DATA packet is then header + payload slice.
DATA_HEADERS: tuple[bytes, ...] = tuple(_HEADER.pack(Opcode.DATA, n) for n in range(65536))


def data_header(block: int) -> bytes:
    """The 4-byte DATA header for ``block`` (0..65535), same bytes as ``_Data.build``."""
    return DATA_HEADERS[block]


def parse_ack_block(data: bytes) -> int:
    """The block number of an exact 4-byte ACK, or -1 when ``data`` is anything else."""
    if len(data) == 4 and data[0] == 0 and data[1] == 4:
        return (data[2] << 8) | data[3]
    return -1
