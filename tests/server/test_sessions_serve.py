"""Multicast sessions of a real `wds serve` process, driven through its ports only.

Receivers are `wds receive` processes on loopback; the session state comes from the admin API.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

from serve_support import (
    Lab,
    Receiver,
    Server,
    add_image,
    free_port,
    lab,
    make_wim,
    session_toml,
    sha256,
)

__all__ = ["lab"]


def test_auto_session_deploys_one_image_to_three_receivers(lab: Lab, tmp_path: Path) -> None:
    wim = make_wim(tmp_path, mib=4)
    add_image(lab.store, wim, "lab", "one")
    lab.write_config(session_toml("auto1", "lab/one"))
    server = Server(lab).ready()
    server.wait_line(r"session auto1 on 239\.\d+\.7\.\d+:\d+ \(auto, lab/one")
    assert server.session("auto1")["state"] == "idle"  # ready, waiting for a first client
    outs = [tmp_path / f"out{i}.wim" for i in range(3)]
    results = [r.result() for r in [Receiver(server, "auto1", out) for out in outs]]
    for summary in results:
        assert summary["verified"] is True, summary
        assert summary["chunks_multicast"] == summary["chunks"], summary
    assert {sha256(out) for out in outs} == {sha256(wim)}
    status = server.wait_state("auto1", ("idle",))  # re-armed for the next clients
    done = [r for r in status["receivers"] if r["state"] == "done"]
    assert len(done) == 3 and all(r["verified_chunks"] == r["chunks"] for r in done)
    # WDS Auto-Cast: a later client gets the image from a fresh sender
    late = Receiver(server, "auto1", tmp_path / "late.wim").result()
    assert late["verified"] is True and sha256(tmp_path / "late.wim") == sha256(wim)
    assert server.stop() == 0
    assert "Traceback" not in server.errors()


def test_scheduled_session_waits_for_min_clients_then_runs(lab: Lab, tmp_path: Path) -> None:
    wim = make_wim(tmp_path, mib=2)
    add_image(lab.store, wim, "lab", "one")
    lab.write_config(session_toml("sched", "lab/one", mode="scheduled", min_clients=2))
    server = Server(lab).ready()
    server.wait_line(r"session sched on ")
    first = Receiver(server, "sched", tmp_path / "a.wim")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # the first receiver has joined, the sender waits
        status = server.session("sched")
        if status["receivers"]:
            break
        time.sleep(0.1)
    time.sleep(1.0)
    status = server.session("sched")
    assert status["state"] == "waiting" and "2 clients" in status["message"], status
    assert first.proc.poll() is None  # still waiting with it
    second = Receiver(server, "sched", tmp_path / "b.wim")
    for r in (first.result(), second.result()):
        assert r["verified"] is True and r["chunks_multicast"] == r["chunks"], r
    assert sha256(tmp_path / "a.wim") == sha256(tmp_path / "b.wim") == sha256(wim)
    assert server.wait_state("sched", ("finished",))["state"] == "finished"
    assert server.stop() == 0


def _cli(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wds.cli.main", *args, "--config", str(lab.config), "--json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_session_created_stopped_and_started_at_run_time(lab: Lab, tmp_path: Path) -> None:
    wim = make_wim(tmp_path, mib=2, images=2)
    add_image(lab.store, wim, "lab", "two")
    lab.write_config("")
    server = Server(lab).ready()
    assert server.api("GET", "/api/v1/sessions") == (200, {"sessions": []})
    spec = {"name": "rt", "image": "lab/two:2", "rate_mbps": 200, "min_goodput_mbps": 0}
    code, body = server.api("POST", "/api/v1/sessions", spec)
    assert code == 201 and body["origin"] == "runtime", body
    assert server.api("POST", "/api/v1/sessions", spec)[0] == 409  # the name exists
    missing = {"name": "rt2", "image": "lab/nothing"}
    code, body = server.api("POST", "/api/v1/sessions", missing)
    assert code == 400 and "lab/nothing" in body["error"], body
    server.wait_line(r"session rt on ")
    stopped = _cli(lab, "session", "stop", "rt")  # the CLI over the admin API
    assert stopped.returncode == 0 and json.loads(stopped.stdout)["state"] == "stopped"
    again = _cli(lab, "session", "stop", "rt")
    assert again.returncode != 0 and "Traceback" not in again.stderr
    assert "nothing to stop" in again.stderr, again.stderr
    started = _cli(lab, "session", "start", "rt")
    assert started.returncode == 0 and json.loads(started.stdout)["state"] == "idle"
    out = tmp_path / "rt.wim"
    summary = Receiver(server, "rt", out).result()
    assert summary["verified"] is True, summary
    # image 2 of a two-image WIM: exported once under the state directory and streamed
    exported = list((lab.root / "state" / "exports").glob("*.wim"))
    assert len(exported) == 1 and sha256(out) == sha256(exported[0])
    info = subprocess.run(
        ["wimlib-imagex", "info", str(out)], capture_output=True, text=True, check=True
    ).stdout
    assert re.search(r"Image Count:\s+1\n", info) and re.search(r"Name:\s+img2\n", info), info
    assert server.stop() == 0


def _dhcp_request(port: int, mac: str, address: str) -> None:
    """A client's DHCPREQUEST naming the address it takes (what ProxyDHCP learns IP->MAC from)."""
    from pxe.dhcp.codec import BootpOp, DhcpOption, DhcpPacket, build_packet

    request = DhcpPacket(
        op=BootpOp.BOOTREQUEST,
        xid=0x5E55,
        chaddr=bytes.fromhex(mac.replace(":", "")) + bytes(10),
        options=(DhcpOption(53, b"\x03"), DhcpOption(50, socket.inet_aton(address))),
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(build_packet(request), ("127.0.0.1", port))


def test_session_receivers_become_device_events(lab: Lab, tmp_path: Path) -> None:
    mac = "52:54:00:5e:55:01"
    wim = make_wim(tmp_path, mib=2)
    add_image(lab.store, wim, "lab", "one")
    dhcp_port = free_port(socket.SOCK_DGRAM)
    lab.write_config(
        session_toml("dev", "lab/one"), pxe_ports=(dhcp_port, free_port(socket.SOCK_DGRAM))
    )
    server = Server(lab).ready()
    server.wait_line(r"session dev on ")
    admin = f"http://127.0.0.1:{lab.admin_port}"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "wds.cli.main",
            "device",
            "prestage",
            mac,
            "--session",
            "dev",
            "--server",
            admin,
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    _dhcp_request(dhcp_port, mac, "127.0.0.1")  # the device takes 127.0.0.1
    summary = Receiver(server, "dev", tmp_path / "dev.wim").result()
    assert summary["verified"] is True, summary
    (rx,) = server.session("dev")["receivers"]
    assert rx["device"] == mac and rx["state"] == "done"
    code, body = server.api("GET", f"/api/v1/devices/{mac}/events")
    assert code == 200, body
    kinds = [(e["kind"], e["detail"]) for e in body["events"]]
    assert ("joined", "session dev") in kinds, kinds
    assert ("finished", "session dev: image verified") in kinds, kinds
    assert server.stop() == 0
