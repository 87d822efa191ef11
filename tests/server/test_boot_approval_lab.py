"""Device approval changes what a pending client is told: `wds serve` as a real process in a lab.

Two namespaces joined by a veth pair (LAB.md): ``srv`` runs ``wds serve`` with
``[pxe] record_pending = true`` on the real DHCP ports 67/4011 (clients broadcast to them), TFTP
on 69 and HTTP on 8080 inside its own namespace; ``cli`` is the machine. Driven only through the
ports and the ``wds device`` CLI (run inside ``srv``, where the admin API listens on loopback):

1. the client's DISCOVER gets no answer: it is recorded as pending;
2. its DHCPREQUEST (option 50) teaches the server its address, so its TFTP fetch of the boot
   file is put down to it; its iPXE script says "waiting for approval";
3. ``wds device approve MAC`` -> the next DISCOVER is answered with the boot file; the script
   now says there is no session to join (boot from the disk);
4. ``wds device prestage MAC --session lab`` -> the script boots the deploy environment with the
   server, the session, the key fingerprint, the device and the target on the kernel line;
5. ``wds device show MAC --json`` shows the history: boot-file, script, booted, script...
"""

from __future__ import annotations

import json
import subprocess
import sys
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from lab import netns
from lab.fixtures import lab, stale_labs_removed
from serve_support import add_image, make_wim
from wds_testsupport import require_tool

from pxe.dhcp.codec import BootpOp, DhcpOption, DhcpPacket, build_packet, parse_packet

__all__ = ["lab", "stale_labs_removed"]  # fixtures used by name below

ROOT = Path(__file__).resolve().parents[2]
MAC = "52:54:00:18:00:42"
HTTP_PORT = 8080
ADMIN_PORT = 8081
BOOT_FILE = b"undionly.kpxe test bytes " * 200

# Send one datagram from 0.0.0.0:68 to 255.255.255.255:67 on eth0; with WAIT > 0 print the
# first reply from port 67 as hex, else nothing. Bounded: TRIES sends of WAIT seconds each.
CLIENT = """
import socket, sys
data, tries, wait = bytes.fromhex(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
s.bind(("0.0.0.0", 68))
s.settimeout(wait or 0.01)
for _ in range(tries):
    s.sendto(data, ("255.255.255.255", 67))
    if not wait:
        continue
    try:
        reply, addr = s.recvfrom(4096)
    except TimeoutError:
        continue
    if addr[1] == 67:
        print(reply.hex())
        break
"""

# GET a URL without any proxy from the environment; prints the body
FETCH = """
import sys, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
print(opener.open(sys.argv[1], timeout=10).read().decode(), end="")
"""


def dhcp(message_type: int, *extra: DhcpOption) -> bytes:
    """A BIOS PXE client's DISCOVER (1) or REQUEST (3) from MAC."""
    options = (
        DhcpOption(53, bytes((message_type,))),
        DhcpOption(60, b"PXEClient:Arch:00000:UNDI:002001"),
        DhcpOption(93, bytes(2)),
        *extra,
    )
    packet = DhcpPacket(
        op=BootpOp.BOOTREQUEST,
        xid=0x5EED0042,
        chaddr=bytes.fromhex(MAC.replace(":", "")) + bytes(10),
        flags=0x8000,
        options=options,
    )
    return build_packet(packet)


def discover(cli: netns.Namespace, *, tries: int, wait: float) -> DhcpPacket | None:
    out = cli.run(
        [sys.executable, "-c", CLIENT, dhcp(1).hex(), str(tries), str(wait)], timeout=30
    ).stdout.strip()
    return parse_packet(bytes.fromhex(out)) if out else None


def wds(srv: netns.Namespace, *args: str) -> str:
    """``wds ARGS`` inside the server's namespace, against its admin API."""
    cmd = [
        sys.executable,
        "-m",
        "wds.cli.main",
        *args,
        "--server",
        f"http://127.0.0.1:{ADMIN_PORT}",
    ]
    proc = srv.run(cmd, timeout=60, check=False)
    assert proc.returncode == 0, f"{' '.join(args)}: {proc.stderr}"
    return proc.stdout


def write_config(tmp: Path) -> Path:
    (tmp / "tftp").mkdir()
    (tmp / "tftp" / "undionly.kpxe").write_bytes(BOOT_FILE)
    config = tmp / "wds.toml"
    config.write_text(
        f"""
[server]
address = "0.0.0.0"
state_dir = "{tmp / "state"}"
store = "{tmp / "store"}"
stop_grace = 2.0
[tftp]
root = "{tmp / "tftp"}"
[pxe]
record_pending = true
[http]
port = {HTTP_PORT}
admin_address = "127.0.0.1"
admin_port = {ADMIN_PORT}
[deploy]
target = "/dev/vda"
cmdline = "console=ttyS0"
[multicast]
group_pool = "239.77.7.0/24"
[[session]]
name = "lab"
image = "lab/img"
"""
    )
    return config


def start_server(srv: netns.Namespace, config: Path) -> subprocess.Popen[str]:
    server = srv.popen(
        [sys.executable, "-m", "wds.cli.main", "-v", "serve", "--config", str(config)],
        cwd=ROOT,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert server.stdout is not None
    netns.wait_for_line(server.stdout, r"wds serve: ready", timeout=60)
    return server


@pytest.mark.root
@pytest.mark.lab
def test_approval_changes_what_a_pending_client_is_told(lab: netns.Lab, tmp_path: Path) -> None:
    curl = require_tool("curl", "curl")
    store = tmp_path / "store"
    add_image(store, make_wim(tmp_path, "img", mib=0.3), "lab", "img")
    config = write_config(tmp_path)
    srv, cli = lab.pair("srv", "cli")
    for ns in (srv, cli):  # DHCP broadcasts stay on this veth pair
        ns.run(
            [
                *("nft", "insert", "rule", "inet", netns.GUARD_TABLE, "output"),
                *("ip", "daddr", "255.255.255.255", "accept"),
            ]
        )
    start_server(srv, config)
    server_ip, client_ip = srv.addr(), cli.addr()
    script_url = f"http://{server_ip}:{HTTP_PORT}/ipxe/{MAC.replace(':', '-')}"

    # 1. unknown: recorded as pending, not answered
    assert discover(cli, tries=2, wait=1.0) is None
    device = json.loads(wds(srv, "device", "show", MAC, "--json"))
    assert device["state"] == "pending"

    # 2. its DHCPREQUEST names its address; a TFTP fetch is then its boot-file event
    requested = DhcpOption(50, IPv4Address(client_ip).packed)
    cli.run([sys.executable, "-c", CLIENT, dhcp(3, requested).hex(), "1", "0"], timeout=30)
    fetched = cli.run(
        [curl, "-sS", "--max-time", "20", "-o", "-", f"tftp://{server_ip}/undionly.kpxe"],
        timeout=30,
    )
    assert fetched.stdout.encode() == BOOT_FILE
    waiting = cli.run([sys.executable, "-c", FETCH, script_url], timeout=30).stdout
    assert "waiting for approval" in waiting and "sleep 10" in waiting
    assert f"chain --replace {script_url}" in waiting

    # 3. approved through the CLI: the next DISCOVER is answered
    assert "approved" in wds(srv, "device", "approve", MAC)
    offer = discover(cli, tries=3, wait=2.0)
    assert offer is not None, "no ProxyOffer after the approval"
    assert offer.option(53) == b"\x02" and offer.file == b"undionly.kpxe"
    assert offer.siaddr == IPv4Address(server_ip)
    no_session = cli.run([sys.executable, "-c", FETCH, script_url], timeout=30).stdout
    assert "has no session to join" in no_session and "exit" in no_session

    # 4. a session assigned: the deploy environment with everything on its kernel line
    wds(srv, "device", "prestage", MAC, "--session", "lab")
    deploy = cli.run([sys.executable, "-c", FETCH, script_url], timeout=30).stdout
    base = f"http://{server_ip}:{HTTP_PORT}"
    assert f"kernel {base}/deploy/vmlinuz wds.server={server_ip}:{HTTP_PORT} " in deploy
    assert "wds.session=lab wds.fingerprint=sha256:" in deploy
    assert f"wds.device={MAC} wds.target=/dev/vda initrd=initrd.img console=ttyS0\n" in deploy
    assert f"initrd {base}/deploy/initrd.img\nboot\n" in deploy

    # 5. the device's history, through the CLI
    shown = json.loads(wds(srv, "device", "show", MAC, "--json"))
    history = [(e["kind"], e["detail"]) for e in shown["events"]]
    kinds = [kind for kind, _ in history]
    assert kinds[:3] == ["boot-file", "script", "booted"], history
    assert "undionly.kpxe" in history[0][1]
    assert history[1] == ("script", "waiting for approval")
    assert "undionly.kpxe" in history[2][1] and "x86 BIOS" in history[2][1]
    assert ("script", "exit: no session") in history
    assert history[-1] == ("script", "deploy session lab")
    assert srv.guard_drops() == 0 and cli.guard_drops() == 0
