"""Real iPXE runs wds's scripts: it waits while pending, then boots the deploy kernel once approved.

The scripts of :mod:`wds.web.boot` use iPXE settings and commands (``${netX/mac:hexhyp}``,
``sleep``, ``chain --replace``, ``kernel``/``initrd``/``boot``) that only a real iPXE can check.
A QEMU guest (TCG, bounded by ``timeout``) starts Debian's ``ipxe.lkrn`` with a two-line script as
its initrd (static address, then ``chain http://WDS:8080/boot.ipxe``: no DHCP server needed) on a
lab bridge; ``wds serve`` runs in the ``wds`` namespace with ``[pxe] record_pending = true``.

1. the guest's console shows "waiting for approval", and its device is pending;
2. ``wds device prestage MAC --session lab`` (the admin approves and assigns a session);
3. within one retry iPXE is told to boot the deploy kernel (Debian's installer kernel stands in
   for it) and the kernel prints its command line: server, session, key fingerprint, device,
   target, then ``[deploy] cmdline``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lab import netns
from lab.fixtures import lab, stale_labs_removed
from serve_support import add_image, make_wim
from wds_testsupport import require, require_tool

__all__ = ["lab", "stale_labs_removed"]  # fixtures used by name below

pytestmark = [pytest.mark.root, pytest.mark.lab, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
IPXE_LKRN = Path("/usr/lib/ipxe/ipxe.lkrn")
KERNEL = Path("/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64/linux")
MAC = "52:54:00:18:02:01"
HTTP_PORT = 8080
ADMIN_PORT = 8081
#: seconds the guest may run in all (QEMU is killed by `timeout` after this)
GUEST_SECONDS = 150
_ESCAPES = re.compile(r"\x1b(?:\[[0-9;?]*[ -/]*[@-~]|[@-Z\\-_]|.)")


def plain(console: bytes) -> str:
    text = console.decode("ascii", "replace")
    return _ESCAPES.sub("", text).replace("\b", "").replace("\r", "")


def wait_console(path: Path, pattern: str, guest: subprocess.Popen[bytes], seconds: float) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        text = plain(path.read_bytes())
        if re.search(pattern, text):
            return text
        if guest.poll() is not None:
            break
        time.sleep(0.5)
    raise AssertionError(
        f"{pattern!r} not on the console; its tail:\n{plain(path.read_bytes())[-3000:]}"
    )


def wds(ns: netns.Namespace, *args: str) -> str:
    server = f"http://127.0.0.1:{ADMIN_PORT}"
    cmd = [sys.executable, "-m", "wds.cli.main", *args, "--server", server]
    proc = ns.run(cmd, timeout=60, check=False)
    assert proc.returncode == 0, f"{' '.join(args)}: {proc.stderr}"
    return proc.stdout


def write_config(tmp: Path) -> Path:
    (tmp / "initrd.img").write_bytes(b"not an initramfs: the kernel's command line is enough")
    config = tmp / "wds.toml"
    config.write_text(
        f"""
[server]
address = "0.0.0.0"
state_dir = "{tmp / "state"}"
store = "{tmp / "store"}"
stop_grace = 1.0
[tftp]
enabled = false
[pxe]
enabled = false
record_pending = true
[http]
port = {HTTP_PORT}
admin_address = "127.0.0.1"
admin_port = {ADMIN_PORT}
[deploy]
kernel = "{KERNEL}"
initrd = "{tmp / "initrd.img"}"
target = "/dev/vda"
cmdline = "console=ttyS0"
[multicast]
group_pool = "239.77.8.0/24"
[[session]]
name = "lab"
image = "lab/img"
"""
    )
    return config


def test_real_ipxe_waits_then_boots_the_deploy_kernel(lab: netns.Lab, tmp_path: Path) -> None:
    qemu = require_tool("qemu-system-x86_64", "qemu-system-x86")
    require(IPXE_LKRN.exists(), "ipxe.lkrn missing: apt-get install ipxe")
    require(
        KERNEL.exists(),
        "installer kernel missing: apt-get install debian-installer-12-netboot-amd64",
    )
    add_image(tmp_path / "store", make_wim(tmp_path, "img", mib=0.2), "lab", "img")
    config = write_config(tmp_path)
    bridge, (srv,) = lab.bridged(["wds"])
    server = srv.popen(
        [sys.executable, "-m", "wds.cli.main", "-v", "serve", "--config", str(config)],
        cwd=ROOT,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert server.stdout is not None
    netns.wait_for_line(server.stdout, r"wds serve: ready", timeout=60)
    server_ip = srv.addr()
    guest_ip = str(lab.subnet[200])
    script = tmp_path / "start.ipxe"
    script.write_text(
        "#!ipxe\n"
        f"set net0/ip {guest_ip}\n"
        f"set net0/netmask {lab.subnet.netmask}\n"
        "ifopen net0\n"
        f"chain http://{server_ip}:{HTTP_PORT}/boot.ipxe\n"
    )
    bridge.run(["ip", "tuntap", "add", "dev", "tap0", "mode", "tap"])
    bridge.run(["ip", "link", "set", "tap0", "master", "br0", "up"])
    console = tmp_path / "console.txt"
    with console.open("wb") as console_file:
        guest = bridge.popen(
            [
                *("timeout", str(GUEST_SECONDS), qemu),
                *("-machine", "accel=tcg", "-m", "256", "-nographic", "-no-reboot"),
                *("-kernel", str(IPXE_LKRN), "-initrd", str(script)),
                *("-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no"),
                *("-device", f"e1000,netdev=n0,mac={MAC}"),
            ],
            stdout=console_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        # 1. pending: told to wait (the entry script found its own MAC with netX/mac:hexhyp)
        wait_console(console, r"device 52:54:00:18:02:01 is waiting for approval", guest, 90)
        assert json.loads(wds(srv, "device", "show", MAC, "--json"))["state"] == "pending"
        # 2. the admin approves it with a session; 3. the next retry boots the deploy kernel
        wds(srv, "device", "prestage", MAC, "--session", "lab")
        text = wait_console(console, r"Command line: .*wds\.session=lab", guest, 60)
    line = re.search(r"Command line: (.*)", text)
    assert line is not None
    words = line.group(1).split()
    assert f"wds.server={server_ip}:{HTTP_PORT}" in words
    assert f"wds.device={MAC}" in words and "wds.target=/dev/vda" in words
    assert any(re.fullmatch(r"wds\.fingerprint=sha256:[0-9a-f]{64}", w) for w in words), words
    assert words[-1] == "console=ttyS0"
    history = json.loads(wds(srv, "device", "show", MAC, "--json"))["events"]
    details = [e["detail"] for e in history if e["kind"] == "script"]
    assert details[0] == "waiting for approval" and details[-1] == "deploy session lab"
