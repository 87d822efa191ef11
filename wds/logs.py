"""Logging set-up of the ``wds`` command: human lines on a terminal, journald-ready under systemd.

Under systemd, stderr is a stream to journald and ``JOURNAL_STREAM`` holds its ``DEVICE:INODE``
(systemd.exec(5)). Then every line of a record starts with a ``<N>`` syslog priority
(sd-daemon(3): journald strips the prefix and stores N as PRIORITY), so
``journalctl -u wds -p warning`` shows warnings and worse, and names the component that logged
it in a stable form, ``wds.<component>``::

    <4>wds.tftp: [198.18.0.2:2070] transfer of ipxe.efi failed: timed out

so ``journalctl -u wds --grep '^wds\\.tftp:'`` follows one service. Journald adds the time, the
host and the unit itself, so the line has none of them. Everywhere else (a terminal, a pipe,
stderr redirected away from the journal) the format stays the human one with time and level.

Components are derived from the module that logged (:func:`component_of`): ``pxe`` (ProxyDHCP),
``tftp``, ``http`` (wds.web), ``session`` (sessions and multicast), ``devices``, ``store``,
``server``; anything else is ``wds``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import TextIO

__all__ = [
    "HUMAN_FORMAT",
    "JournalFormatter",
    "component_of",
    "setup_logging",
    "syslog_priority",
    "under_journal",
]

HUMAN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: logger name prefixes and the component they belong to (the first match wins)
COMPONENTS: tuple[tuple[str, str], ...] = (
    ("pxe.dhcp", "pxe"),
    ("pxe.tftp", "tftp"),
    ("pxe", "pxe"),
    ("wds.web", "http"),
    ("wds.metrics", "http"),
    ("wds.sessions", "session"),
    ("multicast", "session"),
    ("wds.devices", "devices"),
    ("wds.store", "store"),
    ("wds.server", "server"),
    ("wds.cli", "server"),
)


def component_of(logger_name: str) -> str:
    """``pxe.tftp.server`` -> ``tftp``; see :data:`COMPONENTS`."""
    for prefix, component in COMPONENTS:
        if logger_name == prefix or logger_name.startswith(prefix + "."):
            return component
    return "wds"


def syslog_priority(levelno: int) -> int:
    """A logging level as a syslog priority (RFC 5424 6.2.1): 7 debug ... 2 critical."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


class JournalFormatter(logging.Formatter):
    """``<N>wds.<component>: message``, the prefix repeated on every line (tracebacks too)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prefix = f"<{syslog_priority(record.levelno)}>wds.{component_of(record.name)}: "
        return "\n".join(prefix + line for line in text.splitlines() or [""])


def under_journal(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """True when ``stream`` is the journald stream ``JOURNAL_STREAM`` names (systemd.exec(5))."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):  # no real file behind the stream
        return False
    return (st.st_dev, st.st_ino) == (int(device), int(inode))


class _WdsHandler(logging.StreamHandler[TextIO]):
    """The handler :func:`setup_logging` installs (replaced when it is called again)."""


def setup_logging(
    level: int, *, stream: TextIO | None = None, environ: Mapping[str, str] | None = None
) -> logging.Handler | None:
    """Log to ``stream`` (stderr) at ``level``, journald-ready when it is the journal stream.

    Like :func:`logging.basicConfig`, nothing is changed when the root logger already has
    handlers someone else installed (pytest's log capture, a program embedding wds); a handler
    from an earlier call is replaced. Returns the handler installed, or None.
    """
    root = logging.getLogger()
    ours = [h for h in root.handlers if isinstance(h, _WdsHandler)]
    if len(ours) != len(root.handlers):
        return None
    for old in ours:
        root.removeHandler(old)
    out = sys.stderr if stream is None else stream
    handler = _WdsHandler(out)
    if under_journal(out, environ):
        handler.setFormatter(JournalFormatter("%(message)s"))
    else:
        handler.setFormatter(logging.Formatter(HUMAN_FORMAT))
    root.addHandler(handler)
    root.setLevel(level)
    return handler
