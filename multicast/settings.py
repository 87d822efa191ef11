"""Settings of the WMTP sender machine (docs/PROTOCOL.md section 6), and how a ``[[session]]``
of the server's config becomes them. Re-exported by :mod:`multicast.sender`."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from wds.errors import LocalProtocolError

if TYPE_CHECKING:
    from wds.config import MulticastConfig, SessionConfig


@dataclass(frozen=True)
class SenderSettings:
    """Rates in bytes per second (IP and UDP headers counted); times in seconds of ``now``."""

    max_rate: float
    min_rate: float = 125_000.0  # 1 Mbit/s
    mode: Literal["auto", "scheduled"] = "auto"
    start_at: float | None = None
    min_clients: int = 0
    max_wait: float = 0.0
    slow_client: Literal["unicast", "wait", "drop"] = "unicast"
    min_goodput: float = 1_250_000.0  # 10 Mbit/s
    announce_interval: float = 0.5
    #: while no receiver has joined yet, or the session waits to start: a receiver that just
    #: fetched the manifest can JOIN only after it heard an ANNOUNCE (it names the sender)
    first_announce_interval: float = 0.1
    receiver_timeout: float = 10.0
    rate_interval: float = 1.0
    loss_threshold: int = 100  # permille: random loss below this (a lossy LAN) is not congestion
    rate_decrease: float = 0.75
    rate_increase: float = 0.05  # of max_rate per step
    slow_check_interval: float = 1.0
    slow_window: float = 5.0
    max_receivers: int = 1024
    max_repair_blocks: int = 65536
    repair_share: float = 0.5  # of DATA, while the carousel also has something to send
    linger: float = 2.0
    #: how long the sender remembers the seq of each chunk it sent and block it repaired, to
    #: tell from a REPORT's or NAK's seen_seq what that receiver cannot have read yet (a
    #: receiver lagging more than this may get a chunk or block twice; nothing worse)
    report_grace: float = 2.0
    finish_announcements: int = 3

    def __post_init__(self) -> None:
        if not 0 < self.min_rate <= self.max_rate:
            raise LocalProtocolError(f"need 0 < min_rate <= max_rate, got {self}")
        if not 0 < self.repair_share < 1:
            raise LocalProtocolError(f"repair_share must be between 0 and 1, got {self}")
        if self.max_receivers < 1 or self.max_repair_blocks < 1 or self.slow_window <= 0:
            raise LocalProtocolError(f"bounds must be positive, got {self}")


def start_at_on_clock(iso: str, *, wall_now: float, clock_now: float) -> float | None:
    """``[[session]] start_at`` (ISO 8601; local time when it names no zone) on the clock the
    machine is driven with: ``wall_now`` is ``time.time()`` and ``clock_now`` that clock's now,
    both read by the adapter at the same moment. Empty: None."""
    if not iso:
        return None
    return clock_now + (datetime.datetime.fromisoformat(iso).timestamp() - wall_now)


def sender_settings(
    multicast: MulticastConfig, session: SessionConfig, *, start_at: float | None = None
) -> SenderSettings:
    """Settings for one ``[[session]]``; ``start_at`` already on the adapter's clock."""
    mbps = session.rate_mbps or multicast.max_rate_mbps
    max_rate = mbps * 1e6 / 8
    min_goodput = session.min_goodput_mbps * 1e6 / 8
    if session.slow_client == "wait":
        min_rate = min(max_rate, 125_000.0)
    else:  # PROTOCOL.md 6: the floor where a slow receiver is still detectable
        min_rate = min(max_rate, max(125_000.0, 2 * min_goodput))
    return SenderSettings(
        max_rate=max_rate,
        min_rate=min_rate,
        mode=session.mode,
        start_at=start_at,
        min_clients=session.min_clients,
        max_wait=session.max_wait,
        slow_client=session.slow_client,
        min_goodput=min_goodput,
    )
