"""/metrics: Prometheus text that prometheus_client's own parser reads, values read at scrape."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from webapi_support import Running, request, running_service

from wds.metrics import WdsCollector


def scrape(web: Running) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = request(web.admin, "GET", "/metrics", headers=web.headers)
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("text/plain")
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(answer.body.decode()):
        assert family.name.startswith("wds_"), family.name
        assert family.documentation, family.name
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_metrics_parse_and_follow_the_services(tmp_path: Path) -> None:
    tftp = SimpleNamespace(completed=3, failed=1, bytes_sent=4096, retransmitted=2)
    pxe: Any = SimpleNamespace(
        replies_sent=5, packets_dropped=1, requests_by_arch={"x64 UEFI": 4, "x86 BIOS": 1}
    )
    with running_service(tmp_path) as web:
        web.ctx.tftp = tftp  # type: ignore[assignment]
        web.ctx.pxe = pxe
        web.call(lambda: web.ctx.devices.prestage(mac="52:54:00:18:00:01"))
        first = scrape(web)
        assert first[("wds_tftp_transfers_total", (("result", "completed"),))] == 3
        assert first[("wds_tftp_transfers_total", (("result", "failed"),))] == 1
        assert first[("wds_tftp_sent_bytes_total", ())] == 4096
        assert first[("wds_tftp_retransmissions_total", ())] == 2
        assert first[("wds_pxe_boot_requests_total", (("arch", "x64 UEFI"),))] == 4
        assert first[("wds_sessions", (("state", "running"),))] == 1
        assert first[("wds_sessions", (("state", "failed"),))] == 0
        assert first[("wds_session_sent_bytes_total", (("session", "lab"),))] == 123456
        assert first[("wds_session_repairs_total", (("session", "lab"),))] == 7
        assert first[("wds_session_rejected_chunks", (("session", "lab"),))] == 1
        receivers = ("wds_session_receivers", (("session", "lab"), ("state", "joined")))
        assert first[receivers] == 1
        assert first[("wds_devices", (("state", "prestaged"),))] == 1
        # values are read when scraped
        tftp.completed, tftp.bytes_sent = 4, 8192
        pxe.requests_by_arch["x64 UEFI"] = 5
        second = scrape(web)
        assert second[("wds_tftp_transfers_total", (("result", "completed"),))] == 4
        assert second[("wds_tftp_sent_bytes_total", ())] == 8192
        assert second[("wds_pxe_boot_requests_total", (("arch", "x64 UEFI"),))] == 5
        answers = ("wds_http_responses_total", (("app", "admin"), ("code", "200")))
        assert second[answers] >= 1


def test_metrics_without_tftp_or_pxe_and_a_failing_session_list(tmp_path: Path) -> None:
    with running_service(tmp_path) as web:
        samples = scrape(web)
        assert not any(name.startswith(("wds_tftp", "wds_pxe")) for name, _ in samples)

        def broken() -> list[Any]:
            raise RuntimeError("session manager bug")

        web.sessions.list = broken  # type: ignore[method-assign]
        collector = WdsCollector(web.ctx)
        names = [m.name for m in collector.collect()]
        assert "wds_sessions" not in names and "wds_info" in names
