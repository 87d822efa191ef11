"""`wds serve` as a real process, driven only through its ports and the CLI.

* on loopback (free high ports): `wds status`, `wds session list|show|start|stop`,
  `wds device prestage|approve|reject|show` against the running server, the deploy report
  turned into a device event, a corpus of malformed requests (4xx with a reason, never 500),
  and /metrics moving when a TFTP file is fetched;
* in a network namespace (the admin API on a lab address, so it is exposed): refused without the
  token, by curl-like requests and the CLI; and exposed without a token file, the server does
  not start and names http.token_file.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from wds_testsupport import require_tool
from webapi_support import request

MAC = "52:54:00:18:00:2a"
READY = 30.0


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wds_cli(*args: str, ns: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*(ns or []), sys.executable, "-m", "wds.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def make_store(root: Path) -> None:
    """A store with one small real WIM as lab/img (wimlib makes it)."""
    require_tool("wimlib-imagex", "wimtools")
    src = root / "src"
    src.mkdir()
    (src / "file.bin").write_bytes(os.urandom(256 * 1024))
    wim = root / "img.wim"
    subprocess.run(
        ["wimlib-imagex", "capture", str(src), str(wim), "img"], check=True, capture_output=True
    )
    store = str(root / "store")
    done = wds_cli("image", "add", str(wim), "--group", "lab", "--name", "img", "--store", store)
    assert done.returncode == 0, done.stderr


class Serve:
    """One `wds serve` process; killed at the end whatever happens."""

    def __init__(self, config: Path, ns: list[str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [*(ns or []), sys.executable, "-m", "wds.cli.main", "serve", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []

    def wait_ready(self) -> None:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + READY
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            if "wds serve: ready" in line:
                return
        self.kill()
        _, err = self.proc.communicate(timeout=10)
        raise AssertionError(f"not ready: {self.lines} {err[-3000:]}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout=20)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[dict[str, Any]]:
    make_store(tmp_path)
    (tmp_path / "tftp").mkdir()
    (tmp_path / "tftp" / "hello.bin").write_bytes(os.urandom(100_000))
    ports = {
        "http": free_port(),
        "admin": free_port(),
        "tftp": free_port(socket.SOCK_DGRAM),
    }
    tag = os.getpid() % 200 + 20
    config = tmp_path / "wds.toml"
    config.write_text(
        '[server]\naddress = "127.0.0.1"\nstate_dir = "state"\nstore = "store"\nstop_grace = 2\n'
        f'[tftp]\nport = {ports["tftp"]}\nroot = "tftp"\n'
        "[pxe]\nenabled = false\n"
        f"[http]\nport = {ports['http']}\nadmin_port = {ports['admin']}\n"
        f'[multicast]\ngroup_pool = "239.{tag}.9.0/24"\n'
        f'port_pool = "{40000 + tag * 50}-{40000 + tag * 50 + 49}"\n'
        '[[session]]\nname = "web"\nimage = "lab/img"\nmode = "scheduled"\nmin_clients = 5\n'
    )
    server = Serve(config)
    try:
        server.wait_ready()
        yield {
            "config": config,
            "ports": ports,
            "admin": f"http://127.0.0.1:{ports['admin']}",
            "content": f"http://127.0.0.1:{ports['http']}",
            "tmp": tmp_path,
        }
        assert server.stop() == 0
    finally:
        server.kill()


def metrics(admin: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = request(admin, "GET", "/metrics")
    assert answer.status == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(answer.body.decode())
        for s in family.samples
    }


def test_cli_drives_the_running_server(served: dict[str, Any]) -> None:
    cfg = ("--config", str(served["config"]))
    status = wds_cli("status", *cfg)
    assert status.returncode == 0, status.stderr
    assert "sessions:    1 " in status.stdout and "no token" in status.stdout
    listed = wds_cli("session", "list", *cfg)
    assert listed.returncode == 0 and "web " in listed.stdout and "lab/img" in listed.stdout
    shown = wds_cli("session", "show", "web", *cfg)
    assert shown.returncode == 0 and "name:       web" in shown.stdout
    assert "mode:       scheduled (config)" in shown.stdout
    started = wds_cli("session", "start", "web", *cfg)
    # started: the sender is being set up (idle) or already sending
    assert started.returncode == 0, started.stderr
    assert started.stdout in ("web: idle\n", "web: running\n")
    stopped = wds_cli("session", "stop", "web", *cfg)
    assert stopped.returncode == 0 and stopped.stdout == "web: stopped\n", stopped.stderr
    missing = wds_cli("session", "start", "nope", *cfg)
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1

    images = request(served["admin"], "GET", "/api/v1/images").json()["images"]
    assert [i["ref"] for i in images] == ["lab/img"]
    image = request(served["admin"], "GET", "/api/v1/images/lab/img:1")
    assert image.status == 200 and image.json()["images"][0]["name"] == "img"
    assert request(served["admin"], "GET", "/api/v1/images/lab/img:7").status == 404
    # wds image list against the running server: the same listing through its admin API
    url = served["admin"]
    remote = wds_cli("image", "list", "--server", url, "--json")
    assert remote.returncode == 0, remote.stderr
    assert [i["ref"] for i in json.loads(remote.stdout)] == ["lab/img"]
    table = wds_cli("image", "list", "--server", url)
    assert f"image store of the server at {url}" in table.stdout and "lab/img" in table.stdout
    gone = wds_cli("image", "list", "--server", "http://127.0.0.1:1")
    assert gone.returncode == 1 and gone.stderr.count("\n") == 1, gone.stderr

    pre = wds_cli("-v", "device", "prestage", MAC, "--image", "lab/img", *cfg)
    assert pre.returncode == 0 and pre.stdout == f"{MAC}: prestaged\n"
    assert "through the admin API" in pre.stderr
    assert wds_cli("device", "reject", MAC, *cfg).stdout == f"{MAC}: rejected\n"
    assert wds_cli("device", "approve", MAC, *cfg).stdout == f"{MAC}: approved\n"
    report = {"device": MAC, "status": "failed", "reason": "no disk", "session": "web"}
    answer = request(served["content"], "POST", "/sessions/web/report", report)
    assert answer.status == 200, answer.body
    show = wds_cli("device", "show", MAC, *cfg)
    assert show.returncode == 0 and "state:      approved" in show.stdout
    assert "failed     session web failed (no disk)" in show.stdout


MALFORMED: list[tuple[str, str, str, Any]] = [
    ("admin", "POST", "/api/v1/sessions", "{bad json"),
    ("admin", "POST", "/api/v1/sessions", {"name": "x", "image": "lab/img", "port": "80"}),
    ("admin", "POST", "/api/v1/sessions", {"name": "x", "image": "no such"}),
    ("admin", "POST", "/api/v1/sessions", {"name": "web", "image": "lab/img"}),
    ("admin", "POST", "/api/v1/sessions", {"name": "y", "image": "lab/none"}),
    ("admin", "POST", "/api/v1/sessions", "[" + "1," * 50_000 + "1]"),
    ("admin", "GET", "/api/v1/sessions/unknown", None),
    ("admin", "POST", "/api/v1/sessions/unknown/start", None),
    ("admin", "GET", "/api/v1/devices/52:54:00:zz:00:01", None),
    ("admin", "POST", "/api/v1/devices", {"device": "52:54", "image": 5}),
    ("admin", "PATCH", "/api/v1/devices/52:54:00:00:00:09", {"image": "x"}),
    ("admin", "GET", "/api/v1/images/../../etc/passwd", None),
    ("admin", "GET", "/api/v1/%2e%2e/%2e%2e/etc/passwd", None),
    ("admin", "DELETE", "/api/v1/status", None),
    ("content", "GET", "/sessions/unknown/manifest", None),
    ("content", "GET", "/sessions/..%2F..%2Fetc%2Fpasswd/image", None),
    ("content", "GET", "/boot/../../etc/passwd", None),
    ("content", "POST", "/sessions/web/report", {"device": "not-a-mac", "status": "verified"}),
    ("content", "POST", "/sessions/web/report", "\xff\xfe"),
]


def test_malformed_requests_are_4xx_with_a_reason(served: dict[str, Any]) -> None:
    for base, method, path, body in MALFORMED:
        answer = request(served[base], method, path, body)
        assert 400 <= answer.status < 500, (method, path, answer.status, answer.body[:200])
        if answer.headers.get("content-type", "").startswith("application/json"):
            assert answer.json()["error"], (method, path)
        else:  # the boot routes answer plain text
            assert answer.body.strip(), (method, path)


def test_metrics_move_when_a_tftp_file_is_fetched(served: dict[str, Any]) -> None:
    import tftpy

    before = metrics(served["admin"])
    completed = ("wds_tftp_transfers_total", (("result", "completed"),))
    assert sum(v for (name, _), v in before.items() if name == "wds_sessions") == 1
    client = tftpy.TftpClient("127.0.0.1", served["ports"]["tftp"])
    client.download("hello.bin", str(served["tmp"] / "got.bin"), timeout=5)
    deadline = time.monotonic() + 10
    after = metrics(served["admin"])
    while after[completed] == before[completed] and time.monotonic() < deadline:
        time.sleep(0.1)
        after = metrics(served["admin"])
    assert after[completed] == before[completed] + 1
    sent = ("wds_tftp_sent_bytes_total", ())
    assert after[sent] == before[sent] + 100_000


# -- exposed: the admin API on a lab address in a namespace ----------------------------------


@pytest.mark.root
@pytest.mark.lab
def test_exposed_admin_api_needs_the_token(tmp_path: Path) -> None:
    from lab import netns
    from lab.fixtures import require_root

    require_root()
    with netns.lab() as lab:
        srv, cli = lab.pair("srv", "cli")
        address = srv.addr()
        admin, http = free_port(), free_port()
        base = (
            f'[server]\naddress = "{address}"\nstate_dir = "state"\nstore = "store"\n'
            "[tftp]\nenabled = false\n[pxe]\nenabled = false\n"
            f'[http]\nport = {http}\nadmin_address = "{address}"\nadmin_port = {admin}\n'
        )
        bare = tmp_path / "bare.toml"
        bare.write_text(base)
        refused = srv.run(
            [sys.executable, "-m", "wds.cli.main", "serve", "--config", str(bare)], check=False
        )
        assert refused.returncode == 1 and "http.token_file" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr
        token = tmp_path / "admin.token"
        token.write_text("0123456789abcdef\n")
        token.chmod(0o600)
        config = tmp_path / "wds.toml"
        config.write_text(base.replace("[http]\n", f'[http]\ntoken_file = "{token}"\n'))
        server = Serve(config, ns=["ip", "netns", "exec", srv.name])
        try:
            server.wait_ready()
            url = f"http://{address}:{admin}"
            probe = (
                "import sys, urllib.request, urllib.error\n"
                "req = urllib.request.Request(sys.argv[1], headers=dict([sys.argv[2:4]]) "
                "if len(sys.argv) > 3 else {})\n"
                "try:\n    print(urllib.request.urlopen(req, timeout=5).status)\n"
                "except urllib.error.HTTPError as e:\n    print(e.code, e.read().decode())\n"
            )
            in_cli = ["ip", "netns", "exec", cli.name, sys.executable, "-c", probe]
            for path in ("/api/v1/status", "/api/v1/devices", "/metrics"):
                out = subprocess.run(
                    [*in_cli, url + path], capture_output=True, text=True, timeout=30
                ).stdout
                assert out.startswith("401 ") and "token_file" in out, (path, out)
            bearer = ["Authorization", "Bearer 0123456789abcdef"]
            out = subprocess.run(
                [*in_cli, url + "/api/v1/status", *bearer],
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout
            assert out.strip() == "200"
            ns = ["ip", "netns", "exec", cli.name]
            no_token = wds_cli("status", "--server", url, ns=ns)
            assert no_token.returncode == 1 and "refused no token" in no_token.stderr
            good = wds_cli("status", "--server", url, "--token-file", str(token), ns=ns)
            assert good.returncode == 0 and "token required" in good.stdout, good.stderr
            content = subprocess.run(
                [*in_cli, f"http://{address}:{http}/sessions/none/manifest"],
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout
            assert content.startswith("404 "), content  # content: no token, just not there
            assert server.stop() == 0
        finally:
            server.kill()
