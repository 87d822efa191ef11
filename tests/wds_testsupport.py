"""Helpers shared by every test directory (import as ``from wds_testsupport import ...``).

Kept out of conftest.py: several directories have a conftest.py, and importing one of them by the
module name ``conftest`` picks whichever came first on sys.path.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Tests run the real console scripts (`wds ...`) as subprocesses. When the suite runs as
# `.venv/bin/python -m pytest`, the venv's bin directory is not on PATH: put it there.
_BIN = str(Path(sys.executable).parent)
if _BIN not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _BIN + os.pathsep + os.environ.get("PATH", "")


def require(condition: bool, reason: str) -> None:
    """Skip locally, fail in CI, when ``condition`` is false."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI must provide this: {reason}", pytrace=False)
    pytest.skip(reason)


def require_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    require(path is not None, f"{name} not found (apt-get install {package})")
    assert path is not None
    return path
