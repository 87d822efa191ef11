"""Copying stored WIMs out of the store: ``export`` to a new WIM, ``split`` into .swm parts.

Both write under a temporary name next to the destination, verify the result, and only then give
it its final name -- with ``link``, which never replaces a file that exists. The store hands these
functions a hard link of the stored WIM, so another admin's remove cannot pull it away meanwhile.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from wds.errors import StoreError, WimCorruptError
from wds.store.fs import fsync_dir, fsync_file
from wds.store.model import StoredImage, StoreInputError
from wds.wim import read_wim_info, verify_wim
from wds.wimlib import export_image, split_wim

#: most parts ``split`` may produce (CD-sized parts of a 4 GiB WIM are 6)
MAX_SPLIT_PARTS = 999


def export_to(
    entry: StoredImage,
    index: int | None,
    dest: Path,
    *,
    compress: str | None = None,
    integrity: bool = True,
) -> Path:
    """Export image ``index`` (None = all) of ``entry`` to the new WIM ``dest``."""
    dest = _new_output(dest)
    tmp = dest.parent / f".{dest.name}.{secrets.token_hex(6)}.tmp"
    try:
        boot = entry.boot_index != 0 if index is None else index == entry.boot_index
        export_image(entry.path, index, tmp, compress=compress, boot=boot, integrity=integrity)
        fsync_file(tmp)
        _check(entry, tmp)
        _publish(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def split_to(entry: StoredImage, dest: Path, part_size_mib: float) -> tuple[Path, ...]:
    """Split ``entry`` into ``DEST.swm``, ``DEST2.swm``, ... of at most ``part_size_mib``."""
    if not part_size_mib > 0:
        raise StoreInputError(f"--part-size {part_size_mib:g} must be more than 0 MiB")
    if entry.size / (part_size_mib * 1024 * 1024) > MAX_SPLIT_PARTS:
        raise StoreInputError(
            f"--part-size {part_size_mib:g} MiB would make more than {MAX_SPLIT_PARTS} "
            f"parts of {entry.ref} ({entry.size} bytes); pick a larger size"
        )
    dest = _new_output(dest)
    area = dest.parent / f".{dest.stem}.{secrets.token_hex(6)}.split"
    area.mkdir()
    try:
        split_wim(entry.path, area / dest.name, part_size_mib)
        total = read_wim_info(area / dest.name).total_parts
        names = [dest.name] + [f"{dest.stem}{n}.swm" for n in range(2, total + 1)]
        _check(entry, area / dest.name)  # verifies every part of the set
        targets = [_new_output(dest.parent / n) for n in names]
        done: list[Path] = []
        try:
            for name, target in zip(names, targets, strict=True):
                _publish(area / name, target)
                done.append(target)
        except BaseException:
            for target in done:
                target.unlink(missing_ok=True)
            raise
    finally:
        shutil.rmtree(area, ignore_errors=True)
    return tuple(targets)


def _check(entry: StoredImage, written: Path) -> None:
    report = verify_wim(written)
    if not report.intact:
        raise WimCorruptError(
            f"the copy of {entry.ref} failed verification ({report.problem}); nothing was "
            "written; run 'wds image verify' on the stored file ('wds image list --json')"
        )


def _new_output(dest: Path) -> Path:
    if dest.exists():
        raise StoreError(f"{dest} exists; give a new file name (wds never overwrites it)")
    if not dest.parent.is_dir():
        raise StoreInputError(f"{dest.parent}: no such directory for {dest.name}")
    return dest


def _publish(tmp: Path, dest: Path) -> None:
    """Give a finished file its name without ever replacing an existing file."""
    try:
        os.link(tmp, dest)
    except FileExistsError:
        raise StoreError(f"{dest} appeared meanwhile; nothing was overwritten") from None
    except OSError:  # a file system without hard links (FAT media): check, then rename
        _new_output(dest)
        os.rename(tmp, dest)
    fsync_dir(dest.parent)
