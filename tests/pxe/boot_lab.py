"""Boot real firmware through wds's ProxyDHCP in a namespace lab (a script, not a test).

    python3 tests/pxe/boot_lab.py [--client seabios_ipxe|ovmf_ipxe|ovmf_edk2] [--seconds 120]
                                  [--keep-pcap F] [--proxy-mode auto|offer|port4011] [--http-only]

Needs root and the Debian packages qemu-system-x86, ipxe-qemu, ovmf, ipxe (boot files), dnsmasq
and tcpdump. The LAN (LAB.md, built with tests/lab/netns.py): a bridge namespace holding the QEMU
guest's tap, a "site" namespace whose dnsmasq is the site's DHCP server (addresses only, no boot
options), and a "wds" namespace running :class:`pxe.dhcp.server.ProxyDhcpServer` on ports 67 and
4011, dnsmasq as TFTP server only (ipxe.efi, undionly.kpxe) and a static HTTP server holding
``boot.ipxe``. The script prints ``WDS-LAB-BOOT-OK`` on the guest's serial console; the guest is
stopped as soon as the marker appears (or after ``--seconds``).
The guard of each namespace also lets 255.255.255.255 out (DHCP replies are broadcast; nothing
routes them out of the lab).

Success = the console shows the script's marker: firmware took the proxy offer (and, for EDK2,
did the port 4011 exchange), fetched the boot file by TFTP, iPXE came up, asked again, got the
script URL from wds instead of iPXE again, and ran it.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from lab.netns import GUARD_TABLE, Lab  # noqa: E402

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
MARKER = "WDS-LAB-BOOT-OK"
CLIENTS = {
    "seabios_ipxe": ["-device", "e1000,netdev=n0,mac=52:54:00:18:01:01"],
    "ovmf_ipxe": ["-device", "e1000,netdev=n0,mac=52:54:00:18:01:03", "@ovmf"],
    "ovmf_edk2": ["-device", "virtio-net-pci,netdev=n0,romfile=,mac=52:54:00:18:01:02", "@ovmf"],
}
SERVER_CODE = """
import asyncio, logging, sys
from ipaddress import IPv4Address
from pxe.dhcp.policy import ConfigBootPolicy
from pxe.dhcp.server import ProxyDhcpServer
from wds.config import PxeConfig
logging.basicConfig(level=logging.DEBUG, stream=sys.stdout, format="%(name)s %(message)s")
ip = IPv4Address(sys.argv[1])
config = PxeConfig(proxy_mode=sys.argv[3])
policy = ConfigBootPolicy(config, http_url=f"http://{ip}:8080/")
if sys.argv[4] == "http-only":  # make the firmware's PXE fail so that it tries UEFI HTTP Boot
    from pxe.dhcp.decide import Ignore
    class HttpOnly:
        def __init__(self, inner):
            self.inner = inner
        def boot_for(self, client):
            if client.http or client.ipxe:
                return self.inner.boot_for(client)
            return Ignore("lab: PXE disabled, only HTTP Boot and iPXE are answered")
    policy = HttpOnly(policy)
async def main():
    server = ProxyDhcpServer(policy, server_ip=ip, interface="eth0")
    await server.start()
    print("READY", flush=True)
    await asyncio.sleep(float(sys.argv[2]))
    await server.stop()
asyncio.run(main())
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client", choices=sorted(CLIENTS), default="seabios_ipxe")
    parser.add_argument("--seconds", type=int, default=120)
    parser.add_argument("--keep-pcap", type=Path)
    parser.add_argument("--proxy-mode", choices=["auto", "offer", "port4011"], default="auto")
    parser.add_argument("--http-only", action="store_true", help="answer only HTTP Boot and iPXE")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wds-bootlab-") as tmp, Lab("198.18.77.0/24") as lab:
        work = Path(tmp)
        tftp, http = work / "tftp", work / "http"
        tftp.mkdir()
        (http / "boot").mkdir(parents=True)
        for name in ("undionly.kpxe", "ipxe.efi"):
            shutil.copyfile(Path("/usr/lib/ipxe") / name, tftp / name)
            # UEFI HTTP Boot: under /boot/, where wds serve serves [tftp] root
            shutil.copyfile(Path("/usr/lib/ipxe") / name, http / "boot" / name)
        (http / "boot.ipxe").write_text(f"#!ipxe\necho {MARKER}\n")
        bridge, (site, wds) = lab.bridged(["site", "wds"])
        for ns in (site, wds):
            ns.run(
                [
                    "nft",
                    "insert",
                    "rule",
                    "inet",
                    GUARD_TABLE,
                    "output",
                    "ip",
                    "daddr",
                    "255.255.255.255",
                    "accept",
                ]
            )
        bridge.run(["ip", "tuntap", "add", "dev", "tap0", "mode", "tap"])
        bridge.run(["ip", "link", "set", "tap0", "master", "br0", "up"])
        net = lab.subnet
        dhcp_range = f"{net[100]},{net[150]},{net.netmask},5m"
        site_log = open(work / "site.log", "w")  # noqa: SIM115
        site.popen(
            [
                "dnsmasq",
                "--no-daemon",
                "--conf-file=/dev/null",
                "--port=0",
                "--user=root",
                "--pid-file=",
                "--interface=eth0",
                "--bind-interfaces",
                f"--dhcp-range={dhcp_range}",
                "--dhcp-leasefile=" + str(work / "leases"),
                "--log-dhcp",
            ],
            stdout=site_log,
            stderr=subprocess.STDOUT,
        )
        wds_log = open(work / "wds.log", "w")  # noqa: SIM115
        wds.popen(
            [
                "dnsmasq",
                "--no-daemon",
                "--conf-file=/dev/null",
                "--port=0",
                "--user=root",
                "--pid-file=",
                "--interface=eth0",
                "--bind-interfaces",
                "--enable-tftp",
                f"--tftp-root={tftp}",
                "--log-facility=-",
            ],
            stdout=wds_log,
            stderr=subprocess.STDOUT,
        )
        wds.popen(
            [
                sys.executable,
                "-m",
                "http.server",
                "8080",
                "--bind",
                wds.addr(),
                "--directory",
                str(http),
            ],
            stdout=wds_log,
            stderr=subprocess.STDOUT,
        )
        server = wds.popen(
            [
                sys.executable,
                "-c",
                SERVER_CODE,
                wds.addr(),
                str(args.seconds + 10),
                args.proxy_mode,
                "http-only" if args.http_only else "all",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert server.stdout is not None
        lines = [server.stdout.readline().decode() for _ in range(3)]
        if not any("READY" in line for line in lines):
            print("wds ProxyDHCP did not start:", *lines, server.stdout.read().decode())
            return 1
        pcap = args.keep_pcap or work / "lan.pcap"
        bridge.popen(["tcpdump", "-U", "-n", "-i", "br0", "-w", str(pcap), "udp"])
        time.sleep(1.0)
        qemu = [
            "qemu-system-x86_64",
            "-machine",
            "accel=tcg",
            "-m",
            "512",
            "-nographic",
            "-boot",
            "n",
            "-netdev",
            "tap,id=n0,ifname=tap0,script=no,downscript=no",
        ]
        for arg in CLIENTS[args.client]:
            if arg == "@ovmf":
                shutil.copyfile(OVMF_VARS, work / "VARS.fd")
                qemu += [
                    "-drive",
                    f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
                    "-drive",
                    f"if=pflash,format=raw,file={work / 'VARS.fd'}",
                ]
            else:
                qemu.append(arg)
        started = time.monotonic()
        console_path = work / "console.txt"
        with console_path.open("wb") as console_file:
            guest = bridge.popen(
                ["timeout", str(args.seconds), *qemu],
                stdout=console_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            ok = False
            while guest.poll() is None and time.monotonic() - started < args.seconds + 5:
                time.sleep(0.5)
                if MARKER.encode() in console_path.read_bytes():
                    ok = True
                    break
            guest.terminate()
            guest.wait(timeout=10)
        took = time.monotonic() - started
        console = console_path.read_bytes().decode("ascii", "replace")
        server.terminate()
        server_out = server.stdout.read().decode(errors="replace")
        print("=== wds ProxyDHCP log\n" + server_out[-6000:])
        print("=== site DHCP log\n" + (work / "site.log").read_text()[-3000:])
        print("=== wds TFTP/HTTP log\n" + (work / "wds.log").read_text()[-3000:])
        print("=== guest console (tail)\n" + console.replace("\x1b", "")[-3000:])
        print(f"=== {args.client}: {'BOOTED' if ok else 'FAILED'} after {took:.0f} s")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
