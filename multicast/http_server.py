"""The HTTP side of a WMTP session (PROTOCOL.md 5 and 7), served with aiohttp.

* ``GET /sessions/<name>/manifest`` -- the signed manifest bytes (``application/octet-stream``).
* ``GET /sessions/<name>/image`` -- the image; ``Range: bytes=a-b`` is answered ``206 Partial
  Content`` with exactly that ``Content-Range`` and ``Content-Length`` (aiohttp's FileResponse,
  sendfile from the page cache). The unicast client (:mod:`multicast.unicast`) verifies every
  chunk it fetches against the manifest, so nothing here needs to be trusted.

The server counts requests in flight and remembers when the last one ended, so ``wds send`` can
keep serving while a receiver tops up over HTTP after the multicast session is over.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web


class SessionHttp:
    """One session's two resources; ``idle_for()`` says how long no request was in flight."""

    def __init__(self, name: str, manifest: bytes, image: Path) -> None:
        self.name = name
        self.manifest = manifest
        self.image = image
        self.in_flight = 0
        self.requests = 0
        self.image_requests = 0  # range (or whole-image) requests served: HTTP receivers
        self._last = time.monotonic()
        self.app = web.Application(middlewares=[self._count])
        self.app.router.add_get(f"/sessions/{name}/manifest", self._manifest)
        self.app.router.add_get(f"/sessions/{name}/image", self._image)

    def idle_for(self) -> float:
        return 0.0 if self.in_flight else time.monotonic() - self._last

    @web.middleware
    async def _count(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        self.in_flight += 1
        self.requests += 1
        try:
            return await handler(request)
        finally:
            self.in_flight -= 1
            self._last = time.monotonic()

    async def _manifest(self, request: web.Request) -> web.Response:
        return web.Response(body=self.manifest, content_type="application/octet-stream")

    async def _image(self, request: web.Request) -> web.FileResponse:
        self.image_requests += 1
        return web.FileResponse(self.image, headers={"Content-Type": "application/octet-stream"})


async def start(session: SessionHttp, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Listen on ``host:port`` (0 = any free port); returns the runner and the bound port."""
    runner = web.AppRunner(session.app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    server = site._server
    bound = port
    if server is not None and server.sockets:  # type: ignore[attr-defined]
        bound = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
    return runner, bound
