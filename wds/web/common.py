"""What both web apps share: the error middleware, JSON bodies and answers, request counters.

A client mistake is always a JSON 4xx ``{"error": "what was wrong; what to do"}``: a
:class:`wds.errors.RequestError` raised by a handler or a session manager, aiohttp's own
HTTP errors (unknown path, wrong method, body too large), a body that is not JSON or has the wrong
types. Anything else escaping a handler is a bug in wds: logged with its traceback and answered
500 without details.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from aiohttp import web

from wds.errors import RequestError

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: largest JSON request body accepted, bytes (a session spec or a report is far below this)
MAX_JSON_BODY: Final = 64 * 1024
#: a session name, as ``[[session]] name`` allows it
SESSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

#: answers by HTTP status, per app (for /metrics)
REQUEST_COUNTS: Final = web.AppKey("request_counts", Counter[int])


def json_response(data: Any, *, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, indent=1))


def error_response(status: int, message: str) -> web.Response:
    return json_response({"error": message}, status=status)


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object; RequestError for anything else."""
    if request.content_length is not None and request.content_length > MAX_JSON_BODY:
        raise web.HTTPRequestEntityTooLarge(
            max_size=MAX_JSON_BODY, actual_size=request.content_length
        )
    body = await request.read()  # bounded by the app's client_max_size
    if not body:
        raise RequestError("the request needs a JSON object as its body")
    try:
        data = json.loads(body, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(f"the body is not valid JSON ({exc}); send a JSON object") from None
    if not isinstance(data, dict):
        raise RequestError(f"the body must be a JSON object, not {type(data).__name__}")
    return data


def _no_constant(name: str) -> Any:
    raise RequestError(f"the body holds {name}; JSON numbers must be finite")


def field(
    data: Mapping[str, Any], key: str, kind: type, *, default: Any = None, limit: int = 255
) -> Any:
    """``data[key]`` checked against ``kind`` (str, int, float, bool); ``default`` if missing."""
    if key not in data or data[key] is None:
        return default
    value = data[key]
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok or (kind is float and not _finite(value)):
        raise RequestError(f"{key!r} must be a {_TYPE_NAMES.get(kind, kind.__name__)}")
    if isinstance(value, str) and (len(value) > limit or any(ord(c) < 32 for c in value)):
        raise RequestError(f"{key!r}: at most {limit} printable characters")
    return value


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer beyond any float
        return False


_TYPE_NAMES = {str: "string", int: "integer", float: "finite number", bool: "boolean"}


def session_name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not SESSION_NAME.fullmatch(name):
        raise RequestError(
            f"{name[:80]!r} is not a session name: 1-64 letters, digits, '.', '_' or '-'"
        )
    return name


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every client mistake into a JSON 4xx, a bug into a logged 500; count answers."""
    counts = request.app[REQUEST_COUNTS]
    try:
        response = await handler(request)
    except RequestError as exc:
        log.info("%s %s %s: %s", request.method, request.path, exc.status, exc)
        response = error_response(exc.status, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            counts[exc.status] += 1
            raise  # redirects and the like
        response = error_response(exc.status, _http_reason(exc))
    except ConnectionResetError:
        raise
    except Exception:
        log.exception("%s %s: a bug in wds answered 500", request.method, request.path)
        response = error_response(500, "internal error in wds; see the server log")
    counts[response.status] += 1
    return response


def _http_reason(exc: web.HTTPException) -> str:
    if exc.status == 404:
        return "no such path here; docs/API.md lists the endpoints"
    if exc.status == 405:
        allowed = ", ".join(sorted(getattr(exc, "allowed_methods", ()) or ()))
        return f"method not allowed here; allowed: {allowed or 'none'}"
    if exc.status == 413:
        return f"request body too large; at most {MAX_JSON_BODY} bytes"
    text = exc.text or exc.reason
    return text if text and not text.startswith("<") else exc.reason
