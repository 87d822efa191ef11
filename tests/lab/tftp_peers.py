"""TFTP peers for interop tests and benches: the wds server process, real clients, a raw client.

The raw client here is deliberately written apart from ``pxe.tftp`` (its own few lines of
``struct``), so an interop test never checks wds's codec against itself.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab import netns

# RFC 1350 opcodes
RRQ, WRQ, DATA, ACK, ERROR, OACK = 1, 2, 3, 4, 5, 6

#: the startup line the wds contract promises: "wds tftp: serving DIR on ADDR:PORT"
STARTUP_RE = r"wds tftp: serving .* on (?P<host>[0-9.]+):(?P<port>\d+)\s*$"


def wds_command() -> list[str]:
    """How to run wds: ``$WDS_BIN`` (split like a shell), else the ``wds`` script installed beside
    this interpreter (a venv need not be on PATH), else ``python -m wds.cli.main``."""
    if override := os.environ.get("WDS_BIN"):
        return shlex.split(override)
    beside = Path(sys.executable).parent / "wds"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    return [sys.executable, "-m", "wds.cli.main"]


def wds_tftp_available() -> bool:
    """True once ``wds tftp --help`` works (the server is being written alongside these tests)."""
    try:
        proc = subprocess.run(
            [*wds_command(), "tftp", "--help"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0 and "--root" in proc.stdout


@dataclass
class ServerProcess:
    """A TFTP server started by :func:`start_wds_tftp`; :meth:`stop` is idempotent."""

    proc: subprocess.Popen[bytes]
    host: str
    port: int
    log_path: Path
    extra: dict[str, Any] = field(default_factory=dict)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL; return the exit status."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


def start_wds_tftp(
    root: Path,
    host: str,
    log_path: Path,
    *,
    ns: netns.Namespace | None = None,
    port: int = 0,
    extra_args: tuple[str, ...] = (),
    timeout: float = 30.0,
) -> ServerProcess:
    """Start ``wds tftp`` (in ``ns``, or on this host) and wait for its startup line."""
    argv = [
        *wds_command(),
        "tftp",
        "--root",
        str(root),
        "--listen",
        host,
        "--port",
        str(port),
        *extra_args,
    ]
    with log_path.open("wb") as log:
        if ns is None:
            proc: subprocess.Popen[bytes] = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=log, start_new_session=True
            )
        else:
            proc = ns.popen(argv, stdout=subprocess.PIPE, stderr=log)
    server = ServerProcess(proc, host, port, log_path)
    try:
        assert proc.stdout is not None
        match = netns.wait_for_line(proc.stdout, STARTUP_RE, timeout)
    except BaseException:
        server.stop()
        raise netns.LabError(f"wds tftp did not start: {server.log()}") from None
    server.port = int(match.group("port"))
    return server


# ---------------------------------------------------------------- real clients' command lines


def curl_get(
    host: str,
    port: int,
    remote: str,
    local: Path,
    *,
    blksize: int | None = None,
    no_options: bool = False,
    max_time: float = 120,
) -> list[str]:
    argv = ["curl", "-sS", "--max-time", str(max_time), "-o", str(local)]
    if blksize is not None:
        argv += ["--tftp-blksize", str(blksize)]
    if no_options:
        argv.append("--tftp-no-options")
    return [*argv, f"tftp://{host}:{port}/{remote}"]


def curl_put(host: str, port: int, local: Path, remote: str, *, max_time: float = 30) -> list[str]:
    return [
        "curl",
        "-sS",
        "--max-time",
        str(max_time),
        "-T",
        str(local),
        f"tftp://{host}:{port}/{remote}",
    ]


def atftp_get(
    host: str, port: int, remote: str, local: Path, options: dict[str, int | None] | None = None
) -> list[str]:
    """atftp client; an option whose value is None is sent bare (``tsize`` asks for the size)."""
    argv = ["atftp", "--get", "-r", remote, "-l", str(local)]
    for name, value in (options or {}).items():
        argv += ["--option", name if value is None else f"{name} {value}"]
    return [*argv, host, str(port)]


def tftp_hpa(host: str, port: int, *command: str) -> list[str]:
    """tftp-hpa client in binary mode running one ``-c`` command (``get R L``, ``put L R``).

    tftp-hpa 5.2's client sends no options (no blksize/tsize commands: it is the plain
    RFC 1350 lockstep client) and exits 0 even after an error packet: check its output.
    """
    return ["tftp", "-m", "binary", host, str(port), "-c", *command]


# ---------------------------------------------------------------- a raw client


def build_request(
    opcode: int, filename: str, options: dict[str, str], mode: str = "octet"
) -> bytes:
    parts = [filename, mode]
    for name, value in options.items():
        parts += [name, value]
    return struct.pack("!H", opcode) + b"".join(p.encode() + b"\0" for p in parts)


def parse_oack(payload: bytes) -> dict[str, str]:
    fields = payload.split(b"\0")
    if fields and fields[-1] == b"":
        fields.pop()
    if len(fields) % 2:
        raise ValueError(f"odd OACK field count: {payload!r}")
    return {fields[i].decode().lower(): fields[i + 1].decode() for i in range(0, len(fields), 2)}


@dataclass
class RawTransfer:
    oack: dict[str, str] | None
    data: bytes
    error: tuple[int, str] | None
    datagrams: int
    first_data_len: int | None


def raw_get(
    host: str,
    port: int,
    filename: str,
    options: dict[str, str],
    *,
    window: int = 1,
    timeout: float = 1.0,
    max_datagrams: int = 200_000,
    time_limit: float = 60.0,
) -> RawTransfer:
    """Fetch ``filename`` with a minimal RFC 1350/2347/7440 client, bounded in count and time.

    ``window`` is the windowsize the client believes in: it ACKs every ``window``-th block, on a
    short block and, on a receive timeout, the last block it holds.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(timeout)
    try:
        sock.sendto(build_request(RRQ, filename, options), (host, port))
        data = bytearray()
        oack: dict[str, str] | None = None
        peer: tuple[str, int] | None = None
        blksize, expected, since_ack, count, first_len = 512, 1, 0, 0, None
        deadline = time.monotonic() + time_limit
        while count < max_datagrams and time.monotonic() < deadline:
            try:
                packet, addr = sock.recvfrom(65536)
            except TimeoutError:
                if peer is None:
                    raise
                sock.sendto(struct.pack("!HH", ACK, (expected - 1) & 0xFFFF), peer)
                continue
            count += 1
            if peer is None:
                peer = addr
            elif addr != peer:
                continue  # RFC 1350: a datagram from another TID is not ours
            opcode = struct.unpack_from("!H", packet)[0]
            if opcode == ERROR:
                code = struct.unpack_from("!H", packet, 2)[0]
                return RawTransfer(
                    oack,
                    bytes(data),
                    (code, packet[4:].rstrip(b"\0").decode(errors="replace")),
                    count,
                    first_len,
                )
            if opcode == OACK and oack is None and not data:
                oack = parse_oack(packet[2:])
                blksize = int(oack.get("blksize", 512))
                window = int(oack.get("windowsize", 1)) if "windowsize" in oack else 1
                sock.sendto(struct.pack("!HH", ACK, 0), peer)
                continue
            if opcode != DATA:
                raise ValueError(f"unexpected opcode {opcode}")
            block = struct.unpack_from("!H", packet, 2)[0]
            if block != expected & 0xFFFF:
                sock.sendto(struct.pack("!HH", ACK, (expected - 1) & 0xFFFF), peer)
                since_ack = 0
                continue
            payload = packet[4:]
            if first_len is None:
                first_len = len(payload)
            data += payload
            expected += 1
            since_ack += 1
            last = len(payload) < blksize
            if last or since_ack >= window:
                sock.sendto(struct.pack("!HH", ACK, block), peer)
                since_ack = 0
            if last:
                return RawTransfer(oack, bytes(data), None, count, first_len)
        raise TimeoutError(f"transfer of {filename} not done after {count} datagrams")
    finally:
        sock.close()


def raw_request_reply(host: str, port: int, request: bytes, timeout: float = 3.0) -> bytes:
    """Send one request datagram and return the first reply (raises TimeoutError).

    If the reply opens a transfer (OACK or DATA), it is cancelled at once with an ERROR packet
    (RFC 2347: error 8 declines an OACK), so the server holds no transfer slot for it.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(request, (host, port))
        reply, peer = sock.recvfrom(65536)
        if struct.unpack_from("!H", reply)[0] in (OACK, DATA):
            sock.sendto(struct.pack("!HH", ERROR, 8) + b"test done\0", peer)
        return reply
