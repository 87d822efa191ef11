"""Prometheus metrics of a running ``wds serve``, read at scrape time.

:class:`WdsCollector` is a custom prometheus_client collector: nothing is counted twice or kept
in a second place, every value is read from the service that owns it when ``/metrics`` is
scraped -- the TFTP server's totals, the ProxyDHCP server's boot requests by architecture, the
session manager's :class:`wds.context.SessionStatus` list, the device records and the web apps'
answer counters. Every metric is named ``wds_...`` and has HELP text; label values are bounded
(architectures, states, HTTP statuses, configured session names).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import get_args

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from wds import __version__
from wds.context import ServerContext, SessionState

log = logging.getLogger(__name__)

#: at most this many sessions get per-session series (a runaway API client cannot blow up
#: the scrape)
MAX_SESSION_SERIES = 200
SESSION_STATES: tuple[str, ...] = get_args(SessionState)
DEVICE_STATES = ("prestaged", "pending", "approved", "rejected")


class WdsCollector(Collector):
    """Reads the counters of one server context when collected.

    ``http_counts`` maps an app name ("content", "admin") to its answers by HTTP status.
    """

    def __init__(
        self, ctx: ServerContext, http_counts: Mapping[str, Counter[int]] | None = None
    ) -> None:
        self.ctx = ctx
        self.http_counts = {} if http_counts is None else http_counts

    def collect(self) -> Iterator[Metric]:
        yield from self._server()
        yield from self._tftp()
        yield from self._pxe()
        yield from self._sessions()
        yield from self._devices()
        yield from self._http()

    def _server(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("wds_info", "wds version (value always 1)", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        if self.ctx.started:
            yield GaugeMetricFamily(
                "wds_start_time_seconds",
                "wall-clock time the server started (Unix seconds)",
                value=self.ctx.started,
            )
            yield GaugeMetricFamily(
                "wds_uptime_seconds",
                "seconds since the server started",
                value=max(0.0, time.time() - self.ctx.started),
            )

    def _tftp(self) -> Iterator[Metric]:
        tftp = self.ctx.tftp
        if tftp is None:
            return
        transfers = CounterMetricFamily(
            "wds_tftp_transfers",
            "TFTP transfers ended, by result (completed or failed)",
            labels=["result"],
        )
        transfers.add_metric(["completed"], tftp.completed)
        transfers.add_metric(["failed"], tftp.failed)
        yield transfers
        yield CounterMetricFamily(
            "wds_tftp_sent_bytes",
            "file bytes of completed TFTP transfers",
            value=tftp.bytes_sent,
        )
        yield CounterMetricFamily(
            "wds_tftp_retransmissions",
            "TFTP DATA datagrams sent again (timeouts, duplicate ACKs), over all ended transfers",
            value=tftp.retransmitted,
        )

    def _pxe(self) -> Iterator[Metric]:
        pxe = self.ctx.pxe
        if pxe is None:
            return
        requests = CounterMetricFamily(
            "wds_pxe_boot_requests",
            "PXE boot requests (DISCOVERs from PXE clients) by client architecture",
            labels=["arch"],
        )
        for arch, count in sorted(pxe.requests_by_arch.items()):
            requests.add_metric([arch], count)
        yield requests
        yield CounterMetricFamily(
            "wds_pxe_replies", "ProxyDHCP and PXE replies sent", value=pxe.replies_sent
        )
        yield CounterMetricFamily(
            "wds_pxe_dropped_packets",
            "DHCP packets ignored (not PXE, malformed, refused by policy)",
            value=pxe.packets_dropped,
        )

    def _sessions(self) -> Iterator[Metric]:
        try:
            sessions = self.ctx.sessions.list()
        except Exception:  # a broken manager must not break the scrape of everything else
            log.exception("metrics: the session list failed")
            return
        states = Counter[str](s.state for s in sessions)
        by_state = GaugeMetricFamily(
            "wds_sessions", "multicast sessions by state", labels=["state"]
        )
        for state in SESSION_STATES:
            by_state.add_metric([state], states.get(state, 0))
        yield by_state
        sent = CounterMetricFamily(
            "wds_session_sent_bytes",
            "bytes of DATA a session's sender has sent (repairs included)",
            labels=["session"],
        )
        repairs = CounterMetricFamily(
            "wds_session_repairs", "blocks a session's sender repaired", labels=["session"]
        )
        rejected = GaugeMetricFamily(
            "wds_session_rejected_chunks",
            "chunks that failed their SHA-256 at the session's current receivers",
            labels=["session"],
        )
        receivers = GaugeMetricFamily(
            "wds_session_receivers",
            "receivers of a session by state (joined, unicast, done, left, dropped)",
            labels=["session", "state"],
        )
        for s in sessions[:MAX_SESSION_SERIES]:
            sent.add_metric([s.name], s.bytes_sent)
            repairs.add_metric([s.name], s.repairs_sent)
            rejected.add_metric([s.name], sum(r.rejected_chunks for r in s.receivers))
            for state, count in sorted(Counter(r.state for r in s.receivers).items()):
                receivers.add_metric([s.name, state], count)
        yield from (sent, repairs, rejected, receivers)

    def _devices(self) -> Iterator[Metric]:
        try:
            states = Counter[str](d.state for d in self.ctx.devices.list())
        except Exception as exc:  # a busy or closed database: the scrape goes on
            log.warning("metrics: cannot read the device records: %s", exc)
            return
        devices = GaugeMetricFamily("wds_devices", "device records by state", labels=["state"])
        for state in DEVICE_STATES:
            devices.add_metric([state], states.get(state, 0))
        yield devices

    def _http(self) -> Iterator[Metric]:
        if not self.http_counts:
            return
        answers = CounterMetricFamily(
            "wds_http_responses",
            "HTTP answers by app (content, admin) and status code",
            labels=["app", "code"],
        )
        for app, counts in sorted(self.http_counts.items()):
            for code, count in sorted(counts.items()):
                answers.add_metric([app, str(code)], count)
        yield answers


def registry_for(
    ctx: ServerContext, http_counts: Mapping[str, Counter[int]] | None = None
) -> CollectorRegistry:
    """A registry of its own (not the process-global one) holding one :class:`WdsCollector`."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WdsCollector(ctx, http_counts))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """The Prometheus text format of ``registry``."""
    return generate_latest(registry)
