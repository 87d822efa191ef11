"""File-system primitives of the store: the lock, atomic writes, staging areas, durable copies.

Crash safety rests on three POSIX facts: ``rename`` within one file system is atomic, ``fsync`` of
a file makes its bytes durable, and ``fsync`` of a directory makes a rename in it durable.
Cooperation between processes rests on ``flock``, which the kernel releases when a process dies,
so a killed admin command never leaves the store locked.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from wds.errors import StoreError

#: bytes per read/write when copying a WIM into the store
COPY_CHUNK = 1024 * 1024

_LOCK_POLL = 0.05


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: Path, top: Path) -> None:
    """Create ``path`` and its parents up to ``top``, making each new entry durable."""
    missing = []
    p = path
    while p != top and not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        d.mkdir(exist_ok=True)
        fsync_dir(d.parent)


def atomic_write(path: Path, data: bytes, tmp_dir: Path) -> None:
    """Replace ``path`` with ``data``: write a temp file in ``tmp_dir`` (same file system),
    fsync it, rename it over ``path``, fsync the directory. A crash leaves old or new, never
    half."""
    tmp = tmp_dir / f"{path.name}.{secrets.token_hex(8)}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def copy_durably(
    source: Path, dest: Path, *, after_first_chunk: Callable[[], None] | None = None
) -> None:
    """Copy ``source`` to the new file ``dest`` in bounded chunks and fsync it."""
    with open(source, "rb") as src, open(dest, "xb") as out:
        first = True
        while chunk := src.read(COPY_CHUNK):
            out.write(chunk)
            if first and after_first_chunk is not None:
                out.flush()
                after_first_chunk()
            first = False
        out.flush()
        os.fsync(out.fileno())


class StoreLock:
    """An exclusive ``flock`` on ``ROOT/.lock``; the holder's pid is written into it so a waiting
    admin is told who holds it."""

    def __init__(self, path: Path, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self._fd: int | None = None

    def __enter__(self) -> StoreLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
            if time.monotonic() >= deadline:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                raise StoreError(
                    f"the image store {self.path.parent} is locked by another wds process "
                    f"(pid {holder}) for over {self.timeout:g} s; wait for it to finish and retry"
                )
            time.sleep(_LOCK_POLL)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing releases the flock
            self._fd = None


@contextlib.contextmanager
def staging_area(tmp_dir: Path, lock: StoreLock) -> Iterator[Path]:
    """A private directory ``TMP/ID.d`` marked live by an flock on ``TMP/ID.lock``.

    It is created while the store lock is held, the only time :func:`remove_debris` runs, so a
    cleanup never sees a directory whose owner has not locked it yet. It is removed on exit; if
    the process dies, the kernel drops the flock and the next cleanup removes it.
    """
    token = secrets.token_hex(8)
    lock_path = tmp_dir / f"{token}.lock"
    area = tmp_dir / f"{token}.d"
    with lock:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        area.mkdir()
    try:
        yield area
    finally:
        shutil.rmtree(area, ignore_errors=True)
        lock_path.unlink(missing_ok=True)
        os.close(fd)


def remove_debris(tmp_dir: Path) -> list[str]:
    """Delete what crashed operations left in ``tmp_dir``; call with the store lock held.

    Returns the names removed. A staging area whose lock file is still flocked belongs to a live
    operation and is kept.
    """
    removed = []
    for entry in sorted(tmp_dir.iterdir()):
        if entry.suffix == ".d" and (tmp_dir / (entry.stem + ".lock")).exists():
            continue  # judged with its lock file below
        if entry.suffix == ".lock":
            fd = os.open(entry, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue  # a live operation owns it
            try:
                shutil.rmtree(tmp_dir / (entry.stem + ".d"), ignore_errors=True)
                entry.unlink(missing_ok=True)
            finally:
                os.close(fd)
            removed.append(entry.stem)
        elif entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
        else:
            entry.unlink(missing_ok=True)
            removed.append(entry.name)
    return removed
