"""``verify_wim``: is a WIM (or every part of a split set) intact?

With an integrity table, every chunk it covers (offset 208 to the end of the blob table, the span
wimlib covers) is hashed and compared; a mismatch names the chunk and its byte range. Without one,
the SHA-1 of every uncompressed blob is compared with the blob table, and compressed blobs are
handed to ``wimlib-imagex verify`` when it is installed. In both cases the structure is checked:
header, blob table, resources inside the file, XML data, one metadata resource per image.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from wds.errors import ToolError
from wds.wim import codec
from wds.wim.hashing import sha1_ranges
from wds.wim.models import VerifyReport
from wds.wim.reader import (
    KNOWN_VERSIONS,
    MAX_XML_BYTES,
    WimPart,
    integrity_span,
    open_fd,
    read_blob_table,
    read_integrity_table,
    read_resource,
)
from wds.wim.split import split_set_parts
from wds.wim.xmldata import parse_xml_data
from wds.wimlib import wimlib_verify


@dataclass(frozen=True, slots=True)
class _Problem:
    text: str
    part: Path
    chunk: int | None = None
    span: tuple[int, int] | None = None


class _Progress:
    def __init__(self, total: int, callback: Callable[[int, int], None] | None) -> None:
        self.total, self.done, self.callback = total, 0, callback

    def add(self, n: int) -> None:
        self.done += n
        if self.callback is not None:
            self.callback(self.done, self.total)


def _chunk_ranges(part: WimPart, chunk_size: int) -> list[tuple[int, int]]:
    start, end = integrity_span(part)
    return [(pos, min(pos + chunk_size, end)) for pos in range(start, end, chunk_size)]


def _check_integrity(
    fd: int, part: WimPart, table: codec.IntegrityTable, progress: _Progress
) -> _Problem | None:
    ranges = _chunk_ranges(part, table.chunk_size)
    for index, digest in sha1_ranges(fd, part.path, ranges, progress=progress.add):
        if digest != table.hashes[index]:
            start, end = ranges[index]
            return _Problem(
                f"integrity check failed: chunk {index} of {len(ranges)} "
                f"(bytes {start}..{end - 1}) does not match its SHA-1",
                part.path,
                index,
                (start, end),
            )
    return None


def _uncompressed_blobs(part: WimPart, blobs: tuple[codec.BlobEntry, ...]) -> list[codec.BlobEntry]:
    return [
        b
        for b in blobs
        if b.part_number == part.header.part_number
        and not b.resource.is_compressed
        and not b.resource.is_solid
    ]


def _check_structure(
    fd: int, part: WimPart, blobs: tuple[codec.BlobEntry, ...], checked: list[str]
) -> _Problem | None:
    h, name = part.header, part.path.name
    if h.version not in KNOWN_VERSIONS:
        return _Problem(f"unknown WIM version {h.version:#x}", part.path)
    xml = read_resource(fd, part, h.xml_data, "XML data", MAX_XML_BYTES)
    parse_xml_data(xml, image_count=h.image_count, boot_index=h.boot_index)
    checked.append(f"{name}: XML data parses and describes {h.image_count} image(s)")
    for n, b in enumerate(blobs):
        r = b.resource
        if b.part_number != h.part_number:
            continue
        in_solid = r.is_solid and r.original_size != codec.SOLID_RESOURCE_MAGIC
        if not in_solid and (r.offset < codec.HEADER_SIZE or r.end > part.data_end):
            return _Problem(
                f"blob table entry {n} points at bytes {r.offset}..{r.end}, outside the file "
                f"({part.data_end} bytes)",
                part.path,
            )
    checked.append(
        f"{name}: blob table has {len(blobs)} entr{'y' if len(blobs) == 1 else 'ies'}, "
        "every resource inside the file"
    )
    if h.part_number == 1:
        metadata = [b for b in blobs if b.resource.is_metadata]
        if len(metadata) != h.image_count:
            return _Problem(
                f"{len(metadata)} metadata resource(s) for {h.image_count} image(s)", part.path
            )
        checked.append(f"{name}: one metadata resource per image ({h.image_count})")
        if h.boot_index:
            boot = metadata[h.boot_index - 1].resource
            if (boot.offset, boot.size_in_wim) != (
                h.boot_metadata.offset,
                h.boot_metadata.size_in_wim,
            ):
                return _Problem(
                    f"boot metadata resource does not match image {h.boot_index}'s metadata",
                    part.path,
                )
            checked.append(f"{name}: boot metadata resource is image {h.boot_index}'s")
    return None


def _check_blobs(
    fd: int, part: WimPart, blobs: list[codec.BlobEntry], progress: _Progress
) -> _Problem | None:
    ranges = [(b.resource.offset, b.resource.end) for b in blobs]
    for index, digest in sha1_ranges(fd, part.path, ranges, progress=progress.add):
        if digest != blobs[index].sha1:
            start, end = ranges[index]
            return _Problem(
                f"blob with SHA-1 {blobs[index].sha1.hex()} (bytes {start}..{end - 1}) "
                "does not match its SHA-1",
                part.path,
                span=(start, end),
            )
    return None


def verify_wim(path: Path, *, progress: Callable[[int, int], None] | None = None) -> VerifyReport:
    """Check a WIM, or every part of the split set whose part ``path`` is.

    ``progress(done, total)`` is called with bytes hashed so far. Raises WimFormatError when the
    file is not a readable WIM (no such file, empty, wrong magic, truncated, a missing part).
    """
    parts = split_set_parts(Path(path))
    checked: list[str] = []
    fds: list[int] = []
    try:
        for p in parts:
            fds.append(open_fd(p.path)[0])
        tables = [read_integrity_table(fd, p) for fd, p in zip(fds, parts, strict=True)]
        blob_tables = [read_blob_table(fd, p) for fd, p in zip(fds, parts, strict=True)]
        total = 0
        for p, t, blobs in zip(parts, tables, blob_tables, strict=True):
            if t is not None:
                start, end = integrity_span(p)
                total += end - start
            else:
                total += sum(b.resource.size_in_wim for b in _uncompressed_blobs(p, blobs))
        tracker = _Progress(total, progress)
        if len(parts) > 1:
            checked.append(f"split set: {len(parts)} parts present, same GUID, numbered 1..N")
        problem, compressed = _verify_parts(fds, parts, tables, blob_tables, tracker, checked)
    finally:
        for fd in fds:
            os.close(fd)
    if problem is None and compressed:
        problem = _delegate_compressed(parts, compressed, checked)
    integrity = any(t is not None for t in tables)
    if problem is not None:
        return VerifyReport(
            intact=False,
            integrity_checked=integrity,
            checked=tuple(checked),
            problem=f"{problem.part.name}: {problem.text}",
            bad_chunk=problem.chunk,
            bad_range=problem.span,
            bad_part=str(problem.part),
        )
    return VerifyReport(
        intact=True,
        integrity_checked=integrity,
        checked=tuple(checked),
        problem=None,
        bad_chunk=None,
        bad_range=None,
    )


def _verify_parts(
    fds: list[int],
    parts: tuple[WimPart, ...],
    tables: list[codec.IntegrityTable | None],
    blob_tables: list[tuple[codec.BlobEntry, ...]],
    tracker: _Progress,
    checked: list[str],
) -> tuple[_Problem | None, int]:
    """Check each part; returns the first problem and how many compressed blobs were left."""
    compressed = 0
    for fd, part, table, blobs in zip(fds, parts, tables, blob_tables, strict=True):
        name = part.path.name
        checked.append(
            f"{name}: header (magic, size, part {part.header.part_number} of "
            f"{part.header.total_parts}, resources inside the file)"
        )
        if table is not None:
            problem = _check_integrity(fd, part, table, tracker)
            if problem is not None:
                return problem, 0
            checked.append(
                f"{name}: integrity table, {len(table.hashes)} chunk(s) of "
                f"{table.chunk_size} bytes, SHA-1 of each matches"
            )
        problem = _check_structure(fd, part, blobs, checked)
        if problem is not None:
            return problem, 0
        if table is None:
            plain = _uncompressed_blobs(part, blobs)
            problem = _check_blobs(fd, part, plain, tracker)
            if problem is not None:
                return problem, 0
            checked.append(f"{name}: SHA-1 of each of the {len(plain)} uncompressed blob(s)")
            compressed += sum(
                1
                for b in blobs
                if b.part_number == part.header.part_number
                and (b.resource.is_compressed or b.resource.is_solid)
            )
    return None, compressed


def _delegate_compressed(
    parts: tuple[WimPart, ...], compressed: int, checked: list[str]
) -> _Problem | None:
    first = parts[0].path
    try:
        failure = wimlib_verify(first, split=len(parts) > 1)
    except ToolError as exc:
        checked.append(f"{compressed} compressed blob(s) NOT checked: {exc}")
        return None
    if failure is not None:
        return _Problem(f"wimlib-imagex verify: {failure}", first)
    checked.append(f"{compressed} compressed blob(s): decompressed and SHA-1 checked by wimlib")
    return None
