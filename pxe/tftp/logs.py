"""Log lines about one TFTP client: a logger adapter that prefixes them with its address."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

from pxe.tftp.machine import Outcome, ReadTransfer
from pxe.tftp.options import format_options

log = logging.getLogger("pxe.tftp.server")

if TYPE_CHECKING:
    _Adapter = logging.LoggerAdapter[logging.Logger]
else:
    _Adapter = logging.LoggerAdapter


class PeerLog(_Adapter):
    """Log lines about one client: prefixed with its address:port, which is also in ``peer``."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        peer = self.extra["peer"] if self.extra else "?"
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return f"{peer} {msg}", kwargs


def peer_log(client: tuple[str, int]) -> PeerLog:
    return PeerLog(log, {"peer": f"{client[0]}:{client[1]}"})


def log_transfer_end(client: tuple[str, int], machine: ReadTransfer, name: str, mode: str) -> None:
    """INFO for a completed transfer, DEBUG for declined options, WARNING for a failure."""
    elapsed = max(machine.finished_at - machine.started_at, 1e-6)
    stats = machine.stats
    options = format_options(machine.negotiated.oack)
    if machine.outcome is Outcome.COMPLETED:
        peer_log(client).info(
            "fetched %s (%d bytes, %s, options %s) in %.3f s, %.2f MiB/s, "
            "%d datagrams, %d retransmitted, %d timeouts, rtt %s, window min %.1f",
            name,
            machine.size,
            mode,
            options,
            elapsed,
            machine.size / elapsed / 1048576,
            stats.datagrams_sent,
            stats.retransmitted,
            stats.timeouts,
            "-" if machine.srtt is None else f"{machine.srtt * 1000:.1f} ms",
            stats.min_window,
        )
    elif machine.outcome is Outcome.DECLINED:
        peer_log(client).debug(
            "declined the options %s for %s (%s); it may ask again", options, name, machine.message
        )
    else:
        peer_log(client).warning(
            "transfer of %s %s after %d of %d bytes: %s (%d retransmitted)",
            name,
            machine.outcome.value if machine.outcome else "ended",
            min(machine.acked * machine.blksize, machine.size),
            machine.size,
            machine.message,
            stats.retransmitted,
        )
