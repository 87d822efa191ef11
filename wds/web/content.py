"""The content app: what booting and deploying machines fetch, read-only, no token.

* ``GET /sessions/{name}/manifest`` -- the session's signed manifest (the same paths as
  ``wds send``, so ``wds receive --server HOST:PORT --session NAME`` works unchanged);
* ``GET /sessions/{name}/image`` -- the image, ``Range`` answered 206 (aiohttp's FileResponse,
  sendfile); the receiver verifies every chunk against the manifest;
* ``GET /keys/manifest.pub`` -- the public key that signs the manifests;
* ``POST /sessions/{name}/report`` -- the deploy environment's result (``wds receive --json``
  summary plus ``device``, ``status`` and ``reason``), recorded as a device event;
* the boot routes of :mod:`wds.web.boot` when that module is there.
"""

from __future__ import annotations

import importlib
import logging
from collections import Counter
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from wds.context import ServerContext
from wds.devices import DeviceError, parse_mac
from wds.errors import NotFound, RequestError
from wds.web.common import (
    MAX_JSON_BODY,
    REQUEST_COUNTS,
    error_middleware,
    field,
    json_response,
    read_json,
    session_name,
)
from wds.web.openapi import Route, add_routes

log = logging.getLogger(__name__)

CTX: Final = web.AppKey("ctx", ServerContext)
#: the manifest public key, relative to [server] state_dir
PUBLIC_KEY = "manifest.pub"
#: numbers of the ``wds receive --json`` summary copied into the event detail
_SUMMARY_NUMBERS = ("bytes", "seconds", "mbit_per_s", "chunks_repaired", "chunks_rejected")


def content_app(ctx: ServerContext) -> web.Application:
    app = web.Application(middlewares=[error_middleware], client_max_size=MAX_JSON_BODY)
    app[CTX] = ctx
    app[REQUEST_COUNTS] = Counter()
    add_routes(app, CONTENT_ROUTES)
    _add_boot_routes(app, ctx)
    return app


def _add_boot_routes(app: web.Application, ctx: ServerContext) -> None:
    try:
        boot = importlib.import_module("wds.web.boot")
    except ModuleNotFoundError as exc:
        if exc.name != "wds.web.boot":
            raise
        log.debug("wds.web.boot is not there: no HTTP boot routes")
        return
    boot.add_boot_routes(app, ctx)


async def manifest(request: web.Request) -> web.Response:
    content = request.app[CTX].sessions.content(session_name(request))
    return web.Response(body=content.manifest, content_type="application/octet-stream")


async def image(request: web.Request) -> web.FileResponse:
    name = session_name(request)
    content = request.app[CTX].sessions.content(name)
    if not Path(content.image).is_file():
        raise NotFound(f"session {name!r} has no image file now; ask the admin (wds session show)")
    return web.FileResponse(content.image, headers={"Content-Type": "application/octet-stream"})


async def public_key(request: web.Request) -> web.FileResponse:
    path = Path(request.app[CTX].config.server.state_dir) / PUBLIC_KEY
    if not path.is_file():
        raise NotFound("the server has no manifest key yet; it is made when sessions start")
    return web.FileResponse(path, headers={"Content-Type": "text/plain; charset=utf-8"})


async def report(request: web.Request) -> web.Response:
    """A deploy environment says how its deployment ended; recorded as a device event."""
    name = session_name(request)
    data = await read_json(request)
    device = field(data, "device", str)
    if device is None:
        raise RequestError("'device' (the MAC address of the reporting machine) is required")
    try:
        mac = parse_mac(device)
    except DeviceError as exc:
        raise RequestError(str(exc)) from None
    status = field(data, "status", str)
    if status not in ("verified", "failed"):
        raise RequestError('\'status\' must be "verified" or "failed"')
    reason = field(data, "reason", str, default="", limit=1000) or field(
        data, "failure", str, default="", limit=1000
    )
    detail = _detail(name, status, reason, data)
    ctx = request.app[CTX]
    if request.remote:
        ctx.events.remember_address(request.remote, mac)
    ctx.events.record(
        "finished" if status == "verified" else "failed", detail, mac=mac, ip=request.remote
    )
    log.info("device %s reports session %s %s", mac, name, status)
    return json_response({"recorded": True, "device": mac, "event": detail})


def _detail(name: str, status: str, reason: str, data: dict[str, Any]) -> str:
    numbers = {k: field(data, k, float, default=0.0) for k in _SUMMARY_NUMBERS}
    text = f"session {name} {status}"
    if numbers["bytes"]:
        text += (
            f": {numbers['bytes'] / 2**20:.1f} MiB in {numbers['seconds']:.1f} s "
            f"({numbers['mbit_per_s']:.1f} Mbit/s), {int(numbers['chunks_repaired'])} chunks "
            f"repaired, {int(numbers['chunks_rejected'])} rejected"
        )
    if reason:
        text += f" ({reason})"
    return text


_OCTETS = "application/octet-stream"
CONTENT_ROUTES: Final = (
    Route(
        "GET",
        "/sessions/{name}/manifest",
        manifest,
        "the session's signed manifest",
        media=_OCTETS,
        errors=(400, 404),
        tag="content",
    ),
    Route(
        "GET",
        "/sessions/{name}/image",
        image,
        "the session's image; Range requests answered 206",
        media=_OCTETS,
        errors=(400, 404),
        tag="content",
    ),
    Route(
        "POST",
        "/sessions/{name}/report",
        report,
        "the deploy environment's result, recorded as a device event",
        body="Report",
        answer="Recorded",
        tag="content",
    ),
    Route(
        "GET",
        "/keys/manifest.pub",
        public_key,
        "the public key that signs the manifests",
        media="text/plain",
        errors=(404,),
        tag="content",
    ),
)
