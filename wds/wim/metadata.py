"""List the files of an image from its metadata resource (uncompressed resources only).

A metadata resource is the security data (descriptors referenced by security id) followed, at the
next 8-byte boundary, by the root directory entry. A directory's ``subdir_offset`` points at its
children: dentries one after another, each 8-byte aligned and followed by its extra stream
entries, ended by an 8-byte zero length. Compressed metadata is left to ``wimlib-imagex dir``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from wds.errors import WimCorruptError, WimFormatError
from wds.wim import codec
from wds.wim.reader import WimPart, open_part, read_blob_table, read_resource

FILE_ATTRIBUTE_DIRECTORY = 0x10
#: directory depth wds follows; NTFS paths are at most 32767 characters, so ~16k levels
MAX_DEPTH = 16384
#: uncompressed metadata resources larger than this are left to wimlib
MAX_METADATA_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class DirEntry:
    """One file or directory of an image."""

    path: str
    is_directory: bool
    attributes: int


def _align8(n: int) -> int:
    return (n + 7) & ~7


def _name(data: bytes, offset: int, nbytes: int, where: int) -> str:
    raw = data[offset : offset + nbytes]
    if len(raw) != nbytes or nbytes % 2:
        raise WimFormatError(f"metadata: file name of the entry at {where} is cut off")
    return raw.decode("utf-16-le", errors="replace")


def _read_children(data: bytes, offset: int) -> list[tuple[codec.DentryFixed, str, int]]:
    """The dentries of one directory list starting at ``offset``: (dentry, name, own offset)."""
    out: list[tuple[codec.DentryFixed, str, int]] = []
    while True:
        if offset + 8 > len(data):
            raise WimFormatError(f"metadata: directory list runs past the end at {offset}")
        length = int.from_bytes(data[offset : offset + 8], "little")
        if length <= 8:  # end of this directory's list
            return out
        if length < codec.DENTRY_FIXED_SIZE or offset + length > len(data):
            raise WimFormatError(f"metadata: entry at {offset} has impossible length {length}")
        d = codec.parse_dentry_fixed(data[offset : offset + codec.DENTRY_FIXED_SIZE])
        if codec.DENTRY_FIXED_SIZE + d.name_nbytes + d.short_name_nbytes > length:
            raise WimFormatError(f"metadata: names of the entry at {offset} exceed its length")
        name = _name(data, offset + codec.DENTRY_FIXED_SIZE, d.name_nbytes, offset)
        out.append((d, name, offset))
        offset += _align8(length)
        for _ in range(d.num_extra_streams):
            s = codec.parse_stream_entry_fixed(data[offset : offset + 38])
            if s.length < codec.STREAM_ENTRY_FIXED_SIZE or offset + s.length > len(data):
                raise WimFormatError(f"metadata: stream entry at {offset} has bad length")
            offset += _align8(s.length)


def parse_metadata(data: bytes) -> list[DirEntry]:
    """Every path of an image, depth first, root ``/`` first."""
    security = codec.parse_security_header(data, resource_size=len(data))
    root_offset = _align8(max(security.total_length, 8))
    if root_offset + codec.DENTRY_FIXED_SIZE > len(data):
        raise WimFormatError("metadata: no room for the root directory entry")
    root = codec.parse_dentry_fixed(data[root_offset : root_offset + codec.DENTRY_FIXED_SIZE])
    entries = [DirEntry("/", True, root.attributes)]
    seen: set[int] = set()
    stack: list[tuple[int, str, int]] = []
    if root.subdir_offset:
        stack.append((root.subdir_offset, "", 1))
    while stack:
        offset, prefix, depth = stack.pop()
        if offset in seen or depth > MAX_DEPTH:
            raise WimFormatError(f"metadata: directory list at {offset} loops or nests too deep")
        seen.add(offset)
        children = _read_children(data, offset)
        # every real entry owns >= 102 bytes; more entries than that means lists overlap
        if len(entries) + len(children) > len(data) // codec.DENTRY_FIXED_SIZE:
            raise WimFormatError("metadata: more entries than the resource can hold")
        pending = []
        for d, name, _where in children:
            path = f"{prefix}/{name}"
            is_dir = bool(d.attributes & FILE_ATTRIBUTE_DIRECTORY)
            entries.append(DirEntry(path, is_dir, d.attributes))
            if is_dir and d.subdir_offset:
                pending.append((d.subdir_offset, path, depth + 1))
        stack.extend(reversed(pending))
    return entries


def _metadata_entry(fd: int, part: WimPart, index: int) -> codec.BlobEntry:
    metadata = [b for b in read_blob_table(fd, part) if b.resource.is_metadata]
    if not 1 <= index <= len(metadata):
        raise WimFormatError(
            f"{part.path}: there is no image {index}; the WIM has {len(metadata)} image(s)"
        )
    return metadata[index - 1]


def list_image_uncompressed(path: Path, index: int) -> list[DirEntry] | None:
    """The entries of image ``index`` if its metadata resource is stored uncompressed, else None.

    The resource's SHA-1 is checked against the blob table before it is trusted.
    """
    fd, part = open_part(Path(path))
    try:
        if part.header.part_number != 1:
            raise WimFormatError(f"{path}: image metadata is in part 1 of the split set")
        entry = _metadata_entry(fd, part, index)
        r = entry.resource
        if r.is_compressed or r.is_solid or r.size_in_wim > MAX_METADATA_BYTES:
            return None
        data = read_resource(fd, part, r, f"metadata resource of image {index}", r.size_in_wim)
    finally:
        os.close(fd)
    if hashlib.sha1(data, usedforsecurity=False).digest() != entry.sha1:
        raise WimCorruptError(
            f"{path}: metadata resource of image {index} does not match its SHA-1; "
            "run 'wds image verify'"
        )
    try:
        return parse_metadata(data)
    except WimFormatError as exc:
        raise WimFormatError(f"{path}: image {index}: {exc}") from None
