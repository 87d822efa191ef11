"""The content app of WebService: manifests, images with Range, the public key, reports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from webapi_support import MANIFEST, Running, request, running_service

MAC = "52:54:00:18:00:01"
INFINITE_REPAIRS = f'{{"device": "{MAC}", "status": "verified", "chunks_repaired": Infinity}}'
NAN_BYTES = f'{{"device": "{MAC}", "status": "verified", "bytes": NaN}}'


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Running]:
    with running_service(tmp_path) as running:
        yield running


def test_manifest_and_image_with_range(web: Running) -> None:
    answer = request(web.content, "GET", "/sessions/lab/manifest")
    assert answer.status == 200 and answer.body == MANIFEST
    whole = request(web.content, "GET", "/sessions/lab/image")
    assert whole.status == 200 and whole.body == web.sessions.image.read_bytes()
    part = request(web.content, "GET", "/sessions/lab/image", headers={"Range": "bytes=256-511"})
    assert part.status == 206
    assert part.headers["content-range"] == f"bytes 256-511/{len(whole.body)}"
    assert part.body == whole.body[256:512]


def test_unknown_session_and_bad_names_are_json_4xx(web: Running) -> None:
    answer = request(web.content, "GET", "/sessions/nope/manifest")
    assert answer.status == 404 and "no session 'nope'" in answer.json()["error"]
    for path in ("/sessions/..%2F..%2Fetc/image", "/sessions/-x/manifest", "/sessions/a b/image"):
        bad = request(web.content, "GET", path.replace(" ", "%20"))
        assert bad.status in (400, 404), path
        assert bad.json()["error"], path
    assert request(web.content, "GET", "/sessions/../../etc/passwd").status == 404
    assert request(web.content, "GET", "/nothing/here").status == 404


def test_public_key_served_once_it_exists(web: Running) -> None:
    missing = request(web.content, "GET", "/keys/manifest.pub")
    assert missing.status == 404 and "no manifest key" in missing.json()["error"]
    key = web.ctx.config.server.state_dir / "manifest.pub"
    key.write_text("ed25519 public key\n")
    assert request(web.content, "GET", "/keys/manifest.pub").body == b"ed25519 public key\n"


def test_report_becomes_a_device_event(web: Running) -> None:
    web.call(lambda: web.ctx.devices.prestage(mac=MAC, session="lab"))
    summary = {
        "session": "lab",
        "verified": True,
        "bytes": 8 * 2**20,
        "seconds": 2.0,
        "mbit_per_s": 33.5,
        "chunks_repaired": 2,
        "chunks_rejected": 1,
    }
    answer = request(
        web.content,
        "POST",
        "/sessions/lab/report",
        {**summary, "device": MAC.upper(), "status": "verified"},
    )
    assert answer.status == 200, answer.body
    failed = {"device": MAC, "status": "failed", "reason": "disk /dev/vda too small"}
    assert request(web.content, "POST", "/sessions/lab/report", failed).status == 200
    events = web.call(lambda: web.ctx.devices.events(MAC))
    assert [e.kind for e in events] == ["finished", "failed"]
    assert "8.0 MiB" in events[0].detail and "1 rejected" in events[0].detail
    assert "disk /dev/vda too small" in events[1].detail
    assert web.call(lambda: web.ctx.devices.mac_for("127.0.0.1")) == MAC


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ("", "needs a JSON object"),
        ({"device": "zz:zz", "status": "verified"}, "not a MAC"),
        ({"device": MAC, "status": "done"}, "'status'"),
        ({"status": "failed"}, "'device'"),
        ({"device": 5, "status": "failed"}, "must be a string"),
        ({"device": MAC, "status": "verified", "bytes": "many"}, "must be a finite number"),
        (INFINITE_REPAIRS, "Infinity"),
        (NAN_BYTES, "NaN"),
        ({"device": MAC, "status": "verified", "bytes": 10**400}, "finite"),
        ({"device": MAC, "status": "failed", "reason": "x" * 5000}, "at most"),
    ],
)
def test_bad_reports_are_400_with_a_reason(web: Running, body: object, reason: str) -> None:
    answer = request(web.content, "POST", "/sessions/lab/report", body)  # type: ignore[arg-type]
    assert answer.status == 400, answer.body
    assert reason in answer.json()["error"]


def test_huge_report_is_413(web: Running) -> None:
    answer = request(web.content, "POST", "/sessions/lab/report", b"{" + b" " * 200_000 + b"}")
    assert answer.status == 413 and "too large" in answer.json()["error"]
