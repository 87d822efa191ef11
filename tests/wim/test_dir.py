"""``wds image dir``: our own metadata parser (uncompressed) and wimlib (compressed) agree with
``wimlib-imagex dir``."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from wds.wim.metadata import list_image_uncompressed
from wim.conftest import Fixtures
from wim.helpers import wds


def _wimlib_dir(path: Path, index: int) -> list[str]:
    out = subprocess.run(
        ["wimlib-imagex", "dir", str(path), str(index)], capture_output=True, check=True
    ).stdout.decode("utf-8")
    return sorted(line for line in out.splitlines() if line)


@pytest.mark.parametrize(
    ("name", "index", "ours"),
    [
        ("none", 1, True),
        ("none-check", 1, True),
        ("pipable", 1, True),
        ("split-part1", 1, True),
        ("lzx", 1, False),
        ("lzms", 1, False),
        ("solid", 1, False),
        ("multi", 2, False),
        ("unicode", 1, False),
    ],
)
def test_dir_matches_wimlib(fixtures: Fixtures, name: str, index: int, ours: bool) -> None:
    path = fixtures.wims[name]
    entries = list_image_uncompressed(path, index)
    assert (entries is not None) == ours  # uncompressed metadata is parsed by wds itself
    proc = wds("image", "dir", path, str(index))
    assert proc.returncode == 0, proc.stderr
    listed = sorted(line for line in proc.stdout.splitlines() if line)
    assert listed == _wimlib_dir(path, index)
    if entries is not None:
        assert sorted(e.path for e in entries) == listed
        assert entries[0].path == "/" and entries[0].is_directory


def test_dir_lists_non_ascii_names_and_nesting(fixtures: Fixtures) -> None:
    entries = list_image_uncompressed(fixtures.wims["none"], 1)
    assert entries is not None
    by_path = {e.path: e for e in entries}
    assert "/sub/ünïcödé ☃.txt" in by_path
    assert by_path["/sub/deeper"].is_directory
    assert not by_path["/sub/deeper/c.dat"].is_directory
    assert "/empty" in by_path and "/hardlink.bin" in by_path


def test_dir_bad_index_exits_2(fixtures: Fixtures) -> None:
    proc = wds("image", "dir", fixtures.wims["none"], "7")
    assert proc.returncode == 2
    assert "no image 7" in proc.stderr and "Traceback" not in proc.stderr


def test_dir_of_non_wim_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "x.wim"
    bad.write_bytes(b"MSWIM\0\0\0" + b"\0" * 50)
    proc = wds("image", "dir", bad, "1")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def _without_wimlib(tmp_path: Path) -> dict[str, str]:
    import os
    import shutil
    import sys

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wds_script = shutil.which("wds")
    assert wds_script is not None
    os.symlink(wds_script, bin_dir / "wds")
    os.symlink(sys.executable, bin_dir / "python3")
    return {**os.environ, "PATH": str(bin_dir)}


def test_compressed_dir_without_wimlib_is_a_clear_tool_error(
    fixtures: Fixtures, tmp_path: Path
) -> None:
    env = _without_wimlib(tmp_path)
    proc = subprocess.run(
        ["wds", "image", "dir", str(fixtures.wims["lzx"]), "1"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert "wimlib-imagex is not installed" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    # uncompressed metadata needs no wimlib at all
    proc = subprocess.run(
        ["wds", "image", "dir", str(fixtures.wims["none"]), "1"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 0 and "/sub/b.txt" in proc.stdout


def test_verify_without_wimlib_says_what_was_not_checked(
    fixtures: Fixtures, tmp_path: Path
) -> None:
    env = _without_wimlib(tmp_path)
    proc = subprocess.run(
        ["wds", "image", "verify", str(fixtures.wims["lzx"])],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "has no integrity table" in proc.stdout
    assert "compressed blob(s) NOT checked" in proc.stdout


def test_run_wimlib_failure_is_tool_error() -> None:
    from wds.errors import ToolError
    from wds.wimlib import run_wimlib

    with pytest.raises(ToolError, match="failed"):
        run_wimlib(["info", "/nonexistent/x.wim"])


def test_verify_progress_bar_on_a_terminal(
    fixtures: Fixtures, monkeypatch: pytest.MonkeyPatch
) -> None:
    import argparse
    import io
    import sys

    from wds.cli import image_cmd

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    err, out = Tty(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(image_cmd, "PROGRESS_MIN_BYTES", 1 << 20)
    rc = image_cmd.run_verify(argparse.Namespace(path=fixtures.big, quiet=False))
    assert rc == 0
    assert "verifying big.wim" in err.getvalue()
    assert "intact" in out.getvalue()
    # not a terminal: no progress output at all
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert image_cmd.run_verify(argparse.Namespace(path=fixtures.big, quiet=True)) == 0
    assert sys.stderr.getvalue() == ""  # type: ignore[attr-defined]
