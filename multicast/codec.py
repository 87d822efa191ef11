"""WMTP wire format: bytes to frozen dataclasses and back (docs/PROTOCOL.md sections 3-5).

construct lives only here. Every datagram has a ``parse_*``/``build_*`` pair through
:func:`parse_datagram` / :func:`build_datagram`; the manifest has :func:`parse_manifest` /
:func:`build_manifest`. Parsing peer bytes either returns a dataclass or raises a
:class:`~wds.errors.RemoteProtocolError` child; building impossible values raises
:class:`~wds.errors.LocalProtocolError`. DATA, the hot path, also has a ``struct`` fast path
(:func:`parse_data_fast` / :func:`build_data_fast`) that tests keep byte-identical to construct.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import struct
from dataclasses import dataclass
from typing import Any, Final

import construct as c

from wds.errors import LocalProtocolError, RemoteProtocolError

MAGIC: Final = b"WM"
VERSION: Final = 1
HEADER_SIZE: Final = 12
DATA_HEADER_SIZE: Final = 28
#: IPv4 header + UDP header: what the MTU must also hold (PROTOCOL.md section 2)
IP_UDP_OVERHEAD: Final = 28
#: what a datagram costs on an Ethernet link beyond its IP packet: header 14, FCS 4, preamble 8,
#: inter-frame gap 12. A rate in Mbit/s is a link's rate; counting only IP+UDP made the sender
#: ~1 % faster than a 500 Mbit/s link (or tbf) carries, and the queue dropped the excess.
ETHERNET_OVERHEAD: Final = 38
MIN_BLOCK_SIZE: Final = 512
# [multicast] mtu allows 576..9216 (jumbo frames): blocks of 520..9160 bytes
MAX_BLOCK_SIZE: Final = 9216 - IP_UDP_OVERHEAD - DATA_HEADER_SIZE
MAX_RANGES: Final = 128
MAX_BITMAP_BITS: Final = 8192
MAX_BLOCKS_PER_CHUNK: Final = 65535
MIN_CHUNK_SIZE: Final = 64 * 1024
MAX_CHUNK_SIZE: Final = 64 * 1024 * 1024
MAX_IMAGE_SIZE: Final = 1 << 40
MAX_CHUNK_COUNT: Final = 1 << 20
MAX_NAME_BYTES: Final = 64
MANIFEST_MAGIC: Final = b"WDSMANIF"
DIGEST_SIZE: Final = 32
PUBLIC_KEY_SIZE: Final = 32
SIGNATURE_SIZE: Final = 64
UNKNOWN_START: Final = 0xFFFFFFFF


class MalformedDatagram(RemoteProtocolError):
    """A WMTP datagram that does not parse or breaks a bound of PROTOCOL.md."""


class MalformedManifest(RemoteProtocolError):
    """A manifest that does not parse or is inconsistent (sizes, counts, bounds)."""

    exit_code = 3


class DatagramType(enum.IntEnum):
    DATA = 1
    ANNOUNCE = 2
    REPAIR_ADV = 3
    REPORT = 4
    NAK = 5
    REDIRECT = 6


class SenderState(enum.IntEnum):
    WAITING = 0
    RUNNING = 1
    FINISHED = 2


class RedirectReason(enum.IntEnum):
    SLOW = 1
    DROPPED = 2


class ReportFlags(enum.IntFlag):
    JOIN = 1
    DONE = 2
    LEAVE = 4


DATA_FLAG_REPAIR: Final = 1


def block_size_for_mtu(mtu: int) -> int:
    """Largest DATA payload that fits one unfragmented IPv4 packet (PROTOCOL.md section 2)."""
    size = mtu - IP_UDP_OVERHEAD - DATA_HEADER_SIZE
    if not MIN_BLOCK_SIZE <= size <= MAX_BLOCK_SIZE:
        raise LocalProtocolError(
            f"mtu {mtu} gives block size {size}, outside {MIN_BLOCK_SIZE}..{MAX_BLOCK_SIZE}"
        )
    return size


# --------------------------------------------------------------------------------------------
# Dataclasses


@dataclass(frozen=True)
class BlockRange:
    """``block_count`` blocks of chunk ``chunk`` starting at ``first_block``."""

    chunk: int
    first_block: int
    block_count: int


@dataclass(frozen=True)
class DataBlock:
    session_id: int
    seq: int
    chunk: int
    block: int
    payload: bytes
    repair: bool = False


@dataclass(frozen=True)
class Announce:
    session_id: int
    state: SenderState
    receivers: int
    rate_kbps: int
    seq: int
    manifest_digest: bytes
    starts_in_ms: int = UNKNOWN_START


@dataclass(frozen=True)
class RepairAdvertisement:
    session_id: int
    ranges: tuple[BlockRange, ...]


@dataclass(frozen=True)
class ReceiverReport:
    session_id: int
    receiver_id: int
    flags: ReportFlags
    loss_permille: int
    verified_chunks: int
    rejected_chunks: int
    base_chunk: int
    bit_count: int
    need_bitmap: bytes
    #: the newest DATA seq the receiver had read when it wrote this (or the ANNOUNCE's next seq
    #: minus one before any DATA): what the sender sent after it the receiver cannot know yet
    seen_seq: int = 0


@dataclass(frozen=True)
class RepairRequest:
    """A NAK: blocks a receiver lacks."""

    session_id: int
    receiver_id: int
    ranges: tuple[BlockRange, ...]
    seen_seq: int = 0  # as in ReceiverReport: a repair sent after it was not lost, only unread


@dataclass(frozen=True)
class Redirect:
    session_id: int
    receiver_id: int
    reason: RedirectReason


Datagram = DataBlock | Announce | RepairAdvertisement | ReceiverReport | RepairRequest | Redirect


# --------------------------------------------------------------------------------------------
# construct definitions (PROTOCOL.md section 4)


def _header(kind: DatagramType) -> list[Any]:
    return [
        "magic" / c.Const(MAGIC),
        "version" / c.Const(VERSION, c.Int8ub),
        "type" / c.Const(int(kind), c.Int8ub),
        "session_id" / c.Int64ub,
    ]


_RANGE = c.Struct("chunk" / c.Int32ub, "first_block" / c.Int16ub, "block_count" / c.Int16ub)

_DATA = c.Struct(
    *_header(DatagramType.DATA),
    "seq" / c.Int32ub,
    "chunk" / c.Int32ub,
    "block" / c.Int16ub,
    "length" / c.Int16ub,
    "flags" / c.Int8ub,
    "reserved" / c.Const(b"\x00\x00\x00"),
    "payload" / c.Bytes(c.this.length),
    c.Terminated,
)
_ANNOUNCE = c.Struct(
    *_header(DatagramType.ANNOUNCE),
    "state" / c.Int8ub,
    "reserved" / c.Const(0, c.Int8ub),
    "receivers" / c.Int16ub,
    "rate_kbps" / c.Int32ub,
    "seq" / c.Int32ub,
    "manifest_digest" / c.Bytes(16),
    "starts_in_ms" / c.Int32ub,
    c.Terminated,
)
_REPAIR_ADV = c.Struct(
    *_header(DatagramType.REPAIR_ADV),
    "count" / c.Int16ub,
    "reserved" / c.Const(0, c.Int16ub),
    "ranges" / c.Array(c.this.count, _RANGE),
    c.Terminated,
)
_REPORT = c.Struct(
    *_header(DatagramType.REPORT),
    "receiver_id" / c.Int64ub,
    "flags" / c.Int8ub,
    "reserved" / c.Const(0, c.Int8ub),
    "loss_permille" / c.Int16ub,
    "verified_chunks" / c.Int32ub,
    "rejected_chunks" / c.Int32ub,
    "base_chunk" / c.Int32ub,
    "bit_count" / c.Int16ub,
    "reserved2" / c.Const(0, c.Int16ub),
    "seen_seq" / c.Int32ub,
    "need_bitmap" / c.Bytes((c.this.bit_count + 7) // 8),
    c.Terminated,
)
_NAK = c.Struct(
    *_header(DatagramType.NAK),
    "receiver_id" / c.Int64ub,
    "count" / c.Int16ub,
    "reserved" / c.Const(0, c.Int16ub),
    "seen_seq" / c.Int32ub,
    "ranges" / c.Array(c.this.count, _RANGE),
    c.Terminated,
)
_REDIRECT = c.Struct(
    *_header(DatagramType.REDIRECT),
    "receiver_id" / c.Int64ub,
    "reason" / c.Int8ub,
    "reserved" / c.Const(b"\x00\x00\x00"),
    c.Terminated,
)

_STRUCTS: Final[dict[DatagramType, c.Construct]] = {
    DatagramType.DATA: _DATA,
    DatagramType.ANNOUNCE: _ANNOUNCE,
    DatagramType.REPAIR_ADV: _REPAIR_ADV,
    DatagramType.REPORT: _REPORT,
    DatagramType.NAK: _NAK,
    DatagramType.REDIRECT: _REDIRECT,
}

# The DATA fast path: the same 28 bytes as _DATA, for the hot loop.
_DATA_STRUCT: Final = struct.Struct("!2sBBQIIHHB3x")
#: The same 28 bytes as words, for the receiver's per-datagram path (no object per datagram):
#: (magic+version+type, session_id, seq, chunk, block, length, flags+reserved). A valid DATA
#: header has ``DATA_LEAD`` first and ``DATA_REPAIR_WORD`` or 0 last (reserved bits zero).
DATA_WORDS: Final = struct.Struct("!IQIIHHI")
DATA_LEAD: Final = int.from_bytes(MAGIC + bytes((VERSION, 1)), "big")
DATA_REPAIR_WORD: Final = DATA_FLAG_REPAIR << 24


# --------------------------------------------------------------------------------------------
# Semantic checks shared by parse (RemoteProtocolError) and build (LocalProtocolError)


def _check_ranges(ranges: tuple[BlockRange, ...]) -> str | None:
    if not 1 <= len(ranges) <= MAX_RANGES:
        return f"{len(ranges)} ranges, must be 1..{MAX_RANGES}"
    for r in ranges:
        if r.block_count < 1 or r.first_block + r.block_count > MAX_BLOCKS_PER_CHUNK:
            return f"block range {r.first_block}+{r.block_count} outside 1..{MAX_BLOCKS_PER_CHUNK}"
    return None


def _check(d: Datagram) -> str | None:
    match d:
        case DataBlock():
            if not 1 <= len(d.payload) <= MAX_BLOCK_SIZE:
                return f"payload of {len(d.payload)} bytes, must be 1..{MAX_BLOCK_SIZE}"
        case Announce():
            if len(d.manifest_digest) != 16:
                return "manifest digest must be 16 bytes"
        case RepairAdvertisement() | RepairRequest():
            return _check_ranges(d.ranges)
        case ReceiverReport():
            if d.loss_permille > 1000:
                return f"loss_permille {d.loss_permille} above 1000"
            if d.bit_count > MAX_BITMAP_BITS:
                return f"bitmap of {d.bit_count} bits, more than {MAX_BITMAP_BITS}"
            if len(d.need_bitmap) != (d.bit_count + 7) // 8:
                return "bitmap length does not match bit_count"
            spare = -d.bit_count % 8
            if spare and d.need_bitmap[-1] & ((1 << spare) - 1):
                return "unused bits of the last bitmap byte are not 0"
    return None


def _local(problem: str | None, what: str) -> None:
    if problem is not None:
        raise LocalProtocolError(f"cannot build {what}: {problem}")


# --------------------------------------------------------------------------------------------
# Datagrams


def parse_datagram(data: bytes) -> Datagram:
    """Parse one WMTP datagram. Raises :class:`MalformedDatagram` for anything else."""
    if len(data) < HEADER_SIZE:
        raise MalformedDatagram(f"{len(data)} bytes, shorter than the 12-byte header")
    if data[:2] != MAGIC:
        raise MalformedDatagram("not WMTP: bad magic")
    if data[2] != VERSION:
        raise MalformedDatagram(f"unsupported version {data[2]}")
    try:
        kind = DatagramType(data[3])
    except ValueError:
        raise MalformedDatagram(f"unknown datagram type {data[3]}") from None
    try:
        p = _STRUCTS[kind].parse(data)
    except c.ConstructError as exc:
        raise MalformedDatagram(f"malformed {kind.name}: {type(exc).__name__}") from None
    result = _from_container(kind, p)
    problem = _check(result)
    if problem is not None:
        raise MalformedDatagram(f"{kind.name}: {problem}")
    return result


def _from_container(kind: DatagramType, p: Any) -> Datagram:
    sid = p.session_id
    if kind is DatagramType.DATA:
        if p.flags & ~DATA_FLAG_REPAIR:
            raise MalformedDatagram("DATA: reserved flag bits set")
        return DataBlock(sid, p.seq, p.chunk, p.block, p.payload, bool(p.flags & 1))
    if kind is DatagramType.ANNOUNCE:
        try:
            state = SenderState(p.state)
        except ValueError:
            raise MalformedDatagram(f"ANNOUNCE: unknown state {p.state}") from None
        return Announce(
            sid, state, p.receivers, p.rate_kbps, p.seq, p.manifest_digest, p.starts_in_ms
        )
    if kind is DatagramType.REPAIR_ADV:
        return RepairAdvertisement(sid, _ranges(p.ranges))
    if kind is DatagramType.REPORT:
        if p.flags & ~0x07:
            raise MalformedDatagram("REPORT: reserved flag bits set")
        return ReceiverReport(
            sid,
            p.receiver_id,
            ReportFlags(p.flags),
            p.loss_permille,
            p.verified_chunks,
            p.rejected_chunks,
            p.base_chunk,
            p.bit_count,
            p.need_bitmap,
            p.seen_seq,
        )
    if kind is DatagramType.NAK:
        return RepairRequest(sid, p.receiver_id, _ranges(p.ranges), p.seen_seq)
    try:
        reason = RedirectReason(p.reason)
    except ValueError:
        raise MalformedDatagram(f"REDIRECT: unknown reason {p.reason}") from None
    return Redirect(sid, p.receiver_id, reason)


def _ranges(items: Any) -> tuple[BlockRange, ...]:
    return tuple(BlockRange(r.chunk, r.first_block, r.block_count) for r in items)


def build_datagram(d: Datagram) -> bytes:
    """Serialize one datagram. Raises :class:`LocalProtocolError` for impossible values."""
    _local(_check(d), type(d).__name__)
    try:
        return _build(d)
    except (c.ConstructError, ValueError, OverflowError) as exc:
        raise LocalProtocolError(f"cannot build {type(d).__name__}: {exc}") from None


_STRUCT_OF: Final[dict[type, c.Construct]] = {
    DataBlock: _DATA,
    Announce: _ANNOUNCE,
    RepairAdvertisement: _REPAIR_ADV,
    ReceiverReport: _REPORT,
    RepairRequest: _NAK,
    Redirect: _REDIRECT,
}


def _build(d: Datagram) -> bytes:
    # dataclass fields map 1:1 onto construct fields; enums go as ints, ranges as dicts
    fields: dict[str, Any] = {f.name: getattr(d, f.name) for f in dataclasses.fields(d)}
    for name, value in fields.items():
        if isinstance(value, enum.IntEnum | enum.IntFlag):
            fields[name] = int(value)
    if isinstance(d, DataBlock):
        fields.update(length=len(d.payload), flags=DATA_FLAG_REPAIR if d.repair else 0)
    if isinstance(d, RepairAdvertisement | RepairRequest):
        fields.update(count=len(d.ranges), ranges=[vars(r) for r in d.ranges])
    return bytes(_STRUCT_OF[type(d)].build(fields))


def parse_data_fast(data: bytes) -> DataBlock:
    """The DATA fast path: same result and same refusals as :func:`parse_datagram` for DATA."""
    if len(data) < DATA_HEADER_SIZE:
        raise MalformedDatagram(f"DATA: {len(data)} bytes, shorter than the 28-byte header")
    magic, version, kind, sid, seq, chunk, block, length, flags = _DATA_STRUCT.unpack_from(data)
    if magic != MAGIC or version != VERSION or kind != DatagramType.DATA:
        raise MalformedDatagram("not a WMTP version 1 DATA datagram")
    if data[25:28] != b"\x00\x00\x00" or flags & ~DATA_FLAG_REPAIR:
        raise MalformedDatagram("DATA: reserved bits set")
    if len(data) != DATA_HEADER_SIZE + length or not 1 <= length <= MAX_BLOCK_SIZE:
        raise MalformedDatagram(f"DATA: length field {length} disagrees with {len(data)} bytes")
    return DataBlock(sid, seq, chunk, block, bytes(data[DATA_HEADER_SIZE:]), bool(flags & 1))


def build_data_fast(d: DataBlock) -> bytes:
    """The DATA fast path of :func:`build_datagram`."""
    if not 1 <= len(d.payload) <= MAX_BLOCK_SIZE:
        raise LocalProtocolError(f"cannot build DataBlock: payload of {len(d.payload)} bytes")
    try:
        head = _DATA_STRUCT.pack(
            MAGIC,
            VERSION,
            DatagramType.DATA,
            d.session_id,
            d.seq,
            d.chunk,
            d.block,
            len(d.payload),
            DATA_FLAG_REPAIR if d.repair else 0,
        )
    except struct.error as exc:
        raise LocalProtocolError(f"cannot build DataBlock: {exc}") from None
    return head + d.payload


def pack_data_head(
    session_id: int, seq: int, chunk: int, block: int, length: int, flags: int
) -> bytes:
    """The 28-byte DATA header alone, for a sender that appends the payload itself; the caller
    guarantees the ranges (build_data_fast checks them)."""
    return _DATA_STRUCT.pack(
        MAGIC, VERSION, DatagramType.DATA, session_id, seq, chunk, block, length, flags
    )


# The range-list fast paths: REPAIR_ADV goes to every receiver for every NAK, and a NAK may carry
# 128 ranges; through construct each cost about 1 ms to parse or build (PROTOCOL.md 11).
_ADV_HEAD: Final = struct.Struct("!2sBBQHH")  # header, count, reserved
_NAK_HEAD: Final = struct.Struct("!2sBBQQHHI")  # header, receiver_id, count, reserved, seen_seq
_RANGE_STRUCT: Final = struct.Struct("!IHH")


def _parse_ranges(data: bytes, offset: int, count: int, kind: str) -> tuple[BlockRange, ...]:
    if len(data) != offset + 8 * count:
        raise MalformedDatagram(f"malformed {kind}: {len(data)} bytes for {count} ranges")
    ranges = tuple(BlockRange(c, f, n) for c, f, n in _RANGE_STRUCT.iter_unpack(data[offset:]))
    problem = _check_ranges(ranges)
    if problem is not None:
        raise MalformedDatagram(f"{kind}: {problem}")
    return ranges


def parse_ranges_fast(data: bytes) -> RepairAdvertisement | RepairRequest:
    """REPAIR_ADV and NAK without construct: same results and refusals as parse_datagram."""
    kind = data[3] if len(data) >= 4 else 0
    head = _ADV_HEAD if kind == DatagramType.REPAIR_ADV else _NAK_HEAD
    if len(data) < head.size or kind not in (DatagramType.REPAIR_ADV, DatagramType.NAK):
        return _ranges_datagram(parse_datagram(data))
    if kind == DatagramType.REPAIR_ADV:
        magic, version, _, sid, count, reserved = _ADV_HEAD.unpack_from(data)
        if magic != MAGIC or version != VERSION or reserved:
            return _ranges_datagram(parse_datagram(data))
        return RepairAdvertisement(sid, _parse_ranges(data, head.size, count, "REPAIR_ADV"))
    magic, version, _, sid, rid, count, reserved, seen = _NAK_HEAD.unpack_from(data)
    if magic != MAGIC or version != VERSION or reserved:
        return _ranges_datagram(parse_datagram(data))
    return RepairRequest(sid, rid, _parse_ranges(data, head.size, count, "NAK"), seen)


def _ranges_datagram(d: Datagram) -> RepairAdvertisement | RepairRequest:
    assert isinstance(d, RepairAdvertisement | RepairRequest)  # parse_datagram raised otherwise
    return d


def build_ranges_fast(d: RepairAdvertisement | RepairRequest) -> bytes:
    """The fast path of build_datagram for REPAIR_ADV and NAK (the same bytes)."""
    _local(_check(d), type(d).__name__)
    try:
        body = b"".join(_RANGE_STRUCT.pack(r.chunk, r.first_block, r.block_count) for r in d.ranges)
        if isinstance(d, RepairAdvertisement):
            kind = DatagramType.REPAIR_ADV
            return _ADV_HEAD.pack(MAGIC, VERSION, kind, d.session_id, len(d.ranges), 0) + body
        head = _NAK_HEAD.pack(
            MAGIC, VERSION, DatagramType.NAK, d.session_id, d.receiver_id, len(d.ranges), 0,
            d.seen_seq,
        )  # fmt: skip
        return head + body
    except struct.error as exc:
        raise LocalProtocolError(f"cannot build {type(d).__name__}: {exc}") from None


def parse_any(data: bytes) -> Datagram:
    """Parse a datagram, DATA, REPAIR_ADV and NAK through their fast paths."""
    if len(data) >= 4:
        if data[3] == DatagramType.DATA:
            return parse_data_fast(data)
        if data[3] in (DatagramType.REPAIR_ADV, DatagramType.NAK):
            return parse_ranges_fast(data)
    return parse_datagram(data)


# --------------------------------------------------------------------------------------------
# The manifest (PROTOCOL.md section 5)


@dataclass(frozen=True)
class ChunkManifest:
    """The signed description of one image and one session. ``signature`` covers the rest."""

    session_id: int
    name: str
    image_size: int
    chunk_size: int
    block_size: int
    group: str
    port: int
    rate_kbps: int
    image_sha256: bytes
    chunk_sha256: tuple[bytes, ...]
    public_key: bytes = b"\x00" * PUBLIC_KEY_SIZE
    signature: bytes = b"\x00" * SIGNATURE_SIZE

    @property
    def chunk_count(self) -> int:
        return len(self.chunk_sha256)

    def chunk_length(self, index: int) -> int:
        return min(self.chunk_size, self.image_size - index * self.chunk_size)

    def blocks_in_chunk(self, index: int) -> int:
        return -(-self.chunk_length(index) // self.block_size)

    def block_length(self, chunk: int, block: int) -> int:
        return min(self.block_size, self.chunk_length(chunk) - block * self.block_size)


_MANIFEST_HEAD = c.Struct(
    "magic" / c.Const(MANIFEST_MAGIC),
    "version" / c.Const(VERSION, c.Int8ub),
    "reserved" / c.Const(b"\x00\x00\x00"),
    "session_id" / c.Int64ub,
    "image_size" / c.Int64ub,
    "chunk_size" / c.Int32ub,
    "block_size" / c.Int16ub,
    "port" / c.Int16ub,
    "group" / c.Bytes(4),
    "rate_kbps" / c.Int32ub,
    "image_sha256" / c.Bytes(DIGEST_SIZE),
    "chunk_count" / c.Int32ub,
    "name_length" / c.Int8ub,
    "name" / c.Bytes(c.this.name_length),
)
# The hash table is sliced in Python after the counts are checked: bounded before allocated.
_MANIFEST_TAIL = c.Struct(
    "public_key" / c.Bytes(PUBLIC_KEY_SIZE),
    "signature" / c.Bytes(SIGNATURE_SIZE),
    c.Terminated,
)
_MANIFEST_FIXED = 81


def _check_manifest(m: ChunkManifest) -> str | None:
    if not 1 <= m.image_size <= MAX_IMAGE_SIZE:
        return f"image_size {m.image_size} outside 1..2^40"
    cs = m.chunk_size
    if not MIN_CHUNK_SIZE <= cs <= MAX_CHUNK_SIZE or cs & (cs - 1):
        return f"chunk_size {cs} is not a power of two in 64 KiB..64 MiB"
    if not MIN_BLOCK_SIZE <= m.block_size <= MAX_BLOCK_SIZE:
        return f"block_size {m.block_size} outside {MIN_BLOCK_SIZE}..{MAX_BLOCK_SIZE}"
    if -(-cs // m.block_size) > MAX_BLOCKS_PER_CHUNK:
        return f"{-(-cs // m.block_size)} blocks per chunk, more than {MAX_BLOCKS_PER_CHUNK}"
    if m.chunk_count != -(-m.image_size // cs):
        return f"{m.chunk_count} chunk hashes for {m.image_size} bytes in {cs}-byte chunks"
    if not 1 <= m.port <= 65535:
        return f"port {m.port} outside 1..65535"
    try:
        if not ipaddress.IPv4Address(m.group).is_multicast:
            return f"group {m.group} is not multicast"
    except ValueError:
        return f"group {m.group!r} is not an IPv4 address"
    if not 1 <= len(m.name.encode("utf-8")) <= MAX_NAME_BYTES:
        return f"name must be 1..{MAX_NAME_BYTES} bytes of UTF-8"
    if len(m.image_sha256) != DIGEST_SIZE or any(len(h) != DIGEST_SIZE for h in m.chunk_sha256):
        return "every digest must be 32 bytes"
    if len(m.public_key) != PUBLIC_KEY_SIZE or len(m.signature) != SIGNATURE_SIZE:
        return "public key must be 32 bytes and signature 64 bytes"
    return None


def build_manifest_body(m: ChunkManifest) -> bytes:
    """Every manifest byte the signature covers (all but the signature itself)."""
    _local(_check_manifest(m), "ChunkManifest")
    name = m.name.encode("utf-8")
    head = _MANIFEST_HEAD.build(
        dict(
            session_id=m.session_id,
            image_size=m.image_size,
            chunk_size=m.chunk_size,
            block_size=m.block_size,
            port=m.port,
            group=ipaddress.IPv4Address(m.group).packed,
            rate_kbps=m.rate_kbps,
            image_sha256=m.image_sha256,
            chunk_count=m.chunk_count,
            name_length=len(name),
            name=name,
        )
    )
    return bytes(head) + b"".join(m.chunk_sha256) + m.public_key


def build_manifest(m: ChunkManifest) -> bytes:
    return build_manifest_body(m) + m.signature


def parse_manifest(data: bytes) -> ChunkManifest:
    """Parse manifest bytes (structure and bounds only; see manifest.py for the signature)."""
    if len(data) < _MANIFEST_FIXED:
        raise MalformedManifest(f"{len(data)} bytes, too short for a manifest")
    try:
        h = _MANIFEST_HEAD.parse(data)
    except c.ConstructError as exc:
        raise MalformedManifest(f"malformed manifest header: {type(exc).__name__}") from None
    if h.chunk_count > MAX_CHUNK_COUNT:
        raise MalformedManifest(f"chunk_count {h.chunk_count} above {MAX_CHUNK_COUNT}")
    start = _MANIFEST_FIXED + h.name_length
    end = start + DIGEST_SIZE * h.chunk_count
    expected = end + PUBLIC_KEY_SIZE + SIGNATURE_SIZE
    if len(data) != expected:
        raise MalformedManifest(f"{len(data)} bytes, {h.chunk_count} chunks need {expected}")
    tail = _MANIFEST_TAIL.parse(data[end:])
    try:
        name = h.name.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedManifest("session name is not UTF-8") from None
    table = data[start:end]
    m = ChunkManifest(
        session_id=h.session_id,
        name=name,
        image_size=h.image_size,
        chunk_size=h.chunk_size,
        block_size=h.block_size,
        group=str(ipaddress.IPv4Address(h.group)),
        port=h.port,
        rate_kbps=h.rate_kbps,
        image_sha256=h.image_sha256,
        chunk_sha256=tuple(table[i : i + DIGEST_SIZE] for i in range(0, len(table), DIGEST_SIZE)),
        public_key=tail.public_key,
        signature=tail.signature,
    )
    problem = _check_manifest(m)
    if problem is not None:
        raise MalformedManifest(problem)
    return m
