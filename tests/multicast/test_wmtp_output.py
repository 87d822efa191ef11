"""The receiver's target file: preallocation, verified writes, resume bitmap, whole-file check."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from wmtp_harness import CHUNK, make_manifest

from multicast.output import BITMAP_SUFFIX, ImageMismatch, ImageOutput

DATA = random.Random(9).randbytes(3 * CHUNK + 100)


def _chunk(i: int) -> bytes:
    return DATA[i * CHUNK : (i + 1) * CHUNK]


def test_write_resume_and_verify(tmp_path: Path) -> None:
    m, _ = make_manifest(DATA)
    target = tmp_path / "install.wim"
    out = ImageOutput(target, m, sync=False)
    assert out.partial_path.stat().st_size == len(DATA) and out.have == b"\x00"
    out.write_chunk(2, _chunk(2))
    out.write_chunk(0, _chunk(0))
    out.close()
    again = ImageOutput(target, m, sync=False)  # a restart resumes
    assert again.have == bytes([0b10100000])
    again.write_chunk(1, _chunk(1))
    again.write_chunk(3, _chunk(3))
    again.verify_whole()
    again.close()
    assert target.read_bytes() == DATA
    assert not (tmp_path / ("install.wim" + BITMAP_SUFFIX)).exists()
    assert not again.partial_path.exists()


def test_bitmap_of_another_image_is_not_resumed(tmp_path: Path) -> None:
    m, _ = make_manifest(DATA)
    target = tmp_path / "install.wim"
    out = ImageOutput(target, m, sync=False)
    out.write_chunk(0, _chunk(0))
    out.close()
    other, _ = make_manifest(DATA[::-1])
    assert ImageOutput(target, other, sync=False).have == b"\x00"


def _flip(path: Path, offset: int) -> None:
    with path.open("r+b") as f:  # the disk flips a bit after the chunk was verified
        f.seek(offset)
        f.write(b"\x00" if DATA[offset] else b"\x01")


def test_whole_file_mismatch_is_detected_and_not_resumable(tmp_path: Path) -> None:
    """The running hash reads chunks back from the file when the verified prefix reaches them:
    a chunk that changed on disk after it was written and verified (chunk 1 below, written
    while chunk 0 was still missing) fails the whole-file check."""
    m, _ = make_manifest(DATA)
    target = tmp_path / "install.wim"
    out = ImageOutput(target, m)
    for i in (1, 2, 3):
        out.write_chunk(i, _chunk(i))
    _flip(out.partial_path, CHUNK + 7)
    out.write_chunk(0, _chunk(0))
    with pytest.raises(ImageMismatch):
        out.verify_whole()
    out.close()
    assert not target.exists()  # never presented as the image
    assert ImageOutput(target, m, sync=False).have == b"\x00"


def test_readback_rereads_the_whole_file_at_the_end(tmp_path: Path) -> None:
    """A bit flipped after the running hash passed that chunk: only the final re-read from the
    medium (``readback=True``, ``wds receive --readback``) can see it, and it does."""
    m, _ = make_manifest(DATA)
    for readback in (False, True):
        target = tmp_path / f"install-{readback}.wim"
        out = ImageOutput(target, m, sync=False, readback=readback)
        for i in range(4):
            out.write_chunk(i, _chunk(i))
        _flip(out.partial_path, 2 * CHUNK + 3)
        if readback:
            with pytest.raises(ImageMismatch):
                out.verify_whole()
            assert not target.exists()
        else:
            out.verify_whole()  # the default trusts what it read back right after the write
            assert target.exists()
        out.close()


def test_an_incomplete_file_never_passes(tmp_path: Path) -> None:
    m, _ = make_manifest(DATA)
    target = tmp_path / "install.wim"
    out = ImageOutput(target, m, sync=False)
    for i in (0, 1, 3):
        out.write_chunk(i, _chunk(i))
    with pytest.raises(ImageMismatch):
        out.verify_whole()
    out.close()
    assert not target.exists()


def test_the_running_hash_covers_chunks_resumed_from_an_earlier_run(tmp_path: Path) -> None:
    m, _ = make_manifest(DATA)
    target = tmp_path / "install.wim"
    first = ImageOutput(target, m, sync=False)
    first.write_chunk(0, _chunk(0))
    first.write_chunk(2, _chunk(2))
    first.close()
    _flip(first.partial_path, 2 * CHUNK + 9)  # damaged between the runs: caught on resume
    again = ImageOutput(target, m, sync=False)
    again.write_chunk(1, _chunk(1))
    again.write_chunk(3, _chunk(3))
    with pytest.raises(ImageMismatch):
        again.verify_whole()
    again.close()


def test_chunks_written_from_several_threads_hash_in_order(tmp_path: Path) -> None:
    """`wds receive --unicast` writes from several threads at once: the running hash still
    takes every chunk once, in file order."""
    from concurrent.futures import ThreadPoolExecutor

    data = random.Random(12).randbytes(64 * CHUNK + 3)
    m, _ = make_manifest(data)
    for attempt in range(20):
        target = tmp_path / f"install{attempt}.wim"
        out = ImageOutput(target, m)  # fdatasync widens the window
        order = list(range(m.chunk_count))
        random.Random(attempt).shuffle(order)
        with ThreadPoolExecutor(8) as pool:
            chunks = [data[i * CHUNK : (i + 1) * CHUNK] for i in order]
            list(pool.map(out.write_chunk, order, chunks))
        out.verify_whole()
        out.close()
        assert target.read_bytes() == data
