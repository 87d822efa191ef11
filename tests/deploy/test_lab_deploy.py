"""Tier 4, end to end: QEMU machines PXE-boot from ``wds serve`` and deploy a WIM (issue 7).

Each test drives the real command line: ``wds lab up`` (namespaces, a bridge, dnsmasq as the
site's DHCP, ``wds serve`` with ProxyDHCP + TFTP + HTTP), ``wds lab run --json`` (store, session,
prestaged MACs, QEMU machines: BIOS = SeaBIOS + the e1000's iPXE ROM, UEFI = OVMF + EDK2's PXE,
TFTP of ipxe.efi), then checks each virtual disk *itself* after the machines powered off (the
image is copied out of the disk's file system with debugfs and compared byte for byte with the
source WIM), then ``wds lab down`` and checks that no namespace and no directory of the lab is
left. The finalizer runs ``down`` and the same check when a test fails half-way.

The install WIM (>= 64 MiB) is made with ``wimlib-imagex capture`` from incompressible random
files. The deployment environment is built once per test session (its .debs are cached under
~/.cache/wds/lab). Machines run under TCG here: session rates are chosen so that the three
deployments take a few minutes in all.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from wds_testsupport import require, require_tool

pytestmark = [pytest.mark.root, pytest.mark.lab, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
WIM_MIB = 64
#: whole-run limit of one `wds lab run` (QEMU is killed after it whatever happens)
RUN_TIMEOUT = 420


def wds(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wds.cli.main", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def lab_namespaces(directory: Path) -> list[str]:
    from wds.lab.control import _tag

    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    prefix = f"wdslab-{_tag(directory)}-"
    return [line.split()[0] for line in names.splitlines() if line.startswith(prefix)]


def assert_all_gone(directory: Path) -> None:
    assert lab_namespaces(directory) == [], "wds lab down left namespaces behind"
    assert not directory.exists(), f"wds lab down left {directory}"
    qemu = subprocess.run(["pgrep", "-f", str(directory)], capture_output=True, text=True)
    assert qemu.stdout.strip() == "", f"processes of the lab still run: {qemu.stdout}"


@pytest.fixture(scope="session")
def lab_tools() -> Path:
    """Root, the tools and the deployment environment (built once per test session)."""
    require(os.geteuid() == 0, "needs root (namespaces, taps, QEMU)")
    for tool, package in (
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("dnsmasq", "dnsmasq-base"),
        ("nft", "nftables"),
        ("debugfs", "e2fsprogs"),
        ("wimlib-imagex", "wimtools"),
        ("apt-get", "apt"),
        ("dpkg-deb", "dpkg"),
        ("pgrep", "procps"),
    ):
        require_tool(tool, package)
    require(Path("/usr/share/OVMF/OVMF_CODE_4M.fd").is_file(), "apt-get install ovmf")
    require(Path("/usr/lib/ipxe/ipxe.efi").is_file(), "apt-get install ipxe")
    require(Path("/usr/lib/ipxe/qemu").is_dir(), "apt-get install ipxe-qemu")
    from wds.lab.env import DEFAULT_CACHE

    built = wds("lab", "build-env", "--out", str(DEFAULT_CACHE / "env"), timeout=900)
    assert built.returncode == 0, built.stderr
    return DEFAULT_CACHE


@pytest.fixture(scope="session")
def install_wim(lab_tools: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real install WIM of 64 MiB of random (incompressible) files, wimlib-imagex capture."""
    work = tmp_path_factory.mktemp("wim")
    source = work / "tree"
    (source / "Windows" / "System32").mkdir(parents=True)
    for index in range(WIM_MIB // 8):
        folder = source / "Windows" / "System32" if index % 2 else source
        (folder / f"file{index}.bin").write_bytes(os.urandom(8 << 20))
    wim = work / "install.wim"
    subprocess.run(
        ["wimlib-imagex", "capture", str(source), str(wim), "LabImage", "--compress=none"],
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert wim.stat().st_size >= WIM_MIB << 20
    return wim


@pytest.fixture
def lab_dir(tmp_path: Path, lab_tools: Path) -> Iterator[Path]:
    """``wds lab up`` in a fresh directory; ``down`` and the leftover check, also on failure."""
    directory = tmp_path / "lab"
    subnet = f"198.19.{100 + os.getpid() % 100}.0/24"
    up = wds("lab", "up", "--dir", str(directory), "--subnet", subnet, timeout=900)
    try:
        assert up.returncode == 0, up.stderr + up.stdout
        assert len(lab_namespaces(directory)) == 3
        yield directory
    finally:
        down = wds("lab", "down", "--dir", str(directory))
        assert down.returncode == 0, down.stderr
        assert_all_gone(directory)


def deploy(directory: Path, wim: Path, *options: str) -> dict[str, Any]:
    done = wds(
        *("lab", "run", "--dir", str(directory), "--image", str(wim), "--json"),
        *("--timeout", str(RUN_TIMEOUT), *options),
        timeout=RUN_TIMEOUT + 120,
    )
    context = f"exit {done.returncode}\n{done.stdout[-6000:]}\n{done.stderr[-3000:]}"
    try:
        result: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        pytest.fail(f"wds lab run printed no JSON: {context}")
    result["_context"] = context + "\n--- serve.log\n" + _tail(directory / "serve.log")
    return result


def _tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def check_disk(machine: dict[str, Any], wim: Path, context: str) -> None:
    """The image on the machine's virtual disk, read on the host, is the source byte for byte."""
    disk = Path(machine["console"]).with_name("disk.raw")
    copy = disk.with_name("check.img")
    dumped = subprocess.run(
        ["debugfs", "-R", f"dump /wds-image {copy}", str(disk)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert copy.is_file(), f"{machine['name']}: no image on its disk ({dumped.stderr}) {context}"
    assert copy.stat().st_size == wim.stat().st_size, context
    with copy.open("rb") as got, wim.open("rb") as want:
        for offset in range(0, wim.stat().st_size, 1 << 20):
            assert got.read(1 << 20) == want.read(1 << 20), f"differs at {offset} {context}"
    copy.unlink()


def sessions_started(directory: Path, session: str) -> int:
    log = (directory / "serve.log").read_text(errors="replace")
    return len(re.findall(rf"\[session={session}\] SessionStarted", log))


def test_bios_and_uefi_deploy_in_one_multicast_session_with_loss_on_one(
    lab_dir: Path, install_wim: Path
) -> None:
    result = deploy(
        lab_dir,
        install_wim,
        "--machines",
        "2",
        "--firmware",
        "bios,uefi",
        "--loss",
        "5",
        "--rate",
        "40mbit",
    )
    context = result["_context"]
    assert result["ok"], context
    machines = {m["firmware"]: m for m in result["machines"]}
    assert set(machines) == {"bios", "uefi"}, context
    for machine in machines.values():
        assert machine["verified"] and machine["receiver_verified"], context
        assert machine["boot_file_s"] is not None and machine["kernel_s"] is not None, context
        check_disk(machine, install_wim, context)
    # the lossy machine (the first, BIOS) needed repairs; both were in the same sender run
    assert machines["bios"]["loss_percent"] == 5, context
    assert machines["bios"]["chunks_repaired"] > 0, context
    assert any("loss dropped" in note and " 0 datagrams" not in note for note in result["notes"])
    assert sessions_started(lab_dir, "lab1") == 1, context
    uefi_console = Path(machines["uefi"]["console"]).read_text(errors="replace")
    assert "NBP file downloaded successfully" in uefi_console, context  # TFTP of ipxe.efi


def test_a_machine_that_joins_late_gets_the_image_from_the_running_session(
    lab_dir: Path, install_wim: Path
) -> None:
    # 12 Mbit/s: the first machine's transfer lasts ~45 s, the late one boots in ~25 s of it
    result = deploy(
        lab_dir,
        install_wim,
        "--machines",
        "2",
        "--firmware",
        "bios",
        "--late",
        "1",
        "--late-after",
        "1",
        "--rate",
        "12mbit",
    )
    context = result["_context"]
    assert result["ok"], context
    first, late = result["machines"]
    assert late["late"] and not first["late"], context
    for machine in (first, late):
        assert machine["verified"], context
        check_disk(machine, install_wim, context)
    # one sender run served both: the late machine joined it while it was sending
    assert sessions_started(lab_dir, "lab1") == 1, context


def test_a_machine_reset_mid_transfer_resumes_after_it_boots_again(
    lab_dir: Path, install_wim: Path
) -> None:
    result = deploy(
        lab_dir,
        install_wim,
        "--machines",
        "1",
        "--firmware",
        "bios",
        "--reset",
        "1",
        "--rate",
        "24mbit",
    )
    context = result["_context"]
    assert result["ok"], context
    (machine,) = result["machines"]
    assert machine["resets"] == 1, context
    assert machine["verified"], context
    check_disk(machine, install_wim, context)
    # the second boot resumed from the on-disk record: it did not fetch everything again
    final = machine["results"][-1]
    assert final["chunks_resumed"] > 0, context
    assert final["bytes_received"] < install_wim.stat().st_size, context
    console = Path(machine["console"]).read_text(errors="replace")
    assert console.count("Linux version") == 2, context  # it booted twice


def test_down_removes_a_lab_whose_up_was_killed(lab_tools: Path, tmp_path: Path) -> None:
    directory = tmp_path / "crashed"
    subnet = f"198.19.{200 + os.getpid() % 50}.0/24"
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "wds.cli.main",
            "lab",
            "up",
            "--dir",
            str(directory),
            "--subnet",
            subnet,
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import time

        deadline = time.monotonic() + 120
        while len(lab_namespaces(directory)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        up.kill()  # a crash half-way: no cleanup of its own
        up.wait(timeout=10)
        assert lab_namespaces(directory), "up was killed before it created anything"
    finally:
        down = wds("lab", "down", "--dir", str(directory))
    assert down.returncode == 0, down.stderr
    assert_all_gone(directory)
    assert shutil.which("ip")
