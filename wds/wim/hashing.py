"""SHA-1 over byte ranges of a file, fast: a reader thread overlaps ``preadv`` with hashing.

Both the read (a system call) and :mod:`hashlib`'s SHA-1 (for buffers over 2 KiB) release the GIL,
so with two buffers in flight the disk or page cache copy and the hash run at the same time; with
large buffers the Python overhead per call is negligible.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from wds.errors import WimFormatError

#: bytes per read; integrity chunks are 10 MiB, so one read per chunk
BUFFER_SIZE = 10 * 1024 * 1024
#: buffers in flight between the reader thread and the hashing thread
BUFFERS = 3

_Item = tuple[int, bytearray, int] | BaseException | None


def _read_exactly(fd: int, view: memoryview, offset: int, path: Path) -> None:
    done = 0
    while done < len(view):
        try:
            got = os.preadv(fd, [view[done:]], offset + done)
        except OSError as exc:
            raise WimFormatError(
                f"{path}: read error at byte {offset + done}: {exc.strerror}"
            ) from None
        if got == 0:
            raise WimFormatError(
                f"{path}: the file ends at byte {offset + done}, inside data it must hold; "
                "the file is truncated"
            )
        done += got


def sha1_ranges(
    fd: int,
    path: Path,
    ranges: Sequence[tuple[int, int]],
    *,
    progress: Callable[[int], None] | None = None,
    buffer_size: int = BUFFER_SIZE,
) -> Iterator[tuple[int, bytes]]:
    """Yield ``(index, sha1 digest)`` for each ``(start, end)`` range, in order.

    ``progress(n)`` is called with the bytes hashed since the last call. Stop iterating at any time
    (a mismatch found); the reader thread is stopped and joined.
    """
    free: queue.Queue[bytearray] = queue.Queue()
    for _ in range(BUFFERS):
        free.put(bytearray(buffer_size))
    filled: queue.Queue[_Item] = queue.Queue()
    stop = threading.Event()

    def reader() -> None:
        try:
            for index, (start, end) in enumerate(ranges):
                pos = start
                while pos < end:
                    n = min(buffer_size, end - pos)
                    buf = free.get()
                    if stop.is_set():
                        return
                    _read_exactly(fd, memoryview(buf)[:n], pos, path)
                    pos += n
                    filled.put((index, buf, n))
            filled.put(None)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            filled.put(exc)

    thread = threading.Thread(target=reader, name="wds-wim-reader", daemon=True)
    thread.start()
    try:
        hashed: list[int] = [0] * len(ranges)
        current = 0
        h = hashlib.sha1(usedforsecurity=False)
        while current < len(ranges):
            start, end = ranges[current]
            if hashed[current] == end - start:  # complete (or empty) range
                yield current, h.digest()
                h = hashlib.sha1(usedforsecurity=False)
                current += 1
                continue
            item = filled.get()
            if item is None:  # pragma: no cover - reader finished early: cannot happen
                raise WimFormatError(f"{path}: internal error: reader stopped early")
            if isinstance(item, BaseException):
                raise item
            index, buf, n = item
            h.update(memoryview(buf)[:n])
            free.put(buf)
            hashed[index] += n
            if progress is not None:
                progress(n)
    finally:
        stop.set()
        while thread.is_alive():
            free.put(bytearray(0))  # unblock a reader waiting for a buffer
            with contextlib.suppress(queue.Empty):
                filled.get(timeout=0.05)
        thread.join()
