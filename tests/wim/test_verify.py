"""``wds image verify``: exit 0 intact, 1 corrupt naming the chunk, 2 not a readable WIM."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from wds.errors import WimFormatError
from wds.wim import find_split_set, verify_wim
from wds.wim.codec import HEADER_SIZE, parse_header
from wim.conftest import Fixtures
from wim.helpers import flip_byte, wds

CHUNK = 10 * 1024 * 1024  # wimlib's integrity chunk size


def _copy(src: Path, tmp_path: Path, name: str | None = None) -> Path:
    dst = tmp_path / (name or src.name)
    shutil.copy(src, dst)
    return dst


def _header(path: Path):  # type: ignore[no-untyped-def]
    with open(path, "rb") as f:
        return parse_header(f.read(HEADER_SIZE))


def _assert_corrupt_at(path: Path, offset: int) -> None:
    """verify (CLI and API) reports exactly the chunk holding ``offset`` and its byte range."""
    chunk = (offset - HEADER_SIZE) // CHUNK
    blob_end = _header(path).blob_table.end
    start = HEADER_SIZE + chunk * CHUNK
    end = min(start + CHUNK, blob_end)
    proc = wds("image", "verify", path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"chunk {chunk} of" in proc.stdout
    assert f"bytes {start}..{end - 1}" in proc.stdout
    assert f"chunk {chunk} of" in proc.stderr  # the one-line reason
    report = verify_wim(path)
    assert not report.intact and report.integrity_checked
    assert report.bad_chunk == chunk
    assert report.bad_range == (start, end)
    assert report.problem is not None and f"chunk {chunk}" in report.problem


@pytest.mark.parametrize(
    "name", ["none-check", "xpress-check", "lzx-check", "lzms-check", "solid", "pipable", "multi"]
)
def test_intact_wims_verify(fixtures: Fixtures, name: str) -> None:
    proc = wds("image", "verify", fixtures.wims[name])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "intact" in proc.stdout
    assert "integrity table" in proc.stdout


def test_big_wim_has_three_chunks_and_verifies(fixtures: Fixtures) -> None:
    seen: list[tuple[int, int]] = []
    report = verify_wim(fixtures.big, progress=lambda done, total: seen.append((done, total)))
    assert report.intact and report.integrity_checked and report.problem is None
    assert any("3 chunk(s)" in line for line in report.checked)
    total = _header(fixtures.big).blob_table.end - HEADER_SIZE
    assert seen[-1] == (total, total)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


@pytest.mark.parametrize("where", [HEADER_SIZE, HEADER_SIZE + CHUNK + 12345, 21 * 1024 * 1024])
def test_flipped_byte_in_file_data_names_its_chunk(
    fixtures: Fixtures, tmp_path: Path, where: int
) -> None:
    wim = _copy(fixtures.big, tmp_path)
    flip_byte(wim, where)
    _assert_corrupt_at(wim, where)


def test_flipped_byte_in_blob_table_names_last_chunk(fixtures: Fixtures, tmp_path: Path) -> None:
    wim = _copy(fixtures.big, tmp_path)
    table = _header(wim).blob_table
    where = table.offset + 30  # inside the first entry's part number / refcount / hash
    flip_byte(wim, where)
    _assert_corrupt_at(wim, where)


@pytest.mark.parametrize("entry", [0, 1, 2])
def test_flipped_byte_in_integrity_table_names_that_entry(
    fixtures: Fixtures, tmp_path: Path, entry: int
) -> None:
    wim = _copy(fixtures.big, tmp_path)
    integrity = _header(wim).integrity_table
    flip_byte(wim, integrity.offset + 12 + 20 * entry + 7)
    report = verify_wim(wim)
    assert report.bad_chunk == entry
    proc = wds("image", "verify", wim)
    assert proc.returncode == 1 and f"chunk {entry} of 3" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_no_integrity_table_says_so_and_checks_blobs(fixtures: Fixtures) -> None:
    proc = wds("image", "verify", fixtures.wims["none"])
    assert proc.returncode == 0, proc.stderr
    assert "has no integrity table" in proc.stdout
    assert "SHA-1 of each of the" in proc.stdout
    report = verify_wim(fixtures.wims["none"])
    assert report.intact and not report.integrity_checked


def test_no_integrity_table_compressed_delegates_to_wimlib(fixtures: Fixtures) -> None:
    report = verify_wim(fixtures.wims["lzx"])
    assert report.intact and not report.integrity_checked
    assert any("checked by wimlib" in line for line in report.checked)


def test_no_integrity_table_flipped_blob_byte_is_corrupt(
    fixtures: Fixtures, tmp_path: Path
) -> None:
    wim = _copy(fixtures.wims["none"], tmp_path)
    flip_byte(wim, HEADER_SIZE + 1000)  # wimlib writes the first blob right after the header
    proc = wds("image", "verify", wim)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "does not match its SHA-1" in proc.stdout
    assert "Traceback" not in proc.stderr
    report = verify_wim(wim)
    assert report.bad_chunk is None and report.bad_range is not None
    assert report.bad_range[0] <= HEADER_SIZE + 1000 < report.bad_range[1]


def test_no_integrity_compressed_corruption_caught_by_wimlib(
    fixtures: Fixtures, tmp_path: Path
) -> None:
    wim = _copy(fixtures.wims["lzx"], tmp_path)
    flip_byte(wim, HEADER_SIZE + 2000)
    proc = wds("image", "verify", wim)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


def _assert_unreadable(path: Path, *needles: str, info_too: bool = True) -> str:
    proc = wds("image", "verify", path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    if info_too:  # info reads one part only, so a missing sibling part does not stop it
        info = wds("image", "info", path)
        assert info.returncode == 2 and "Traceback" not in info.stderr
    with pytest.raises(WimFormatError):
        verify_wim(path)
    return lines[0]


def test_truncated_file_exits_2(fixtures: Fixtures, tmp_path: Path) -> None:
    wim = tmp_path / "cut.wim"
    data = fixtures.wims["lzx-check"].read_bytes()
    wim.write_bytes(data[: len(data) // 2])
    _assert_unreadable(wim, "truncated")


def test_truncated_header_exits_2(fixtures: Fixtures, tmp_path: Path) -> None:
    wim = tmp_path / "tiny.wim"
    wim.write_bytes(fixtures.wims["lzx-check"].read_bytes()[:100])
    _assert_unreadable(wim, "too short")


def test_truncated_pipable_exits_2(fixtures: Fixtures, tmp_path: Path) -> None:
    wim = tmp_path / "cut-pipe.wim"
    data = fixtures.wims["pipable"].read_bytes()
    wim.write_bytes(data[: len(data) - 500])
    _assert_unreadable(wim, "pipable")


def test_zero_length_exits_2(tmp_path: Path) -> None:
    wim = tmp_path / "empty.wim"
    wim.write_bytes(b"")
    _assert_unreadable(wim, "empty")


def test_non_wim_exits_2(tmp_path: Path) -> None:
    wim = tmp_path / "notes.wim"
    wim.write_text("just some text, certainly not a WIM\n" * 20)
    _assert_unreadable(wim, "not a WIM")


def test_missing_file_and_directory_exit_2(tmp_path: Path) -> None:
    _assert_unreadable(tmp_path / "nope.wim", "no such file")
    _assert_unreadable(tmp_path, "directory")


def test_split_set_found_and_verified(fixtures: Fixtures) -> None:
    parts = find_split_set(fixtures.split_first)
    assert parts[0] == fixtures.split_first and len(parts) >= 3
    assert parts[1].name == "set2.swm" and parts[2].name == "set3.swm"
    assert find_split_set(parts[1]) == parts  # any part finds the whole set
    report = verify_wim(fixtures.split_first)
    assert report.intact
    assert sum("integrity table" in line for line in report.checked) == len(parts)
    proc = wds("image", "verify", fixtures.split_first)
    assert proc.returncode == 0 and "split set" in proc.stdout


def test_missing_swm_part_exits_2_naming_it(fixtures: Fixtures, tmp_path: Path) -> None:
    for part in find_split_set(fixtures.split_first):
        _copy(part, tmp_path)
    (tmp_path / "set2.swm").unlink()
    line = _assert_unreadable(
        tmp_path / "set.swm", "part 2 of", "set2.swm", "missing", info_too=False
    )
    assert "expected" in line
    with pytest.raises(WimFormatError, match=r"set2\.swm"):
        find_split_set(tmp_path / "set.swm")


def test_swm_part_from_another_set_is_refused(fixtures: Fixtures, tmp_path: Path) -> None:
    for part in find_split_set(fixtures.split_first):
        _copy(part, tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    from wim.conftest import wimlib

    wimlib("split", fixtures.wims["none-check"], other / "set.swm", "0.3")
    shutil.copy(other / "set2.swm", tmp_path / "set2.swm")
    _assert_unreadable(tmp_path / "set.swm", "another split set", "GUID", info_too=False)


def test_corrupt_split_part_names_the_part(fixtures: Fixtures, tmp_path: Path) -> None:
    for part in find_split_set(fixtures.split_first):
        _copy(part, tmp_path)
    flip_byte(tmp_path / "set2.swm", HEADER_SIZE + 50)
    report = verify_wim(tmp_path / "set.swm")
    assert not report.intact and report.bad_chunk == 0
    assert report.bad_part == str(tmp_path / "set2.swm")
    proc = wds("image", "verify", tmp_path / "set.swm")
    assert proc.returncode == 1 and "set2.swm" in proc.stdout


def test_flipped_byte_in_pipable_wim_names_its_chunk(fixtures: Fixtures, tmp_path: Path) -> None:
    wim = _copy(fixtures.wims["pipable"], tmp_path)
    flip_byte(wim, HEADER_SIZE + 4000)
    report = verify_wim(wim)
    assert not report.intact and report.bad_chunk == 0
    end = parse_header(wim.read_bytes()[-HEADER_SIZE:]).blob_table.end
    assert report.bad_range == (HEADER_SIZE, end)
    proc = wds("image", "verify", wim)
    assert proc.returncode == 1 and "chunk 0 of 1" in proc.stdout


def test_split_set_without_integrity_checks_every_part(fixtures: Fixtures, tmp_path: Path) -> None:
    from wim.conftest import wimlib

    wimlib("split", fixtures.wims["xpress"], tmp_path / "x.swm", "0.2")
    parts = find_split_set(tmp_path / "x.swm")
    assert len(parts) >= 2
    report = verify_wim(parts[0])
    assert report.intact and not report.integrity_checked
    assert any("checked by wimlib" in line for line in report.checked)
    assert all(any(p.name in line for line in report.checked) for p in parts)
