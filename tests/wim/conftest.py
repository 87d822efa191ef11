"""Real WIM fixtures, built with wimlib at test time (session-scoped: built once per run).

Sources are small (under 1 MiB each) so the whole set builds in a few seconds; the corruption WIM
is ~21 MiB of incompressible data so its integrity table has three 10 MiB chunks.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from wds_testsupport import require_tool


@dataclass(frozen=True)
class Fixtures:
    root: Path
    wims: dict[str, Path]
    split_first: Path
    big: Path


def wimlib(*args: str | Path) -> subprocess.CompletedProcess[bytes]:
    """Run wimlib-imagex; a failure fails the test with wimlib's message."""
    proc = subprocess.run(["wimlib-imagex", *map(str, args)], capture_output=True, check=False)
    if proc.returncode != 0:
        pytest.fail(f"wimlib-imagex {args}: {proc.stderr.decode(errors='replace')}")
    return proc


def _make_tree(root: Path, rand: bytes) -> Path:
    src = root / "src"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "empty").mkdir()
    (src / "a.bin").write_bytes(rand[:280_000])
    (src / "text.txt").write_text("hello wim\n" * 2000)
    (src / "sub" / "b.txt").write_text("b\n")
    (src / "sub" / "deeper" / "c.dat").write_bytes(rand[280_000:560_000])
    (src / "sub" / "d.bin").write_bytes(rand[560_000:840_000])
    (src / "sub" / "ünïcödé ☃.txt").write_text("non-ascii file name\n")
    (src / "zero").write_bytes(b"")
    os.link(src / "a.bin", src / "hardlink.bin")
    os.symlink("a.bin", src / "link-to-a")
    return src


def _capture(src: Path, out: Path, *opts: str, name: str = "img") -> Path:
    wimlib("capture", src, out, name, *opts)
    return out


@pytest.fixture(scope="session")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> Fixtures:
    require_tool("wimlib-imagex", "wimtools")
    root = tmp_path_factory.mktemp("wims")
    rand = os.urandom(900_000)
    src = _make_tree(root, rand)
    w: dict[str, Path] = {}
    for comp in ("none", "xpress", "lzx", "lzms"):
        w[f"{comp}-check"] = _capture(
            src, root / f"{comp}-check.wim", f"--compress={comp}", "--check"
        )
        w[comp] = _capture(src, root / f"{comp}.wim", f"--compress={comp}")
    w["solid"] = _capture(src, root / "solid.wim", "--solid", "--check")
    w["pipable"] = _capture(src, root / "pipable.wim", "--pipable", "--check", "--compress=none")
    w["pipable-lzx"] = _capture(src, root / "pipable-lzx.wim", "--pipable")
    # non-ASCII name and description, Windows properties set the way DISM would have them
    uni = root / "unicode.wim"
    wimlib("capture", src, uni, "Windows 11 Pro ñ ☃ 日本語", "Déscription ü €", "--check")
    wimlib(
        "info", uni, "1",
        "--image-property", "DISPLAYNAME=Affichage é",
        "--image-property", "DISPLAYDESCRIPTION=Description affichée",
        "--image-property", "WINDOWS/ARCH=9",
        "--image-property", "WINDOWS/EDITIONID=Professional",
        "--image-property", "WINDOWS/PRODUCTNAME=Microsoft® Windows® Operating System",
        "--image-property", "WINDOWS/LANGUAGES/LANGUAGE=fr-FR",
        "--image-property", "WINDOWS/LANGUAGES/DEFAULT=fr-FR",
        "--image-property", "WINDOWS/VERSION/MAJOR=10",
        "--image-property", "WINDOWS/VERSION/BUILD=22631",
        "--image-property", "WINDOWS/INSTALLATIONTYPE=Client",
    )  # fmt: skip
    w["unicode"] = uni
    # several images, boot index and flags
    multi = _capture(src, root / "multi.wim", "--check", "--compress=lzx", name="first")
    wimlib("append", src / "sub", multi, "second", "--flags=Professional", "--check")
    wimlib("append", src, multi, "third", "third description", "--boot", "--check")
    w["multi"] = multi
    exported = root / "exported.wim"
    wimlib("export", multi, "2", exported, "--compress=xpress", "--check")
    w["exported"] = exported
    optimized = root / "optimized.wim"
    shutil.copy(multi, optimized)
    wimlib("optimize", optimized, "--check", "--recompress")
    w["optimized"] = optimized
    # split set: ~900 KB uncompressed into parts of at most 0.3 MiB
    whole = _capture(src, root / "whole.wim", "--compress=none", "--check")
    split_dir = root / "split"
    split_dir.mkdir()
    wimlib("split", whole, split_dir / "set.swm", "0.3", "--check")
    w["split-part1"] = split_dir / "set.swm"
    w["split-part2"] = split_dir / "set2.swm"
    # three integrity chunks (10 MiB each) of incompressible data, for corruption tests
    big_src = root / "bigsrc"
    big_src.mkdir()
    with open(big_src / "random.bin", "wb") as f:
        for _ in range(21):
            f.write(os.urandom(1 << 20))
    big = _capture(big_src, root / "big.wim", "--compress=none", "--check")
    return Fixtures(root=root, wims=w, split_first=split_dir / "set.swm", big=big)
