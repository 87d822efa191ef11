"""pytest fixtures over :mod:`lab.netns`.

Use from a test module with ``from lab.fixtures import lab, require_root`` (``tests/`` is on
``sys.path`` through the root conftest), or list ``"lab.fixtures"`` in ``pytest_plugins``
of the root conftest.

Locally, a missing capability (not root, no ``ip``/``nft``) skips with the reason; with ``CI=true``
it fails, because CI installs everything and runs as root (LAB.md).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from wds_testsupport import require

from lab import netns


def require_root() -> None:
    """Skip (locally) or fail (CI) unless this process can build a namespace lab."""
    missing = netns.capabilities_missing()
    require(missing is None, missing or "")


def require_tool(name: str, package: str) -> str:
    """The path of ``name``; skip (locally) or fail (CI) naming the apt package when absent."""
    path = shutil.which(name)
    require(path is not None, f"{name} not found (apt-get install {package})")
    assert path is not None
    return path


@pytest.fixture(scope="session")
def stale_labs_removed() -> list[str]:
    """Once per session: remove namespaces left by crashed earlier runs."""
    if netns.capabilities_missing() is not None:
        return []
    return netns.cleanup_stale()


@pytest.fixture
def lab(stale_labs_removed: list[str]) -> Iterator[netns.Lab]:
    """An empty lab (root required); everything in it is removed after the test, pass or fail."""
    require_root()
    instance = netns.Lab()
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture
def lab_pair(lab: netns.Lab) -> tuple[netns.Namespace, netns.Namespace]:
    """Two hosts, ``srv`` and ``cli``, joined by a veth pair (198.18.x.1 and .2)."""
    return lab.pair("srv", "cli")
