"""``WebService``: the content app and the admin app of ``wds serve`` as one service.

Access rule (issue 6, point 5): the admin API needs ``Authorization: Bearer TOKEN`` whenever it
listens on an address that is not loopback, and also on loopback when ``[http] token_file`` is
set. Starting exposed without a token file is a :class:`ConfigError` naming ``http.token_file``,
raised before any port is bound.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from aiohttp import web

from wds.context import ServerContext
from wds.errors import ConfigError
from wds.metrics import exposition, registry_for
from wds.web.admin import admin_app
from wds.web.common import REQUEST_COUNTS
from wds.web.content import content_app

log = logging.getLogger(__name__)

#: longest token file read
MAX_TOKEN_BYTES = 4096


def admin_exposed(address: str) -> bool:
    """True when ``address`` is reachable from other hosts (not in 127.0.0.0/8)."""
    return not ipaddress.IPv4Address(address).is_loopback


def load_token(ctx: ServerContext) -> str:
    """The admin token, or "" when none is required (loopback, no token_file)."""
    http = ctx.config.http
    source = str(ctx.config.source) if ctx.config.source else None
    path = http.token_file
    if path is None:
        if admin_exposed(http.admin_address):
            raise ConfigError(
                f"the admin API on {http.admin_address} is reachable from other hosts and "
                "needs a token: set token_file to a file holding one (e.g. made with "
                "`openssl rand -hex 32 > /etc/wds/admin.token`), or set admin_address = "
                "'127.0.0.1'",
                file=source,
                key="http.token_file",
            )
        return ""
    try:
        data = Path(path).read_bytes()[: MAX_TOKEN_BYTES + 1]
    except OSError as exc:
        raise ConfigError(
            f"cannot read the token file {str(path)!r}: {exc.strerror}",
            file=source,
            key="http.token_file",
        ) from None
    try:
        token = data.decode().strip()
    except UnicodeDecodeError:
        token = ""
    if not token or len(data) > MAX_TOKEN_BYTES or any(c.isspace() for c in token):
        raise ConfigError(
            f"the token file {str(path)!r} must hold one token (printable, no spaces, at most "
            f"{MAX_TOKEN_BYTES} bytes)",
            file=source,
            key="http.token_file",
        )
    if Path(path).stat().st_mode & 0o077:
        log.warning("token file %s can be read by other users; chmod 600 it", path)
    return token


class WebService:
    """The HTTP service of ``wds serve`` (``name = "http"``)."""

    name = "http"

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.content_address: tuple[str, int] | None = None
        self.admin_address: tuple[str, int] | None = None
        # read now: ``wds serve`` builds every service before it binds any port, so an exposed
        # admin API without a token stops the start-up before anything listens
        self._token = load_token(ctx)
        self.token_required = bool(self._token)
        self._runners: list[web.AppRunner] = []

    async def start(self) -> str:
        config = self.ctx.config
        http = config.http
        token = self._token
        counts: dict[str, Counter[int]] = {}
        info: dict[str, Any] = {"token_required": self.token_required}
        registry = registry_for(self.ctx, counts)
        content = content_app(self.ctx)
        counts["content"] = content[REQUEST_COUNTS]
        admin = admin_app(
            self.ctx, token=token, http_info=info, metrics=lambda: exposition(registry)
        )
        counts["admin"] = admin[REQUEST_COUNTS]
        try:
            self.content_address = await self._serve(
                content, http.address or config.server.address, http.port
            )
            self.admin_address = await self._serve(admin, http.admin_address, http.admin_port)
        except BaseException:
            await self.stop()
            raise
        info["content"] = "http://{}:{}/".format(*self.content_address)
        info["admin"] = "http://{}:{}/".format(*self.admin_address)
        host, port = self.content_address
        ahost, aport = self.admin_address
        auth = "token required" if token else "no token (loopback)"
        return f"{host}:{port} (boot and content), admin API on {ahost}:{aport} ({auth})"

    async def _serve(self, app: web.Application, host: str, port: int) -> tuple[str, int]:
        grace = self.ctx.config.server.stop_grace
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=max(grace, 0.1)
        )
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        bound = port
        for address in runner.addresses:
            bound = int(address[1])
            break
        return host, bound

    async def stop(self) -> None:
        runners, self._runners = self._runners, []
        for runner in reversed(runners):
            await runner.cleanup()
