"""The image store: boot images per client architecture and install images in groups.

Server code depends on the small :class:`ImageSource` protocol; :class:`ImageStore` implements it
on disk, and tests pass a tiny fake. Admin commands (``wds image add/list/remove/export/split/set``)
live in :mod:`wds.cli.store_cmd`; docs/STORE.md describes the layout and the guarantees.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from wds.store.model import (
    BOOT_ARCHES,
    ImageRef,
    Kind,
    StoredImage,
    StoreInputError,
    WimImage,
)
from wds.store.store import ImageStore


class ImageSource(Protocol):
    """What the servers ask the store: which boot WIM for an architecture, which install WIM for
    a session's ``GROUP/NAME[:INDEX]``."""

    def list_images(self) -> tuple[StoredImage, ...]: ...

    def get(self, group: str, name: str, *, kind: Kind = "install") -> StoredImage: ...

    def find(self, ref: ImageRef | str) -> StoredImage: ...

    def boot_image(self, arch: str) -> Path | None: ...


__all__ = [
    "BOOT_ARCHES",
    "ImageRef",
    "ImageSource",
    "ImageStore",
    "Kind",
    "StoreInputError",
    "StoredImage",
    "WimImage",
]
