"""`wds serve` as a real process: starts the configured services, serves, stops on SIGTERM."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest


def _config(tmp_path: Path, port: int = 0, extra: str = "") -> Path:
    (tmp_path / "tftp").mkdir(exist_ok=True)
    (tmp_path / "tftp" / "hello.txt").write_bytes(b"hello from wds serve\n")
    path = tmp_path / "wds.toml"
    path.write_text(
        f'[server]\naddress = "127.0.0.1"\nstate_dir = "state"\nstore = "store"\n'
        f'[tftp]\nport = {port}\nroot = "tftp"\n[pxe]\nenabled = false\n'
        f"[http]\nenabled = false\n{extra}"
    )
    return path


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    proc = subprocess.Popen(
        ["wds", "serve", "--config", str(_config(tmp_path))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        port = 0
        assert proc.stdout is not None
        for _ in range(10):
            line = proc.stdout.readline()
            m = re.match(r"wds serve: tftp on 127\.0\.0\.1:(\d+) ", line)
            if m:
                port = int(m[1])
            if line.strip() == "wds serve: ready" or not line:
                break
        assert port, proc.stderr.read() if proc.stderr else ""
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def _fetch_first_block(port: int, name: bytes) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(b"\x00\x01" + name + b"\x00octet\x00", ("127.0.0.1", port))
        data, addr = s.recvfrom(2048)
        s.sendto(b"\x00\x04" + data[2:4], addr)
        return data


def test_serve_runs_tftp_and_stops_on_sigterm(
    server: tuple[subprocess.Popen[str], int], tmp_path: Path
) -> None:
    proc, port = server
    data = _fetch_first_block(port, b"hello.txt")
    assert data == b"\x00\x03\x00\x01hello from wds serve\n"
    assert (tmp_path / "state").is_dir() and (tmp_path / "store").is_dir()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert proc.stderr is not None
    err = proc.stderr.read()
    assert "Traceback" not in err


def test_serve_refuses_a_bad_config_before_binding(tmp_path: Path) -> None:
    path = _config(tmp_path, extra="[multicast]\nmtu = 100\n")
    proc = subprocess.run(
        ["wds", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 1
    assert "multicast.mtu" in proc.stderr and "Traceback" not in proc.stderr


def test_serve_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        proc = subprocess.run(
            ["wds", "serve", "--config", str(_config(tmp_path, port))],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert proc.returncode == 1
    assert "tftp: cannot bind its port" in proc.stderr and "Traceback" not in proc.stderr


# -- [pxe] inside `wds serve`, and `wds pxe` ---------------------------------------------------


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pxe_config(tmp_path: Path, *, delay: float = 0.0) -> tuple[Path, int]:
    """TFTP on a free port, PXE on two free non-privileged ports; returns (config, pxe_port)."""
    pxe_port = _free_udp_port()
    path = _config(tmp_path, _free_udp_port())
    text = path.read_text().replace(
        "[pxe]\nenabled = false\n",
        f"[pxe]\ndhcp_port = {_free_udp_port()}\npxe_port = {pxe_port}\ndelay = {delay}\n",
    )
    path.write_text(text)
    return path, pxe_port


def _pxe_request(pxe_port: int) -> tuple[bytes, float]:
    """A UEFI client's port 4011 DHCPREQUEST (answered to its source port); (file, seconds)."""
    import time

    from pxe.dhcp.codec import BootpOp, DhcpOption, DhcpPacket, build_packet, parse_packet

    request = DhcpPacket(
        op=BootpOp.BOOTREQUEST,
        xid=0x5EB0,
        chaddr=bytes.fromhex("525400180077") + bytes(10),
        ciaddr=IPv4Address("127.0.0.1"),
        options=(
            DhcpOption(53, b"\x03"),
            DhcpOption(60, b"PXEClient:Arch:00007:UNDI:003000"),
            DhcpOption(93, b"\x00\x07"),
        ),
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        start = time.monotonic()
        s.sendto(build_packet(request), ("127.0.0.1", pxe_port))
        data, _ = s.recvfrom(2048)
        took = time.monotonic() - start
    ack = parse_packet(data)
    assert ack.option(53) == b"\x05" and ack.xid == 0x5EB0
    return ack.file, took


def _start(argv: list[str], prefix: str) -> tuple[subprocess.Popen[str], list[str]]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    assert proc.stdout is not None
    for _ in range(10):
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if line.strip() == f"{prefix}: ready":
            return proc, lines
    proc.kill()
    proc.wait(timeout=10)
    raise AssertionError(
        f"{argv} did not start: {lines} {proc.stderr.read() if proc.stderr else ''}"
    )


def test_serve_runs_pxe_with_delay_from_config(tmp_path: Path) -> None:
    path, pxe_port = _pxe_config(tmp_path, delay=0.3)
    proc, lines = _start(["wds", "serve", "--config", str(path)], "wds serve")
    try:
        assert any(
            re.match(r"wds serve: pxe on 127\.0\.0\.1 ports \d+ and \d+ ", li) for li in lines
        )
        assert any(line.startswith("wds serve: tftp on ") for line in lines)
        boot_file, took = _pxe_request(pxe_port)
        assert boot_file == b"ipxe.efi"
        assert took >= 0.29  # [pxe] delay = 0.3 honoured
        assert (tmp_path / "state" / "devices.sqlite3").is_file()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert proc.stderr is not None
        err = proc.stderr.read()
        assert "pxe (ProxyDHCP)" not in err and "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def test_wds_pxe_runs_pxe_and_tftp_only_and_stops_on_sigterm(tmp_path: Path) -> None:
    path, pxe_port = _pxe_config(tmp_path)
    with path.open("a") as f:
        f.write('[[session]]\nname = "s"\nimage = "g/n"\n')
    proc, lines = _start(["wds", "pxe", "--config", str(path)], "wds pxe")
    try:
        started = [line.split(" on ")[0] for line in lines if " on " in line]
        assert started == ["wds pxe: pxe", "wds pxe: tftp"]
        assert _pxe_request(pxe_port)[0] == b"ipxe.efi"
        port = int(re.search(r"tftp on 127\.0\.0\.1:(\d+)", lines[1])[1])  # type: ignore[index]
        assert _fetch_first_block(port, b"hello.txt").endswith(b"hello from wds serve\n")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert proc.stderr is not None
        err = proc.stderr.read()
        assert "multicast sessions" not in err and "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def test_serve_with_nothing_enabled_says_so_and_exits(tmp_path: Path) -> None:
    path = _config(tmp_path)
    path.write_text(path.read_text().replace("[tftp]\n", "[tftp]\nenabled = false\n"))
    proc = subprocess.run(
        ["wds", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "no service enabled" in proc.stdout and "Traceback" not in proc.stderr
