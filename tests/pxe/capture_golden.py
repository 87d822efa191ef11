"""Capture real PXE clients' DHCPDISCOVERs from QEMU firmware into tests/pxe/golden/*.hex.

Not a test: run it by hand as root when the golden packets need renewing::

    python3 tests/pxe/capture_golden.py [--out tests/pxe/golden] [--seconds 60]

Needs the Debian packages qemu-system-x86, ipxe-qemu, ovmf and tcpdump, and scapy (PyPI) to read
the pcap. For each client it builds a lab network namespace (LAB.md: wds-prefixed names, unique per
run, 198.18.0.0/15) holding one tap device, runs ``tcpdump -w`` on the tap and boots QEMU (TCG,
``-nographic``, ``-boot n``, bounded by ``timeout``) with the guest NIC on that tap. Nobody answers,
so the firmware keeps sending DHCPDISCOVERs until the time runs out; nothing leaves the namespace.
The first DISCOVER of every distinct option 60 (vendor class) seen is saved as a hex file of the
UDP payload (the BOOTP message). Everything created is removed, also on failure.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")

# name -> QEMU arguments after the common ones; the NIC is always on netdev "n0"
CLIENTS: dict[str, list[str]] = {
    # SeaBIOS runs the e1000's option ROM, which is iPXE's legacy BIOS build (arch 0).
    "seabios_ipxe_e1000": ["-device", "e1000,netdev=n0,mac=52:54:00:18:00:01"],
    # OVMF runs the e1000's EFI option ROM: iPXE's EFI build (arch 7).
    "ovmf_ipxe_e1000": ["-device", "e1000,netdev=n0,mac=52:54:00:18:00:02", "@ovmf"],
    # OVMF with no option ROM on virtio-net: EDK2's own PXE (arch 7), then, once PXE over IPv4 and
    # IPv6 have timed out (about 150 s under TCG), its UEFI HTTP Boot (HTTPClient, arch 16).
    "ovmf_edk2_virtio": [
        "-device",
        "virtio-net-pci,netdev=n0,romfile=,mac=52:54:00:18:00:03",
        "@ovmf",
    ],
}
# seconds each client runs unless --seconds says otherwise
SECONDS = {"seabios_ipxe_e1000": 60, "ovmf_ipxe_e1000": 60, "ovmf_edk2_virtio": 200}


def run(*cmd: str) -> None:
    subprocess.run(cmd, check=True)


@contextmanager
def lab_tap(tag: str) -> Iterator[tuple[str, str]]:
    """A namespace with one tap device, removed on exit."""
    ns, tap = f"wdsgold-{tag}", f"wdsgt{os.getpid() % 100000}"
    run("ip", "netns", "add", ns)
    try:
        run("ip", "-n", ns, "link", "set", "lo", "up")
        run("ip", "-n", ns, "tuntap", "add", "dev", tap, "mode", "tap")
        run("ip", "-n", ns, "addr", "add", "198.18.0.1/24", "dev", tap)
        run("ip", "-n", ns, "link", "set", tap, "up")
        yield ns, tap
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def capture(name: str, extra: list[str], seconds: int, work: Path) -> Path:
    pcap = work / f"{name}.pcap"
    tag = f"{os.getpid()}-{name[:6]}"
    with lab_tap(tag) as (ns, tap):
        dump = subprocess.Popen(
            ["ip", "netns", "exec", ns, "tcpdump", "-U", "-n", "-i", tap, "-w", str(pcap), "udp"],
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(1.0)  # let tcpdump open the device before the guest starts
            qemu = ["qemu-system-x86_64", "-machine", "accel=tcg", "-m", "512", "-nographic"]
            qemu += ["-boot", "n", "-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no"]
            for arg in extra:
                if arg == "@ovmf":
                    vars_copy = work / f"{name}_VARS.fd"
                    shutil.copyfile(OVMF_VARS, vars_copy)
                    qemu += ["-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}"]
                    qemu += ["-drive", f"if=pflash,format=raw,file={vars_copy}"]
                else:
                    qemu.append(arg)
            log = work / f"{name}.console.log"
            with log.open("wb") as out:
                subprocess.run(
                    ["ip", "netns", "exec", ns, "timeout", str(seconds), *qemu],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    check=False,
                )
        finally:
            dump.terminate()
            dump.wait(timeout=10)
    return pcap


def discovers(pcap: Path) -> dict[str, bytes]:
    """First DHCPDISCOVER per distinct option 60, keyed by a short client label."""
    # imported here: only this script needs scapy's pcap reader
    from scapy.layers.inet import UDP
    from scapy.utils import rdpcap

    found: dict[str, bytes] = {}
    for pkt in rdpcap(str(pcap)):
        if UDP not in pkt or pkt[UDP].dport != 67:
            continue
        payload = bytes(pkt[UDP].payload)
        vendor = _vendor_class(payload)
        if vendor is not None and vendor not in found and _message_type(payload) == 1:
            found[vendor] = payload
    return found


def _options(payload: bytes) -> Iterator[tuple[int, bytes]]:
    # A deliberately naive walk (no overload, no RFC 3396): enough to label a capture.
    i = 240
    while i < len(payload):
        code = payload[i]
        if code == 0:
            i += 1
            continue
        if code == 255 or i + 1 >= len(payload):
            return
        length = payload[i + 1]
        yield code, payload[i + 2 : i + 2 + length]
        i += 2 + length


def _vendor_class(payload: bytes) -> str | None:
    for code, value in _options(payload):
        if code == 60:
            return value.decode("ascii", "replace")
    return None


def _message_type(payload: bytes) -> int | None:
    for code, value in _options(payload):
        if code == 53 and value:
            return value[0]
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "golden")
    parser.add_argument(
        "--seconds", type=int, help="run each guest this long (default: per client)"
    )
    parser.add_argument("--only", action="append", choices=sorted(CLIENTS))
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces and tap devices)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="wds-golden-") as tmp:
        for name in args.only or sorted(CLIENTS):
            seconds = args.seconds or SECONDS[name]
            pcap = capture(name, CLIENTS[name], seconds, Path(tmp))
            found = discovers(pcap)
            if not found:
                print(f"{name}: no DHCPDISCOVER captured", file=sys.stderr)
            for vendor, payload in found.items():
                kind = vendor.split(":")[0].lower()
                fields = vendor.split(":")  # PXEClient:Arch:xxxxx:UNDI:yyyzzz (PXE 2.1)
                arch = int(fields[2]) if len(fields) >= 3 and fields[2].isdigit() else "x"
                undi = fields[4] if len(fields) >= 5 else "x"
                target = args.out / f"{name}_{kind}_arch{arch}_undi{undi}_discover.hex"
                target.write_text(payload.hex() + "\n")
                print(f"{target}: {len(payload)} bytes, option 60 {vendor!r}")
            console = Path(tmp) / f"{name}.console.log"
            tail = console.read_bytes()[-600:].decode("ascii", "replace")
            print(f"{name}: console ends with:\n{tail}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
