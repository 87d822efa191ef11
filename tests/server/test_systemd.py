"""config/wds.service (systemd-analyze verify, sandboxing keys) and journald-ready logs."""

from __future__ import annotations

import io
import logging
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from lab import netns
from lab.fixtures import lab, stale_labs_removed
from wds_testsupport import require_tool

from wds.logs import JournalFormatter, component_of, syslog_priority, under_journal

UNIT = Path(__file__).resolve().parents[2] / "config" / "wds.service"
INSTALLED_WDS = "/usr/local/bin/wds"

__all__ = ["lab", "stale_labs_removed"]  # fixtures used by name below


def unit_keys(text: str) -> dict[str, list[str]]:
    """``Section.Key`` -> values, in order (systemd allows a key more than once)."""
    keys: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        keys.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return keys


def test_unit_has_the_sandboxing_keys() -> None:
    keys = unit_keys(UNIT.read_text())
    expected = {
        "Service.ExecStart": f"{INSTALLED_WDS} serve --config /etc/wds/wds.toml",
        "Service.ExecReload": "/bin/kill -HUP $MAINPID",
        "Service.Type": "exec",  # wds does not speak sd_notify
        "Service.ProtectSystem": "strict",
        "Service.ReadWritePaths": "/var/lib/wds",
        "Service.ProtectHome": "yes",
        "Service.PrivateTmp": "yes",
        "Service.NoNewPrivileges": "yes",
        "Service.SystemCallFilter": "@system-service",
        "Service.AmbientCapabilities": "",
    }
    for key, value in expected.items():
        assert keys.get(key) == [value], key
    capabilities = set(keys["Service.CapabilityBoundingSet"][0].split())
    assert capabilities == {
        "CAP_NET_BIND_SERVICE",
        "CAP_NET_RAW",
        "CAP_SETUID",
        "CAP_SETGID",
        "CAP_CHOWN",
    }
    families = set(keys["Service.RestrictAddressFamilies"][0].split())
    assert families == {"AF_INET", "AF_UNIX", "AF_NETLINK"}
    # the stop timeout leaves room for the default stop_grace of 10 s
    assert int(keys["Service.TimeoutStopSec"][0]) > 10


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    analyze = require_tool("systemd-analyze", "systemd")
    wds = shutil.which("wds") or str(Path(sys.executable).with_name("wds"))
    assert Path(wds).exists(), "the wds console script is not installed"
    # verify checks that ExecStart exists: point it at this checkout's wds, nothing else changes
    unit = tmp_path / "wds.service"
    unit.write_text(UNIT.read_text().replace(INSTALLED_WDS, wds))
    proc = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    noise = [line for line in proc.stderr.splitlines() if str(unit) in line]
    assert noise == [], proc.stderr  # no unknown key, bad value or missing binary
    security = subprocess.run(
        [analyze, "security", "--offline=true", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if "--offline" not in security.stderr:  # systemd >= 250
        assert "Overall exposure level" in security.stdout, security.stderr
        level = float(
            security.stdout.split("Overall exposure level for wds.service:")[1].split()[0]
        )
        assert level <= 3.0, security.stdout


# -- journald-ready logs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "component"),
    [
        ("pxe.dhcp.server", "pxe"),
        ("pxe.tftp.server", "tftp"),
        ("wds.web.boot", "http"),
        ("wds.sessions.manager", "session"),
        ("multicast.sender", "session"),
        ("wds.devices", "devices"),
        ("wds.server", "server"),
        ("wds.webby", "wds"),
        ("root", "wds"),
    ],
)
def test_component_of_logger_names(name: str, component: str) -> None:
    assert component_of(name) == component


def test_journal_format_carries_the_priority_on_every_line() -> None:
    formatter = JournalFormatter("%(message)s")
    record = logging.LogRecord("pxe.tftp.server", logging.WARNING, __file__, 1, "a\nb", (), None)
    assert formatter.format(record) == "<4>wds.tftp: a\n<4>wds.tftp: b"
    levels = [logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL]
    assert [syslog_priority(level) for level in levels] == [7, 6, 4, 3, 2]


def test_under_journal_only_for_the_stream_journald_named(tmp_path: Path) -> None:
    with (tmp_path / "journal").open("w") as stream:
        st = os.fstat(stream.fileno())
        assert under_journal(stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        assert not under_journal(stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"})
        assert not under_journal(stream, {"JOURNAL_STREAM": "garbage"})
        assert not under_journal(stream, {})
    assert not under_journal(io.StringIO(), {"JOURNAL_STREAM": "1:2"})


SCRIPT = """
import logging
from wds.logs import setup_logging
setup_logging(logging.INFO)
logging.getLogger("pxe.tftp.server").warning("transfer of %s failed", "ipxe.efi")
logging.getLogger("wds.web.boot").info("script for %s", "52:54:00:18:00:01")
logging.getLogger("pxe.dhcp.server").debug("not shown at INFO")
try:
    1 / 0
except ZeroDivisionError:
    logging.getLogger("wds.sessions.manager").exception("sender crashed")
"""


def run_logging(tmp_path: Path, *, journal: bool) -> list[str]:
    """Run SCRIPT with stderr to a file (with JOURNAL_STREAM naming it when ``journal``)."""
    path = tmp_path / ("journal" if journal else "plain")
    with path.open("w") as stderr:
        env = dict(os.environ)
        env.pop("JOURNAL_STREAM", None)
        if journal:
            st = os.fstat(stderr.fileno())
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        subprocess.run(
            [sys.executable, "-c", SCRIPT], stderr=stderr, env=env, timeout=60, check=True
        )
    return path.read_text().splitlines()


def test_logs_under_systemd_carry_level_and_component(tmp_path: Path) -> None:
    lines = run_logging(tmp_path, journal=True)
    assert lines[0] == "<4>wds.tftp: transfer of ipxe.efi failed"
    assert lines[1] == "<6>wds.http: script for 52:54:00:18:00:01"
    assert lines[2] == "<3>wds.session: sender crashed"
    # the traceback stays at the record's priority line by line (journald splits on newlines)
    assert len(lines) > 4 and all(line.startswith("<3>wds.session: ") for line in lines[2:])
    assert lines[-1] == "<3>wds.session: ZeroDivisionError: division by zero"


def test_logs_elsewhere_keep_the_human_format(tmp_path: Path) -> None:
    lines = run_logging(tmp_path, journal=False)
    assert " WARNING pxe.tftp.server: transfer of ipxe.efi failed" in lines[0]
    assert not lines[0].startswith("<")


def test_wds_serve_logs_in_the_journal_format(tmp_path: Path) -> None:
    """``wds serve`` itself (wds.cli.main's set-up) under JOURNAL_STREAM, TFTP on loopback."""
    config = tmp_path / "wds.toml"
    config.write_text(
        f"""
[server]
address = "127.0.0.1"
state_dir = "{tmp_path / "state"}"
store = "{tmp_path / "store"}"
[tftp]
port = 0
root = "{tmp_path / "tftp"}"
[pxe]
enabled = false
[http]
enabled = false
"""
    )
    path = tmp_path / "journal"
    with path.open("w") as stderr:
        st = os.fstat(stderr.fileno())
        env = dict(os.environ, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
        proc = subprocess.Popen(
            [sys.executable, "-m", "wds.cli.main", "-v", "serve", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
            text=True,
        )
        try:
            assert proc.stdout is not None
            for _ in range(20):  # bounded: a handful of lines before "ready"
                line = proc.stdout.readline()
                if not line or "wds serve: ready" in line:
                    break
            assert "wds serve: ready" in line, path.read_text()
            proc.terminate()
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    lines = path.read_text().splitlines()
    assert lines, "wds serve logged nothing at -v"
    assert all(line[0] == "<" and line[2:4] == ">w" for line in lines), lines
    assert any(line.startswith("<6>wds.tftp: ") for line in lines), lines


# -- the unit's capabilities are enough ----------------------------------------------------------


@pytest.mark.root
@pytest.mark.lab
def test_unit_capabilities_bind_the_ports_and_drop_to_the_user(
    lab: netns.Lab, tmp_path: Path
) -> None:
    """``wds serve`` with only the unit's bounding set binds 67/4011/69 and becomes ``nobody``.

    Run with ``setpriv`` (the unit's CapabilityBoundingSet and NoNewPrivileges) in a lab
    namespace that has only loopback, so ProxyDHCP on 0.0.0.0:67 answers nobody.
    """
    setpriv = require_tool("setpriv", "util-linux")
    keys = unit_keys(UNIT.read_text())
    caps = [
        c.lower().removeprefix("cap_") for c in keys["Service.CapabilityBoundingSet"][0].split()
    ]
    config = tmp_path / "wds.toml"
    config.write_text(
        f"""
[server]
address = "0.0.0.0"
state_dir = "{tmp_path / "state"}"
store = "{tmp_path / "store"}"
user = "nobody"
stop_grace = 1.0
[tftp]
root = "{tmp_path / "tftp"}"
[http]
admin_address = "127.0.0.1"
"""
    )
    ns = lab.add_namespace("caps")
    proc = ns.popen(
        [
            *(setpriv, "--nnp", "--bounding-set", "-all," + ",".join("+" + c for c in caps)),
            *(sys.executable, "-m", "wds.cli.main", "serve", "--config", str(config)),
        ],
        cwd=UNIT.parents[1],
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines = []
    for _ in range(30):  # bounded: one line per service, then ready
        line = proc.stdout.readline()
        lines.append(line)
        if not line or "wds serve: ready" in line:
            break
    assert "wds serve: ready" in lines[-1], "".join(lines)
    assert any("pxe on" in line for line in lines) and any("tftp on" in line for line in lines)
    # `ip netns exec` and setpriv both exec: the process started is wds itself
    status = Path(f"/proc/{proc.pid}/status").read_text()
    uid = dict(line.split(":", 1) for line in status.splitlines())["Uid"].split()
    assert uid[0] == uid[1] == str(pwd.getpwnam("nobody").pw_uid)
    assert Path(tmp_path / "state").stat().st_uid == pwd.getpwnam("nobody").pw_uid
