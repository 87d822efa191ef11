"""Helpers for the image store tests (``tests/`` is on ``sys.path``: ``from store.helpers``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def capture(dirs: list[Path], dest: Path, names: list[str], *extra: str) -> Path:
    """One WIM with an image per directory (wimcapture, then wimlib-imagex append)."""
    for n, (src, name) in enumerate(zip(dirs, names, strict=True)):
        verb = ["capture"] if n == 0 else ["append"]
        subprocess.run(
            ["wimlib-imagex", *verb, str(src), str(dest), name, "--check", *extra],
            check=True,
            capture_output=True,
        )
    return dest


def wds_process(
    store: Path, *args: str | Path, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """Start ``wds image ARGS... --store STORE`` as a real process."""
    argv = [sys.executable, "-m", "wds.cli.main", "image", *map(str, args), "--store", str(store)]
    return subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def wiminfo(path: Path) -> str:
    return subprocess.run(
        ["wimlib-imagex", "info", str(path)], check=True, capture_output=True, text=True
    ).stdout


def snapshot(store: Path) -> dict[str, bytes]:
    """Every file in the store with its content, except the lock file."""
    return {
        str(p.relative_to(store)): p.read_bytes()
        for p in sorted(store.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }
