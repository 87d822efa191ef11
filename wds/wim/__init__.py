"""Pure-Python WIM reader: header facts, image descriptions, integrity verification.

Public API (the image store builds on exactly these names)::

    read_wim_info(path) -> WimInfo          header facts and every image (WimFormatError)
    verify_wim(path, progress=None) -> VerifyReport
    find_split_set(path) -> tuple[Path, ...]
    info_to_json(info) -> dict[str, object]  the stable JSON of ``wds image info --json``

The binary layouts live in :mod:`wds.wim.codec`; nothing here exposes construct.
"""

from __future__ import annotations

from datetime import datetime

from wds.wim.models import VerifyReport, WimImageInfo, WimInfo
from wds.wim.reader import read_wim_info
from wds.wim.split import find_split_set
from wds.wim.verify import verify_wim

#: bumped when a key of info_to_json changes meaning or disappears (adding keys does not bump)
JSON_SCHEMA_VERSION = 1


def _time(t: datetime | None) -> str | None:
    if t is None:
        return None
    return t.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _image_json(image: WimImageInfo) -> dict[str, object]:
    return {
        "index": image.index,
        "name": image.name,
        "description": image.description,
        "display_name": image.display_name,
        "display_description": image.display_description,
        "flags": image.flags,
        "dir_count": image.dir_count,
        "file_count": image.file_count,
        "total_bytes": image.total_bytes,
        "hard_link_bytes": image.hard_link_bytes,
        "creation_time": _time(image.creation_time),
        "last_modification_time": _time(image.last_modification_time),
        "architecture": image.architecture,
        "product_name": image.product_name,
        "edition_id": image.edition_id,
        "installation_type": image.installation_type,
        "product_type": image.product_type,
        "languages": list(image.languages),
        "default_language": image.default_language,
        "system_root": image.system_root,
        "major_version": image.major_version,
        "minor_version": image.minor_version,
        "build": image.build,
        "sp_build": image.sp_build,
        "sp_level": image.sp_level,
        "wimboot": image.wimboot,
        "boot": image.boot,
    }


def info_to_json(info: WimInfo) -> dict[str, object]:
    """The stable JSON of ``wds image info --json``, documented key by key in docs/WIM.md."""
    return {
        "schema": JSON_SCHEMA_VERSION,
        "path": info.path,
        "file_size": info.file_size,
        "guid": info.guid,
        "version": info.version,
        "flags": info.flags,
        "flag_names": list(info.flag_names),
        "compression": info.compression,
        "chunk_size": info.chunk_size,
        "part_number": info.part_number,
        "total_parts": info.total_parts,
        "image_count": info.image_count,
        "boot_index": info.boot_index,
        "has_integrity_table": info.has_integrity_table,
        "is_pipable": info.is_pipable,
        "total_bytes": info.total_bytes,
        "images": [_image_json(image) for image in info.images],
    }


__all__ = [
    "JSON_SCHEMA_VERSION",
    "VerifyReport",
    "WimImageInfo",
    "WimInfo",
    "find_split_set",
    "info_to_json",
    "read_wim_info",
    "verify_wim",
]
