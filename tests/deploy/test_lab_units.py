"""Fast checks of the lab's pieces that need neither root nor QEMU (wds.lab)."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest
from wds_testsupport import require, require_tool

from wds.cli.main import main
from wds.config import load_config
from wds.lab import control, env, guest, net
from wds.lab.machines import Machine


def test_the_generated_server_config_is_valid_and_stays_in_the_lab(tmp_path: Path) -> None:
    state = {"server_ip": "198.19.77.2", "kernel": "/k/vmlinuz", "initrd": "/k/initrd.img"}
    session = {"name": "lab1", "image": "lab/x.wim", "mode": "scheduled", "min_clients": 2}
    path = tmp_path / "wds.toml"
    path.write_text(control.config_text(tmp_path, state, [session]))
    config = load_config(path)
    assert config.http.address == "198.19.77.2"
    assert config.pxe.http_url == "http://198.19.77.2:8080/"
    assert config.server.state_dir == tmp_path / "state"
    assert [s.name for s in config.session] == ["lab1"]
    assert config.session[0].min_clients == 2


def test_lab_subnets_must_be_a_24_in_the_benchmarking_range() -> None:
    assert str(net.check_subnet("198.19.5.0/24")) == "198.19.5.0/24"
    for bad in ("10.0.0.0/24", "198.18.0.0/16", "192.168.1.0/24", "nonsense"):
        with pytest.raises(net.LabNetError):
            net.check_subnet(bad)


def test_cpio_archive_is_newc_with_files_links_and_a_trailer(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "busybox").write_bytes(b"\x7fELF" + b"x" * 5)
    (root / "bin" / "sh").symlink_to("busybox")
    out = tmp_path / "initrd.img"
    env.write_cpio(root, out)
    data = gzip.decompress(out.read_bytes())
    assert data.startswith(b"070701")
    names = []
    offset = 0
    while True:  # walk the headers: every field where newc puts it, every part 4-aligned
        header = data[offset : offset + 110]
        assert header[:6] == b"070701"
        mode = int(header[14:22], 16)
        size, namesize = int(header[54:62], 16), int(header[94:102], 16)
        name = data[offset + 110 : offset + 110 + namesize - 1].decode()
        offset += 110 + namesize
        offset += -offset % 4
        body = data[offset : offset + size]
        offset += size + (-size % 4)
        if name == "TRAILER!!!":
            break
        names.append(name)
        if name == "bin/sh":
            assert body == b"busybox" and mode & 0o170000 == 0o120000
    assert names == ["bin", "bin/busybox", "bin/sh"]


def test_modules_load_in_dependency_order(tmp_path: Path) -> None:
    (tmp_path / "modules.dep").write_text(
        "kernel/a/virtio_net.ko: kernel/a/net_failover.ko kernel/a/virtio.ko\n"
        "kernel/a/net_failover.ko: kernel/a/failover.ko\n"
        "kernel/a/failover.ko:\nkernel/a/virtio.ko:\n"
    )
    order = env._module_order(tmp_path, ["virtio_net"])
    assert order.index("kernel/a/failover.ko") < order.index("kernel/a/net_failover.ko")
    assert order[-1] == "kernel/a/virtio_net.ko" and len(order) == 4


def test_the_console_tells_the_times_progress_and_result(tmp_path: Path) -> None:
    machine = Machine("m1", "bios", "52:54:00:00:00:01", "t0", tmp_path)
    machine.prepare()
    machine.started = 100.0
    machine.console.write_bytes(
        b"Configuring (net0 52:54:00:00:00:01)...... ok\r\n"
        b"http://198.19.77.2:8080/boot.ipxe... ok\r\n"
        b"\x1b[2J[    0.000000] Linux version 6.1.0\r\n"
        b"WDS-ENV: receive attempt 1 from 198.19.77.2:8080\r\n"
        b"WDS-PROGRESS 16/72\r\n"
        b'WDS-RESULT {"verified": true, "chunks_resumed": 3}\r\n'
    )
    machine.watch(112.0)
    assert machine.boot_file_s == 12.0 and machine.kernel_s == 12.0
    assert (machine.verified_chunks, machine.chunk_slots) == (16, 72)
    assert machine.last_result() == {"verified": True, "chunks_resumed": 3}


def test_guest_adds_up_the_attempts_of_one_boot() -> None:
    first = {"bytes_received": 10, "chunks_received": 1, "chunks_resumed": 0, "seconds": 1.5}
    last = {"bytes_received": 5, "chunks_received": 2, "chunks_resumed": 1, "seconds": 2.0}
    merged = guest._merge(first, last)
    assert merged["bytes_received"] == 15 and merged["chunks_received"] == 3
    assert merged["chunks_resumed"] == 0 and merged["seconds"] == 3.5


def test_report_never_raises_when_the_server_is_gone() -> None:
    note = guest.report("127.0.0.1:9", "lab", {"status": "failed"})
    assert note.startswith("not reported")


@pytest.mark.parametrize(
    "argv",
    [
        ["lab", "run", "--image", "x.wim", "--loss", "150"],
        ["lab", "run", "--image", "x.wim", "--firmware", "bios,arm"],
    ],
)
def test_bad_lab_flags_are_usage_errors(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_down_without_a_lab_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab", "down", "--dir", str(tmp_path / "none")]) == 0
    assert "nothing" in capsys.readouterr().out


def test_state_file_round_trip(tmp_path: Path) -> None:
    control._write_state(tmp_path, {"namespaces": ["wdslab-x-br"]})
    assert control.read_state(tmp_path) == {"namespaces": ["wdslab-x-br"]}
    assert json.loads((tmp_path / control.STATE).read_text())["namespaces"] == ["wdslab-x-br"]


def test_up_refuses_a_directory_that_holds_something_else(tmp_path: Path) -> None:
    require(os.geteuid() == 0, "needs root (wds lab checks it first)")
    require_tool("qemu-system-x86_64", "qemu-system-x86")
    (tmp_path / "precious.txt").write_text("not the lab's")
    with pytest.raises(control.LabError, match="not an empty directory"):
        control.up(tmp_path, subnet="198.19.250.0/24")
    assert (tmp_path / "precious.txt").read_text() == "not the lab's"
