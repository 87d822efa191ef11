"""Shared pytest setup.

Tests that need root, network namespaces or an apt package call :func:`require` (or use the
``root`` marker). Locally a missing capability skips with a clear reason; in CI (``CI=true``) it
fails, because CI installs everything and runs as root: nothing may be silently skipped there.
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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    is_root = os.geteuid() == 0
    for item in items:
        # In CI nothing is skipped: a test that needs root fails loudly if CI lost its root.
        if item.get_closest_marker("root") and not is_root and not IN_CI:
            item.add_marker(pytest.mark.skip(reason="needs root (network namespaces)"))
