"""Adapter tier: real sockets, multicast on loopback (LAB.md: group in 239.0.0.0/8 on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import socket
from pathlib import Path

from wds_testsupport import require
from wmtp_harness import CHUNK, make_manifest

from multicast.events import SessionFinished
from multicast.net import (
    ReceiverService,
    SenderService,
    open_feedback_socket,
    open_group_socket,
    open_sender_socket,
)
from multicast.output import ImageOutput
from multicast.receiver import Receiver
from multicast.sender import Event, Sender, SenderSettings

LOOPBACK = "127.0.0.1"


class _Source:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self, offset: int, length: int) -> bytes:
        return self.data[offset : offset + length]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def _group_for_this_run() -> str:
    # 239.0.0.0/8 only (LAB.md); a per-run group keeps parallel runs apart
    return f"239.255.{random.randint(1, 254)}.{os.getpid() % 250 + 1}"


def _multicast_loopback_works(group: str, port: int) -> bool:
    try:
        rx = open_group_socket(group, port, LOOPBACK)
        tx = open_sender_socket(LOOPBACK)
    except OSError:
        return False
    try:
        tx.sendto(b"probe", (group, port))
        rx.settimeout(1.0)
        rx.setblocking(True)
        return rx.recv(16) == b"probe"
    except OSError:
        return False
    finally:
        rx.close()
        tx.close()


def test_loopback_multicast_two_receivers_byte_exact(tmp_path: Path) -> None:
    group, port = _group_for_this_run(), _free_port()
    require(_multicast_loopback_works(group, port), "multicast on 127.0.0.1 does not work here")
    data = random.Random(21).randbytes(16 * CHUNK + 777)  # ~1 MiB, 17 chunks
    manifest, digest = make_manifest(data)
    events: list[Event] = []
    stats: list[Sender] = []

    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        settings = SenderSettings(max_rate=20e6, linger=0.2, announce_interval=0.1)
        sender = Sender(
            manifest,
            manifest_digest=digest,
            source=_Source(data),
            settings=settings,
            now=loop.time(),
        )
        service = SenderService(
            sender, open_sender_socket(LOOPBACK), (group, port), on_event=events.append
        )
        receivers = []
        for i in range(2):
            machine = Receiver(
                manifest, manifest_digest=digest, rng=random.Random(i), now=loop.time()
            )
            out = ImageOutput(tmp_path / f"r{i}.wim", manifest, sync=False)
            receivers.append(
                ReceiverService(
                    machine,
                    out,
                    open_group_socket(group, port, LOOPBACK),
                    open_feedback_socket(LOOPBACK),
                )
            )
        stats.append(sender)
        codes = await asyncio.gather(
            service.run(timeout=20.0), *(r.run(timeout=20.0) for r in receivers)
        )
        for r in receivers:
            r.output.close()
        return codes[1:]

    codes = asyncio.run(main())
    assert codes == [0, 0]
    for i in range(2):
        got = (tmp_path / f"r{i}.wim").read_bytes()
        assert hashlib.sha256(got).digest() == manifest.image_sha256
    assert any(isinstance(e, SessionFinished) and e.completed == 2 for e in events)
    blocks = sum(manifest.blocks_in_chunk(i) for i in range(manifest.chunk_count))
    print(f"DATA sent {stats[0].data_sent} for {blocks} blocks, {stats[0].repairs_sent} repairs")


def test_tool_resumes_after_an_interrupted_run_and_fetches_the_manifest_by_http(
    tmp_path: Path,
) -> None:
    import functools
    import subprocess
    import sys
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    group, port = _group_for_this_run(), _free_port()
    require(_multicast_loopback_works(group, port), "multicast on 127.0.0.1 does not work here")
    data = random.Random(22).randbytes(6 * 1024 * 1024 + 3)
    (tmp_path / "img").write_bytes(data)
    root = Path(__file__).resolve().parents[2]
    run = functools.partial(subprocess.Popen, cwd=root, text=True, stdout=subprocess.PIPE)
    send = [sys.executable, "-m", "multicast", "send", str(tmp_path / "img")]
    send += ["--key", str(tmp_path / "k"), "--manifest-out", str(tmp_path / "manifest")]
    send += ["--group", group, "--port", str(port), "--interface", LOOPBACK]
    sender = run([*send, "--rate-mbps", "20", "--timeout", "60"])
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    http = ThreadingHTTPServer((LOOPBACK, 0), handler)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    try:
        assert sender.stdout is not None
        fingerprint = sender.stdout.readline().split()[1]  # "ready sha256:... host:port"
        url = f"http://{LOOPBACK}:{http.server_address[1]}/manifest"
        receive = [sys.executable, "-m", "multicast", "receive", str(tmp_path / "out")]
        receive += ["--manifest", url, "--fingerprint", fingerprint, "--interface", LOOPBACK]
        first = run([*receive, "--timeout", "1.2"])
        out1, _ = first.communicate(timeout=30)
        assert first.returncode == 1, out1  # interrupted: 20 Mbit/s needs ~2.5 s for 6 MiB
        second = run([*receive, "--timeout", "30"])
        out2, _ = second.communicate(timeout=60)
        assert second.returncode == 0, out2
        resumed = int(out2.split("resuming with ")[1].split("/")[0])
        assert 0 < resumed < 7, out2
        assert (tmp_path / "out").read_bytes() == data
        assert not (tmp_path / "out.wds-bitmap").exists()
    finally:
        http.shutdown()
        sender.terminate()
        sender.communicate(timeout=10)


def test_disk_error_ends_the_receiver_with_exit_5(tmp_path: Path) -> None:
    from multicast.output import OutputError

    group, port = _group_for_this_run(), _free_port()
    require(_multicast_loopback_works(group, port), "multicast on 127.0.0.1 does not work here")
    data = random.Random(23).randbytes(4 * CHUNK)
    manifest, digest = make_manifest(data)

    class FullDisk(ImageOutput):
        def write_chunk(self, index: int, data: bytes) -> None:
            if index == 2:
                raise OutputError("No space left on device")
            super().write_chunk(index, data)

    async def main() -> tuple[int, str | None]:
        loop = asyncio.get_running_loop()
        settings = SenderSettings(max_rate=20e6, linger=0.2, announce_interval=0.1)
        sender = Sender(
            manifest, manifest_digest=digest, source=_Source(data), settings=settings,
            now=loop.time(),
        )  # fmt: skip
        service = SenderService(sender, open_sender_socket(LOOPBACK), (group, port))
        machine = Receiver(manifest, manifest_digest=digest, rng=random.Random(1), now=loop.time())
        out = FullDisk(tmp_path / "r.wim", manifest, sync=False)
        receiver = ReceiverService(
            machine, out, open_group_socket(group, port, LOOPBACK), open_feedback_socket(LOOPBACK)
        )
        sending = asyncio.create_task(service.run(timeout=20.0))
        code = await receiver.run(timeout=20.0)
        sending.cancel()
        out.close()
        return code, receiver.failure

    code, failure = asyncio.run(main())
    assert code == 5 and failure is not None and "No space" in failure
