"""SIGTERM, SIGHUP and the privilege drop of a real `wds serve` process (loopback only)."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from serve_support import Lab, Receiver, Server, add_image, lab, make_wim, session_toml, sha256
from wds_testsupport import require

__all__ = ["lab"]


def _wait_progress(server: Server, name: str, chunks: int, timeout: float = 20.0) -> dict[str, Any]:
    """Until some receiver of ``name`` has verified ``chunks`` chunks; that receiver's status."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for r in server.session(name)["receivers"]:
            if r["verified_chunks"] >= chunks:
                return dict(r)
        time.sleep(0.05)
    raise AssertionError(f"no progress in session {name}: {server.session(name)}")


def test_sigterm_mid_transfer_then_receivers_resume_on_the_restarted_server(
    lab: Lab, tmp_path: Path
) -> None:
    wim = make_wim(tmp_path, mib=8)
    add_image(lab.store, wim, "lab", "big")
    lab.write_config(session_toml("res", "lab/big", rate_mbps=12), stop_grace=0)
    server = Server(lab).ready()
    server.wait_line(r"session res on ")
    manifest = server.manifest("res")
    outs = [tmp_path / "r1.wim", tmp_path / "r2.wim"]
    first = [Receiver(server, "res", out, "--sender-timeout", "1") for out in outs]
    progress = _wait_progress(server, "res", 2)
    assert progress["state"] == "joined" and progress["rate_bps"] > 0, progress
    assert progress["eta_s"] is not None and progress["eta_s"] > 0, progress
    assert server.session("res")["state"] == "running"
    assert server.stop(timeout=15) == 0  # grace 0: the transfer is cut short, exit 0 anyway
    assert "resume after a restart" in server.errors()
    cut = [r.result() for r in first]
    for summary in cut:  # the sender fell silent, the HTTP top-up found no server
        assert summary["verified"] is False and summary["exit"] == 1, summary
        assert not Path(str(summary["out"])).exists()

    again = Server(lab).ready()
    again.wait_line(r"session res on ")
    assert again.manifest("res") == manifest  # byte-identical: same id, key, group, port
    assert "hashing" not in again.errors()  # the chunk hashes came from the cache
    second = [Receiver(again, "res", out).result() for out in outs]
    for before, after in zip(cut, second, strict=True):
        assert after["verified"] is True, after
        assert after["chunks_resumed"] >= 2 and after["chunks_resumed"] >= before["chunks_received"]
        # nothing verified before the restart was fetched again
        assert after["chunks_received"] == after["chunks"] - after["chunks_resumed"], after
    assert {sha256(out) for out in outs} == {sha256(wim)}
    assert again.stop() == 0


def test_sigterm_lets_a_running_transfer_finish_within_the_grace(lab: Lab, tmp_path: Path) -> None:
    wim = make_wim(tmp_path, mib=4)
    add_image(lab.store, wim, "lab", "one")
    lab.write_config(session_toml("g", "lab/one", rate_mbps=16), stop_grace=30)
    server = Server(lab).ready()
    server.wait_line(r"session g on ")
    receiver = Receiver(server, "g", tmp_path / "g.wim")
    _wait_progress(server, "g", 1)
    server.signal(signal.SIGTERM)
    summary = receiver.result()
    assert summary["verified"] is True and summary["chunks_unicast"] == 0, summary
    assert server.proc.wait(timeout=15) == 0
    assert "Traceback" not in server.errors()


def test_a_second_sigterm_ends_the_grace_at_once(lab: Lab, tmp_path: Path) -> None:
    wim = make_wim(tmp_path, mib=6)
    add_image(lab.store, wim, "lab", "one")
    lab.write_config(session_toml("g2", "lab/one", rate_mbps=8), stop_grace=120)
    server = Server(lab).ready()
    server.wait_line(r"session g2 on ")
    receiver = Receiver(server, "g2", tmp_path / "g2.wim", "--sender-timeout", "1")
    _wait_progress(server, "g2", 1)
    server.signal(signal.SIGTERM)
    time.sleep(0.5)
    assert server.proc.poll() is None  # within its grace, the transfer runs on
    server.signal(signal.SIGTERM)
    assert server.proc.wait(timeout=10) == 0
    assert receiver.result()["verified"] is False  # cut short: it resumes later


def test_sighup_changes_the_session_list_without_dropping_a_transfer(
    lab: Lab, tmp_path: Path
) -> None:
    wim = make_wim(tmp_path, mib=6)
    add_image(lab.store, wim, "lab", "one")
    lab.write_config(session_toml("old", "lab/one", rate_mbps=12))
    server = Server(lab).ready()
    server.wait_line(r"session old on ")
    running = Receiver(server, "old", tmp_path / "old.wim", "--sender-timeout", "3")
    _wait_progress(server, "old", 1)
    # "old" removed, "new" added, [multicast] changed (needs a restart), log_level applies
    lab.write_config(
        "ttl = 2\n" + session_toml("new", "lab/one"), server_extra='log_level = "debug"\n'
    )
    server.signal(signal.SIGHUP)
    server.wait_line(r"session new on ")
    assert server.session("old")["state"] == "running"  # kept until its transfer is done
    summary = running.result()
    assert summary["verified"] is True and summary["chunks_unicast"] == 0, summary
    late = Receiver(server, "new", tmp_path / "new.wim").result()
    assert late["verified"] is True
    assert sha256(tmp_path / "old.wim") == sha256(tmp_path / "new.wim") == sha256(wim)
    deadline = time.monotonic() + 15
    while server.api("GET", "/api/v1/sessions/old")[0] != 404:  # gone once idle
        assert time.monotonic() < deadline, server.session("old")
        time.sleep(0.1)
    # a broken config is refused on one line; the running config stays
    lab.config.write_text("[server\n")
    server.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "reload refused" not in server.errors():
        assert time.monotonic() < deadline and server.proc.poll() is None, server.errors()
        time.sleep(0.1)
    assert server.session("new")["state"] in ("idle", "running", "finished")
    assert server.stop() == 0
    err = server.errors()
    assert "[multicast] changed; that needs a restart" in err
    assert "log_level is now debug" in err and "Traceback" not in err
    refused = [line for line in err.splitlines() if "reload refused" in line]
    assert len(refused) == 1 and "not valid TOML" in refused[0]


def test_unknown_user_is_refused_before_anything_binds(lab: Lab) -> None:
    lab.write_config("", server_extra='user = "wds-no-such-user"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "wds.cli.main", "serve", "--config", str(lab.config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert "server.user" in proc.stderr and "wds-no-such-user" in proc.stderr
    assert "Traceback" not in proc.stderr and "ready" not in proc.stdout


@pytest.fixture
def open_lab() -> Lab:
    """A lab under a directory other users can enter (pytest's tmp dirs are 0700 root)."""
    root = Path(tempfile.mkdtemp(prefix="wds-serve-user-"))
    root.chmod(0o755)
    the_lab = Lab(root)
    yield the_lab  # type: ignore[misc]
    the_lab.kill_all()
    shutil.rmtree(root, ignore_errors=True)


def test_privileges_dropped_to_nobody_after_binding(open_lab: Lab) -> None:
    require(os.geteuid() == 0, "dropping privileges needs root")
    lab = open_lab
    wim = make_wim(lab.root, mib=2)
    add_image(lab.store, wim, "lab", "one")
    lab.write_config(session_toml("u", "lab/one"), server_extra='user = "nobody"\n')
    server = Server(lab).ready()
    server.wait_line(r"session u on ")
    nobody = pwd.getpwnam("nobody")
    status = Path(f"/proc/{server.proc.pid}/status").read_text()
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    assert uids == [str(nobody.pw_uid)] * 4, status
    assert (lab.root / "state" / "manifest.key").stat().st_uid == nobody.pw_uid
    summary = Receiver(server, "u", lab.root / "u.wim").result()
    assert summary["verified"] is True, summary
    assert server.stop() == 0
    assert "Traceback" not in server.errors()
