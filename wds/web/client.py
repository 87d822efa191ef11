"""A small synchronous client of the admin API, for the ``wds status|session|device`` commands.

stdlib only (:mod:`urllib.request`): a command run from a shell makes one or two requests, and
must not pull in an event loop to do so. Every failure is a one-line :class:`WdsError`: no server
(with what to do), a refused token (naming the token file), or the server's own ``error`` text
for a 4xx.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from wds.errors import WdsError

#: seconds one request may take (connect included)
TIMEOUT = 15.0
#: largest answer read, bytes (a device list of 10 000 pending devices is ~3 MB)
MAX_ANSWER = 64 * 1024 * 1024


def quote(segment: str) -> str:
    """One path segment, escaped (a name with '/' or '?' stays one segment)."""
    return urllib.parse.quote(segment, safe=":")


class ServerUnavailable(WdsError):
    """Nothing answers at the admin URL (connection refused, unreachable, timed out)."""


class ApiError(WdsError):
    """The server refused the request; ``status`` is the HTTP status, the message its reason."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def read_token(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise WdsError(
            f"cannot read the token file {str(path)!r}: {reason}; pass --token-file with a "
            "readable copy of [http] token_file"
        ) from None


class AdminClient:
    """Requests to ``url`` (``http://HOST:PORT``), with the token of ``token_file`` if given."""

    def __init__(self, url: str, *, token_file: str | Path | None = None) -> None:
        self.url = url.rstrip("/")
        self.token_file = token_file
        self._token = read_token(token_file) if token_file else ""

    def get(self, path: str) -> Any:
        return self.call("GET", path)

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.call("POST", path, body)

    def patch(self, path: str, body: dict[str, Any]) -> Any:
        return self.call("PATCH", path, body)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
                raw = answer.read(MAX_ANSWER + 1)
        except urllib.error.HTTPError as exc:
            raise self._refused(exc) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            detail = "" if isinstance(reason, ConnectionRefusedError) else f" ({reason})"
            raise ServerUnavailable(
                f"no wds server answers at {self.url}{detail}: start it with `wds serve` or "
                "pass --server"
            ) from None
        if len(raw) > MAX_ANSWER:
            raise WdsError(f"{self.url}{path}: answer larger than {MAX_ANSWER} bytes")
        try:
            return json.loads(raw)
        except ValueError:
            raise WdsError(
                f"{self.url}{path} did not answer JSON; is --server the admin port of "
                "`wds serve` ([http] admin_port)?"
            ) from None

    def _refused(self, exc: urllib.error.HTTPError) -> WdsError:
        try:
            reason = str(json.loads(exc.read(64 * 1024))["error"])
        except (ValueError, KeyError, TypeError, OSError):
            reason = f"{exc.code} {exc.reason}"
        if exc.code == 401:
            where = (
                f"the token in {str(self.token_file)!r}"
                if self.token_file
                else "no token (pass --token-file with the file of [http] token_file)"
            )
            return ApiError(f"the admin API at {self.url} refused {where}: {reason}", 401)
        return ApiError(reason, exc.code)


# -- command-line options shared by the commands that talk to the admin API --------------------

DEFAULT_CONFIG = "config/wds.toml"


def add_server_arguments(parser: Any) -> None:
    """``--server``, ``--token-file`` and ``--config`` (where the defaults of both come from)."""
    group = parser.add_argument_group("server")
    group.add_argument(
        "--server",
        metavar="URL",
        help="admin API of the running server, e.g. http://127.0.0.1:8081 (default: the "
        "config's [http] admin_address:admin_port)",
    )
    group.add_argument(
        "--token-file",
        metavar="FILE",
        help="file with the admin token (default: the config's [http] token_file)",
    )
    group.add_argument(
        "--config",
        metavar="FILE",
        help=f"config of the server (default: {DEFAULT_CONFIG} when it exists)",
    )


def admin_url(admin_address: str, admin_port: int) -> str:
    host = "127.0.0.1" if admin_address == "0.0.0.0" else admin_address
    return f"http://{host}:{admin_port}"


def client_from_args(args: Any) -> AdminClient:
    """The client the options name; the config fills in what the options leave out."""
    from wds.config import Config, load_config

    config_file = args.config
    if config_file is None and Path(DEFAULT_CONFIG).is_file():
        config_file = DEFAULT_CONFIG
    config = load_config(config_file) if config_file else Config()
    url = args.server or admin_url(config.http.admin_address, config.http.admin_port)
    if "://" not in url:
        url = "http://" + url
    token_file = args.token_file or config.http.token_file
    return AdminClient(url, token_file=token_file)
