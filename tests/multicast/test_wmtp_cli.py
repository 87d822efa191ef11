"""`wds send` / `wds receive` / `wds keygen` as processes on loopback (LAB.md: 127.0.0.1, groups in
239.0.0.0/8). Several receiver processes, --unicast, an untrusted manifest, a target that cannot
be written or does not fit."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from wds_testsupport import require

LOOPBACK = "127.0.0.1"
MiB = 1024 * 1024


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def _group() -> str:
    return f"239.255.{random.randint(1, 254)}.{os.getpid() % 250 + 1}"


class Session:
    def __init__(self, proc: subprocess.Popen[str], port: int, fingerprint: str) -> None:
        self.proc, self.port, self.fingerprint = proc, port, fingerprint

    @property
    def server(self) -> str:
        return f"{LOOPBACK}:{self.port}"


@contextlib.contextmanager
def wds_send(image: Path, *extra: str, session: str = "img") -> Iterator[Session]:
    cmd = ["wds", "send", str(image), "--session", session, "--listen", LOOPBACK, "--port", "0"]
    cmd += ["--interface", LOOPBACK, "--group", _group(), "--group-port", str(_free_udp_port())]
    cmd += ["--timeout", "60", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"http://[\d.]+:(\d+) group \S+ key (sha256:[0-9a-f]+)", line)
        assert match, line + proc.stdout.read()
        yield Session(proc, int(match.group(1)), match.group(2))
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.communicate(timeout=30)


def receive(session: Session, out: Path, *extra: str) -> subprocess.Popen[str]:
    cmd = ["wds", "receive", "--server", session.server, "--session", "img", "--out", str(out)]
    cmd += ["--interface", LOOPBACK, "--json", "--timeout", "60", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def summary(proc: subprocess.Popen[str]) -> tuple[int, dict[str, object]]:
    out, err = proc.communicate(timeout=90)
    assert out.strip(), err
    return proc.returncode, json.loads(out.strip().splitlines()[-1])


def _image(path: Path, size: int, seed: int) -> bytes:
    data = random.Random(seed).randbytes(size)
    path.write_bytes(data)
    return data


def test_keygen_prints_the_fingerprint_and_never_overwrites(tmp_path: Path) -> None:
    done = subprocess.run(["wds", "keygen", "--out", str(tmp_path / "k")], capture_output=True)
    assert done.returncode == 0, done.stderr
    fingerprint = done.stdout.split()[0].decode()
    from multicast import keys

    key = keys.load_private_key(tmp_path / "k" / "manifest.key")
    assert keys.fingerprint(key) == fingerprint
    assert (tmp_path / "k" / "manifest.key").stat().st_mode & 0o077 == 0
    again = subprocess.run(["wds", "keygen", "--out", str(tmp_path / "k")], capture_output=True)
    assert again.returncode == 2 and b"refusing" in again.stderr


def test_three_receiver_processes_get_the_exact_bytes(tmp_path: Path) -> None:
    subprocess.run(["wds", "keygen", "--out", str(tmp_path / "k")], check=True, capture_output=True)
    data = _image(tmp_path / "install.wim", 12 * MiB + 12345, 1)
    pub = str(tmp_path / "k" / "manifest.pub")
    args = ("--key", str(tmp_path / "k" / "manifest.key"), "--rate", "200mbit")
    with wds_send(tmp_path / "install.wim", *args, "--min-clients", "3", "--max-wait", "20") as s:
        # one of them also re-reads the whole image from the disk at the end (--readback)
        procs = [
            receive(s, tmp_path / f"out{i}", "--pubkey", pub, *(["--readback"] * (i == 2)))
            for i in range(3)
        ]
        results = [summary(p) for p in procs]
        sent, _ = s.proc.communicate(timeout=30)
    assert s.proc.returncode == 0 and "completed=3" in sent, sent
    digest = hashlib.sha256(data).digest()
    for i, (code, result) in enumerate(results):
        assert code == 0 and result["verified"] is True, result
        assert result["bytes"] == len(data) and result["chunks_rejected"] == 0
        assert result["mode"] == "multicast" and result["chunks_multicast"] == 13
        assert hashlib.sha256((tmp_path / f"out{i}").read_bytes()).digest() == digest
        assert not (tmp_path / f"out{i}.wds-partial").exists()


def test_unicast_receiver_fetches_ranges_with_the_same_verification(tmp_path: Path) -> None:
    data = _image(tmp_path / "install.wim", 5 * MiB + 7, 2)
    with wds_send(tmp_path / "install.wim", "--insecure") as s:
        code, result = summary(
            receive(s, tmp_path / "out", "--fingerprint", s.fingerprint, "--unicast", "--readback")
        )
    assert code == 0, result
    assert result["mode"] == "unicast" and result["chunks_unicast"] == 6
    assert (tmp_path / "out").read_bytes() == data


def test_a_manifest_signed_by_another_key_is_refused_with_exit_3(tmp_path: Path) -> None:
    _image(tmp_path / "install.wim", MiB, 3)
    subprocess.run(["wds", "keygen", "--out", str(tmp_path / "k")], check=True, capture_output=True)
    with wds_send(tmp_path / "install.wim", "--insecure") as s:  # a throw-away key, not ours
        code, result = summary(
            receive(s, tmp_path / "out", "--pubkey", str(tmp_path / "k/manifest.pub"))
        )
    assert code == 3 and result["verified"] is False, result
    assert "different key" in str(result["failure"])
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.wds-partial").exists()


def test_unwritable_target_is_exit_5_before_the_transfer(tmp_path: Path) -> None:
    _image(tmp_path / "install.wim", MiB, 4)
    with wds_send(tmp_path / "install.wim", "--insecure") as s:
        code, result = summary(receive(s, tmp_path / "no" / "such" / "dir", "--insecure"))
        code2, result2 = summary(receive(s, tmp_path, "--insecure"))  # a directory
    assert code == 5 and "cannot prepare" in str(result["failure"]), result
    assert code2 == 5 and result2["bytes_received"] == 0, result2


@contextlib.contextmanager
def tiny_tmpfs(tmp_path: Path, size: str) -> Iterator[Path]:
    require(os.geteuid() == 0, "mounting a tmpfs needs root")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "wds-test-tiny", str(mnt)], check=True
    )
    try:
        yield mnt
    finally:
        for _ in range(20):
            if subprocess.run(["umount", str(mnt)], check=False).returncode == 0:
                break
            time.sleep(0.2)


def test_an_image_that_does_not_fit_is_exit_5_before_the_transfer(tmp_path: Path) -> None:
    _image(tmp_path / "install.wim", 6 * MiB, 5)
    with tiny_tmpfs(tmp_path, "4m") as mnt, wds_send(tmp_path / "install.wim", "--insecure") as s:
        code, result = summary(receive(s, mnt / "out", "--insecure"))
        left = sorted(p.name for p in mnt.iterdir())
    assert code == 5 and "needed" in str(result["failure"]), result
    assert result["bytes_received"] == 0
    assert "out" not in left  # never a file under the target's name


def test_sigterm_is_exit_130_with_a_summary_and_no_target_file(tmp_path: Path) -> None:
    import signal

    _image(tmp_path / "install.wim", 2 * MiB, 6)
    # the sender waits for a second receiver that never comes: the receiver is mid-session
    with wds_send(tmp_path / "install.wim", "--insecure", "--min-clients", "2") as s:
        proc = receive(s, tmp_path / "out", "--insecure")
        deadline = time.monotonic() + 20
        while not (tmp_path / "out.wds-partial").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        code, result = summary(proc)
    assert code == 130 and result["verified"] is False and result["failure"], result
    assert not (tmp_path / "out").exists()
    assert (tmp_path / "out.wds-bitmap").exists()  # a rerun resumes


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def test_a_receiver_started_before_the_sender_waits_for_it(tmp_path: Path) -> None:
    """A machine that boots faster than the server starts: `wds receive` retries the
    connection for --wait-server seconds, then gets the image like any other receiver."""
    data = _image(tmp_path / "install.wim", 3 * MiB + 5, 7)
    port = _free_tcp_port()
    early = Session(None, port, "")  # type: ignore[arg-type]
    proc = receive(early, tmp_path / "out", "--insecure", "--wait-server", "20")
    try:
        time.sleep(1.0)  # the receiver has been refused a few times by now
        assert proc.poll() is None
        cmd = ["wds", "send", str(tmp_path / "install.wim"), "--session", "img"]
        cmd += ["--listen", LOOPBACK, "--port", str(port), "--interface", LOOPBACK]
        cmd += ["--group", _group(), "--group-port", str(_free_udp_port())]
        cmd += ["--insecure", "--timeout", "60", "--min-clients", "1"]
        sender = subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)
        code, result = summary(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert sender.returncode == 0, sender.stdout + sender.stderr
    assert code == 0 and result["verified"] is True, result
    assert (tmp_path / "out").read_bytes() == data


def test_no_server_is_exit_1_after_the_wait(tmp_path: Path) -> None:
    nobody = Session(None, _free_tcp_port(), "")  # type: ignore[arg-type]
    started = time.monotonic()
    code, result = summary(receive(nobody, tmp_path / "out", "--insecure", "--wait-server", "1"))
    assert code == 1 and "cannot fetch the manifest" in str(result["failure"]), result
    assert 0.9 < time.monotonic() - started < 15
    assert not (tmp_path / "out").exists()
