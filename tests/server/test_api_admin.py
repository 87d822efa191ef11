"""The admin API of WebService (in-process, fake sessions, real DeviceStore): every endpoint,
its errors, the token rule, and the OpenAPI document against the registered routes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from webapi_support import Running, request, running_service, web_config

from wds.errors import ConfigError

MAC = "52:54:00:18:00:01"
UUID = "4c4c4544-0042-3510-8051-b4c04f4d3232"


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Running]:
    with running_service(tmp_path) as running:
        yield running


def get(web: Running, path: str) -> object:
    answer = request(web.admin, "GET", path, headers=web.headers)
    assert answer.status == 200, answer.body
    return answer.json()


def test_status(web: Running) -> None:
    web.call(lambda: web.ctx.devices.prestage(mac=MAC))
    status = get(web, "/api/v1/status")
    assert isinstance(status, dict)
    assert status["version"] and status["uptime_s"] > 0
    assert status["counts"] == {
        "sessions": {"running": 1, "idle": 1},
        "devices": {"prestaged": 1},
        "images": 0,
    }
    assert status["services"]["http"]["admin"] == web.admin + "/"
    assert status["fingerprint"].startswith("sha256:")


def test_sessions_list_show_start_stop(web: Running) -> None:
    listed = get(web, "/api/v1/sessions")
    assert isinstance(listed, dict)
    assert [s["name"] for s in listed["sessions"]] == ["lab", "idle"]
    lab = get(web, "/api/v1/sessions/lab")
    assert isinstance(lab, dict)
    (receiver,) = lab["receivers"]
    assert receiver["rate_bps"] == 12.5e6 and receiver["eta_s"] == 4.2
    assert receiver["repairs"] == 4 and receiver["rejected_chunks"] == 1
    started = request(web.admin, "POST", "/api/v1/sessions/idle/start")
    assert started.status == 200 and started.json()["state"] == "running"
    again = request(web.admin, "POST", "/api/v1/sessions/idle/start")
    assert again.status == 409 and "already running" in again.json()["error"]
    stopped = request(web.admin, "POST", "/api/v1/sessions/idle/stop")
    assert stopped.status == 200 and stopped.json()["state"] == "stopped"
    missing = request(web.admin, "POST", "/api/v1/sessions/nope/stop")
    assert missing.status == 404 and "nope" in missing.json()["error"]


def test_create_session_validates_like_the_config(web: Running) -> None:
    spec = {"name": "new", "image": "lab/win11:2", "mode": "scheduled", "min_clients": 3}
    created = request(web.admin, "POST", "/api/v1/sessions", spec)
    assert created.status == 201 and created.json()["origin"] == "runtime"
    cases = [
        ({"name": "x", "image": "lab/a", "rate": 5}, "session.rate: unknown key 'rate'"),
        ({"name": "x", "image": "lab/a", "port": "9000"}, "must be an integer"),
        ({"name": "x", "image": "nogroup"}, "must name a store image"),
        ({"name": "x", "image": "lab/a", "mode": "scheduled"}, "needs start_at"),
        ({"name": "../x", "image": "lab/a"}, "must be 1-64 characters"),
        ({"name": "x", "image": "lab/a", "group": "10.0.0.1"}, "multicast"),
        ({"image": "lab/a"}, "needs a name"),
        ({"name": "x", "image": "lab/a", "rate_mbps": 10**400}, "too large"),
        ({"name": "x", "image": "lab/a", "rate_mbps": -1}, "0 or greater"),
    ]
    for body, reason in cases:
        answer = request(web.admin, "POST", "/api/v1/sessions", body)
        assert answer.status == 400, body
        assert reason in answer.json()["error"], answer.json()
        assert answer.json()["error"].startswith("request body: session")
    assert request(web.admin, "POST", "/api/v1/sessions", spec).status == 409
    unknown_image = {"name": "y", "image": "other/a"}
    assert request(web.admin, "POST", "/api/v1/sessions", unknown_image).status == 400


def test_devices_prestage_list_show_approve_reject_assign(web: Running) -> None:
    created = request(
        web.admin, "POST", "/api/v1/devices", {"device": MAC.upper(), "boot_file": "a.efi"}
    )
    assert created.status == 201 and created.json()["state"] == "prestaged"
    by_uuid = request(web.admin, "POST", "/api/v1/devices", {"uuid": UUID, "session": "lab"})
    assert by_uuid.status == 201 and by_uuid.json()["uuid"] == UUID
    listed = get(web, "/api/v1/devices")
    assert isinstance(listed, dict) and len(listed["devices"]) == 2
    web.call(lambda: web.ctx.events.record("booted", "x64 UEFI: ipxe.efi", mac=MAC))
    shown = get(web, f"/api/v1/devices/{MAC}")
    assert isinstance(shown, dict)
    assert shown["boot_file"] == "a.efi"
    assert [(e["kind"], e["detail"]) for e in shown["events"]] == [("booted", "x64 UEFI: ipxe.efi")]
    events = get(web, f"/api/v1/devices/{MAC}/events?limit=5")
    assert isinstance(events, dict) and len(events["events"]) == 1
    for action, state in (("reject", "rejected"), ("approve", "approved")):
        answer = request(web.admin, "POST", f"/api/v1/devices/{MAC}/{action}")
        assert answer.status == 200 and answer.json()["state"] == state
    patched = request(web.admin, "PATCH", f"/api/v1/devices/{MAC}", {"image": "lab/win11"})
    assert patched.status == 200 and patched.json()["image"] == "lab/win11"
    assert patched.json()["boot_file"] == "a.efi" and patched.json()["state"] == "approved"
    assigned = request(web.admin, "POST", f"/api/v1/devices/{UUID}/assign", {"session": "s2"})
    assert assigned.status == 200 and assigned.json()["session"] == "s2"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "reason"),
    [
        ("GET", "/api/v1/devices/52:54:00:zz:00:01", None, 400, "not a MAC"),
        ("GET", "/api/v1/devices/52:54:00:18:00:99", None, 404, "no device"),
        ("GET", f"/api/v1/devices/{MAC}/events", None, 404, "no device"),
        ("GET", "/api/v1/devices/1234/events?limit=5", None, 400, "neither"),
        ("POST", "/api/v1/devices/52:54:00:18:00:99/approve", None, 404, "no device"),
        ("POST", "/api/v1/devices", {"boot_file": "a"}, 400, "give the device"),
        ("POST", "/api/v1/devices", {"device": "1234"}, 400, "neither"),
        ("POST", "/api/v1/devices", {"device": MAC, "image": 3}, 400, "must be a string"),
        ("POST", "/api/v1/devices", {"device": MAC, "colour": "red"}, 400, "unknown key"),
        ("POST", "/api/v1/devices", {"device": MAC, "boot_file": "x" * 300}, 400, "at most"),
        ("PATCH", f"/api/v1/devices/{MAC}", {"image": "a"}, 404, "no device"),
        ("PATCH", f"/api/v1/devices/{MAC}", {}, 400, "at least one"),
        ("POST", "/api/v1/sessions", "{", 400, "not valid JSON"),
        ("POST", "/api/v1/sessions", "[]", 400, "JSON object"),
        ("POST", "/api/v1/sessions", '"\\ud800"', 400, "JSON object"),
        ("GET", "/api/v1/sessions/a%20b", None, 400, "not a session name"),
        ("DELETE", "/api/v1/sessions/lab", None, 405, "not allowed"),
        ("GET", "/api/v2/status", None, 404, "no such path"),
        ("GET", "/api/v1/images/nogroup", None, 400, "not an image reference"),
        ("GET", "/api/v1/images/lab/win11", None, 404, "no image"),
        ("GET", "/api/v1/images/lab/win11:0", None, 400, "index"),
    ],
)
def test_malformed_requests_get_4xx_with_a_reason(
    web: Running, method: str, path: str, body: object, status: int, reason: str
) -> None:
    answer = request(web.admin, method, path, body)  # type: ignore[arg-type]
    assert answer.status == status, answer.body
    assert answer.headers["content-type"].startswith("application/json")
    assert reason in answer.json()["error"]


def test_a_damaged_store_is_503_and_the_status_still_answers(web: Running) -> None:
    assert get(web, "/api/v1/images") == {"images": []}
    store = web.ctx.config.server.store
    store.mkdir(parents=True, exist_ok=True)
    (store / "catalog.json").write_text("{damaged")
    answer = request(web.admin, "GET", "/api/v1/images")
    assert answer.status == 503 and "catalog is damaged" in answer.json()["error"]
    assert request(web.admin, "GET", "/api/v1/images/lab/a").status == 503
    status = get(web, "/api/v1/status")
    assert isinstance(status, dict) and status["counts"]["images"] is None


def test_a_bug_is_a_logged_500_without_details(
    web: Running, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> list[object]:
        raise RuntimeError("secret internal state")

    web.sessions.list = broken  # type: ignore[method-assign]
    with caplog.at_level("ERROR", logger="wds.web.common"):
        answer = request(web.admin, "GET", "/api/v1/sessions")
    assert answer.status == 500
    assert answer.json() == {"error": "internal error in wds; see the server log"}
    (record,) = [r for r in caplog.records if r.name == "wds.web.common"]
    assert "a bug in wds" in record.getMessage() and record.exc_info is not None
    assert "secret internal state" in str(record.exc_info[1])


def test_huge_body_is_413(web: Running) -> None:
    answer = request(web.admin, "POST", "/api/v1/sessions", b"[" + b"1," * 100_000 + b"1]")
    assert answer.status == 413 and "too large" in answer.json()["error"]


def test_token_required_on_loopback_when_a_token_file_is_set(tmp_path: Path) -> None:
    with running_service(tmp_path, token="s3cret-token") as web:
        refused = request(web.admin, "GET", "/api/v1/status")
        assert refused.status == 401 and "token_file" in refused.json()["error"]
        assert refused.headers["www-authenticate"].startswith("Bearer")
        wrong = request(web.admin, "GET", "/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status == 401
        basic = request(web.admin, "GET", "/api/v1/status", headers={"Authorization": "Basic x"})
        assert basic.status == 401
        assert request(web.admin, "GET", "/api/v1/status", headers=web.headers).status == 200
        # the content endpoints never need the token
        assert request(web.content, "GET", "/sessions/lab/manifest").status == 200


def test_exposed_without_token_file_is_a_config_error(tmp_path: Path) -> None:
    from wds.web.service import load_token

    config = web_config(tmp_path, admin_address="198.18.0.1")

    class Ctx:
        pass

    ctx = Ctx()
    ctx.config = config  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"http\.token_file"):
        load_token(ctx)  # type: ignore[arg-type]
    (tmp_path / "empty").write_text("\n")
    config2 = web_config(tmp_path, admin_address="0.0.0.0", token_file=tmp_path / "empty")
    ctx.config = config2  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="must hold one token"):
        load_token(ctx)  # type: ignore[arg-type]
    ctx.config = web_config(tmp_path, token_file=tmp_path / "missing")  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="cannot read the token file"):
        load_token(ctx)  # type: ignore[arg-type]


def registered(app: object) -> set[tuple[str, str]]:
    from aiohttp import web

    assert isinstance(app, web.Application)
    routes = set()
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        routes.add((route.method, str(path)))
    return routes


def test_openapi_lists_exactly_the_registered_routes(web: Running) -> None:
    from wds.web.admin import admin_app
    from wds.web.content import content_app
    from wds.web.openapi import document

    doc = get(web, "/api/v1/openapi.json")
    assert isinstance(doc, dict) and doc["openapi"].startswith("3.")
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    apps = registered(content_app(web.ctx))
    apps |= registered(admin_app(web.ctx, token="", http_info={}, metrics=lambda: b""))
    assert documented == apps
    # every documented path answers something other than 404/405 on the running apps
    for method, path in sorted(documented):
        concrete = path.replace("{name}", "lab").replace("{id}", MAC).replace("{ref}", "a/b")
        concrete = concrete.replace("{mac}", MAC).replace("{path}", "x")
        base = web.content if "/api/" not in path and path != "/metrics" else web.admin
        answer = request(base, method, concrete, {} if method != "GET" else None)
        assert answer.status not in (405, 500), (method, path, answer.body)
        if answer.status == 404 and answer.headers["content-type"].startswith("application/json"):
            assert "no such path" not in answer.json()["error"], (method, path)
    checked_in = Path(__file__).parents[2] / "docs" / "openapi.json"
    assert json.loads(checked_in.read_text()) == document(), (
        "docs/openapi.json is stale: python3 -m wds.web.openapi > docs/openapi.json"
    )
