"""The receiver's target file: preallocated, verified chunks only, resumable (PROTOCOL.md 8).

Synchronous file I/O (no sockets, no asyncio): the asyncio adapter calls it for each
``WriteChunk``. The bytes go to ``<target>.wds-partial``, which is renamed to ``<target>`` only
after the whole-file SHA-256 matched: a file under the target's name is always a verified image,
never a partial one. Next to it lives ``<target>.wds-bitmap``: 16 header bytes (``WDSBMAP1`` +
the first 8 bytes of the manifest's ``image_sha256``) then one bit per verified chunk, MSB first.
A chunk's data reaches the disk (``fdatasync``) before its bit does, so a set bit never describes
bytes that were not written. A bitmap whose header does not match the manifest is ignored.

The whole-file SHA-256 is a running hash of the file as read back: whenever the run of verified
chunks from the start of the file grows, the new chunks are read back from the file (after their
``fdatasync``) and fed to it, on the writer thread while the transfer goes on. At the end only
the chunks not yet hashed are read, instead of the whole image at once (eight receivers on one
host all did that at the same moment). ``readback=True`` (``wds receive --readback``) adds a
full second check at the end: the file is fsynced, dropped from the page cache and read back from
the medium.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import threading
from pathlib import Path

from multicast.codec import ChunkManifest
from wds.errors import LocalProtocolError, WdsError

BITMAP_MAGIC = b"WDSBMAP1"
BITMAP_SUFFIX = ".wds-bitmap"
PARTIAL_SUFFIX = ".wds-partial"
_READ = 4 * 1024 * 1024


class OutputError(WdsError):
    """The target file or its bitmap cannot be created, written or read (disk full, perms)."""

    exit_code = 5


class ImageMismatch(WdsError):
    """Every chunk verified, yet the file on disk does not hash to ``image_sha256``."""

    exit_code = 4


class ImageOutput:
    def __init__(
        self, target: Path, manifest: ChunkManifest, *, sync: bool = True, readback: bool = False
    ) -> None:
        self.target = target
        self.readback = readback
        self.bitmap_path = target.with_name(target.name + BITMAP_SUFFIX)
        self.partial_path = target.with_name(target.name + PARTIAL_SUFFIX)
        self.manifest = manifest
        self.sync = sync
        self._header = BITMAP_MAGIC + manifest.image_sha256[:8]
        self._have = bytearray((manifest.chunk_count + 7) // 8)
        self._digest = hashlib.sha256()  # over chunks [0, _hashed), as read back from the file
        self._hashed = 0
        # write_chunk may be called from several threads (the unicast fetches): the bitmap and
        # the running hash are updated under this lock, the chunk's pwrite is not
        self._lock = threading.Lock()
        try:
            if target.is_dir():
                raise IsADirectoryError(errno.EISDIR, "is a directory")
            self._fd = os.open(self.partial_path, os.O_RDWR | os.O_CREAT, 0o644)
            self._resume_or_start()
        except OSError as exc:
            raise OutputError(f"{target}: cannot prepare the target file: {exc}") from None

    def _resume_or_start(self) -> None:
        size = self.manifest.image_size
        try:
            old = self.bitmap_path.read_bytes()
        except FileNotFoundError:
            old = b""
        resumable = (
            len(old) == len(self._header) + len(self._have)
            and old.startswith(self._header)
            and os.fstat(self._fd).st_size == size
        )
        if resumable:
            self._have[:] = old[len(self._header) :]
        else:
            os.ftruncate(self._fd, 0)
            free = os.statvfs(self.partial_path)
            if free.f_bavail * free.f_frsize < size:
                have = free.f_bavail * free.f_frsize
                raise OSError(errno.ENOSPC, f"{size} bytes needed, {have} free on that file system")
            try:
                os.posix_fallocate(self._fd, 0, size)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise  # ENOSPC, EDQUOT, EIO: the image cannot fit, say so now
                # a file system without fallocate: a sparse file, so a full disk can still
                # show up during the transfer (a write error, exit 5)
                os.ftruncate(self._fd, size)
        self._bitmap_fd = os.open(self.bitmap_path, os.O_RDWR | os.O_CREAT, 0o644)
        os.ftruncate(self._bitmap_fd, 0)
        os.pwrite(self._bitmap_fd, self._header + self._have, 0)
        self._flush(self._bitmap_fd)

    @property
    def have(self) -> bytes:
        """The resume bitmap to hand to the receiver machine."""
        return bytes(self._have)

    def write_chunk(self, index: int, data: bytes) -> None:
        m = self.manifest
        if not 0 <= index < m.chunk_count or len(data) != m.chunk_length(index):
            raise LocalProtocolError(f"chunk {index} of {len(data)} bytes does not fit")
        try:
            os.pwrite(self._fd, data, index * m.chunk_size)
            self._flush(self._fd)  # data first, then the bit that says it is there
            with self._lock:
                self._have[index >> 3] |= 0x80 >> (index & 7)
                byte = index >> 3
                os.pwrite(self._bitmap_fd, self._have[byte : byte + 1], len(self._header) + byte)
                self._flush(self._bitmap_fd)
        except OSError as exc:
            raise OutputError(f"{self.target}: cannot write chunk {index}: {exc}") from None
        if index == self._hashed:
            with self._lock:
                self._advance()

    def _advance(self) -> None:
        """Feed the running hash the verified chunks that now follow its end, read back from
        the file (a chunk is hashed once; the bitmap bounds the loop)."""
        m, have = self.manifest, self._have
        try:
            while self._hashed < m.chunk_count and have[self._hashed >> 3] & (
                0x80 >> (self._hashed & 7)
            ):
                i = self._hashed
                block = os.pread(self._fd, m.chunk_length(i), i * m.chunk_size)
                if len(block) != m.chunk_length(i):
                    raise OSError(errno.EIO, f"chunk {i} reads back short")
                self._digest.update(block)
                self._hashed += 1
        except OSError as exc:
            raise OutputError(f"{self.target}: cannot read back: {exc}") from None

    def verify_whole(self) -> None:
        """Check the whole file's SHA-256 (the running hash, finished over what is left; with
        ``readback`` also a full re-read from the medium); on success the partial file becomes
        the target and the bitmap is removed."""
        with self._lock:
            self._advance()
        try:
            if self._hashed != self.manifest.chunk_count:
                good = False  # not every chunk is there: never the image
            else:
                good = self._digest.digest() == self.manifest.image_sha256
                if good and self.readback:
                    good = self._reread() == self.manifest.image_sha256
        except OSError as exc:
            raise OutputError(f"{self.target}: cannot read back: {exc}") from None
        # either way the bitmap is of no further use: a mismatch must not be resumed
        self.bitmap_path.unlink(missing_ok=True)
        if not good:
            raise ImageMismatch(
                f"{self.target}: every chunk verified but the file's SHA-256 differs "
                "(disk or memory fault?); run again to fetch it from scratch"
            )
        try:
            os.fsync(self._fd)
            os.replace(self.partial_path, self.target)
        except OSError as exc:
            raise OutputError(
                f"{self.target}: cannot move the verified image in place: {exc}"
            ) from None

    def _reread(self) -> bytes:
        """The SHA-256 of the file as the medium has it: fsync, drop the cached pages, read."""
        size = self.manifest.image_size
        os.fsync(self._fd)
        with contextlib.suppress(OSError):  # tmpfs and friends keep it anyway
            os.posix_fadvise(self._fd, 0, size, os.POSIX_FADV_DONTNEED)
        digest = hashlib.sha256()
        offset = 0
        while offset < size:
            block = os.pread(self._fd, min(_READ, size - offset), offset)
            if not block:
                break
            digest.update(block)
            offset += len(block)
        return digest.digest()

    def close(self) -> None:
        for fd in (self._fd, self._bitmap_fd):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _flush(self, fd: int) -> None:
        if self.sync:
            os.fdatasync(fd)
