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


def test_whole_file_mismatch_is_detected_and_not_resumable(tmp_path: Path) -> None:
    m, _ = make_manifest(DATA)
    target = tmp_path / "install.wim"
    out = ImageOutput(target, m)
    for i in range(4):
        out.write_chunk(i, _chunk(i))
    with out.partial_path.open("r+b") as f:  # the disk flips a bit after the chunk was verified
        f.seek(CHUNK + 7)
        f.write(b"\x00" if DATA[CHUNK + 7] else b"\x01")
    with pytest.raises(ImageMismatch):
        out.verify_whole()
    out.close()
    assert not target.exists()  # never presented as the image
    assert ImageOutput(target, m, sync=False).have == b"\x00"
