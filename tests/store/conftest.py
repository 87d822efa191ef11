"""Fixtures for the image store tests: small real WIMs captured by wimlib at test time."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from wds_testsupport import require_tool

from store.helpers import capture
from wds.cli.main import main


def _require_wimlib() -> None:
    require_tool("wimlib-imagex", "wimtools")


def _tree(root: Path, seed: int, files: int, size: int) -> Path:
    rng = random.Random(seed)
    root.mkdir(parents=True)
    for n in range(files):
        (root / f"file{n}.bin").write_bytes(rng.randbytes(size))
    (root / "readme.txt").write_text(f"tree {seed}\n")
    return root


@dataclass(frozen=True)
class Wims:
    two: Path  # two images with different data, integrity table
    boot: Path  # one image, boot index 1
    big: Path  # one uncompressed image of ~3 MiB (copied in several chunks)


@pytest.fixture(scope="session")
def wims(tmp_path_factory: pytest.TempPathFactory) -> Wims:
    _require_wimlib()
    base = tmp_path_factory.mktemp("wims")
    a = _tree(base / "a", 1, 3, 20_000)
    b = _tree(base / "b", 2, 3, 20_000)
    two = capture([a, b], base / "two.wim", ["Alpha", "Beta"])
    boot = capture([a], base / "boot.wim", ["WinPE"], "--boot")
    big = capture(
        [_tree(base / "c", 3, 3, 1_000_000)], base / "big.wim", ["Big"], "--compress=none"
    )
    return Wims(two=two, boot=boot, big=big)


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


CliRun = Callable[..., tuple[int, str, str]]


@pytest.fixture()
def wds(store: Path, capsys: pytest.CaptureFixture[str]) -> CliRun:
    """Run ``wds image ARGS... --store STORE`` in process: (exit code, stdout, stderr)."""

    def run(*args: str | Path) -> tuple[int, str, str]:
        argv = ["image", *map(str, args), "--store", str(store)]
        code = main(argv)
        out, err = capsys.readouterr()
        return code, out, err

    return run
