"""`wds serve` as a real process for the session and signal tests (import as ``serve_support``).

Everything crosses loopback: the server binds 127.0.0.1 on free high ports, sessions multicast on
groups from 239.0.0.0/8, receivers are `wds receive` processes, and the admin API is plain HTTP.
A WIM is made at test time with ``wimlib-imagex capture`` of a directory of random files and
added with ``wds image add``. Every process started here is killed at the end, also on failure.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from wds_testsupport import require_tool

READY_TIMEOUT = 30.0


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_wim(tmp: Path, name: str = "img", *, mib: float = 3.0, images: int = 1) -> Path:
    """A real WIM of random (incompressible) files; ``images`` > 1 appends more images."""
    require_tool("wimlib-imagex", "wimtools")
    wim = tmp / f"{name}.wim"
    for i in range(images):
        src = tmp / f"{name}-src{i}"
        src.mkdir()
        for k in range(3):
            (src / f"file{k}.bin").write_bytes(os.urandom(int(mib * 1024 * 1024 / 3)))
        verb = "capture" if i == 0 else "append"
        subprocess.run(
            ["wimlib-imagex", verb, str(src), str(wim), f"{name}{i + 1}"],
            check=True,
            capture_output=True,
        )
    return wim


def add_image(store: Path, wim: Path, group: str, name: str) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "wds.cli.main",
            "image",
            "add",
            str(wim),
            "--group",
            group,
            "--name",
            name,
            "--store",
            str(store),
        ],
        check=True,
        capture_output=True,
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Lab:
    """A server directory: config, store, state; ports chosen once per test."""

    root: Path
    http_port: int = field(default_factory=free_port)
    admin_port: int = field(default_factory=free_port)
    tag: int = field(default_factory=lambda: os.getpid() % 200 + 20)
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)

    @property
    def store(self) -> Path:
        return self.root / "store"

    @property
    def config(self) -> Path:
        return self.root / "wds.toml"

    def write_config(
        self,
        sessions: str,
        *,
        server_extra: str = "",
        stop_grace: float = 5.0,
        pxe_ports: tuple[int, int] | None = None,
    ) -> Path:
        """A loopback config: TFTP off, PXE off (or on ``pxe_ports``), HTTP and admin on free
        ports, the multicast pools of this test process."""
        pxe = "[pxe]\nenabled = false\n"
        if pxe_ports is not None:
            pxe = f"[pxe]\ndhcp_port = {pxe_ports[0]}\npxe_port = {pxe_ports[1]}\n"
        self.config.write_text(
            f'[server]\naddress = "127.0.0.1"\nstate_dir = "state"\nstore = "store"\n'
            f"stop_grace = {stop_grace}\n{server_extra}"
            f"[tftp]\nenabled = false\n{pxe}"
            f"[http]\nport = {self.http_port}\nadmin_port = {self.admin_port}\n"
            f'[multicast]\ngroup_pool = "239.{self.tag}.7.0/24"\n'
            f'port_pool = "{30000 + self.tag * 100}-{30000 + self.tag * 100 + 99}"\n'
            f"{sessions}"
        )
        return self.config


def session_toml(name: str, image: str, **keys: Any) -> str:
    """One [[session]]; a low rate keeps a transfer on loopback long enough to interrupt."""
    keys.setdefault("rate_mbps", 200)
    keys.setdefault("min_goodput_mbps", 0)
    text = f'[[session]]\nname = "{name}"\nimage = "{image}"\n'
    for key, value in keys.items():
        text += f"{key} = {json.dumps(value)}\n"
    return text


class Server:
    """A running `wds serve`; stdout lines are collected by a thread."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "wds.cli.main", "serve", "--config", str(lab.config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        lab.procs.append(self.proc)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.stderr: list[str] = []
        threading.Thread(
            target=self._pump, args=(self.proc.stdout, self.lines), daemon=True
        ).start()
        err: queue.Queue[str] = queue.Queue()
        self._err = err
        threading.Thread(target=self._pump, args=(self.proc.stderr, err), daemon=True).start()
        self.fingerprint = ""

    @staticmethod
    def _pump(stream: Any, into: queue.Queue[str]) -> None:
        for line in stream:
            into.put(line.rstrip("\n"))

    def errors(self) -> str:
        while True:
            try:
                self.stderr.append(self._err.get_nowait())
            except queue.Empty:
                return "\n".join(self.stderr)

    def wait_line(self, pattern: str, timeout: float = READY_TIMEOUT) -> re.Match[str]:
        """The first stdout line (seen before or from now on) matching ``pattern``."""
        for line in self.seen:
            m = re.search(pattern, line)
            if m:
                return m
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            self.seen.append(line)
            m = re.search(pattern, line)
            if m:
                return m
        raise AssertionError(
            f"no line matching {pattern!r}; stdout {self.seen}; stderr {self.errors()[-3000:]}"
        )

    def manifest(self, session: str) -> bytes:
        conn = http.client.HTTPConnection("127.0.0.1", self.lab.http_port, timeout=10)
        try:
            conn.request("GET", f"/sessions/{session}/manifest")
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 200, body
            return body
        finally:
            conn.close()

    def ready(self) -> Server:
        self.wait_line(r"^wds serve: ready$")
        self.fingerprint = self.wait_line(r"signed by (sha256:[0-9a-f]{64})")[1]
        return self

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.lab.admin_port, timeout=10)
        try:
            data = None if body is None else json.dumps(body).encode()
            headers = {"Content-Type": "application/json"} if data else {}
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
        finally:
            conn.close()

    def session(self, name: str) -> dict[str, Any]:
        status, body = self.api("GET", f"/api/v1/sessions/{name}")
        assert status == 200, body
        return dict(body)

    def wait_state(
        self, name: str, states: tuple[str, ...], timeout: float = 20.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            s = self.session(name)
            if s["state"] in states or time.monotonic() > deadline:
                assert s["state"] in states, s
                return s
            time.sleep(0.1)

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


class Receiver:
    """A `wds receive --json` process against the server's content port."""

    def __init__(self, server: Server, session: str, out: Path, *extra: str) -> None:
        self.out = out
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "wds.cli.main",
                "receive",
                "--server",
                f"127.0.0.1:{server.lab.http_port}",
                "--session",
                session,
                "--out",
                str(out),
                "--fingerprint",
                server.fingerprint,
                "--interface",
                "127.0.0.1",
                "--json",
                "--timeout",
                "60",
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        server.lab.procs.append(self.proc)

    def result(self, timeout: float = 60.0) -> dict[str, Any]:
        out, err = self.proc.communicate(timeout=timeout)
        lines = [line for line in out.splitlines() if line.startswith("{")]
        assert lines, f"no JSON summary; exit {self.proc.returncode}; stderr {err[-2000:]}"
        summary: dict[str, Any] = json.loads(lines[-1])
        summary["_stderr"] = err
        return summary

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """A server directory; every process started for it is killed at the end."""
    the_lab = Lab(tmp_path)
    try:
        yield the_lab
    finally:
        the_lab.kill_all()
