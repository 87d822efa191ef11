"""`wds serve` as a real process: starts the configured services, serves, stops on SIGTERM."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
from collections.abc import Iterator
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
