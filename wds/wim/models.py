"""What :mod:`wds.wim` tells callers: frozen dataclasses, no construct, no file handles."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class WimImageInfo:
    """One image of a WIM, as its XML data describes it (``None`` when the XML has no value)."""

    index: int
    name: str
    description: str
    display_name: str | None
    display_description: str | None
    flags: str | None
    dir_count: int
    file_count: int
    total_bytes: int
    hard_link_bytes: int
    creation_time: datetime | None
    last_modification_time: datetime | None
    architecture: str | None
    product_name: str | None
    edition_id: str | None
    installation_type: str | None
    product_type: str | None
    languages: tuple[str, ...]
    default_language: str | None
    system_root: str | None
    major_version: int | None
    minor_version: int | None
    build: int | None
    sp_build: int | None
    sp_level: int | None
    wimboot: bool
    #: True when this image is the WIM's boot image (header boot index)
    boot: bool


@dataclass(frozen=True, slots=True)
class WimInfo:
    """Header facts and images of one WIM file (one part, for a split set)."""

    path: str
    file_size: int
    guid: str
    version: int
    flags: int
    flag_names: tuple[str, ...]
    compression: str
    chunk_size: int
    part_number: int
    total_parts: int
    image_count: int
    boot_index: int
    has_integrity_table: bool
    is_pipable: bool
    #: <TOTALBYTES> of the XML data's root (wiminfo's "Size"), None when absent
    total_bytes: int | None
    images: tuple[WimImageInfo, ...]


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """Result of :func:`wds.wim.verify_wim`.

    ``bad_chunk`` is the 0-based integrity table entry that did not match and ``bad_range`` the
    absolute file byte range ``(start, end)`` (end exclusive) of the chunk it covers.
    """

    intact: bool
    integrity_checked: bool
    checked: tuple[str, ...]
    problem: str | None
    bad_chunk: int | None
    bad_range: tuple[int, int] | None
    #: the part file the problem was found in (a split set has several), None when intact
    bad_part: str | None = None
