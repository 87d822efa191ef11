"""DHCP/BOOTP messages: bytes to a frozen :class:`DhcpPacket` and back.

The layout is declared with construct (:data:`BOOTP_HEADER`, :data:`OPTION_AREA`): that is the
reference. The hot path that runs for every datagram is a ``struct`` format for the fixed header
(RFC 2131 section 2, RFC 951) and a TLV loop for option areas, because construct was most of a
request's cost under a DISCOVER storm; tests/pxe/test_dhcp_construct.py checks that both read and
write the same bytes. Options are kept as raw bytes per code (typed views live in
:mod:`pxe.dhcp.options`), after undoing the two ways DHCP spreads one option over a message:

* option overload (RFC 2132 9.3, option 52): the ``file`` and/or ``sname`` fields carry options too;
* long options (RFC 3396): an option longer than 255 bytes is sent as several options of the same
  code, to be concatenated in order -- options field first, then ``file``, then ``sname``.

So a parsed packet holds each option code at most once with its whole value, and never option 52:
that is framing, redone by :func:`build_packet` when the options do not fit the options field.

Every byte of an option area is accounted for: Pad (0) is skipped, End (255) closes the area, a
missing End or an option whose length runs past the area raises :class:`RemoteProtocolError` with
a reason that names the option and the offset. Sizes and counts a peer controls are bounded.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from ipaddress import IPv4Address

import construct as c

from wds.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "BOOTP_HEADER",
    "BOOTP_MIN_SIZE",
    "MAGIC_COOKIE",
    "MAX_OPTIONS",
    "MAX_PACKET_SIZE",
    "OPTION_AREA",
    "OPTION_ITEM",
    "ZERO_ADDRESS",
    "BootpOp",
    "DhcpOption",
    "DhcpPacket",
    "build_option_area",
    "build_packet",
    "parse_option_area",
    "parse_packet",
]

#: RFC 2131 section 3: the first four octets of the options field
MAGIC_COOKIE = bytes((99, 130, 83, 99))
#: RFC 951 / RFC 1542 2.1: a BOOTP message is at least 300 bytes; some relays and old PXE ROMs
#: drop shorter ones.
BOOTP_MIN_SIZE = 300
#: largest datagram we parse: a full Ethernet frame's worth of payload, jumbo frames aside.
#: RFC 2131 lets clients announce more (option 57), but no PXE client needs it.
MAX_PACKET_SIZE = 1500
#: options (after RFC 3396 concatenation, Pad not counted) one packet may carry
MAX_OPTIONS = 128
#: RFC 2131 section 2: the fixed header up to and including the cookie
HEADER_SIZE = 236
PAD = 0
END = 255
#: 0.0.0.0, the "none" value of every address field
ZERO_ADDRESS = IPv4Address(0)
OPTION_OVERLOAD = 52


class BootpOp(enum.IntEnum):
    """RFC 951 ``op``."""

    BOOTREQUEST = 1
    BOOTREPLY = 2

    def __str__(self) -> str:
        return self.name


class Overload(enum.IntFlag):
    """RFC 2132 9.3: which header fields hold options."""

    FILE = 1
    SNAME = 2


# RFC 2131 figure 1, then the magic cookie: op htype hlen hops xid secs flags ciaddr yiaddr
# siaddr giaddr chaddr(16) sname(64) file(128) cookie(4). Addresses are read as 4 raw bytes and
# turned into IPv4Address below. (A struct format, not construct: this runs for every datagram
# of a DISCOVER storm, and construct's per-field parse and build cost half a request's time.)
_HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s4s")
assert _HEADER.size == HEADER_SIZE + len(MAGIC_COOKIE)

#: The declared layout of the fixed header and cookie (RFC 2131 figure 1), the reference that
#: ``_HEADER`` must match field for field.
BOOTP_HEADER = c.Struct(
    "op" / c.Int8ub,
    "htype" / c.Int8ub,
    "hlen" / c.Int8ub,
    "hops" / c.Int8ub,
    "xid" / c.Int32ub,
    "secs" / c.Int16ub,
    "flags" / c.Int16ub,
    "ciaddr" / c.Bytes(4),
    "yiaddr" / c.Bytes(4),
    "siaddr" / c.Bytes(4),
    "giaddr" / c.Bytes(4),
    "chaddr" / c.Bytes(16),
    "sname" / c.Bytes(64),
    "file" / c.Bytes(128),
    "cookie" / c.Const(MAGIC_COOKIE),
)
assert BOOTP_HEADER.sizeof() == _HEADER.size

#: RFC 2132 section 2: Pad (0) and End (255) are one byte; every other option is code, length,
#: data. An option area is such items up to and including End.
OPTION_ITEM = c.Struct(
    "code" / c.Int8ub,
    "data" / c.If(lambda this: this.code not in (PAD, END), c.Prefixed(c.Int8ub, c.GreedyBytes)),
)
OPTION_AREA = c.RepeatUntil(lambda item, _items, _ctx: item["code"] == END, OPTION_ITEM)


@dataclass(frozen=True)
class DhcpOption:
    """One option with its whole value (long options already concatenated)."""

    code: int
    data: bytes

    def __post_init__(self) -> None:
        if not 1 <= self.code <= 254:
            raise LocalProtocolError(f"option code {self.code} is Pad/End or out of range")


@dataclass(frozen=True)
class DhcpPacket:
    """A BOOTP/DHCP message.

    ``sname`` and ``file`` hold the field contents without the trailing NUL padding; when the
    fields carried options (overload), they are empty here. ``chaddr`` is all 16 bytes; the
    client's hardware address is ``chaddr[:hlen]`` (:attr:`hardware_address`).
    """

    op: BootpOp
    xid: int
    chaddr: bytes
    htype: int = 1
    hlen: int = 6
    hops: int = 0
    secs: int = 0
    flags: int = 0
    ciaddr: IPv4Address = ZERO_ADDRESS
    yiaddr: IPv4Address = ZERO_ADDRESS
    siaddr: IPv4Address = ZERO_ADDRESS
    giaddr: IPv4Address = ZERO_ADDRESS
    sname: bytes = b""
    file: bytes = b""
    options: tuple[DhcpOption, ...] = field(default=())

    #: RFC 2131 section 2: the leftmost bit of ``flags``
    BROADCAST = 0x8000

    @property
    def broadcast(self) -> bool:
        return bool(self.flags & self.BROADCAST)

    @property
    def hardware_address(self) -> bytes:
        return self.chaddr[: min(self.hlen, 16)]

    def option(self, code: int) -> bytes | None:
        """The value of option ``code``, or None when absent."""
        for item in self.options:
            if item.code == code:
                return item.data
        return None


# --------------------------------------------------------------------------------------------
# Parsing


def parse_packet(data: bytes) -> DhcpPacket:
    """Parse one UDP payload. Raises :class:`RemoteProtocolError` for anything malformed."""
    if len(data) > MAX_PACKET_SIZE:
        raise RemoteProtocolError(f"packet of {len(data)} bytes exceeds {MAX_PACKET_SIZE}")
    if len(data) < HEADER_SIZE + len(MAGIC_COOKIE):
        raise RemoteProtocolError(
            f"packet of {len(data)} bytes is shorter than the BOOTP header and magic cookie "
            f"({HEADER_SIZE + len(MAGIC_COOKIE)})"
        )
    (op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr) = (
        fields := _HEADER.unpack_from(data)
    )[:12]
    raw_sname, raw_file, cookie = fields[12:]
    if cookie != MAGIC_COOKIE:
        raise RemoteProtocolError("no DHCP magic cookie (99.130.83.99) after the header")
    if op not in (BootpOp.BOOTREQUEST, BootpOp.BOOTREPLY):
        raise RemoteProtocolError(f"op {op} is neither BOOTREQUEST (1) nor BOOTREPLY (2)")
    chunks = parse_option_area(data[HEADER_SIZE + len(MAGIC_COOKIE) :], "options field")
    overload = _overload(chunks)
    sname, file = _cstring(raw_sname), _cstring(raw_file)
    # RFC 3396 section 6: concatenation order is options field, file, sname.
    if overload & Overload.FILE:
        chunks += parse_option_area(raw_file, "file field (overloaded)")
        file = b""
    if overload & Overload.SNAME:
        chunks += parse_option_area(raw_sname, "sname field (overloaded)")
        sname = b""
    return DhcpPacket(
        op=BootpOp(op),
        htype=htype,
        hlen=hlen,
        hops=hops,
        xid=xid,
        secs=secs,
        flags=flags,
        ciaddr=IPv4Address(ciaddr),
        yiaddr=IPv4Address(yiaddr),
        siaddr=IPv4Address(siaddr),
        giaddr=IPv4Address(giaddr),
        chaddr=chaddr,
        sname=sname,
        file=file,
        options=_concatenate(chunks),
    )


def parse_option_area(area: bytes, where: str) -> list[tuple[int, bytes]]:
    """The (code, data) items of one option area, Pad skipped, up to its End option.

    RFC 2132 3.2: End "marks the end of valid information"; what follows it (Pad, normally) is
    not information and is not looked at.
    """
    # A plain loop over the bytes (the _OPTION layout: code, then length and data unless Pad or
    # End): this runs for every datagram, and a construct parse per option cost most of a
    # request's time under a DISCOVER storm.
    items: list[tuple[int, bytes]] = []
    at, size = 0, len(area)
    while True:
        if at >= size:
            raise RemoteProtocolError(f"{where}: ends at byte {at} without the End option (255)")
        code = area[at]
        if code == END:
            break
        if code == PAD:
            at += 1
            continue
        if at + 1 >= size:
            raise RemoteProtocolError(
                f"{where}: option {code} at byte {at} is cut off before its length byte"
            )
        length = area[at + 1]
        if at + 2 + length > size:
            raise RemoteProtocolError(
                f"{where}: option {code} at byte {at} is truncated: length {length} "
                f"but only {size - at - 2} bytes left"
            )
        if len(items) >= MAX_OPTIONS * 4:
            raise RemoteProtocolError(f"{where}: more than {MAX_OPTIONS * 4} option items")
        items.append((code, bytes(area[at + 2 : at + 2 + length])))
        at += 2 + length
    return items


def _overload(chunks: list[tuple[int, bytes]]) -> Overload:
    values = [data for code, data in chunks if code == OPTION_OVERLOAD]
    if not values:
        return Overload(0)
    value = b"".join(values)
    if len(value) != 1 or value[0] not in (1, 2, 3):
        raise RemoteProtocolError(f"option 52 (overload) must be one byte 1, 2 or 3, got {value!r}")
    return Overload(value[0])


def _concatenate(chunks: list[tuple[int, bytes]]) -> tuple[DhcpOption, ...]:
    # RFC 3396 section 7: all instances of one code form one option, in order of appearance.
    merged: dict[int, bytearray] = {}
    for code, data in chunks:
        if code == OPTION_OVERLOAD:
            continue
        merged.setdefault(code, bytearray()).extend(data)
    if len(merged) > MAX_OPTIONS:
        raise RemoteProtocolError(f"{len(merged)} distinct options, more than {MAX_OPTIONS}")
    return tuple(DhcpOption(code, bytes(data)) for code, data in merged.items())


def _cstring(raw: bytes) -> bytes:
    # RFC 2131: sname and file are NUL-terminated; what follows the first NUL is padding.
    return raw.split(b"\0", 1)[0]


# --------------------------------------------------------------------------------------------
# Building


def build_packet(
    packet: DhcpPacket, *, min_size: int = BOOTP_MIN_SIZE, max_size: int = 576 - 28
) -> bytes:
    """Encode ``packet``; long options are split (RFC 3396) and spill into ``file`` and then
    ``sname`` (option 52) only when the options field would exceed ``max_size``; the message is
    padded with Pad to ``min_size``. The default ``max_size`` is RFC 2131's 576-byte IP datagram
    minus the IP and UDP headers. Raises :class:`LocalProtocolError` if it cannot fit.
    """
    _check_header(packet)
    room = max_size - HEADER_SIZE - len(MAGIC_COOKIE)
    items = [piece for option in packet.options for piece in _split(option)]
    total = sum(len(piece) for piece in items) + 1
    if total <= room:
        main, file, sname = _area(items, room), packet.file, packet.sname
    else:
        main, file, sname = _overloaded(packet, items, room)
    try:
        head = _HEADER.pack(
            int(packet.op),
            packet.htype,
            packet.hlen,
            packet.hops,
            packet.xid,
            packet.secs,
            packet.flags,
            packet.ciaddr.packed,
            packet.yiaddr.packed,
            packet.siaddr.packed,
            packet.giaddr.packed,
            packet.chaddr,
            sname,  # struct pads 4s/64s/128s fields with NUL bytes
            file,
            MAGIC_COOKIE,
        )
    except struct.error as exc:  # a header field out of its range
        raise LocalProtocolError(f"header field out of range: {exc}") from None
    message: bytes = head + main
    return message.ljust(min_size, b"\0")


def build_option_area(options: tuple[DhcpOption, ...] | list[DhcpOption], end: bool) -> bytes:
    """Encode options as TLVs (splitting long ones, RFC 3396), with an End option if ``end``.

    Used for encapsulated option spaces too (option 43 PXE sub-options, option 175 iPXE).
    """
    data = b"".join(piece for option in options for piece in _split(option))
    return data + (bytes((END,)) if end else b"")


def _check_header(packet: DhcpPacket) -> None:
    if len(packet.chaddr) != 16:
        raise LocalProtocolError(f"chaddr must be 16 bytes, got {len(packet.chaddr)}")
    if len(packet.sname) > 63 or b"\0" in packet.sname:
        raise LocalProtocolError("sname must be at most 63 bytes with no NUL")
    if len(packet.file) > 127 or b"\0" in packet.file:
        raise LocalProtocolError("file must be at most 127 bytes with no NUL")
    if any(o.code == OPTION_OVERLOAD for o in packet.options):
        raise LocalProtocolError("option 52 is framing: build_packet adds it when needed")
    if len({o.code for o in packet.options}) != len(packet.options):
        raise LocalProtocolError("each option code may appear once (long values are split)")


def _split(option: DhcpOption) -> list[bytes]:
    # RFC 3396 section 5: a value over 255 bytes goes out as consecutive options of one code.
    # An empty value is one option of length 0.
    data = option.data
    pieces = [data[i : i + 255] for i in range(0, len(data), 255)] or [b""]
    return [bytes((option.code, len(piece))) + piece for piece in pieces]


def _area(items: list[bytes], room: int) -> bytes:
    data = b"".join(items) + bytes((END,))
    if len(data) > room:
        raise LocalProtocolError(f"options need {len(data)} bytes, only {room} fit")
    return data


def _overloaded(packet: DhcpPacket, items: list[bytes], room: int) -> tuple[bytes, bytes, bytes]:
    """Spread the options over options field, file, sname (RFC 2132 9.3), in that order.

    Whole options are moved to the next field first; only if that cannot fit are options split
    at field boundaries too (RFC 3396 allows any split; clients that ignore RFC 3396 cope better
    with whole options).
    """
    sizes = [room - 3]  # 3 bytes for option 52 itself
    names = ["options"]
    if not packet.file:
        sizes.append(128)
        names.append("file")
    if not packet.sname:
        sizes.append(64)
        names.append("sname")
    areas = _pack(items, sizes, split=False) or _pack(items, sizes, split=True)
    if areas is None:
        raise LocalProtocolError(
            f"options do not fit in {room} bytes even with file/sname overloaded"
        )
    filled = dict(zip(names, areas, strict=True))
    flag = Overload(0)
    file, sname = packet.file, packet.sname
    if filled.get("file"):
        flag |= Overload.FILE
        file = b"".join(filled["file"]) + bytes((END,))
    if filled.get("sname"):
        flag |= Overload.SNAME
        sname = b"".join(filled["sname"]) + bytes((END,))
    main = bytes((OPTION_OVERLOAD, 1, int(flag))) + b"".join(filled["options"]) + bytes((END,))
    return main, file, sname


def _pack(items: list[bytes], sizes: list[int], *, split: bool) -> list[list[bytes]] | None:
    """Place option TLVs into areas of ``sizes`` bytes (each keeps one byte for End)."""
    areas: list[list[bytes]] = [[] for _ in sizes]
    index, used = 0, 1
    for item in items:
        while True:
            if index == len(sizes):
                return None
            free = sizes[index] - used
            if len(item) <= free:
                areas[index].append(item)
                used += len(item)
                break
            if split and free >= 3:
                # an option instance with the first free-2 bytes; the rest goes on
                code, data = item[0], item[2:]
                head = data[: free - 2]
                areas[index].append(bytes((code, len(head))) + head)
                item = bytes((code, len(data) - len(head))) + data[len(head) :]
            index, used = index + 1, 1
    return areas
