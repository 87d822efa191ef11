"""The lab's QEMU machines: command lines, serial consoles, what a console says, the disk check.

* BIOS: SeaBIOS and the iPXE ROM of an ``e1000`` NIC (``ipxe-qemu``).
* UEFI: OVMF with the firmware's own PXE (EDK2) on a ``virtio-net`` NIC without option ROM: the
  firmware fetches ``ipxe.efi`` from wds's TFTP, then iPXE takes over.

Each machine has an empty raw disk on virtio-blk, its NIC on a tap in the lab bridge, the serial
console in ``console.txt`` (``tail -f`` it to watch) and a QEMU monitor socket (``system_reset``).
KVM is used when a probe guest boots with it, TCG otherwise (LAB.md: KVM guests hang on the
development hosts although ``/dev/kvm`` exists).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wds.lab.guest import PROGRESS_MARKER, RESULT_MARKER
from wds.lab.initscript import IMAGE_NAME

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
DISK_BYTES = 1 << 30  # sparse: only what the guest writes takes space
#: console text that marks when a machine had its first network boot program (EDK2 loaded
#: ipxe.efi by TFTP, or iPXE fetched its first file), and when the kernel started
BOOT_FILE = re.compile(r"NBP file downloaded successfully|(?:https?|tftp)://\S+\.\.\. ok")
KERNEL = "Linux version"
TRANSFER = "WDS-ENV: receive attempt"
#: terminal control sequences on a serial console
_ESCAPES = re.compile(r"\x1b(?:\[[0-9;?]*[ -/]*[@-~]|[@-Z\\-_]|.)")


def plain(console: str) -> str:
    """A console transcript as text: escape sequences, backspaces and CRs removed."""
    return _ESCAPES.sub("", console).replace("\b", "").replace("\r", "")


def mac_for(index: int, subnet_octet: int) -> str:
    return f"52:54:00:{subnet_octet:02x}:01:{index:02x}"


@dataclass
class Machine:
    """One lab machine and what its console showed so far (times from ``started``)."""

    name: str
    firmware: str  # "bios" | "uefi"
    mac: str
    tap: str
    workdir: Path
    loss: int = 0
    late: bool = False
    reset: bool = False
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    boot_file_s: float | None = None
    kernel_s: float | None = None
    transfer_started_s: float | None = None
    finished_s: float | None = None
    resets: int = 0
    verified_chunks: int = 0  # from the last progress line of the environment
    chunk_slots: int = 0
    results: list[dict[str, Any]] = field(default_factory=list)
    verified_on_disk: bool = False
    note: str = ""

    @property
    def console(self) -> Path:
        return self.workdir / "console.txt"

    @property
    def disk(self) -> Path:
        return self.workdir / "disk.raw"

    @property
    def monitor(self) -> Path:
        return self.workdir / "monitor.sock"

    def prepare(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.disk.open("wb") as disk:
            disk.truncate(DISK_BYTES)
        self.console.write_bytes(b"")
        if self.firmware == "uefi":
            shutil.copyfile(OVMF_VARS, self.workdir / "OVMF_VARS.fd")

    def qemu_argv(self, accel: str) -> list[str]:
        argv = [
            *("qemu-system-x86_64", "-machine", f"pc,accel={accel}", "-m", "768", "-smp", "1"),
            *("-nographic", "-monitor", f"unix:{self.monitor},server=on,wait=off"),
            *("-netdev", f"tap,id=n0,ifname={self.tap},script=no,downscript=no"),
            *("-drive", f"file={self.disk},if=virtio,format=raw"),
        ]
        if self.firmware == "bios":
            return [*argv, "-device", f"e1000,netdev=n0,mac={self.mac},bootindex=1"]
        return [
            *argv,
            *("-device", f"virtio-net-pci,netdev=n0,romfile=,mac={self.mac},bootindex=1"),
            *("-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}"),
            *("-drive", f"if=pflash,format=raw,file={self.workdir / 'OVMF_VARS.fd'}"),
        ]

    def watch(self, now: float) -> None:
        """Read the console and note the times of what appeared since the last look."""
        text = plain(self.console.read_bytes().decode("ascii", "replace"))
        elapsed = round(now - self.started, 1)
        if self.boot_file_s is None and BOOT_FILE.search(text):
            self.boot_file_s = elapsed
        if self.kernel_s is None and KERNEL in text:
            self.kernel_s = elapsed
        if self.transfer_started_s is None and TRANSFER in text:
            self.transfer_started_s = elapsed
        self.results = []
        progress = text.rfind(PROGRESS_MARKER + " ")
        if progress >= 0:
            counts = text[progress + len(PROGRESS_MARKER) + 1 :].split(maxsplit=1)[0]
            done, _, slots = counts.partition("/")
            if done.isdigit() and slots.isdigit():
                self.verified_chunks, self.chunk_slots = int(done), int(slots)
        for line in text.splitlines():
            if line.startswith(RESULT_MARKER + " "):
                with contextlib.suppress(ValueError):
                    self.results.append(json.loads(line[len(RESULT_MARKER) + 1 :]))

    def system_reset(self) -> None:
        """Reset the machine through its QEMU monitor (as a reset button would)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.monitor))
            sock.sendall(b"system_reset\n")
            time.sleep(0.5)
        self.resets += 1

    def last_result(self) -> dict[str, Any]:
        return self.results[-1] if self.results else {}


def image_on_disk(disk: Path, out: Path) -> bool:
    """Copy the deployed image out of the machine's (ext2/4) disk with debugfs; False if absent."""
    with contextlib.suppress(FileNotFoundError):
        out.unlink()
    proc = subprocess.run(
        ["debugfs", "-R", f"dump /{IMAGE_NAME} {out}", str(disk)],
        capture_output=True,
        timeout=300,
        check=False,
    )
    return proc.returncode == 0 and out.is_file()


def same_bytes(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with a.open("rb") as fa, b.open("rb") as fb:
        while True:
            block_a, block_b = fa.read(1 << 20), fb.read(1 << 20)
            if block_a != block_b:
                return False
            if not block_a:
                return True


def probe_accel(kernel: Path) -> str:
    """ "kvm" when a kernel prints its banner under KVM within 10 s here, else "tcg"."""
    if os.environ.get("WDS_LAB_ACCEL") in ("kvm", "tcg"):
        return os.environ["WDS_LAB_ACCEL"]
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    with tempfile.TemporaryFile() as out:
        subprocess.run(
            [
                *("timeout", "-s", "KILL", "10", "qemu-system-x86_64", "-machine", "accel=kvm"),
                *("-m", "256", "-nographic", "-no-reboot", "-nic", "none"),
                *("-kernel", str(kernel), "-append", "console=ttyS0 panic=-1"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        out.seek(0)
        return "kvm" if KERNEL.encode() in out.read() else "tcg"
