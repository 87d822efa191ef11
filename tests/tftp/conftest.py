"""Fixtures for the TFTP adapter tests: a server on 127.0.0.1 port 0 in a thread of its own."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from tftp_server_thread import ServerThread

from pxe.tftp.server import BUSY_POLL
from wds.config import TftpConfig

T = TypeVar("T")


@pytest.fixture
def served_dir(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    return root


@pytest.fixture
def make_server(served_dir: Path) -> Iterator[Callable[..., ServerThread]]:
    started: list[ServerThread] = []

    def make(*, gso: bool = True, busy_poll: float = BUSY_POLL, **overrides: Any) -> ServerThread:
        base = TftpConfig(
            address=overrides.pop("address", "127.0.0.1"),
            port=0,
            root=served_dir,
            timeout=0.2,
            min_timeout=0.02,
            max_retries=3,
        )
        s = ServerThread(dataclasses.replace(base, **overrides), gso=gso, busy_poll=busy_poll)
        s.start()
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()
