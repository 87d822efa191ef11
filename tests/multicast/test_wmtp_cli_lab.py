"""Lab tier, the whole CLI: `wds send` and eight `wds receive` in network namespaces (LAB.md).

One session on a bridge: a tbf-shaped sender link, 5 % independent nftables loss at every
receiver, an attacker host that sniffs the session and injects forged DATA with valid UDP
checksums (scapy) and serves a forged manifest, a receiver SIGKILLed halfway that resumes, and one
that joins after the session began. Everything must end sha256-identical to the source.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lab import netns
from lab.fixtures import lab, stale_labs_removed  # noqa: F401  (fixtures)
from wds_testsupport import require, require_tool

pytestmark = [pytest.mark.lab, pytest.mark.root, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024
SIZE = 32 * MiB + 4321
CHUNKS = (SIZE + MiB - 1) // MiB
FORGED = (CHUNKS - 3, CHUNKS - 2, CHUNKS - 1)  # ahead of the carousel: forged copies come first
HTTP_PORT = 8080
GROUP_PORT = 9500

# The attacker: learns the sender's address from one ANNOUNCE (the group is flooded to every
# port), then spoofs it. Bounded: one sniff with a timeout, one burst of len(FORGED) chunks.
FORGER = """
import sys
from scapy.all import IP, UDP, Raw, conf, send, sniff
from multicast.codec import DataBlock, build_datagram, parse_manifest
conf.verb = 0
manifest = parse_manifest(open(sys.argv[1], "rb").read())
seen = sniff(iface="eth0", filter=f"udp and dst host {manifest.group}", count=1, timeout=20)
src, sport = seen[0][IP].src, seen[0][UDP].sport
packets = []
for chunk in map(int, sys.argv[2].split(",")):
    for block in range(manifest.blocks_in_chunk(chunk)):
        junk = bytes([0x5A]) * manifest.block_length(chunk, block)
        d = DataBlock(manifest.session_id, 7, chunk, block, junk)
        packets.append(IP(src=src, dst=manifest.group, ttl=1)
                       / UDP(sport=sport, dport=manifest.port) / Raw(build_datagram(d)))
send(packets)  # routed out of eth0 by the lab's 224.0.0.0/4 route
print("forged", len(packets), "as", src, sport, flush=True)
"""

# The attacker's HTTP server: a manifest for the same session, altered and re-signed with its own
# key (and one altered but left with the real key and signature). Lives at most argv[4] seconds.
EVIL_HTTP = """
import dataclasses, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multicast import keys
from multicast.codec import build_manifest, parse_manifest
from multicast.manifest import sign_manifest
real = open(sys.argv[1], "rb").read()
m = parse_manifest(real)
evil_hashes = (bytes(32),) + m.chunk_sha256[1:]
resigned = build_manifest(sign_manifest(dataclasses.replace(m, chunk_sha256=evil_hashes),
                                        keys.generate_key()))
tampered = bytearray(real); tampered[100] ^= 1
pages = {f"/sessions/{m.name}/manifest": resigned, "/sessions/tampered/manifest": bytes(tampered)}
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = pages.get(self.path)
        self.send_response(200 if body else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")
    def log_message(self, *a): pass
srv = ThreadingHTTPServer((sys.argv[2], int(sys.argv[3])), H)
threading.Thread(target=srv.serve_forever, daemon=True).start()
print("evil http", flush=True)
time.sleep(float(sys.argv[4]))
"""


def _bits(path: Path) -> int:
    try:
        return sum(bin(b).count("1") for b in path.read_bytes()[16:])
    except OSError:
        return 0


def _wait(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _summary(proc: subprocess.Popen[str], timeout: float = 150) -> tuple[int, dict[str, object]]:
    out, err = proc.communicate(timeout=timeout)
    lines = out.strip().splitlines()
    assert lines, err
    return proc.returncode, json.loads(lines[-1])


def test_eight_receivers_loss_forgery_kill_resume_late_join(lab: netns.Lab, tmp_path: Path) -> None:  # noqa: F811
    require_tool("nft", "nftables")
    require_tool("tc", "iproute2")
    try:
        import scapy  # noqa: F401
    except ImportError:
        require(False, "scapy not installed (pip install scapy)")
    data = random.Random(8).randbytes(SIZE)
    image = tmp_path / "install.wim"
    image.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    names = [f"r{i}" for i in range(1, 9)]
    _, hosts = lab.bridged(["snd", *names, "evil"])
    snd, receivers, evil = hosts[0], hosts[1:9], hosts[9]
    netns.set_rate(snd, "eth0", "200mbit")
    for ns in receivers:
        netns.set_loss(ns, 5)
    subprocess.run(["wds", "keygen", "--out", str(tmp_path / "k")], check=True, capture_output=True)
    pub = str(tmp_path / "k" / "manifest.pub")
    group = f"239.254.{random.randint(1, 254)}.{os.getpid() % 250 + 1}"
    send = ["wds", "send", str(image), "--session", "lab", "--listen", snd.addr()]
    send += ["--port", str(HTTP_PORT), "--interface", snd.addr(), "--group", group]
    send += ["--group-port", str(GROUP_PORT), "--key", str(tmp_path / "k" / "manifest.key")]
    send += ["--rate", "150mbit", "--min-clients", "8", "--max-wait", "7", "--linger", "1"]
    sender = snd.popen([*send, "--timeout", "150"], text=True)
    netns.wait_for_line(sender.stdout, r"^wds send: session lab", timeout=30)
    server = f"{snd.addr()}:{HTTP_PORT}"
    # what any LAN host can fetch (the test host reaches no namespace: fetch from inside one)
    fetched = evil.run(
        [sys.executable, "-c", "import sys, urllib.request as u; "
         "print(u.urlopen(sys.argv[1]).read().hex())", f"http://{server}/sessions/lab/manifest"],
    ).stdout  # fmt: skip
    (tmp_path / "manifest").write_bytes(bytes.fromhex(fetched.strip()))
    forger = evil.popen(
        [sys.executable, "-c", FORGER, str(tmp_path / "manifest"), ",".join(map(str, FORGED))],
        text=True,
        cwd=ROOT,
    )

    def receive(ns: netns.Namespace, out: Path, *extra: str) -> subprocess.Popen[str]:
        cmd = ["wds", "receive", "--server", server, "--session", "lab", "--out", str(out)]
        return ns.popen([*cmd, "--pubkey", pub, "--json", "--timeout", "150", *extra], text=True)

    outs = [tmp_path / f"{ns.short}.img" for ns in receivers]
    procs = {i: receive(ns, outs[i]) for i, ns in enumerate(receivers[:7])}
    for i in range(7):  # each has verified the manifest and is listening
        _wait(lambda i=i: outs[i].with_name(outs[i].name + ".wds-partial").exists(), 30, "start")
    time.sleep(1.0)
    # ... the forger, sniffing since before, strikes while the sender waits for an 8th receiver
    forged_out, forged_err = forger.communicate(timeout=60)
    assert forged_out.startswith("forged"), forged_err

    # r7 is killed (SIGKILL) at about half, then run again: it must resume
    bitmap7 = outs[6].with_name(outs[6].name + ".wds-bitmap")
    _wait(lambda: _bits(bitmap7) >= CHUNKS // 2, 90, "r7 at 50 %")
    os.killpg(procs[6].pid, signal.SIGKILL)
    procs[6].wait(timeout=10)
    had = _bits(bitmap7)
    procs[6] = receive(receivers[6], outs[6])
    # r8 joins a session that is already running
    procs[7] = receive(receivers[7], outs[7])

    # a receiver pointed at the attacker's HTTP server, with the real key pinned, refuses
    evil_http = evil.popen(
        [sys.executable, "-c", EVIL_HTTP, str(tmp_path / "manifest"), evil.addr(), "8080", "60"],
        text=True,
        cwd=ROOT,
    )
    netns.wait_for_line(evil_http.stdout, r"^evil http", timeout=30)
    refused = []
    for session in ("lab", "tampered"):
        cmd = ["wds", "receive", "--server", f"{evil.addr()}:8080", "--session", session]
        cmd += ["--out", str(tmp_path / f"evil-{session}.img"), "--pubkey", pub, "--json"]
        refused.append(_summary(receivers[0].popen(cmd, text=True), timeout=60))

    results = {i: _summary(p) for i, p in procs.items()}
    sent, _ = sender.communicate(timeout=60)
    for i, (code, result) in sorted(results.items()):
        assert code == 0 and result["verified"] is True, (i, result)
        assert netns.sha256_file(outs[i]) == digest
    for i in range(6):  # present when the forger struck: every forged chunk rejected, repaired
        result = results[i][1]
        assert result["chunks_rejected"] == len(FORGED), (i, result)
        assert result["chunks_repaired"] >= len(FORGED), (i, result)
        assert netns.dropped_by_loss(receivers[i]) > 0
    resumed = results[6][1]
    assert resumed["chunks_resumed"] >= had >= CHUNKS // 2, resumed
    assert resumed["chunks_received"] == CHUNKS - resumed["chunks_resumed"], resumed  # type: ignore[operator]
    assert results[7][1]["chunks_received"] == CHUNKS
    for code, result in refused:
        assert code == 3 and result["verified"] is False, result
    assert "different key" in str(refused[0][1]["failure"])
    assert "signature" in str(refused[1][1]["failure"])
    assert not any(tmp_path.glob("evil-*"))
    assert sender.returncode == 0, sent
