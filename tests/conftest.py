"""Shared pytest setup.

Tests that need root, network namespaces or an apt package call :func:`require` (or use the
``root`` marker). Locally a missing capability skips with a clear reason; in CI (``CI=true``) it
fails, because CI installs everything and runs as root: nothing may be silently skipped there.
"""

from __future__ import annotations

import os

import pytest
from wds_testsupport import IN_CI, require, require_tool

__all__ = ["IN_CI", "require", "require_tool"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    is_root = os.geteuid() == 0
    for item in items:
        # In CI nothing is skipped: a test that needs root fails loudly if CI lost its root.
        if item.get_closest_marker("root") and not is_root and not IN_CI:
            item.add_marker(pytest.mark.skip(reason="needs root (network namespaces)"))
