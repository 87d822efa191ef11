"""WIM binary structures: bytes to frozen dataclasses and back.

The only module of :mod:`wds.wim` that uses construct; every parser returns a dataclass and raises
:class:`~wds.errors.WimFormatError` (never a construct error) for bytes that do not fit.

Layouts follow Microsoft's "Windows Imaging File Format" (WIM) description and wimlib's notes:

* header: 208 bytes at offset 0 (for a pipable WIM the final header is the last 208 bytes of the
  file; the one at offset 0 is written before the sizes are known and has zeroed resource headers);
* resource header ("reshdr"): 7-byte size in the file, 1 flag byte, 8-byte offset, 8-byte
  original (uncompressed) size;
* blob table: 50-byte entries (reshdr, part number, reference count, SHA-1);
* integrity table: size, entry count, chunk size, then one SHA-1 per chunk;
* metadata resource: security data followed by a tree of 8-byte aligned directory entries.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Final

import construct as cs

from wds.errors import WimFormatError

HEADER_SIZE: Final = 208
RESHDR_SIZE: Final = 24
BLOB_ENTRY_SIZE: Final = 50
SHA1_SIZE: Final = 20
INTEGRITY_HEADER_SIZE: Final = 12
DENTRY_FIXED_SIZE: Final = 102
STREAM_ENTRY_FIXED_SIZE: Final = 38

WIM_MAGIC: Final = b"MSWIM\x00\x00\x00"
#: magic of wimlib's pipable WIM format (wimcapture --pipable), which Microsoft tools cannot read
PWM_MAGIC: Final = b"WLPWM\x00\x00\x00"
#: magic of the 40-byte header before every blob in a pipable WIM
PWM_BLOB_MAGIC: Final = 0x2B9B9BA2443DB9D8

#: reshdr original size that marks a solid resource's own entry in the blob table
SOLID_RESOURCE_MAGIC: Final = 0x100000000


class HeaderFlag(enum.IntFlag):
    """WIM_HDR_FLAG_* bits of the header's flags field."""

    RESERVED = 0x00000001
    COMPRESSION = 0x00000002
    READONLY = 0x00000004
    SPANNED = 0x00000008
    RESOURCE_ONLY = 0x00000010
    METADATA_ONLY = 0x00000020
    WRITE_IN_PROGRESS = 0x00000040
    RP_FIX = 0x00000080
    COMPRESS_RESERVED = 0x00010000
    COMPRESS_XPRESS = 0x00020000
    COMPRESS_LZX = 0x00040000
    COMPRESS_LZMS = 0x00080000
    COMPRESS_XPRESS_2 = 0x00200000


class ResourceFlag(enum.IntFlag):
    """WIM_RESHDR_FLAG_* bits of a resource header's flag byte."""

    FREE = 0x01
    METADATA = 0x02
    COMPRESSED = 0x04
    SPANNED = 0x08
    SOLID = 0x10


@dataclass(frozen=True, slots=True)
class ResourceHeader:
    """Where a resource lies in the file (``offset``, ``size_in_wim``) and how big it unpacks."""

    size_in_wim: int
    flags: int
    offset: int
    original_size: int

    @property
    def is_compressed(self) -> bool:
        return bool(self.flags & ResourceFlag.COMPRESSED)

    @property
    def is_solid(self) -> bool:
        return bool(self.flags & ResourceFlag.SOLID)

    @property
    def is_metadata(self) -> bool:
        return bool(self.flags & ResourceFlag.METADATA)

    @property
    def end(self) -> int:
        return self.offset + self.size_in_wim

    @property
    def is_empty(self) -> bool:
        return self.size_in_wim == 0 and self.offset == 0 and self.original_size == 0


EMPTY_RESHDR: Final = ResourceHeader(0, 0, 0, 0)


@dataclass(frozen=True, slots=True)
class WimHeader:
    """The 208-byte WIM header, every field."""

    magic: bytes
    header_size: int
    version: int
    flags: int
    chunk_size: int
    guid: bytes
    part_number: int
    total_parts: int
    image_count: int
    blob_table: ResourceHeader
    xml_data: ResourceHeader
    boot_metadata: ResourceHeader
    boot_index: int
    integrity_table: ResourceHeader
    unused: bytes = bytes(60)

    @property
    def is_pipable(self) -> bool:
        return self.magic == PWM_MAGIC


@dataclass(frozen=True, slots=True)
class BlobEntry:
    """One blob table entry: a stream (file data or image metadata) and its SHA-1."""

    resource: ResourceHeader
    part_number: int
    refcount: int
    sha1: bytes


@dataclass(frozen=True, slots=True)
class IntegrityTable:
    """SHA-1 of each ``chunk_size`` chunk of the bytes from offset 208 to the blob table's end."""

    size: int
    chunk_size: int
    hashes: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class PipableBlobHeader:
    """The 40-byte header wimlib writes before each resource of a pipable WIM."""

    magic: int
    uncompressed_size: int
    sha1: bytes
    flags: int


@dataclass(frozen=True, slots=True)
class SecurityDataHeader:
    """Start of a metadata resource: total length of the security data and descriptor sizes."""

    total_length: int
    sizes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class DentryFixed:
    """The fixed 102-byte part of a directory entry in a metadata resource."""

    length: int
    attributes: int
    security_id: int
    subdir_offset: int
    creation_time: int
    last_access_time: int
    last_write_time: int
    default_hash: bytes
    reparse_or_link: int
    num_extra_streams: int
    short_name_nbytes: int
    name_nbytes: int


@dataclass(frozen=True, slots=True)
class StreamEntryFixed:
    """The fixed 38-byte part of an extra (named or unnamed) stream entry after a dentry."""

    length: int
    sha1: bytes
    name_nbytes: int


# --- construct definitions (private) -------------------------------------------------------------

_Reshdr = cs.Struct(
    "size_in_wim" / cs.BytesInteger(7, swapped=True),
    "flags" / cs.Int8ul,
    "offset" / cs.Int64ul,
    "original_size" / cs.Int64ul,
)

_Header = cs.Struct(
    "magic" / cs.Bytes(8),
    "header_size" / cs.Int32ul,
    "version" / cs.Int32ul,
    "flags" / cs.Int32ul,
    "chunk_size" / cs.Int32ul,
    "guid" / cs.Bytes(16),
    "part_number" / cs.Int16ul,
    "total_parts" / cs.Int16ul,
    "image_count" / cs.Int32ul,
    "blob_table" / _Reshdr,
    "xml_data" / _Reshdr,
    "boot_metadata" / _Reshdr,
    "boot_index" / cs.Int32ul,
    "integrity_table" / _Reshdr,
    "unused" / cs.Bytes(60),
)

_BlobEntry = cs.Struct(
    "resource" / _Reshdr,
    "part_number" / cs.Int16ul,
    "refcount" / cs.Int32ul,
    "sha1" / cs.Bytes(SHA1_SIZE),
)

_IntegrityHeader = cs.Struct(
    "size" / cs.Int32ul,
    "num_entries" / cs.Int32ul,
    "chunk_size" / cs.Int32ul,
)

_PipableBlobHeader = cs.Struct(
    "magic" / cs.Int64ul,
    "uncompressed_size" / cs.Int64ul,
    "sha1" / cs.Bytes(SHA1_SIZE),
    "flags" / cs.Int32ul,
)

_SecurityHeader = cs.Struct(
    "total_length" / cs.Int32ul,
    "num_entries" / cs.Int32ul,
)

_Dentry = cs.Struct(
    "length" / cs.Int64ul,
    "attributes" / cs.Int32ul,
    "security_id" / cs.Int32sl,
    "subdir_offset" / cs.Int64ul,
    "unused1" / cs.Int64ul,
    "unused2" / cs.Int64ul,
    "creation_time" / cs.Int64ul,
    "last_access_time" / cs.Int64ul,
    "last_write_time" / cs.Int64ul,
    "default_hash" / cs.Bytes(SHA1_SIZE),
    "unknown_0x54" / cs.Int32ul,
    "reparse_or_link" / cs.Int64ul,
    "num_extra_streams" / cs.Int16ul,
    "short_name_nbytes" / cs.Int16ul,
    "name_nbytes" / cs.Int16ul,
)

_StreamEntry = cs.Struct(
    "length" / cs.Int64ul,
    "reserved" / cs.Int64ul,
    "sha1" / cs.Bytes(SHA1_SIZE),
    "name_nbytes" / cs.Int16ul,
)


def _parse(struct: Any, data: bytes, what: str, size: int) -> Any:
    if len(data) < size:
        raise WimFormatError(f"{what} is truncated: {len(data)} of {size} bytes")
    try:
        return struct.parse(data[:size])
    except cs.ConstructError as exc:  # pragma: no cover - fixed-size structs cannot fail here
        raise WimFormatError(f"{what} cannot be parsed: {exc}") from None


# --- resource header -----------------------------------------------------------------------------


def _reshdr_from(c: Any) -> ResourceHeader:
    return ResourceHeader(
        size_in_wim=int(c.size_in_wim),
        flags=int(c.flags),
        offset=int(c.offset),
        original_size=int(c.original_size),
    )


def _reshdr_dict(r: ResourceHeader) -> dict[str, int]:
    return {
        "size_in_wim": r.size_in_wim,
        "flags": r.flags,
        "offset": r.offset,
        "original_size": r.original_size,
    }


def parse_reshdr(data: bytes) -> ResourceHeader:
    return _reshdr_from(_parse(_Reshdr, data, "resource header", RESHDR_SIZE))


def build_reshdr(r: ResourceHeader) -> bytes:
    return bytes(_Reshdr.build(_reshdr_dict(r)))


# --- header --------------------------------------------------------------------------------------


def parse_header(data: bytes) -> WimHeader:
    """Parse the 208-byte header; checks only the magic (the reader checks the rest)."""
    c = _parse(_Header, data, "WIM header", HEADER_SIZE)
    magic = bytes(c.magic)
    if magic not in (WIM_MAGIC, PWM_MAGIC):
        raise WimFormatError(
            f"not a WIM file: header starts with {magic[:8]!r}, expected 'MSWIM\\0\\0\\0'"
        )
    return WimHeader(
        magic=magic,
        header_size=int(c.header_size),
        version=int(c.version),
        flags=int(c.flags),
        chunk_size=int(c.chunk_size),
        guid=bytes(c.guid),
        part_number=int(c.part_number),
        total_parts=int(c.total_parts),
        image_count=int(c.image_count),
        blob_table=_reshdr_from(c.blob_table),
        xml_data=_reshdr_from(c.xml_data),
        boot_metadata=_reshdr_from(c.boot_metadata),
        boot_index=int(c.boot_index),
        integrity_table=_reshdr_from(c.integrity_table),
        unused=bytes(c.unused),
    )


def build_header(h: WimHeader) -> bytes:
    return bytes(
        _Header.build(
            {
                "magic": h.magic,
                "header_size": h.header_size,
                "version": h.version,
                "flags": h.flags,
                "chunk_size": h.chunk_size,
                "guid": h.guid,
                "part_number": h.part_number,
                "total_parts": h.total_parts,
                "image_count": h.image_count,
                "blob_table": _reshdr_dict(h.blob_table),
                "xml_data": _reshdr_dict(h.xml_data),
                "boot_metadata": _reshdr_dict(h.boot_metadata),
                "boot_index": h.boot_index,
                "integrity_table": _reshdr_dict(h.integrity_table),
                "unused": h.unused,
            }
        )
    )


# --- blob table ----------------------------------------------------------------------------------

_BlobEntryCompiled = _BlobEntry.compile()


def parse_blob_table(data: bytes, *, max_entries: int) -> tuple[BlobEntry, ...]:
    """Parse a whole (uncompressed) blob table; ``max_entries`` bounds the work a file asks for."""
    if len(data) % BLOB_ENTRY_SIZE:
        raise WimFormatError(
            f"blob table is {len(data)} bytes, not a whole number of {BLOB_ENTRY_SIZE}-byte entries"
        )
    count = len(data) // BLOB_ENTRY_SIZE
    if count > max_entries:
        raise WimFormatError(f"blob table has {count} entries, more than the limit {max_entries}")
    entries = []
    view = memoryview(data)
    for i in range(count):
        c = _BlobEntryCompiled.parse(bytes(view[i * BLOB_ENTRY_SIZE : (i + 1) * BLOB_ENTRY_SIZE]))
        entries.append(
            BlobEntry(
                resource=_reshdr_from(c.resource),
                part_number=int(c.part_number),
                refcount=int(c.refcount),
                sha1=bytes(c.sha1),
            )
        )
    return tuple(entries)


def build_blob_table(entries: tuple[BlobEntry, ...]) -> bytes:
    return b"".join(
        _BlobEntry.build(
            {
                "resource": _reshdr_dict(e.resource),
                "part_number": e.part_number,
                "refcount": e.refcount,
                "sha1": e.sha1,
            }
        )
        for e in entries
    )


# --- integrity table -----------------------------------------------------------------------------


def parse_integrity_table(data: bytes, *, max_entries: int) -> IntegrityTable:
    """Parse an integrity table; the size field must match the entry count and the data length."""
    c = _parse(_IntegrityHeader, data, "integrity table header", INTEGRITY_HEADER_SIZE)
    size, count, chunk_size = int(c.size), int(c.num_entries), int(c.chunk_size)
    if count > max_entries:
        raise WimFormatError(
            f"integrity table claims {count} entries, more than the file can hold ({max_entries})"
        )
    expected = INTEGRITY_HEADER_SIZE + count * SHA1_SIZE
    if size != expected or len(data) != expected:
        raise WimFormatError(
            f"integrity table size field is {size} and the table is {len(data)} bytes, "
            f"but {count} entries need {expected}"
        )
    if chunk_size == 0:
        raise WimFormatError("integrity table chunk size is 0")
    hashes = tuple(
        bytes(
            data[
                INTEGRITY_HEADER_SIZE + i * SHA1_SIZE : INTEGRITY_HEADER_SIZE + (i + 1) * SHA1_SIZE
            ]
        )
        for i in range(count)
    )
    return IntegrityTable(size=size, chunk_size=chunk_size, hashes=hashes)


def build_integrity_table(t: IntegrityTable) -> bytes:
    head = _IntegrityHeader.build(
        {"size": t.size, "num_entries": len(t.hashes), "chunk_size": t.chunk_size}
    )
    return bytes(head) + b"".join(t.hashes)


# --- pipable blob header -------------------------------------------------------------------------


def parse_pipable_blob_header(data: bytes) -> PipableBlobHeader:
    c = _parse(_PipableBlobHeader, data, "pipable blob header", 40)
    if int(c.magic) != PWM_BLOB_MAGIC:
        raise WimFormatError(f"pipable blob header has wrong magic {int(c.magic):#x}")
    return PipableBlobHeader(
        magic=int(c.magic),
        uncompressed_size=int(c.uncompressed_size),
        sha1=bytes(c.sha1),
        flags=int(c.flags),
    )


def build_pipable_blob_header(h: PipableBlobHeader) -> bytes:
    return bytes(
        _PipableBlobHeader.build(
            {
                "magic": h.magic,
                "uncompressed_size": h.uncompressed_size,
                "sha1": h.sha1,
                "flags": h.flags,
            }
        )
    )


# --- metadata resource ---------------------------------------------------------------------------


def parse_security_header(data: bytes, *, resource_size: int) -> SecurityDataHeader:
    """Parse the security data head: its total length and the size of each descriptor."""
    c = _parse(_SecurityHeader, data, "security data header", 8)
    total, count = int(c.total_length), int(c.num_entries)
    if total > resource_size or 8 + count * 8 > max(total, 8):
        raise WimFormatError(
            f"security data claims {count} descriptors in {total} bytes "
            f"(metadata resource is {resource_size} bytes)"
        )
    sizes_raw = data[8 : 8 + count * 8]
    if len(sizes_raw) != count * 8:
        raise WimFormatError("security data descriptor sizes are truncated")
    sizes = tuple(int.from_bytes(sizes_raw[i * 8 : i * 8 + 8], "little") for i in range(count))
    return SecurityDataHeader(total_length=total, sizes=sizes)


def parse_dentry_fixed(data: bytes) -> DentryFixed:
    c = _parse(_Dentry, data, "directory entry", DENTRY_FIXED_SIZE)
    return DentryFixed(
        length=int(c.length),
        attributes=int(c.attributes),
        security_id=int(c.security_id),
        subdir_offset=int(c.subdir_offset),
        creation_time=int(c.creation_time),
        last_access_time=int(c.last_access_time),
        last_write_time=int(c.last_write_time),
        default_hash=bytes(c.default_hash),
        reparse_or_link=int(c.reparse_or_link),
        num_extra_streams=int(c.num_extra_streams),
        short_name_nbytes=int(c.short_name_nbytes),
        name_nbytes=int(c.name_nbytes),
    )


def parse_stream_entry_fixed(data: bytes) -> StreamEntryFixed:
    c = _parse(_StreamEntry, data, "stream entry", STREAM_ENTRY_FIXED_SIZE)
    return StreamEntryFixed(
        length=int(c.length), sha1=bytes(c.sha1), name_nbytes=int(c.name_nbytes)
    )
