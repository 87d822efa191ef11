"""The admin app: the JSON API under ``/api/v1/``, its OpenAPI document and ``/metrics``.

It listens on ``[http] admin_address:admin_port`` (loopback by default), apart from the content
endpoints. With a token (:mod:`wds.web.service` decides when one is required) every request
needs ``Authorization: Bearer TOKEN``. docs/API.md describes each endpoint with examples.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from wds import __version__
from wds.config import Config, SessionConfig, _check_sessions, _Loader
from wds.context import ServerContext
from wds.devices import Device, DeviceError, DeviceStore, parse_device_id
from wds.errors import ConfigError, NotFound, RequestError, StoreError
from wds.web.common import (
    MAX_JSON_BODY,
    REQUEST_COUNTS,
    Handler,
    error_middleware,
    error_response,
    field,
    json_response,
    read_json,
    session_name,
)
from wds.web.openapi import Route, add_routes

log = logging.getLogger(__name__)

CTX: Final = web.AppKey("ctx", ServerContext)
TOKEN: Final = web.AppKey("token", str)
#: what the status endpoint says about the HTTP service itself (bound addresses)
HTTP_INFO: Final = web.AppKey("http_info", dict[str, Any])
METRICS: Final = web.AppKey[Callable[[], bytes]]("metrics")
#: most events one request returns
MAX_EVENTS = 1000


def admin_app(
    ctx: ServerContext,
    *,
    token: str,
    http_info: dict[str, Any],
    metrics: Callable[[], bytes],
) -> web.Application:
    """``token`` empty = none required (loopback without a token_file)."""
    middlewares = [error_middleware] + ([_auth] if token else [])
    app = web.Application(middlewares=middlewares, client_max_size=MAX_JSON_BODY)
    app[CTX] = ctx
    app[TOKEN] = token
    app[HTTP_INFO] = http_info
    app[METRICS] = metrics
    app[REQUEST_COUNTS] = Counter()
    add_routes(app, ADMIN_ROUTES)
    return app


@web.middleware
async def _auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    token = request.app[TOKEN]
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), token.encode()
    ):
        log.info("admin API: %s %s refused, no valid token", request.method, request.path)
        response = error_response(
            401,
            "this admin API needs 'Authorization: Bearer TOKEN' with the token of "
            "[http] token_file (wds CLI: --token-file FILE)",
        )
        response.headers["WWW-Authenticate"] = 'Bearer realm="wds"'
        return response
    return await handler(request)


# -- status -----------------------------------------------------------------------------------


async def status(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    sessions = Counter(s.state for s in ctx.sessions.list())
    devices = Counter(d.state for d in ctx.devices.list())
    services: dict[str, Any] = {"http": request.app[HTTP_INFO]}
    if ctx.pxe is not None:
        services["pxe"] = {"replies_sent": ctx.pxe.replies_sent}
    if ctx.tftp is not None:
        t = ctx.tftp
        services["tftp"] = {"completed": t.completed, "failed": t.failed, "bytes": t.bytes_sent}
    try:
        fingerprint = ctx.sessions.fingerprint
    except Exception:  # no key yet: the status still answers
        fingerprint = ""
    return json_response(
        {
            "version": __version__,
            "started": ctx.started,
            "uptime_s": round(time.time() - ctx.started, 3) if ctx.started else 0.0,
            "config": str(ctx.config.source) if ctx.config.source else None,
            "fingerprint": fingerprint,
            "services": services,
            "counts": {
                "sessions": dict(sessions),
                "devices": dict(devices),
                "images": _image_count(ctx),
            },
        }
    )


def _image_count(ctx: ServerContext) -> int | None:
    try:
        return len(_images(ctx))
    except web.HTTPServiceUnavailable:
        return None  # the status still answers; the log says what is wrong


# -- sessions ---------------------------------------------------------------------------------


async def list_sessions(request: web.Request) -> web.Response:
    sessions = request.app[CTX].sessions.list()
    return json_response({"sessions": [s.to_json() for s in sessions]})


async def show_session(request: web.Request) -> web.Response:
    return json_response(request.app[CTX].sessions.get(session_name(request)).to_json())


async def start_session(request: web.Request) -> web.Response:
    status = await request.app[CTX].sessions.start(session_name(request))
    return json_response(status.to_json())


async def stop_session(request: web.Request) -> web.Response:
    status = await request.app[CTX].sessions.stop(session_name(request))
    return json_response(status.to_json())


def session_spec(data: dict[str, Any]) -> SessionConfig:
    """A JSON session spec checked exactly like a ``[[session]]`` entry of the config."""
    where = "request body"
    try:
        spec: SessionConfig = _Loader(where, Path.cwd()).build(SessionConfig, data, "session")
        _check_sessions(Config(session=(spec,)), where)
    except ConfigError as exc:
        raise RequestError(str(exc).replace("session[0]", "session")) from None
    except OverflowError:
        raise RequestError(f"{where}: session: a number is too large for its key") from None
    return spec


async def create_session(request: web.Request) -> web.Response:
    spec = session_spec(await read_json(request))
    status = await request.app[CTX].sessions.create(spec)
    return json_response(status.to_json(), status=201)


# -- devices ----------------------------------------------------------------------------------


def _device_id(request: web.Request) -> str:
    text = request.match_info["id"]
    try:
        parse_device_id(text)
    except DeviceError as exc:
        raise RequestError(str(exc)) from None
    return text


def _existing(store: DeviceStore, text: str) -> Device:
    mac, device_uuid = parse_device_id(text)
    device = store.find(mac=mac, uuid=device_uuid)
    if device is None:
        raise NotFound(f"no device {text!r}; GET /api/v1/devices lists them")
    return device


def _events(store: DeviceStore, text: str, limit: int = 200) -> list[dict[str, Any]]:
    try:
        return [e.to_json() for e in store.events(text, limit=limit)]
    except DeviceError as exc:
        raise NotFound(f"{exc}; GET /api/v1/devices lists them") from None


async def list_devices(request: web.Request) -> web.Response:
    return json_response({"devices": [d.to_json() for d in request.app[CTX].devices.list()]})


async def show_device(request: web.Request) -> web.Response:
    text = _device_id(request)
    store = request.app[CTX].devices
    data = _existing(store, text).to_json()
    data["events"] = _events(store, text)
    return json_response(data)


async def device_events(request: web.Request) -> web.Response:
    text = _device_id(request)
    store = request.app[CTX].devices
    raw = request.query.get("limit", "200")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_EVENTS:
        raise RequestError(f"limit={raw[:20]!r}: must be a number 1..{MAX_EVENTS}")
    return json_response({"events": _events(store, text, int(raw))})


async def approve_device(request: web.Request) -> web.Response:
    return _set_state(request, "approved")


async def reject_device(request: web.Request) -> web.Response:
    return _set_state(request, "rejected")


def _set_state(request: web.Request, state: Any) -> web.Response:
    text = _device_id(request)
    store = request.app[CTX].devices
    _existing(store, text)
    return json_response(store.set_state(text, state).to_json())


async def prestage_device(request: web.Request) -> web.Response:
    data = await read_json(request)
    text = field(data, "device", str) or field(data, "mac", str) or field(data, "uuid", str)
    if not text:
        raise RequestError("give the device as 'device' (a MAC or a UUID), 'mac' or 'uuid'")
    values = {k: field(data, k, str, default="") for k in ("boot_file", "image", "session")}
    _refuse_unknown(data, {"device", "mac", "uuid", *values})
    try:
        mac, device_uuid = parse_device_id(text)
        device = request.app[CTX].devices.prestage(mac=mac, uuid=device_uuid, **values)
    except DeviceError as exc:
        raise RequestError(str(exc)) from None
    return json_response(device.to_json(), status=201)


async def assign_device(request: web.Request) -> web.Response:
    text = _device_id(request)
    data = await read_json(request)
    keys = ("boot_file", "image", "session")
    _refuse_unknown(data, set(keys))
    values = {k: field(data, k, str) for k in keys}
    if all(v is None for v in values.values()):
        raise RequestError("give at least one of 'boot_file', 'image', 'session'")
    store = request.app[CTX].devices
    _existing(store, text)
    try:
        device = store.update(text, **values)
    except DeviceError as exc:
        raise RequestError(str(exc)) from None
    return json_response(device.to_json())


def _refuse_unknown(data: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise RequestError(
            f"unknown key {unknown[0][:40]!r}; allowed: {', '.join(sorted(allowed))}"
        )


# -- images -----------------------------------------------------------------------------------


_STORES: dict[Path, Any] = {}


def _store(ctx: ServerContext) -> Any:
    """The image store of the current config, kept so its catalog cache survives requests."""
    from wds.store import ImageStore

    root = Path(ctx.config.server.store).absolute()
    if root not in _STORES:
        if len(_STORES) >= 8:  # a config reload moved the store: forget the old ones
            _STORES.clear()
        _STORES[root] = ImageStore(root)
    return _STORES[root]


def _images(ctx: ServerContext) -> list[Any]:
    """Every stored image; a damaged catalog is the admin's problem (503), not the client's."""
    try:
        return list(_store(ctx).list_images())
    except StoreError as exc:
        log.warning("image store: %s", exc)
        raise web.HTTPServiceUnavailable(text=f"the image store cannot be read: {exc}") from None


async def list_images(request: web.Request) -> web.Response:
    from wds.store.model import entry_to_json

    return json_response({"images": [entry_to_json(e) for e in _images(request.app[CTX])]})


async def show_image(request: web.Request) -> web.Response:
    from wds.store import StoreInputError
    from wds.store.model import entry_to_json

    ctx = request.app[CTX]
    try:
        entry = _store(ctx).find(request.match_info["ref"])
    except StoreInputError as exc:
        raise RequestError(str(exc)) from None
    except StoreError as exc:
        text = str(exc)
        if text.startswith("no image") or " has no image " in text:
            raise NotFound(text) from None
        log.warning("image store: %s", exc)
        raise web.HTTPServiceUnavailable(text=f"the image store cannot be read: {exc}") from None
    return json_response(entry_to_json(entry))


# -- documents --------------------------------------------------------------------------------


async def openapi(request: web.Request) -> web.Response:
    from wds.web.openapi import document

    return json_response(document())


async def metrics(request: web.Request) -> web.Response:
    from prometheus_client import CONTENT_TYPE_LATEST

    body = request.app[METRICS]()
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


_V1 = "/api/v1"
_N = (400, 404)
ADMIN_ROUTES: Final = (
    Route("GET", f"{_V1}/status", status, "version, uptime, services, counts", answer="Status"),
    Route("GET", f"{_V1}/sessions", list_sessions, "every session", answer="SessionList"),
    Route(
        "POST",
        f"{_V1}/sessions",
        create_session,
        "create a session from a [[session]]-like spec",
        body="SessionConfig",
        answer="SessionStatus",
        status=201,
        errors=(409,),
    ),
    Route(
        "GET",
        f"{_V1}/sessions/{{name}}",
        show_session,
        "one session with per-receiver progress",
        answer="SessionStatus",
        errors=_N,
    ),
    Route(
        "POST",
        f"{_V1}/sessions/{{name}}/start",
        start_session,
        "start a session now",
        answer="SessionStatus",
        errors=(*_N, 409),
    ),
    Route(
        "POST",
        f"{_V1}/sessions/{{name}}/stop",
        stop_session,
        "stop a session",
        answer="SessionStatus",
        errors=(*_N, 409),
    ),
    Route("GET", f"{_V1}/devices", list_devices, "every device record", answer="DeviceList"),
    Route(
        "POST",
        f"{_V1}/devices",
        prestage_device,
        "prestage (create or update) a device",
        body="Prestage",
        answer="Device",
        status=201,
    ),
    Route(
        "GET",
        f"{_V1}/devices/{{id}}",
        show_device,
        "one device (MAC or UUID) with its event history",
        answer="DeviceDetail",
        errors=_N,
    ),
    Route(
        "PATCH",
        f"{_V1}/devices/{{id}}",
        assign_device,
        "set a device's boot file, image or session",
        body="Assign",
        answer="Device",
        errors=_N,
    ),
    Route(
        "POST",
        f"{_V1}/devices/{{id}}/assign",
        assign_device,
        "the same as PATCH /api/v1/devices/{id}",
        body="Assign",
        answer="Device",
        errors=_N,
    ),
    Route(
        "POST",
        f"{_V1}/devices/{{id}}/approve",
        approve_device,
        "answer this device from now on",
        answer="Device",
        errors=_N,
    ),
    Route(
        "POST",
        f"{_V1}/devices/{{id}}/reject",
        reject_device,
        "never answer this device",
        answer="Device",
        errors=_N,
    ),
    Route(
        "GET",
        f"{_V1}/devices/{{id}}/events",
        device_events,
        "a device's event history (?limit=N, at most 1000)",
        answer="EventList",
        errors=_N,
    ),
    Route(
        "GET",
        f"{_V1}/images",
        list_images,
        "every image in the store",
        answer="ImageList",
        errors=(503,),
    ),
    Route(
        "GET",
        f"{_V1}/images/{{ref:.+}}",
        show_image,
        "one image: GROUP/NAME or boot/ARCH/NAME",
        answer="Image",
        errors=(*_N, 503),
    ),
    Route("GET", f"{_V1}/openapi.json", openapi, "this document"),
    Route("GET", "/metrics", metrics, "Prometheus metrics", media="text/plain"),
)
