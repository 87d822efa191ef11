"""Open one WIM file (or one part of a split set): header, blob table, XML, integrity table.

Every size and offset read from the file is checked against the file's length before anything is
read or allocated, so a malformed or truncated file gives a one-line :class:`WimFormatError`.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from wds.errors import WimFormatError
from wds.wim import codec
from wds.wim.codec import HeaderFlag, ResourceHeader, WimHeader
from wds.wim.models import WimInfo
from wds.wim.xmldata import parse_xml_data

#: XML data larger than this is refused (real WIMs with dozens of images have a few hundred KiB)
MAX_XML_BYTES = 64 * 1024 * 1024
#: images per WIM; wimlib refuses INT_MAX, real WIMs have tens
MAX_IMAGES = 65535
#: versions wimlib and Microsoft write: 1.13 (0x10d00), 1.11 (0x10b00) and solid (0xe00)
KNOWN_VERSIONS = (0x10D00, 0x10B00, 0xE00)

_COMPRESSION_NAMES = (
    (HeaderFlag.COMPRESS_XPRESS, "XPRESS"),
    (HeaderFlag.COMPRESS_LZX, "LZX"),
    (HeaderFlag.COMPRESS_LZMS, "LZMS"),
    (HeaderFlag.COMPRESS_XPRESS_2, "XPRESS"),
)


@dataclass(frozen=True, slots=True)
class WimPart:
    """One opened WIM file: where it is, how big, and its (checked) header."""

    path: Path
    file_size: int
    header: WimHeader
    #: where the header that counts was read: 0, or the file's last 208 bytes for a pipable WIM
    header_offset: int

    @property
    def data_end(self) -> int:
        """Resources must end here: the file end, less the trailing header of a pipable WIM."""
        return self.header_offset if self.header_offset else self.file_size


def compression_name(flags: int) -> str:
    """The compression type as wiminfo names it: None, XPRESS, LZX or LZMS."""
    if not flags & HeaderFlag.COMPRESSION:
        return "None"
    for bit, name in _COMPRESSION_NAMES:
        if flags & bit:
            return name
    return "Unknown"


def flag_names(flags: int) -> tuple[str, ...]:
    """Header flag names as ``wiminfo --header`` prints them (WIM_HDR_FLAG_...)."""
    return tuple(f"WIM_HDR_FLAG_{f.name}" for f in HeaderFlag if f.name and flags & f)


def guid_text(guid: bytes) -> str:
    return "0x" + guid.hex()


def _pread(fd: int, size: int, offset: int, path: Path, what: str) -> bytes:
    try:
        data = os.pread(fd, size, offset)
    except OSError as exc:
        raise WimFormatError(f"{path}: cannot read {what}: {exc.strerror}") from None
    if len(data) != size:
        raise WimFormatError(
            f"{path}: {what} is cut off at byte {offset + len(data)}; the file is truncated"
        )
    return data


def open_fd(path: Path) -> tuple[int, int]:
    """Open ``path`` read-only; returns (fd, size). WimFormatError for a missing or odd file."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise WimFormatError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise WimFormatError(f"{path}: is a directory, not a WIM file") from None
    except OSError as exc:
        raise WimFormatError(f"{path}: cannot open: {exc.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise WimFormatError(f"{path}: is {kind}, not a WIM file")
    return fd, st.st_size


def _check_resource(part_path: Path, r: ResourceHeader, what: str, data_end: int) -> None:
    if r.is_empty:
        return
    if r.offset < codec.HEADER_SIZE or r.end > data_end:
        raise WimFormatError(
            f"{part_path}: the {what} (bytes {r.offset}..{r.end}) lies outside the file "
            f"({data_end} bytes of data); the file is truncated or its header is damaged"
        )


def read_header(fd: int, size: int, path: Path) -> WimPart:
    """Read and check the header; for a pipable WIM, the final header at the end of the file."""
    if size == 0:
        raise WimFormatError(f"{path}: the file is empty (0 bytes), not a WIM")
    if size < codec.HEADER_SIZE:
        raise WimFormatError(
            f"{path}: only {size} bytes, too short for the {codec.HEADER_SIZE}-byte WIM header"
        )
    head = codec.parse_header(_pread(fd, codec.HEADER_SIZE, 0, path, "header"))
    offset = 0
    if head.is_pipable:
        # wimlib writes a pipable WIM front to back; the header with the real offsets is a copy
        # appended at the very end (the one at offset 0 has zeroed resource headers).
        if size < 2 * codec.HEADER_SIZE:
            raise WimFormatError(f"{path}: pipable WIM too short to hold its final header")
        offset = size - codec.HEADER_SIZE
        tail = _pread(fd, codec.HEADER_SIZE, offset, path, "final header of the pipable WIM")
        if tail[:8] != codec.PWM_MAGIC:
            raise WimFormatError(
                f"{path}: pipable WIM has no final header at its end; it was cut short while "
                "being written (re-create it, or read it with wimlib from the pipe)"
            )
        head = codec.parse_header(tail)
    part = WimPart(path=path, file_size=size, header=head, header_offset=offset)
    _check_header(part)
    return part


def _check_header(part: WimPart) -> None:
    h, p = part.header, part.path
    if h.header_size != codec.HEADER_SIZE:
        raise WimFormatError(f"{p}: header size field is {h.header_size}, expected 208")
    if not 1 <= h.part_number <= h.total_parts:
        raise WimFormatError(f"{p}: invalid part number {h.part_number} of {h.total_parts}")
    if h.image_count > MAX_IMAGES:
        raise WimFormatError(f"{p}: header claims {h.image_count} images (limit {MAX_IMAGES})")
    if h.boot_index > h.image_count:
        raise WimFormatError(
            f"{p}: boot index {h.boot_index} is past the image count {h.image_count}"
        )
    if h.flags & HeaderFlag.COMPRESSION:
        cs = h.chunk_size
        if cs < 4096 or cs > 1 << 30 or cs & (cs - 1):
            raise WimFormatError(f"{p}: compressed WIM with invalid chunk size {cs}")
    if h.xml_data.is_empty:
        raise WimFormatError(f"{p}: the header has no XML data resource")
    for r, what in (
        (h.blob_table, "blob table"),
        (h.xml_data, "XML data"),
        (h.boot_metadata, "boot metadata resource"),
        (h.integrity_table, "integrity table"),
    ):
        _check_resource(p, r, what, part.data_end)


def read_resource(fd: int, part: WimPart, r: ResourceHeader, what: str, limit: int) -> bytes:
    """The raw bytes of an uncompressed resource, after checking it is inside the file."""
    _check_resource(part.path, r, what, part.data_end)
    if r.is_compressed:
        raise WimFormatError(f"{part.path}: the {what} is compressed; wds reads it only raw")
    if r.size_in_wim > limit:
        raise WimFormatError(f"{part.path}: the {what} is {r.size_in_wim} bytes (limit {limit})")
    return _pread(fd, r.size_in_wim, r.offset, part.path, what)


def read_blob_table(fd: int, part: WimPart) -> tuple[codec.BlobEntry, ...]:
    r = part.header.blob_table
    data = read_resource(fd, part, r, "blob table", part.file_size)
    try:
        return codec.parse_blob_table(data, max_entries=len(data) // codec.BLOB_ENTRY_SIZE)
    except WimFormatError as exc:
        raise WimFormatError(f"{part.path}: {exc}") from None


def integrity_span(part: WimPart) -> tuple[int, int]:
    """The bytes the integrity table covers: from the header's end to the blob table's end."""
    end = part.header.blob_table.end
    return codec.HEADER_SIZE, max(end, codec.HEADER_SIZE)


def read_integrity_table(fd: int, part: WimPart) -> codec.IntegrityTable | None:
    r = part.header.integrity_table
    if r.is_empty:
        return None
    data = read_resource(fd, part, r, "integrity table", part.file_size)
    try:
        table = codec.parse_integrity_table(
            data, max_entries=max(0, len(data) - codec.INTEGRITY_HEADER_SIZE) // codec.SHA1_SIZE
        )
    except WimFormatError as exc:
        raise WimFormatError(f"{part.path}: {exc}") from None
    start, end = integrity_span(part)
    expected = -(-(end - start) // table.chunk_size)
    if len(table.hashes) != expected:
        raise WimFormatError(
            f"{part.path}: integrity table has {len(table.hashes)} entries but the "
            f"{end - start} bytes it must cover need {expected} chunks of {table.chunk_size}"
        )
    return table


def open_part(path: Path) -> tuple[int, WimPart]:
    """Open and check a WIM file's header; the caller closes the returned fd."""
    fd, size = open_fd(path)
    try:
        return fd, read_header(fd, size, path)
    except BaseException:
        os.close(fd)
        raise


def read_part_header(path: Path) -> WimPart:
    fd, part = open_part(path)
    os.close(fd)
    return part


def read_wim_info(path: Path) -> WimInfo:
    """Header facts and the XML description of every image. Raises WimFormatError."""
    path = Path(path)
    fd, part = open_part(path)
    try:
        xml = read_resource(fd, part, part.header.xml_data, "XML data", MAX_XML_BYTES)
    finally:
        os.close(fd)
    h = part.header
    try:
        total, images = parse_xml_data(xml, image_count=h.image_count, boot_index=h.boot_index)
    except WimFormatError as exc:
        raise WimFormatError(f"{path}: {exc}") from None
    return WimInfo(
        path=str(path),
        file_size=part.file_size,
        guid=guid_text(h.guid),
        version=h.version,
        flags=h.flags,
        flag_names=flag_names(h.flags),
        compression=compression_name(h.flags),
        chunk_size=h.chunk_size,
        part_number=h.part_number,
        total_parts=h.total_parts,
        image_count=h.image_count,
        boot_index=h.boot_index,
        has_integrity_table=not h.integrity_table.is_empty,
        is_pipable=h.is_pipable,
        total_bytes=total,
        images=images,
    )
