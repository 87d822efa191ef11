"""The test command enforces lint, formatting and strict typing on the packages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)


def test_ruff_lint_clean() -> None:
    proc = _run(sys.executable, "-m", "ruff", "check", ".")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_format_clean() -> None:
    proc = _run(sys.executable, "-m", "ruff", "format", "--check", ".")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_strict_clean() -> None:
    proc = _run(sys.executable, "-m", "mypy")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_package_says_what_it_owns() -> None:
    for pkg in ("wds", "pxe", "multicast"):
        init = ROOT / pkg / "__init__.py"
        assert init.read_text().lstrip().startswith('"""'), f"{pkg}/__init__.py needs a docstring"
        assert (ROOT / pkg / "py.typed").exists()
    for init in ROOT.glob("*/*/__init__.py"):
        if init.parts[-3] in ("wds", "pxe", "multicast"):
            assert init.read_text().lstrip().startswith('"""'), f"{init} needs a docstring"
