"""The image store: boot images per client architecture, install images in groups.

Layout under the store root (``[server] store``)::

    catalog.json            what the store holds (written atomically: temp, fsync, rename)
    .lock                   flock'ed by whoever changes the store; holds their pid
    .tmp/                   staging areas of operations in progress (and debris of crashed ones)
    images/GROUP/ID.wim     the WIM files; boot images use the architecture as GROUP

Every change follows one order, so a crash at any point leaves the store as it was or as it
should become, never in between:

1. stage the new WIM in a private area under ``.tmp`` (copied, or written by wimlib-imagex),
   verify it with :func:`wds.wim.verify_wim`, fsync it -- without holding the store lock, so a
   long copy does not stall other admins;
2. take the store lock, re-read the catalog, re-check the request against it;
3. rename the WIM to a *new* file name under ``images/`` and fsync the directory;
4. write the catalog atomically (the commit point); then delete the file it no longer names.

A WIM file in the store is never modified in place. Opening the store (with write access) takes
the lock and removes staging areas of dead processes and WIM files the catalog does not name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import logging
import os
import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path

from wds.errors import StoreError, WimCorruptError, WimFormatError
from wds.store.fs import (
    StoreLock,
    atomic_write,
    copy_durably,
    fsync_dir,
    fsync_file,
    make_dirs,
    remove_debris,
    staging_area,
)
from wds.store.model import (
    MAX_CATALOG_BYTES,
    MAX_DESCRIPTION,
    MAX_FLAGS,
    MAX_IMAGES,
    ImageRef,
    Kind,
    StoredImage,
    StoreInputError,
    WimImage,
    catalog_from_json,
    catalog_to_json,
    check_arch,
    check_group,
    check_name,
    check_text,
)
from wds.store.output import export_to, split_to
from wds.wim import WimInfo, read_wim_info, verify_wim
from wds.wimlib import (
    WIM_COMPRESSION_TYPES,
    export_image,
    set_boot_index,
    set_image_properties,
)

log = logging.getLogger(__name__)

CATALOG = "catalog.json"
LOCK = ".lock"
TMP = ".tmp"
IMAGES = "images"

#: Tests only: ``WDS_STORE_CRASH_AT=POINT`` makes the process SIGKILL itself at that point
#: (copying, staged, renamed), to show that a crash there leaves the store consistent;
#: ``WDS_STORE_HOLD_LOCK=SECONDS`` keeps the lock that long before committing, so two real
#: processes provably contend for it.
CRASH_ENV = "WDS_STORE_CRASH_AT"
HOLD_ENV = "WDS_STORE_HOLD_LOCK"


def checkpoint(point: str) -> None:
    """A named step of a store change; see :data:`CRASH_ENV`."""
    if os.environ.get(CRASH_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()


def _refuse_damaged(source: Path, problem: str | None) -> WimCorruptError:
    return WimCorruptError(
        f"{source}: refused: the WIM failed verification: {problem or 'no reason given'}; "
        "the store is unchanged (use an intact copy of the image)"
    )


class ImageStore:
    """An image store on disk. Implements :class:`wds.store.ImageSource` for server code."""

    def __init__(self, root: Path, *, lock_timeout: float = 120.0) -> None:
        self.root = root
        self.lock_timeout = lock_timeout
        self._cache: tuple[tuple[int, int, int], tuple[StoredImage, ...]] | None = None

    # ---------------------------------------------------------------------------- opening

    @classmethod
    def open(
        cls, root: Path | str, *, create: bool = False, lock_timeout: float = 120.0
    ) -> ImageStore:
        """Open the store at ``root``; ``create`` makes an empty one when there is none.

        With write access this cleans up after crashed operations (under the lock).
        """
        root = Path(root).absolute()
        if not root.is_dir():
            if root.exists() or not create:
                raise StoreError(
                    f"no image store at {root}; check --store or [server] store in the config "
                    "('wds image add' creates the store)"
                )
            root.mkdir(parents=True)
            fsync_dir(root.parent)
        store = cls(root, lock_timeout=lock_timeout)
        ours = {CATALOG, LOCK, TMP, IMAGES}
        if not (root / CATALOG).exists() and any(p.name not in ours for p in root.iterdir()):
            raise StoreError(
                f"{root} is not an image store (no {CATALOG}) and is not empty; "
                "point --store at the store or at an empty directory"
            )
        if os.access(root, os.W_OK):
            (root / TMP).mkdir(exist_ok=True)
            (root / IMAGES).mkdir(exist_ok=True)
            with store._lock():
                store._recover()
        return store

    def _lock(self) -> StoreLock:
        return StoreLock(self.root / LOCK, self.lock_timeout)

    def _recover(self) -> None:
        for name in remove_debris(self.root / TMP):
            log.info("store %s: removed debris of an interrupted operation: %s", self.root, name)
        named = {e.path for e in self._read_catalog()}
        for group_dir in (self.root / IMAGES).iterdir():
            if not group_dir.is_dir():
                continue
            for wim in group_dir.glob("*.wim"):
                if wim not in named and len(wim.stem) == 32:
                    log.info(
                        "store %s: removed %s, which the catalog does not name", self.root, wim
                    )
                    wim.unlink()
            if not any(group_dir.iterdir()):
                group_dir.rmdir()

    # ---------------------------------------------------------------------------- reading

    def _read_catalog(self, *, fresh: bool = False) -> tuple[StoredImage, ...]:
        """The catalog, re-read when its file changed; ``fresh`` (under the lock, before a
        change) re-reads it regardless, so an inode reused within one mtime tick cannot fool us.
        """
        path = self.root / CATALOG
        try:
            st = path.stat()
        except FileNotFoundError:
            return ()
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if not fresh and self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        if st.st_size > MAX_CATALOG_BYTES:
            raise StoreError(f"{path}: catalog larger than {MAX_CATALOG_BYTES} bytes; damaged?")
        try:
            entries = catalog_from_json(json.loads(path.read_bytes()), self.root)
        except (ValueError, UnicodeDecodeError) as exc:
            raise StoreError(
                f"{path}: the catalog is damaged ({exc}); restore it from a backup"
            ) from None
        self._cache = (key, entries)
        return entries

    def _write_catalog(self, entries: tuple[StoredImage, ...]) -> None:
        data = json.dumps(catalog_to_json(entries, self.root), indent=2, ensure_ascii=False)
        atomic_write(self.root / CATALOG, data.encode() + b"\n", self.root / TMP)

    def list_images(self) -> tuple[StoredImage, ...]:
        """Everything in the store: boot images first (by architecture), then install groups."""
        return tuple(sorted(self._read_catalog(), key=lambda e: (e.kind, e.group, e.name)))

    def get(self, group: str, name: str, *, kind: Kind = "install") -> StoredImage:
        """The stored WIM ``GROUP/NAME`` (``kind='boot'``: group is the architecture)."""
        for entry in self._read_catalog():
            if entry.matches(kind, group, name):
                return entry
        ref = ImageRef(kind, group, name)
        raise StoreError(f"no image {ref} in the store {self.root}; 'wds image list' shows them")

    def find(self, ref: ImageRef | str) -> StoredImage:
        """Resolve a reference; with ``:INDEX`` it also checks the WIM holds that image."""
        if isinstance(ref, str):
            ref = ImageRef.parse(ref)
        entry = self.get(ref.group, ref.name, kind=ref.kind)
        if ref.index is not None:
            entry.image(ref.index)
        return entry

    def boot_images(self, arch: str) -> tuple[StoredImage, ...]:
        """Boot images for ``arch``; the default (the one answered) first."""
        found = [e for e in self._read_catalog() if e.kind == "boot" and e.group == arch]
        found.sort(key=lambda e: not e.default)  # stable: then catalog order, oldest first
        return tuple(found)

    def boot_image(self, arch: str) -> Path | None:
        """The boot WIM clients of ``arch`` get: the one set as default, else the oldest."""
        found = self.boot_images(arch)
        return found[0].path if found else None

    # ---------------------------------------------------------------------------- adding

    def add(
        self,
        source: Path,
        *,
        group: str | None = None,
        arch: str | None = None,
        name: str | None = None,
        index: int | None = None,
        default: bool = False,
    ) -> StoredImage:
        """Add ``source``: an install image to ``group``, or a boot image for ``arch``.

        Without ``index`` the WIM is copied byte for byte (all its images); with ``index`` only
        that image is exported into a new WIM. The copy is verified before it becomes visible.
        """
        if (group is None) == (arch is None):
            raise StoreInputError("add needs either an install group or a boot architecture")
        kind: Kind = "boot" if arch is not None else "install"
        where = check_arch(arch) if arch is not None else check_group(group or "")
        source = Path(source).absolute()
        if not source.is_file():
            what = "is not a file" if source.exists() else "no such file"
            raise StoreInputError(f"{source}: {what}; give the path of a .wim file")
        info = _read_source(source)
        self._check_addable(source, info, index)
        if arch is not None:
            _check_boot_arch(source, info, index, arch)
        name = check_name(name or self._default_name(source, info, index))
        self._refuse_taken(self._read_catalog(), kind, where, name)
        if index is not None:  # export rewrites the data: check it before wimlib copies it
            report = verify_wim(source)
            if not report.intact:
                raise _refuse_damaged(source, report.problem)
        with staging_area(self.root / TMP, self._lock()) as area:
            staged = area / source.name  # verification messages name the admin's file
            if index is None:
                copy_durably(source, staged, after_first_chunk=lambda: checkpoint("copying"))
            else:
                boot = kind == "boot" or index == info.boot_index
                export_image(source, index, staged, boot=boot)
                fsync_file(staged)
            staged_info = self._verify_staged(source, staged)
            checkpoint("staged")
            with self._lock():
                entries = self._read_catalog(fresh=True)
                self._refuse_taken(entries, kind, where, name)
                if len(entries) >= MAX_IMAGES:
                    raise StoreError(f"the store holds {MAX_IMAGES} images, its limit")
                final = self._place(staged, where)
                try:
                    checkpoint("renamed")
                    entry = self._entry(staged_info, final, kind, where, name, str(source))
                    entry = dataclasses.replace(entry, default=default and kind == "boot")
                    self._commit(entries, entry, replaces=None)
                except BaseException:
                    self._drop_unnamed(final)
                    raise
        log.info("store %s: added %s from %s", self.root, entry.ref, source)
        return entry

    @staticmethod
    def _check_addable(source: Path, info: WimInfo, index: int | None) -> None:
        if info.total_parts > 1:
            raise StoreError(
                f"{source} is part {info.part_number} of a {info.total_parts}-part split WIM; "
                "join the parts with 'wimlib-imagex join' and add the joined WIM"
            )
        if info.image_count < 1:
            raise StoreError(f"{source} holds no image; capture one first")
        if index is not None and not 1 <= index <= info.image_count:
            raise StoreInputError(
                f"{source} has no image {index}; it holds images 1..{info.image_count}"
            )

    @staticmethod
    def _default_name(source: Path, info: WimInfo, index: int | None) -> str:
        if index is not None:
            wim_name = info.images[index - 1].name
        elif info.image_count == 1:
            wim_name = info.images[0].name
        else:
            wim_name = ""
        return wim_name or source.stem

    @staticmethod
    def _refuse_taken(entries: tuple[StoredImage, ...], kind: Kind, group: str, name: str) -> None:
        for e in entries:
            if e.matches(kind, group, name):
                raise StoreError(
                    f"{e.ref} is already in the store; pick another --name or remove it first"
                )

    @staticmethod
    def _verify_staged(source: Path, staged: Path) -> WimInfo:
        report = verify_wim(staged)
        if not report.intact:
            raise _refuse_damaged(source, report.problem)
        return read_wim_info(staged)

    def _place(self, staged: Path, group: str) -> Path:
        """Step 3: move a verified staged WIM to a new name under ``images/GROUP``."""
        group_dir = self.root / IMAGES / group
        make_dirs(group_dir, self.root)
        final = group_dir / f"{secrets.token_hex(16)}.wim"
        os.rename(staged, final)
        fsync_dir(group_dir)
        return final

    def _drop_unnamed(self, path: Path) -> None:
        """After a failed commit: delete ``path`` unless the catalog names it after all."""
        with contextlib.suppress(StoreError):
            if any(e.path == path for e in self._read_catalog(fresh=True)):
                return
        path.unlink(missing_ok=True)

    def _entry(
        self, info: WimInfo, path: Path, kind: Kind, group: str, name: str, source: str
    ) -> StoredImage:
        return StoredImage(
            kind=kind,
            group=group,
            name=name,
            path=path,
            guid=info.guid,
            size=path.stat().st_size,
            compression=info.compression,
            boot_index=info.boot_index,
            images=tuple(
                WimImage(i.index, i.name, i.description, i.flags or "") for i in info.images
            ),
            integrity_checked=info.has_integrity_table,
            added=_now(),
            source=source,
            revision=1,
        )

    def _commit(
        self,
        entries: tuple[StoredImage, ...],
        entry: StoredImage | None,
        replaces: StoredImage | None,
    ) -> None:
        """Step 4, with the lock held: write the catalog, then drop files it no longer names."""
        hold = os.environ.get(HOLD_ENV)
        if hold:
            time.sleep(float(hold))
        kept = list(entries)
        at = len(kept)  # a changed entry keeps its place: catalog order is age order
        if replaces is not None:
            at = next(
                n
                for n, e in enumerate(kept)
                if e.matches(replaces.kind, replaces.group, replaces.name)
            )
            del kept[at]
        if entry is not None:
            if entry.default:
                kept = [
                    dataclasses.replace(e, default=False)
                    if e.kind == "boot" and e.group == entry.group
                    else e
                    for e in kept
                ]
            kept.insert(at, entry)
        self._write_catalog(tuple(kept))
        if replaces is not None and (entry is None or entry.path != replaces.path):
            replaces.path.unlink(missing_ok=True)
            fsync_dir(replaces.path.parent)

    # ---------------------------------------------------------------------------- changing

    def remove(self, ref: ImageRef | str) -> StoredImage:
        """Remove a stored WIM and its file."""
        if isinstance(ref, str):
            ref = ImageRef.parse(ref)
        if ref.index is not None:
            raise StoreInputError(
                f"{ref}: remove takes a whole stored WIM (drop ':{ref.index}'); to keep some "
                "of its images, export them to a new WIM and add that"
            )
        with self._lock():
            entries = self._read_catalog(fresh=True)
            entry = self.find(ref)
            self._commit(entries, None, replaces=entry)
        log.info("store %s: removed %s", self.root, entry.ref)
        return entry

    def set_info(
        self,
        ref: ImageRef | str,
        *,
        name: str | None = None,
        description: str | None = None,
        flags: str | None = None,
        boot_index: int | None = None,
        rename: str | None = None,
        default: bool = False,
    ) -> StoredImage:
        """Change an image's XML name, description or flags, the WIM's boot index, the store
        name (``rename``) or make a boot image its architecture's default.

        WIM changes are made by wimlib-imagex on a staged copy, which replaces the stored file.
        """
        if isinstance(ref, str):
            ref = ImageRef.parse(ref)
        entry = self.find(ref)
        props = self._xml_changes(entry, ref, name, description, flags)
        if boot_index is not None and not 0 <= boot_index <= len(entry.images):
            raise StoreInputError(
                f"--boot-index {boot_index}: {entry.ref} holds images 1..{len(entry.images)} "
                "(0 = none bootable)"
            )
        if rename is not None:
            check_name(rename, "new store name")
        if default and entry.kind != "boot":
            raise StoreInputError(f"{entry.ref} is an install image; only boot images have one")
        if not (props or boot_index is not None or rename is not None or default):
            raise StoreInputError("nothing to change; give --name, --description, --flags, ...")
        if not props and boot_index is None:
            return self._commit_change(entry, None, None, rename, default)
        with staging_area(self.root / TMP, self._lock()) as area:
            staged = area / entry.path.name
            copy_durably(entry.path, staged)
            if props:
                set_image_properties(staged, ref.index or 1, props)
            if boot_index is not None:
                set_boot_index(staged, boot_index)
            fsync_file(staged)
            info = self._verify_staged(entry.path, staged)
            return self._commit_change(entry, staged, info, rename, default)

    @staticmethod
    def _xml_changes(
        entry: StoredImage,
        ref: ImageRef,
        name: str | None,
        description: str | None,
        flags: str | None,
    ) -> dict[str, str]:
        props: dict[str, str] = {}
        if name is not None:
            props["NAME"] = check_text(name, "--name", MAX_DESCRIPTION)
        if description is not None:
            props["DESCRIPTION"] = check_text(description, "--description", MAX_DESCRIPTION)
        if flags is not None:
            props["FLAGS"] = check_text(flags, "--flags", MAX_FLAGS)
        if props and ref.index is None and len(entry.images) > 1:
            raise StoreInputError(
                f"{entry.ref} holds {len(entry.images)} images; say which one to change: "
                f"{entry.ref}:INDEX"
            )
        return props

    def _commit_change(
        self,
        entry: StoredImage,
        staged: Path | None,
        info: WimInfo | None,
        rename: str | None,
        default: bool,
    ) -> StoredImage:
        with self._lock():
            entries = self._read_catalog(fresh=True)
            current = next(
                (e for e in entries if e.matches(entry.kind, entry.group, entry.name)), None
            )
            if current is None or current.revision != entry.revision:
                raise StoreError(
                    f"{entry.ref} was changed by someone else meanwhile; nothing was changed, "
                    "look at 'wds image list' and retry"
                )
            if rename is not None and rename.lower() != entry.name.lower():
                self._refuse_taken(entries, entry.kind, entry.group, rename)
            new = dataclasses.replace(
                current,
                name=rename if rename is not None else current.name,
                revision=current.revision + 1,
                default=current.default or default,
            )
            if staged is None or info is None:
                self._commit(entries, new, replaces=current)
            else:
                final = self._place(staged, entry.group)
                try:
                    checkpoint("renamed")
                    fresh = self._entry(info, final, entry.kind, entry.group, new.name, new.source)
                    new = dataclasses.replace(
                        fresh, added=new.added, revision=new.revision, default=new.default
                    )
                    self._commit(entries, new, replaces=current)
                except BaseException:
                    self._drop_unnamed(final)
                    raise
        log.info("store %s: changed %s (now %s)", self.root, entry.ref, new.ref)
        return new

    # ---------------------------------------------------------------------------- copying out

    def export(
        self,
        ref: ImageRef | str,
        dest: Path,
        *,
        compress: str | None = None,
        integrity: bool = True,
    ) -> Path:
        """Export a stored WIM (or one image of it, ``REF:INDEX``) to the new file ``dest``.

        wimlib writes only the data the exported images use, so the space deleted images left
        in the stored WIM is not carried over (as ImageX /export).
        """
        if isinstance(ref, str):
            ref = ImageRef.parse(ref)
        if compress is not None and compress not in WIM_COMPRESSION_TYPES:
            raise StoreInputError(
                f"--compress {compress!r} is not one of {', '.join(WIM_COMPRESSION_TYPES)}"
            )
        with self._pinned(ref) as entry:
            return export_to(entry, ref.index, Path(dest), compress=compress, integrity=integrity)

    def split(self, ref: ImageRef | str, dest: Path, part_size_mib: float) -> tuple[Path, ...]:
        """Split a stored WIM into ``DEST.swm``, ``DEST2.swm``, ... for media."""
        if isinstance(ref, str):
            ref = ImageRef.parse(ref)
        if ref.index is not None:
            raise StoreInputError(
                f"{ref}: split takes a whole stored WIM; to split one image, export it first"
            )
        dest = Path(dest)
        if dest.suffix.lower() != ".swm":
            raise StoreInputError(f"{dest}: split parts must be named NAME.swm")
        with self._pinned(ref) as entry:
            return split_to(entry, dest, part_size_mib)

    @contextlib.contextmanager
    def _pinned(self, ref: ImageRef) -> Iterator[StoredImage]:
        """The entry, its file hard-linked into a staging area: another admin's remove or set
        cannot pull the file away while wimlib reads it."""
        if not os.access(self.root, os.W_OK):  # a read-only store cannot change either
            yield self.find(ref)
            return
        with staging_area(self.root / TMP, self._lock()) as area:
            with self._lock():
                self._read_catalog(fresh=True)
                entry = self.find(ref)
                pin = area / entry.path.name
                try:
                    os.link(entry.path, pin)
                except OSError:  # no hard links here: read the file in place
                    pin = entry.path
            yield dataclasses.replace(entry, path=pin)


#: wds.wim's names (wiminfo's) of the WINDOWS/ARCH values, by WDS architecture name
_WIM_ARCH = {"x86": "x86", "x64": "x86_64", "arm": "ARM", "arm64": "ARM64", "ia64": "ia64"}


def _check_boot_arch(source: Path, info: WimInfo, index: int | None, arch: str) -> None:
    """Refuse a boot image whose XML says it is for another architecture than --arch."""
    boot = index or info.boot_index or (1 if info.image_count == 1 else 0)
    if not boot:
        return
    found = info.images[boot - 1].architecture
    if found is not None and found != _WIM_ARCH[arch]:
        wds_name = next((k for k, v in _WIM_ARCH.items() if v == found), found)
        raise StoreError(
            f"{source}: refused: image {boot} is a {found} image, not {_WIM_ARCH[arch]}; "
            f"add it with --arch {wds_name}"
        )


def _read_source(source: Path) -> WimInfo:
    try:
        return read_wim_info(source)
    except WimFormatError as exc:
        if str(source) in str(exc):
            raise
        raise WimFormatError(f"{source}: {exc}; only WIM files can be added") from None
