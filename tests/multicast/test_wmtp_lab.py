"""Lab tier: sender and receivers as processes in network namespaces on a bridge (LAB.md).

Real multicast across veth and a bridge, independent loss per receiver from nftables, and a
forger on the LAN whose spoofed DATA (valid UDP checksums) must cost a repair, never a bad byte.
"""

from __future__ import annotations

import hashlib
import random
import subprocess
import sys
from pathlib import Path

import pytest
from lab import netns
from lab.fixtures import lab, require_tool, stale_labs_removed  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.lab, pytest.mark.root]

ROOT = Path(__file__).resolve().parents[2]
PORT = 9500


def _group() -> str:
    return f"239.255.{random.randint(1, 254)}.{random.randint(1, 254)}"


def _start_sender(
    ns: netns.Namespace, tmp: Path, image: Path, group: str, *extra: str
) -> tuple[subprocess.Popen[str], str, str]:
    cmd = [sys.executable, "-m", "multicast", "send", str(image), "--key", str(tmp / "m.key")]
    cmd += ["--manifest-out", str(tmp / "manifest"), "--group", group, "--port", str(PORT)]
    cmd += ["--interface", ns.addr(), "--timeout", "90", *extra]
    proc = ns.popen(cmd, text=True, cwd=ROOT)
    assert proc.stdout is not None
    ready = netns.wait_for_line(proc.stdout, r"^ready (\S+) (\S+)$", timeout=60)
    return proc, ready.group(1), ready.group(2)


def _start_receiver(
    ns: netns.Namespace, tmp: Path, fingerprint: str, *extra: str
) -> tuple[subprocess.Popen[str], Path]:
    target = tmp / f"{ns.short}.img"
    cmd = [sys.executable, "-m", "multicast", "receive", str(target), "--manifest"]
    cmd += [str(tmp / "manifest"), "--fingerprint", fingerprint, "--interface", ns.addr()]
    cmd += ["--timeout", "90", *extra]
    return ns.popen(cmd, text=True, cwd=ROOT), target


def _ip_counter(ns: netns.Namespace, name: str) -> int:
    """An ``Ip:`` counter of /proc/net/snmp inside ``ns`` (e.g. FragCreates)."""
    text = ns.run(["cat", "/proc/net/snmp"]).stdout
    rows = [line.split()[1:] for line in text.splitlines() if line.startswith("Ip:")]
    return int(dict(zip(rows[0], rows[1], strict=True))[name])


def _finish(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out + err


@pytest.mark.slow
def test_three_receivers_with_independent_loss(lab: netns.Lab, tmp_path: Path) -> None:  # noqa: F811
    require_tool("nft", "nftables")
    image = tmp_path / "install.wim"
    data = random.Random(1).randbytes(6 * 1024 * 1024 + 4321)
    image.write_bytes(data)
    _, hosts = lab.bridged(["snd", "r1", "r2", "r3"])
    snd, receivers = hosts[0], hosts[1:]
    netns.set_loss(receivers[1], 3)
    netns.set_loss(receivers[2], 8)
    sender, fp, _ = _start_sender(
        snd,
        tmp_path,
        image,
        _group(),
        "--rate-mbps",
        "200",
        "--min-clients",
        "3",
        "--max-wait",
        "30",
        "--linger",
        "0.5",
    )
    started = [_start_receiver(ns, tmp_path, fp) for ns in receivers]
    results = [_finish(proc) for proc, _ in started]
    for (code, log), (_, target) in zip(results, started, strict=True):
        assert code == 0, log
        assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(data).digest()
    code, log = _finish(sender)
    assert code == 0 and "completed=3" in log, log
    assert netns.dropped_by_loss(receivers[2]) > 0  # the loss really happened
    assert "naks=0" not in results[2][1]  # and was repaired through NAKs
    assert _ip_counter(snd, "FragCreates") == 0  # PROTOCOL.md 2: nothing IP-fragmented


@pytest.mark.slow
def test_jumbo_frames_fill_the_mtu_without_fragments(lab: netns.Lab, tmp_path: Path) -> None:  # noqa: F811
    image = tmp_path / "install.wim"
    data = random.Random(3).randbytes(4 * 1024 * 1024 + 5)
    image.write_bytes(data)
    snd, rcv = lab.pair("snd", "rcv", mtu=9000)
    sender, fp, _ = _start_sender(
        snd, tmp_path, image, _group(), "--mtu", "9000", "--linger", "0.3"
    )
    receiver, target = _start_receiver(rcv, tmp_path, fp)
    code, log = _finish(receiver)
    assert code == 0, log
    assert target.read_bytes() == data
    assert _finish(sender)[0] == 0
    assert _ip_counter(snd, "FragCreates") == 0
    assert _ip_counter(rcv, "ReasmReqds") == 0
    # 8944-byte blocks: 4 chunks of 118 blocks and one 5-byte block; 1444-byte ones need 2905
    assert _ip_counter(rcv, "InReceives") < 4 * 118 + 200


FORGER = """
import sys
from scapy.all import IP, UDP, Raw, conf, send
from multicast.codec import DataBlock, build_datagram, parse_manifest
conf.verb = 0
manifest = parse_manifest(open(sys.argv[1], "rb").read())
src, sport = sys.argv[2].split(":")
chunk = 1
packets = []
for block in range(manifest.blocks_in_chunk(chunk)):
    junk = bytes([0xA5]) * manifest.block_length(chunk, block)
    d = DataBlock(manifest.session_id, 7, chunk, block, junk)
    packets.append(
        IP(src=src, dst=manifest.group, ttl=1)
        / UDP(sport=int(sport), dport=manifest.port)
        / Raw(build_datagram(d))
    )
send(packets)  # routed out of eth0 by the lab's 224.0.0.0/4 route
print("forged", len(packets), flush=True)
"""


@pytest.mark.slow
def test_forged_datagrams_cost_a_repair_not_a_bad_byte(lab: netns.Lab, tmp_path: Path) -> None:  # noqa: F811
    image = tmp_path / "install.wim"
    data = random.Random(2).randbytes(3 * 1024 * 1024 + 99)
    image.write_bytes(data)
    _, (snd, r1, evil) = lab.bridged(["snd", "r1", "evil"])
    # scheduled: waits 6 s for a second client that never comes, time for the forger to strike
    sender, fp, addr = _start_sender(
        snd,
        tmp_path,
        image,
        _group(),
        "--min-clients",
        "2",
        "--max-wait",
        "6",
        "--linger",
        "0.5",
    )
    receiver, target = _start_receiver(r1, tmp_path, fp)
    netns.wait_for_line(receiver.stdout, r"^resuming", timeout=30)  # type: ignore[arg-type]
    forged = evil.run([sys.executable, "-c", FORGER, str(tmp_path / "manifest"), addr], timeout=60)
    assert "forged" in forged.stdout, forged.stderr
    code, log = _finish(receiver)
    assert code == 0, log
    assert "rejected=1 " in log, log  # the forged chunk was assembled, failed SHA-256, repaired
    assert target.read_bytes() == data
    assert _finish(sender)[0] == 0


# A minimal HTTP/1.1 range server standing in for wds's HTTP server (not built yet): it serves
# the image at /sessions/image/image, 206 for a single "Range: bytes=a-b", one request per
# connection; bounded by a lifetime so it always ends by itself.
RANGE_SERVER = """
import asyncio, re, sys
data = open(sys.argv[1], "rb").read()
async def handle(reader, writer):
    head = await reader.readuntil(b"\\r\\n\\r\\n")
    m = re.search(rb"Range: bytes=(\\d+)-(\\d+)", head)
    a, b = int(m[1]), int(m[2])
    body = data[a : b + 1]
    writer.write(b"HTTP/1.1 206 Partial Content\\r\\nContent-Range: bytes %d-%d/%d\\r\\n"
                 b"Content-Length: %d\\r\\n\\r\\n" % (a, b, len(data), len(body)) + body)
    await writer.drain()
    writer.close()
async def main():
    server = await asyncio.start_server(handle, sys.argv[2], 0)
    print("http", server.sockets[0].getsockname()[1], flush=True)
    await asyncio.sleep(float(sys.argv[3]))
asyncio.run(main())
"""


@pytest.mark.slow
def test_slow_receiver_moves_to_unicast_and_completes(lab: netns.Lab, tmp_path: Path) -> None:  # noqa: F811
    require_tool("nft", "nftables")
    image = tmp_path / "install.wim"
    data = random.Random(4).randbytes(24 * 1024 * 1024 + 17)
    image.write_bytes(data)
    _, (snd, fast, slow) = lab.bridged(["snd", "fast", "slow"])
    # a receiver with a terrible NIC: 90 % of the DATA it should receive is lost (nft matches the
    # WMTP type byte, 3 bytes into the UDP payload), control datagrams get through
    slow.nft(f"""
table inet {netns.LOSS_TABLE} {{
  chain input {{
    type filter hook input priority -10; policy accept;
    udp dport {PORT} @th,88,8 1 numgen random mod 100 < 90 counter drop
  }}
}}
""")
    http = snd.popen([sys.executable, "-c", RANGE_SERVER, str(image), snd.addr(), "120"], text=True)
    http_port = netns.wait_for_line(http.stdout, r"^http (\d+)$", timeout=30).group(1)  # type: ignore[arg-type]
    sender, fp, _ = _start_sender(
        snd,
        tmp_path,
        image,
        _group(),
        "--rate-mbps",
        "100",
        "--min-goodput-mbps",
        "10",
        "--slow-window",
        "2",
        "--min-clients",
        "2",
        "--max-wait",
        "30",
        "--linger",
        "0.5",
    )
    procs = [_start_receiver(fast, tmp_path, fp)]
    http_url = f"{snd.addr()}:{http_port}/sessions/image/image"
    procs.append(_start_receiver(slow, tmp_path, fp, "--http", http_url))
    results = [_finish(proc) for proc, _ in procs]
    for (code, log), (_, path) in zip(results, procs, strict=True):
        assert code == 0, log
        assert path.read_bytes() == data
    assert "redirected=0" in results[0][1]  # the healthy receiver was not held back
    code, log = _finish(sender)
    assert code == 0 and "MoveToUnicast" in log, log
    assert "redirected=1" in results[1][1], results[1][1]  # it finished over HTTP
    assert netns.dropped_by_loss(slow) > 1000
