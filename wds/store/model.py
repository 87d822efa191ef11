"""What the image store holds: frozen records, image references, and the catalog's JSON form.

A *stored image* is one WIM file in the store, known by a reference:

* ``GROUP/NAME`` -- an install image in an image group (WDS "image groups"),
* ``boot/ARCH/NAME`` -- a boot image for one client architecture (x86, x64, arm64, ...).

A WIM can hold several images; ``REF:INDEX`` names one of them (1-based, as in ImageX).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from wds.errors import StoreError

Kind = Literal["install", "boot"]

#: client architectures a boot image can be kept for, in WDS's own words
BOOT_ARCHES = ("x86", "x64", "arm", "arm64", "ia64")

#: the reserved first component of a boot image reference
BOOT_PREFIX = "boot"

CATALOG_FORMAT = "wds-image-store"
CATALOG_VERSION = 1

# Bounds on what an admin (or a damaged catalog) can make us hold in memory.
MAX_IMAGES = 4096  # stored WIMs per store
MAX_WIM_IMAGES = 256  # images inside one WIM
MAX_NAME = 64
MAX_DESCRIPTION = 1024
MAX_FLAGS = 64
MAX_CATALOG_BYTES = 16 * 1024 * 1024

_GROUP = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_FILE = re.compile(r"images/[A-Za-z0-9_.-]{1,64}/[0-9a-f]{32}\.wim")


class StoreInputError(StoreError):
    """The admin's input cannot be used at all (a bad reference, a missing file)."""

    exit_code = 2


def check_group(group: str) -> str:
    """An install group name: 1-64 letters, digits, '.', '_', '-'; 'boot' is reserved."""
    if not _GROUP.fullmatch(group):
        raise StoreInputError(
            f"group {group!r} is not a valid image group name; use 1-64 letters, digits, "
            "'.', '_' or '-', starting with a letter or digit"
        )
    if group.lower() == BOOT_PREFIX:
        raise StoreInputError(
            "group 'boot' is reserved for boot images; add those with --boot --arch ARCH"
        )
    return group


def check_arch(arch: str) -> str:
    if arch not in BOOT_ARCHES:
        raise StoreInputError(
            f"architecture {arch!r} is not one of {', '.join(BOOT_ARCHES)} (as WDS names them)"
        )
    return arch


def check_name(name: str, what: str = "image name") -> str:
    """A store name: 1-64 printable characters without '/', '\\' or ':'."""
    problem = None
    if not 1 <= len(name) <= MAX_NAME:
        problem = f"must be 1-{MAX_NAME} characters long"
    elif any(c in name for c in "/\\:") or not name.isprintable():
        problem = "must not contain '/', '\\', ':' or control characters"
    elif name != name.strip() or name in (".", ".."):
        problem = "must not start or end with a space or be '.' or '..'"
    if problem:
        raise StoreInputError(f"{what} {name!r} {problem}; pick another with --name")
    return name


def check_text(value: str, what: str, limit: int) -> str:
    if len(value) > limit or not value.isprintable():
        raise StoreInputError(f"{what} must be at most {limit} printable characters")
    return value


@dataclass(frozen=True)
class ImageRef:
    """A parsed reference: ``GROUP/NAME[:INDEX]`` or ``boot/ARCH/NAME[:INDEX]``."""

    kind: Kind
    group: str  # the install group, or the architecture of a boot image
    name: str
    index: int | None = None

    @classmethod
    def parse(cls, text: str) -> ImageRef:
        body, index = text, None
        head, sep, tail = text.rpartition(":")
        if sep and tail.isdigit():
            body, index = head, int(tail)
            if not 1 <= index <= MAX_WIM_IMAGES:
                raise StoreInputError(f"{text!r}: image index must be 1..{MAX_WIM_IMAGES}")
        parts = body.split("/")
        if len(parts) == 3 and parts[0] == BOOT_PREFIX:
            return cls("boot", check_arch(parts[1]), check_name(parts[2]), index)
        if len(parts) == 2 and parts[0] != BOOT_PREFIX:
            return cls("install", check_group(parts[0]), check_name(parts[1]), index)
        raise StoreInputError(
            f"{text!r} is not an image reference; write GROUP/NAME or boot/ARCH/NAME, "
            "optionally followed by :INDEX (see 'wds image list')"
        )

    def __str__(self) -> str:
        return format_ref(self.kind, self.group, self.name, self.index)


def format_ref(kind: Kind, group: str, name: str, index: int | None = None) -> str:
    text = f"{BOOT_PREFIX}/{group}/{name}" if kind == "boot" else f"{group}/{name}"
    return text if index is None else f"{text}:{index}"


@dataclass(frozen=True)
class WimImage:
    """One image inside a stored WIM, as its XML says (cached in the catalog)."""

    index: int
    name: str
    description: str
    flags: str


@dataclass(frozen=True)
class StoredImage:
    """One WIM file in the store. ``path`` is absolute; the file never changes in place (a change
    writes a new file), so a reader that opened ``path`` keeps a consistent view."""

    kind: Kind
    group: str  # install group, or the architecture of a boot image
    name: str
    path: Path
    guid: str
    size: int
    compression: str
    boot_index: int
    images: tuple[WimImage, ...]
    integrity_checked: bool
    added: str  # ISO 8601 UTC
    source: str  # the file it was added from
    revision: int  # grows with every change, for caches
    default: bool = False  # boot images: the one answered for its architecture

    @property
    def ref(self) -> str:
        return format_ref(self.kind, self.group, self.name)

    @property
    def arch(self) -> str | None:
        return self.group if self.kind == "boot" else None

    def image(self, index: int) -> WimImage:
        for image in self.images:
            if image.index == index:
                return image
        raise StoreError(f"{self.ref} has no image {index}; it holds images 1..{len(self.images)}")

    def matches(self, kind: Kind, group: str, name: str) -> bool:
        """Names compare without case, as on a Windows server."""
        return (
            self.kind == kind
            and self.group.lower() == group.lower()
            and self.name.lower() == name.lower()
        )


# --------------------------------------------------------------------------------------------
# Catalog JSON


def catalog_to_json(entries: tuple[StoredImage, ...], root: Path) -> dict[str, Any]:
    return {
        "format": CATALOG_FORMAT,
        "version": CATALOG_VERSION,
        "images": [entry_to_json(e, root) for e in entries],
    }


def entry_to_json(e: StoredImage, root: Path | None = None) -> dict[str, Any]:
    """The JSON form of an entry; with ``root`` the path is stored relative to it."""
    return {
        "kind": e.kind,
        "group": e.group,
        "name": e.name,
        "ref": e.ref,
        "file": str(e.path.relative_to(root)) if root is not None else str(e.path),
        "guid": e.guid,
        "size": e.size,
        "compression": e.compression,
        "boot_index": e.boot_index,
        "images": [
            {"index": i.index, "name": i.name, "description": i.description, "flags": i.flags}
            for i in e.images
        ],
        "integrity_checked": e.integrity_checked,
        "added": e.added,
        "source": e.source,
        "revision": e.revision,
        "default": e.default,
    }


def catalog_from_json(data: Any, root: Path) -> tuple[StoredImage, ...]:
    """Validate and load a catalog document; raises ValueError saying what is wrong."""
    if not isinstance(data, dict) or data.get("format") != CATALOG_FORMAT:
        raise ValueError(f'not a wds catalog (no "format": "{CATALOG_FORMAT}")')
    if data.get("version") != CATALOG_VERSION:
        raise ValueError(f"catalog version {data.get('version')!r} is not {CATALOG_VERSION}")
    items = data.get("images")
    if not isinstance(items, list) or len(items) > MAX_IMAGES:
        raise ValueError(f'"images" must be a list of at most {MAX_IMAGES} entries')
    entries = tuple(_entry_from_json(item, root, i) for i, item in enumerate(items))
    seen: set[tuple[str, str, str]] = set()
    for e in entries:
        key = (e.kind, e.group.lower(), e.name.lower())
        if key in seen:
            raise ValueError(f"{e.ref} appears twice")
        seen.add(key)
    return entries


def _get(item: dict[str, Any], key: str, typ: type, where: str) -> Any:
    value = item.get(key)
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise ValueError(f"{where}: {key!r} must be {typ.__name__}, got {value!r:.40}")
    return value


def _image_from_json(img: Any, where: str) -> WimImage:
    if not isinstance(img, dict):
        raise ValueError(f"{where}: every image must be an object")
    return WimImage(
        index=_get(img, "index", int, where),
        name=_get(img, "name", str, where),
        description=_get(img, "description", str, where),
        flags=_get(img, "flags", str, where),
    )


def _entry_from_json(item: Any, root: Path, i: int) -> StoredImage:
    where = f"images[{i}]"
    if not isinstance(item, dict):
        raise ValueError(f"{where} must be an object")
    kind = _get(item, "kind", str, where)
    if kind not in ("install", "boot"):
        raise ValueError(f"{where}: kind {kind!r} is not 'install' or 'boot'")
    group = _get(item, "group", str, where)
    name = _get(item, "name", str, where)
    file = _get(item, "file", str, where)
    if not _FILE.fullmatch(file):
        raise ValueError(f"{where}: file {file!r} is not a store file name")
    try:
        (check_arch if kind == "boot" else check_group)(group)
        check_name(name)
    except StoreError as exc:
        raise ValueError(f"{where}: {exc}") from None
    raw_images = _get(item, "images", list, where)
    if len(raw_images) > MAX_WIM_IMAGES:
        raise ValueError(f"{where}: more than {MAX_WIM_IMAGES} images")
    images = tuple(_image_from_json(img, f"{where}.images") for img in raw_images)
    return StoredImage(
        kind=kind,
        group=group,
        name=name,
        path=root / file,
        guid=_get(item, "guid", str, where),
        size=_get(item, "size", int, where),
        compression=_get(item, "compression", str, where),
        boot_index=_get(item, "boot_index", int, where),
        images=images,
        integrity_checked=_get(item, "integrity_checked", bool, where),
        added=_get(item, "added", str, where),
        source=_get(item, "source", str, where),
        revision=_get(item, "revision", int, where),
        default=_get(item, "default", bool, where),
    )
