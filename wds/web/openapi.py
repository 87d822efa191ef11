"""One route table per app, and the OpenAPI 3.1 document made from them.

Each app registers exactly the routes of its table (:func:`add_routes`), and the document served
at ``/api/v1/openapi.json`` (and checked in as docs/openapi.json, which a test keeps equal) is
built from the same tables, so the documentation cannot list a path the server does not have or
miss one it has. Schemas of the JSON objects come from the dataclasses the API returns
(:class:`wds.context.SessionStatus`, :class:`wds.devices.Device`, ...).

``python3 -m wds.web.openapi > docs/openapi.json`` rewrites the checked-in copy.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from aiohttp import web

from wds import __version__

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    """One endpoint: what it does, what it takes and what it answers."""

    method: Literal["GET", "POST", "PATCH"]
    path: str  # aiohttp syntax; "{ref:.+}" is documented as "{ref}"
    handler: Handler
    summary: str
    body: str | None = None  # schema name of the JSON request body
    answer: str | None = None  # schema name of the JSON answer; None = see ``media``
    media: str = "application/json"
    status: int = 200
    errors: tuple[int, ...] = ()
    tag: str = "admin"


def add_routes(app: web.Application, routes: tuple[Route, ...]) -> None:
    for route in routes:
        app.router.add_route(route.method, route.path, route.handler)


def _schema(hint: Any) -> dict[str, Any]:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return {"$ref": f"#/components/schemas/{typing.cast(type, hint).__name__}"}
    if origin in (types.UnionType, typing.Union):
        inner = [_schema(a) for a in args if a is not type(None)]
        nullable = type(None) in args
        return {"anyOf": [*inner, {"type": "null"}]} if nullable else {"anyOf": inner}
    if origin is Literal:
        return {"enum": list(args)}
    if origin is tuple:
        return {"type": "array", "items": _schema(args[0])}
    simple = {str: "string", int: "integer", float: "number", bool: "boolean"}
    if hint in simple:
        return {"type": simple[hint]}
    if hint in (Path, uuid.UUID):
        return {"type": "string"}
    raise TypeError(f"no JSON schema for {hint!r}")  # a bug in wds


def dataclass_schema(cls: type[Any], *, required: bool = True) -> dict[str, Any]:
    """A JSON schema of the ``to_json`` form of a dataclass (or of a spec, ``required=False``)."""
    hints = typing.get_type_hints(cls)
    props: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        prop = _schema(hints[f.name])
        if f.metadata.get("doc"):
            prop["description"] = f.metadata["doc"]
        props[f.name] = prop
    schema: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        schema["required"] = list(props)
    else:
        schema["additionalProperties"] = False
    return schema


def _schemas() -> dict[str, Any]:
    from wds.config import SessionConfig
    from wds.context import ReceiverStatus, SessionStatus
    from wds.devices import Device, DeviceEvent

    def obj(props: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
        return {"type": "object", "properties": props, "required": list(required)}

    s, n, i, arr = {"type": "string"}, {"type": "number"}, {"type": "integer"}, "array"
    ref = "#/components/schemas/"
    return {
        "Error": obj({"error": s}, ("error",)),
        "SessionStatus": dataclass_schema(SessionStatus),
        "ReceiverStatus": dataclass_schema(ReceiverStatus),
        "SessionList": obj({"sessions": {"type": arr, "items": {"$ref": ref + "SessionStatus"}}}),
        "SessionConfig": dataclass_schema(SessionConfig, required=False),
        "Device": dataclass_schema(Device),
        "DeviceEvent": dataclass_schema(DeviceEvent),
        "DeviceDetail": {
            "allOf": [
                {"$ref": ref + "Device"},
                obj({"events": {"type": arr, "items": {"$ref": ref + "DeviceEvent"}}}),
            ]
        },
        "DeviceList": obj({"devices": {"type": arr, "items": {"$ref": ref + "Device"}}}),
        "EventList": obj({"events": {"type": arr, "items": {"$ref": ref + "DeviceEvent"}}}),
        "Prestage": obj(
            {"device": s, "mac": s, "uuid": s, "boot_file": s, "image": s, "session": s}
        ),
        "Assign": obj({"boot_file": s, "image": s, "session": s}),
        "Image": obj({"ref": s, "kind": s, "group": s, "name": s, "size": i, "images": {}}),
        "ImageList": obj({"images": {"type": arr, "items": {"$ref": ref + "Image"}}}),
        "Status": obj(
            {"version": s, "started": n, "uptime_s": n, "services": {}, "counts": {}},
            ("version", "uptime_s", "services", "counts"),
        ),
        "Report": obj(
            {"device": s, "status": {"enum": ["verified", "failed"]}, "reason": s},
            ("device", "status"),
        ),
        "Recorded": obj({"recorded": {"type": "boolean"}, "device": s, "event": s}),
    }


_REASONS = {
    400: "malformed request (bad JSON, wrong types, bad MAC or name)",
    401: "no or wrong bearer token",
    404: "no such session, device, image or path",
    409: "not possible in the current state",
    413: "body too large",
    503: "the server cannot read its image store",
}


def _operation(route: Route) -> dict[str, Any]:
    content: dict[str, Any] = {route.media: {}}
    if route.answer:
        content[route.media] = {"schema": {"$ref": f"#/components/schemas/{route.answer}"}}
    responses: dict[str, Any] = {str(route.status): {"description": "OK", "content": content}}
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    codes = set(route.errors) | ({400, 413} if route.body else set())
    if route.tag == "admin":
        codes.add(401)
    for code in sorted(codes):
        responses[str(code)] = {"description": _REASONS[code], "content": error}
    op: dict[str, Any] = {
        "summary": route.summary,
        "tags": [route.tag],
        "operationId": f"{route.method.lower()}_{route.handler.__name__}",
        "responses": responses,
    }
    params = re.findall(r"\{(\w+)(?::[^}]*)?\}", route.path)
    if params:
        op["parameters"] = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
            for p in params
        ]
    if route.body:
        op["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{route.body}"}}
            },
        }
    if route.tag == "admin":
        op["security"] = [{"bearer": []}]
    return op


def build_openapi(*tables: tuple[Route, ...]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route in ``tables``."""
    paths: dict[str, dict[str, Any]] = {}
    for table in tables:
        for route in table:
            path = re.sub(r"\{(\w+):[^}]*\}", r"{\1}", route.path)
            paths.setdefault(path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "wds admin and content API",
            "version": __version__,
            "description": "See docs/API.md. The admin API (tag admin) listens on [http] "
            "admin_address:admin_port; the content endpoints (tags content, boot) on [http] "
            "address:port.",
        },
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "the token of [http] token_file; required when the admin "
                    "API listens on a non-loopback address or a token_file is set",
                }
            },
        },
    }


#: the routes :mod:`wds.web.boot` adds to the content app (that module owns them; a test checks
#: this list against what it registers): (path, summary, media type)
BOOT_PATHS: tuple[tuple[str, str, str], ...] = (
    (
        "/boot.ipxe",
        "the iPXE entry script ([pxe.boot] ipxe_script): chains to /ipxe/{mac}",
        "text/plain",
    ),
    ("/ipxe/{mac}", "a device's iPXE script: deploy, wait for approval, or exit", "text/plain"),
    (
        "/deploy/vmlinuz",
        "the deploy environment's kernel ([deploy] kernel)",
        "application/octet-stream",
    ),
    ("/deploy/initrd.img", "its initramfs ([deploy] initrd)", "application/octet-stream"),
    (
        "/boot/{path}",
        "a file under [tftp] root, as TFTP serves it (HTTP boot)",
        "application/octet-stream",
    ),
)


async def _documented_only(request: web.Request) -> web.StreamResponse:
    raise web.HTTPNotFound()  # never registered: the boot routes have handlers of their own


def document() -> dict[str, Any]:
    """The document of the whole server (admin, content and boot routes)."""
    from wds.web.admin import ADMIN_ROUTES
    from wds.web.content import CONTENT_ROUTES

    boot = tuple(
        Route("GET", path, _documented_only, summary, media=media, errors=(404,), tag="boot")
        for path, summary, media in BOOT_PATHS
    )
    doc = build_openapi(ADMIN_ROUTES, CONTENT_ROUTES, boot)
    for path, _, _ in BOOT_PATHS:
        op = doc["paths"][path]["get"]
        op["operationId"] = "get_boot_" + re.sub(r"\W+", "_", path).strip("_")
    return doc


if __name__ == "__main__":
    print(json.dumps(document(), indent=2))
