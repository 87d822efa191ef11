"""A hypothesis corpus of malformed requests against both apps: never a 500, always a reason.

Paths mix the real route shapes with path tricks (``..``, encoded slashes, NUL, long names),
bodies are random JSON values (right keys with wrong types included) or random bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from webapi_support import Running, request, running_service

SEGMENT = st.one_of(
    st.sampled_from(
        [
            "lab",
            "idle",
            "nope",
            "..",
            ".",
            "%2e%2e",
            "%2F",
            "%00",
            "52:54:00:18:00:01",
            "52-54-00-zz-00-01",
            "4c4c4544-0042-3510-8051-b4c04f4d3232",
            "00000000-0000-0000-0000-000000000000",
            "x" * 300,
            "%ff%fe",
            "a;b",
            "~root",
        ]
    ),
    st.text(
        alphabet="abcdefghijklmnopqrstuvwxyz0123456789-._~:@!$&'()*+,;=%", min_size=0, max_size=20
    ),
)
PREFIX = st.sampled_from(
    [
        "/sessions/{}/manifest",
        "/sessions/{}/image",
        "/sessions/{}/report",
        "/keys/{}",
        "/api/v1/sessions/{}",
        "/api/v1/sessions/{}/start",
        "/api/v1/sessions/{}/stop",
        "/api/v1/sessions",
        "/api/v1/devices/{}",
        "/api/v1/devices/{}/approve",
        "/api/v1/devices/{}/reject",
        "/api/v1/devices/{}/events?limit={}",
        "/api/v1/devices/{}/assign",
        "/api/v1/devices",
        "/api/v1/images/{}/{}",
        "/api/v1/status",
        "/metrics",
        "/{}/{}",
    ]
)
KEYS = [
    "name",
    "image",
    "mode",
    "port",
    "group",
    "rate_mbps",
    "min_clients",
    "device",
    "mac",
    "uuid",
    "status",
    "reason",
    "boot_file",
    "session",
    "bytes",
]
JSON_VALUE = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([10**400, -(10**400), 2**63, -1, 0, 65536])
    | st.floats()
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
BODY = st.one_of(
    st.none(),
    st.binary(max_size=300),
    JSON_VALUE.map(json.dumps),
    st.dictionaries(st.sampled_from(KEYS), JSON_VALUE, max_size=6).map(json.dumps),
)


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    with running_service(tmp) as running:
        running.call(lambda: running.ctx.devices.prestage(mac="52:54:00:18:00:01"))
        yield running


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    method=st.sampled_from(["GET", "POST", "PATCH", "PUT", "DELETE", "HEAD"]),
    template=PREFIX,
    parts=st.lists(SEGMENT, min_size=2, max_size=2),
    body=BODY,
    content_type=st.sampled_from([None, "application/json", "text/plain", "multipart/form-data"]),
)
def test_no_request_gets_a_500(
    web: Running,
    method: str,
    template: str,
    parts: list[str],
    body: Any,
    content_type: str | None,
) -> None:
    path = template.format(*parts)
    base = web.admin if path.startswith(("/api/", "/metrics")) else web.content
    headers = {"Content-Type": content_type} if content_type else {}
    answer = request(base, method, path, body, headers)
    assert answer.status < 500, (method, path, body, answer.body[:300])
    if answer.status >= 400 and method != "HEAD":
        assert answer.json()["error"], (method, path)
