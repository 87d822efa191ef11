"""What a TFTP request is answered with: the file-source policy and the shared file cache.

:class:`FileSource` is the policy (STYLE.md): given the name a client asked for and the client's
address, it returns a :class:`ServedFile` or a :class:`FileRefusal`. :class:`RootFileSource` serves
a directory; the PXE layer can put its own source in front (a per-machine boot file) later.

Files are mapped once and shared: :class:`SharedFileCache` keys a mapping by (device, inode, mtime,
size), counts its users and unmaps it when the last transfer ends, so a hundred clients fetching one
boot image share one set of page-cache pages and the server holds no copy of its own. A file changed
in place while mapped would change under the transfers (and truncating it could crash the reader):
replace served files by renaming a new file over the old one (``install``, ``mv``), as package
managers do; a renamed file has a new inode and gets a new mapping.
"""

from __future__ import annotations

import errno
import mmap
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pxe.tftp.codec import ErrorCode

#: longest file name accepted from a client, bytes (PATH_MAX is 4096; boot paths are short)
MAX_NAME_BYTES = 1024
#: longest path component (NAME_MAX)
MAX_COMPONENT_BYTES = 255
#: directory entries scanned per component in a case-insensitive lookup
MAX_SCAN_ENTRIES = 10000
#: netascii is converted in memory (shared per file); larger files must be fetched in octet mode
MAX_NETASCII_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class FileRefusal:
    """Why a request is not served: the TFTP error code and a message for the client and the log."""

    code: ErrorCode
    message: str


class ServedFile:
    """The bytes of one file for one transfer; :meth:`close` once the transfer is over."""

    def __init__(
        self,
        name: str,
        data: memoryview | bytes,
        release: Callable[[], None] | None = None,
        key: object = None,
    ) -> None:
        self.name = name  # what the logs call it (the path inside the root)
        self.data = memoryview(data)
        self.size = len(self.data)
        #: identifies the content for sharing derived data (the netascii form); None: not shared
        self.key = key
        self._release = release

    def close(self) -> None:
        self.data.release()
        if self._release is not None:
            release, self._release = self._release, None
            release()


class FileSource(Protocol):
    """Maps a requested file name and a client to the file served (the TFTP policy)."""

    def open(self, path: str, client: tuple[str, int]) -> ServedFile | FileRefusal: ...


class SharedFileCache:
    """Refcounted shared mappings keyed by (st_dev, st_ino, st_mtime_ns, st_size)."""

    def __init__(self) -> None:
        self._entries: dict[object, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def acquire_mapping(self, fd: int, st: os.stat_result, name: str) -> ServedFile:
        key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        entry = self._entries.get(key)
        if entry is None:
            if st.st_size == 0:
                entry = _Entry(None, memoryview(b""))
            else:
                mapping = mmap.mmap(fd, st.st_size, mmap.MAP_SHARED, mmap.PROT_READ)
                mapping.madvise(mmap.MADV_SEQUENTIAL)
                entry = _Entry(mapping, memoryview(mapping))
            self._entries[key] = entry
        return self._share(key, entry, name)

    def acquire_derived(self, key: object, make: Callable[[], bytes], name: str) -> ServedFile:
        """Share bytes computed once per key (the netascii form of a file)."""
        entry = self._entries.get(key)
        if entry is None:
            entry = _Entry(None, memoryview(make()))
            self._entries[key] = entry
        return self._share(key, entry, name)

    def _share(self, key: object, entry: _Entry, name: str) -> ServedFile:
        entry.users += 1

        def release() -> None:
            entry.users -= 1
            if entry.users == 0:
                del self._entries[key]
                entry.view.release()
                if entry.mapping is not None:
                    entry.mapping.close()

        return ServedFile(name, entry.view, release, key)


class _Entry:
    __slots__ = ("mapping", "users", "view")

    def __init__(self, mapping: mmap.mmap | None, view: memoryview) -> None:
        self.mapping = mapping
        self.view = view
        self.users = 0


def normalize_request_path(requested: str) -> list[str] | FileRefusal:
    """Client name to path components inside the root: ``\\`` is ``/``, leading slashes dropped.

    Refuses what could leave the root or is not a plain name: ``..``, NUL, overlong names.
    """
    raw = requested.encode("latin-1", "replace")
    if len(raw) > MAX_NAME_BYTES:
        return FileRefusal(ErrorCode.ACCESS_VIOLATION, f"file name longer than {MAX_NAME_BYTES}")
    if b"\0" in raw:
        return FileRefusal(ErrorCode.ACCESS_VIOLATION, "file name contains a NUL byte")
    # WDS clients ask for Boot\x64\WdsNbp.com: backslash is a separator for them.
    name = os.fsdecode(raw.replace(b"\\", b"/"))
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        return FileRefusal(ErrorCode.ACCESS_VIOLATION, "'..' is not allowed in a file name")
    if not parts:
        return FileRefusal(ErrorCode.FILE_NOT_FOUND, "no file name given")
    if any(len(os.fsencode(p)) > MAX_COMPONENT_BYTES for p in parts):
        return FileRefusal(ErrorCode.ACCESS_VIOLATION, "a path component is too long")
    return parts


class RootFileSource:
    """Serves regular files below ``root``; symlinks are followed only while they stay inside."""

    def __init__(
        self, root: Path, *, case_insensitive: bool = True, cache: SharedFileCache | None = None
    ) -> None:
        self.root = Path(os.path.realpath(root))
        self.case_insensitive = case_insensitive
        self.cache = cache if cache is not None else SharedFileCache()

    def open(self, path: str, client: tuple[str, int]) -> ServedFile | FileRefusal:
        parts = normalize_request_path(path)
        if isinstance(parts, FileRefusal):
            return parts
        found = self._lookup(parts)
        if found is None:
            return FileRefusal(ErrorCode.FILE_NOT_FOUND, f"file not found: {'/'.join(parts)}")
        resolved = os.path.realpath(found)
        root = str(self.root)
        if os.path.commonpath([root, resolved]) != root:
            return FileRefusal(ErrorCode.ACCESS_VIOLATION, "file is outside the TFTP root")
        name = os.path.relpath(resolved, root)
        try:
            st = os.stat(resolved)
            if not stat.S_ISREG(st.st_mode):
                return FileRefusal(ErrorCode.ACCESS_VIOLATION, f"not a regular file: {name}")
            # O_NOFOLLOW/O_NONBLOCK: a symlink or FIFO swapped in after the check cannot bite.
            fd = os.open(resolved, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                return FileRefusal(ErrorCode.FILE_NOT_FOUND, f"file not found: {name}")
            return FileRefusal(ErrorCode.ACCESS_VIOLATION, f"cannot read {name}: {exc.strerror}")
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return FileRefusal(ErrorCode.ACCESS_VIOLATION, f"not a regular file: {name}")
            return self.cache.acquire_mapping(fd, st, name)
        except OSError as exc:
            return FileRefusal(ErrorCode.ACCESS_VIOLATION, f"cannot read {name}: {exc.strerror}")
        finally:
            os.close(fd)

    def _lookup(self, parts: list[str]) -> str | None:
        path = str(self.root)
        for part in parts:
            candidate = os.path.join(path, part)
            if not os.path.lexists(candidate):
                if not self.case_insensitive:
                    return None
                match = _find_casefold(path, part)
                if match is None:
                    return None
                candidate = os.path.join(path, match)
            path = candidate
        return path


def _find_casefold(directory: str, part: str) -> str | None:
    """The entry of ``directory`` equal to ``part`` ignoring case (the first in sorted order)."""
    want = part.casefold()
    matches: list[str] = []
    try:
        with os.scandir(directory) as entries:
            for count, entry in enumerate(entries):
                if count >= MAX_SCAN_ENTRIES:
                    break
                if entry.name.casefold() == want:
                    matches.append(entry.name)
    except OSError:
        return None
    return min(matches) if matches else None


def to_netascii(data: bytes | memoryview) -> bytes:
    """RFC 764 NVT ASCII as RFC 1350 asks: CR becomes CR NUL, LF becomes CR LF."""
    return bytes(data).replace(b"\r", b"\r\0").replace(b"\n", b"\r\n")


def open_netascii(served: ServedFile, cache: SharedFileCache) -> ServedFile | FileRefusal:
    """The netascii form of ``served`` (closed here), shared when the source gave a key."""
    try:
        if served.size > MAX_NETASCII_BYTES:
            return FileRefusal(
                ErrorCode.ACCESS_VIOLATION,
                f"netascii is limited to {MAX_NETASCII_BYTES} byte files; use octet mode",
            )
        data = served.data
        if served.key is None:
            return ServedFile(served.name, to_netascii(data))
        return cache.acquire_derived(
            ("netascii", served.key), lambda: to_netascii(data), served.name
        )
    finally:
        served.close()
