"""The one error hierarchy of wds, split by who is at fault.

* :class:`RemoteProtocolError` -- a peer sent something bad (a malformed packet, a forged datagram).
  Machines raise these or turn them into a dropped packet with a reason; they never crash a server.
* :class:`LocalProtocolError` -- we were misused (a caller broke an API contract). A bug in wds.
* :class:`ConfigError` -- the admin's config is wrong; names the file, the key and the value.
* :class:`ImageError` -- a WIM file is unreadable (:class:`WimFormatError`) or damaged
  (:class:`WimCorruptError`).
* :class:`StoreError` -- an image store operation was refused (a name that exists, a locked store).
* :class:`ToolError` -- an external tool (wimlib's) failed or is missing.
* :class:`RequestError` -- a client of the HTTP API asked for something wrong (4xx, never 500):
  :class:`NotFound` (404), :class:`Conflict` (409).

Every user-facing error carries a message that says what went wrong, where, and what to do; the CLI
prints it on one line and exits with the error's ``exit_code`` instead of showing a traceback.
"""

from __future__ import annotations


class WdsError(Exception):
    """Root of every error wds raises on purpose."""

    #: exit status the CLI uses when this error reaches it
    exit_code: int = 1


class RemoteProtocolError(WdsError):
    """A peer sent something that breaks the protocol; the packet or session is dropped."""


class LocalProtocolError(WdsError):
    """wds itself was misused: an API called out of order or with impossible arguments."""


class ConfigError(WdsError):
    """A configuration file is wrong. Always names the file, the key and the offending value."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None) -> None:
        self.file = file
        self.key = key
        where = ""
        if file is not None:
            where = f"{file}: "
        if key is not None:
            where += f"{key}: "
        super().__init__(f"{where}{message}")


class ImageError(WdsError):
    """Base for problems with a WIM file."""


class WimFormatError(ImageError):
    """The file is not a readable WIM (wrong magic, truncated, inconsistent structure)."""

    exit_code = 2


class WimCorruptError(ImageError):
    """The WIM is structurally readable but its content does not match its checksums."""

    exit_code = 1


class StoreError(WdsError):
    """An image store operation was refused."""


class ToolError(WdsError):
    """An external tool that wds delegates to (wimlib-imagex) is missing or failed."""


class RequestError(WdsError):
    """A client of the HTTP API asked for something wrong or impossible; answered with a 4xx.

    ``status`` is the HTTP status the web layer answers with; the message says what was wrong
    with the request and what to do instead. Never a 500: that would be a bug in wds.
    """

    status: int = 400


class NotFound(RequestError):
    """The named session, device or image does not exist."""

    status = 404


class Conflict(RequestError):
    """The request is valid but not in the current state (stop a session that is not running)."""

    status = 409
