"""A TftpServer on 127.0.0.1 port 0, running in a thread of its own (for the adapter tests)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from pxe.tftp.server import BUSY_POLL, TftpServer
from wds.config import TftpConfig

T = TypeVar("T")


class ServerThread:
    """A TftpServer running on its own event loop; state is read on that loop's thread."""

    def __init__(
        self, config: TftpConfig, *, gso: bool = True, busy_poll: float = BUSY_POLL
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = TftpServer(config, gso=gso, busy_poll=busy_poll)
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
