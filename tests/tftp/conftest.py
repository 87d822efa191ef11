"""Fixtures for the TFTP adapter tests: a server on 127.0.0.1 port 0 in a thread of its own."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from pxe.tftp.server import TftpServer
from wds.config import TftpConfig

T = TypeVar("T")


class ServerThread:
    """A TftpServer running on its own event loop; state is read on that loop's thread."""

    def __init__(self, config: TftpConfig, *, gso: bool = True) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = TftpServer(config, gso=gso)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.address: tuple[str, int] = ("", 0)

    def start(self) -> None:
        self.thread.start()
        self.address = asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(5)

    def stop(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(5)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()

    def call(self, fn: Callable[[], T]) -> T:
        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(5)

    def wait_until(self, predicate: Callable[[TftpServer], bool], timeout: float = 10.0) -> None:
        """Poll the server's state (on its thread) until ``predicate`` holds."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.call(lambda: predicate(self.server)):
                return
            time.sleep(0.01)
        raise AssertionError(f"server state not reached within {timeout} s")

    @property
    def port(self) -> int:
        return self.address[1]


@pytest.fixture
def served_dir(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    return root


@pytest.fixture
def make_server(served_dir: Path) -> Iterator[Callable[..., ServerThread]]:
    started: list[ServerThread] = []

    def make(*, gso: bool = True, **overrides: Any) -> ServerThread:
        base = TftpConfig(
            address=overrides.pop("address", "127.0.0.1"),
            port=0,
            root=served_dir,
            timeout=0.2,
            min_timeout=0.02,
            max_retries=3,
        )
        s = ServerThread(dataclasses.replace(base, **overrides), gso=gso)
        s.start()
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()
