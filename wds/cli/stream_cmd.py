"""``wds send``, ``wds receive``, ``wds keygen``: one image to many machines (docs/PROTOCOL.md).

``wds send FILE --session NAME`` signs a manifest, serves it and the image over HTTP (aiohttp:
``GET /sessions/NAME/manifest`` and range requests on ``GET /sessions/NAME/image``), multicasts
the image and exits when every receiver that joined is done. Once listening it prints one line::

    wds send: session NAME on http://ADDR:PORT group GROUP:PORT key sha256:...

``wds receive --server ADDR:PORT --session NAME --out PATH`` fetches and verifies the manifest,
receives by multicast (or, with ``--unicast``, by HTTP range requests only), tops up its last
missing chunks over HTTP, and writes ``PATH`` only once its whole-file SHA-256 matched.

Receiver exit codes (PROTOCOL.md 8): 0 verified image; 1 incomplete (run again: it resumes);
2 usage; 3 manifest not trusted; 4 whole-file SHA-256 mismatch; 5 local I/O error (disk full,
unwritable target); 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import functools
import gc
import hashlib
import json
import os
import random
import re
import secrets
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from multicast import keys
from multicast.codec import MAX_CHUNK_COUNT, MAX_NAME_BYTES, block_size_for_mtu, build_manifest
from multicast.events import ChunkRejected, WriteChunk
from multicast.manifest import (
    build_manifest_from_file,
    manifest_digest,
    sign_manifest,
    verify_manifest,
)
from multicast.net import (
    ReceiverService,
    SenderService,
    open_feedback_socket,
    open_group_socket,
    open_sender_socket,
)
from multicast.output import ImageOutput
from multicast.receiver import Receiver, ReceiverSettings
from multicast.unicast import fetch_missing, fetch_range, fetch_whole
from wds.errors import WdsError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
MAX_MANIFEST_BYTES = 177 + MAX_NAME_BYTES + 32 * MAX_CHUNK_COUNT
#: after the multicast session ended, keep serving HTTP until it was idle this long (top-ups)
HTTP_LINGER = 3.0
#: chunk buffers a receiver may have open (PROTOCOL.md 7): about 2 s at 500 Mbit/s, so a
#: receiver that lags behind the carousel (a loaded host) keeps repairing blocks instead of
#: dropping half-repaired chunks and asking for them whole
OPEN_CHUNK_BYTES = 128 * 1024 * 1024
_RATE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmg]?)(bit|bps|b)?(?:/s)?$", re.IGNORECASE)


class UsageError(WdsError):
    exit_code = EXIT_USAGE


def parse_rate(text: str) -> float:
    """``500mbit``, ``1g``, ``200M``, ``80`` (Mbit/s) -> bytes per second."""
    match = _RATE.match(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a rate: {text!r} (e.g. 500mbit, 1gbit)")
    value, prefix, _ = match.groups()
    scale = {"": 1e6, "k": 1e3, "m": 1e6, "g": 1e9}[prefix.lower()]
    bits = float(value) * scale
    if not 1e5 <= bits <= 1e11:
        raise argparse.ArgumentTypeError(f"rate {text!r} outside 100kbit..100gbit")
    return bits / 8


def default_group(session: str) -> str:
    """239.255.x.y from the session name (administratively scoped, RFC 2365)."""
    h = hashlib.sha256(session.encode()).digest()
    return f"239.255.{1 + h[0] % 254}.{1 + h[1] % 254}"


def register(sub: Any) -> None:
    s: argparse.ArgumentParser = sub.add_parser(
        "send",
        help="multicast one image to many receivers (and serve it over HTTP)",
        description="Sign a manifest for FILE, serve it and the image over HTTP, multicast the "
        "image, and exit when every receiver that joined is done (or after --timeout).",
    )
    s.add_argument("file", metavar="FILE", type=Path)
    s.add_argument("--session", required=True, metavar="NAME", help="session name (1..64 bytes)")
    s.add_argument("--listen", default="0.0.0.0", metavar="ADDR", help="HTTP address")
    s.add_argument("--port", type=int, default=8080, metavar="HTTP_PORT", help="0 = any free")
    s.add_argument("--group", metavar="ADDR", help="multicast group (default 239.255.x.y)")
    s.add_argument("--group-port", type=int, default=9500, metavar="N", help="UDP port")
    s.add_argument("--interface", metavar="ADDR", help="IPv4 address to multicast from")
    s.add_argument("--min-clients", type=int, default=0, metavar="N", help="start at N joined")
    s.add_argument("--start-at", metavar="TIME", help="ISO 8601 start time (local if no zone)")
    s.add_argument("--max-wait", type=float, default=0.0, metavar="SECONDS")
    s.add_argument(
        "--rate",
        type=parse_rate,
        default=parse_rate("100mbit"),
        metavar="RATE",
        help="maximum rate on the link, Ethernet framing included, e.g. 500mbit (default 100mbit)",
    )
    trust = s.add_mutually_exclusive_group(required=True)
    trust.add_argument("--key", type=Path, metavar="FILE", help="Ed25519 key from wds keygen")
    trust.add_argument(
        "--insecure", action="store_true", help="sign with a throw-away key (print its fingerprint)"
    )
    s.add_argument("--mtu", type=int, default=1500, help="link MTU: DATA fills it (576..9216)")
    s.add_argument("--chunk-size", type=int, default=1024 * 1024, help="bytes per verified chunk")
    s.add_argument("--linger", type=float, default=2.0, help="idle seconds before finishing")
    s.add_argument("--timeout", type=float, default=3600.0, help="give up after SECONDS")
    s.add_argument(
        "--no-gso", action="store_true", help="one system call per datagram (no UDP_SEGMENT)"
    )
    s.set_defaults(handler=run_send)

    r: argparse.ArgumentParser = sub.add_parser(
        "receive",
        help="receive one image (multicast, HTTP top-up), verified chunk by chunk",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("--server", required=True, metavar="ADDR:PORT", help="wds send's HTTP address")
    r.add_argument("--session", required=True, metavar="NAME")
    r.add_argument("--out", required=True, type=Path, metavar="PATH")
    r.add_argument("--interface", metavar="ADDR", help="receiving IPv4 address (default: route)")
    rtrust = r.add_mutually_exclusive_group(required=True)
    rtrust.add_argument("--pubkey", type=Path, metavar="FILE", help="the sender's manifest.pub")
    rtrust.add_argument("--fingerprint", metavar="sha256:HEX", help="the sender key's fingerprint")
    rtrust.add_argument("--insecure", action="store_true", help="do not check who signed")
    r.add_argument("--unicast", action="store_true", help="fetch by HTTP range requests only")
    r.add_argument("--json", action="store_true", help="print a JSON summary at the end")
    r.add_argument("--timeout", type=float, default=3600.0, help="give up after SECONDS")
    r.add_argument("--sender-timeout", type=float, default=15.0, help="silence that ends multicast")
    r.add_argument(
        "--wait-server",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="keep trying to reach the server this long while nothing listens yet or the "
        "network is not up (default 30; 0 = one try)",
    )
    r.add_argument("--parallel", type=int, default=4, help="HTTP connections with --unicast")
    r.add_argument("--no-gro", action="store_true", help="one recvmsg per datagram (no UDP_GRO)")
    r.add_argument(
        "--readback",
        action="store_true",
        help="at the end, also drop the image from the page cache and hash it again as the disk "
        "has it (a second full read; the default hashes each chunk read back after its write)",
    )
    r.set_defaults(handler=run_receive)

    k: argparse.ArgumentParser = sub.add_parser(
        "keygen", help="create the Ed25519 key that signs session manifests"
    )
    k.add_argument("--out", required=True, type=Path, metavar="DIR")
    k.set_defaults(handler=run_keygen)


# ------------------------------------------------------------------------------------ keygen


def run_keygen(args: argparse.Namespace) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    private = args.out / "manifest.key"
    if private.exists():
        raise UsageError(f"{private} exists; refusing to replace a key receivers may pin")
    key = keys.generate_key()
    keys.save_private_key(key, private)
    keys.save_public_key(key, args.out / "manifest.pub")
    print(f"{keys.fingerprint(key)}  {private} {args.out / 'manifest.pub'}")
    return EXIT_OK


# -------------------------------------------------------------------------------------- send


class _FileSource:
    def __init__(self, path: Path) -> None:
        self._file = path.open("rb")

    def read(self, offset: int, length: int) -> bytes:
        return os.pread(self._file.fileno(), length, offset)


def run_send(args: argparse.Namespace) -> int:
    if args.interface is None:
        if args.listen in ("0.0.0.0", ""):
            raise UsageError("--interface ADDR is needed when --listen is 0.0.0.0")
        args.interface = args.listen
    return _run_main(_send(args))


async def _send(args: argparse.Namespace) -> int:
    from multicast import http_server
    from multicast.sender import Sender, SenderSettings, start_at_on_clock

    key = keys.generate_key() if args.insecure else keys.load_private_key(args.key)
    group = args.group or default_group(args.session)
    try:
        manifest = build_manifest_from_file(
            args.file,
            session_id=secrets.randbits(64),
            name=args.session,
            chunk_size=args.chunk_size,
            block_size=block_size_for_mtu(args.mtu),
            group=group,
            port=args.group_port,
            rate_kbps=int(args.rate * 8 / 1000),
        )
    except OSError as exc:
        raise UsageError(f"{args.file}: cannot read: {exc}") from None
    wire = build_manifest(sign_manifest(manifest, key))
    loop = asyncio.get_running_loop()
    start_at = None
    if args.start_at:
        start_at = start_at_on_clock(args.start_at, wall_now=time.time(), clock_now=loop.time())
    scheduled = bool(args.min_clients or args.max_wait or start_at is not None)
    settings = SenderSettings(
        max_rate=args.rate,
        min_rate=min(args.rate, 2 * 1.25e6),
        mode="scheduled" if scheduled else "auto",
        start_at=start_at,
        min_clients=args.min_clients,
        max_wait=args.max_wait,
        linger=args.linger,
    )
    sender = Sender(
        manifest,
        manifest_digest=manifest_digest(wire),
        source=_FileSource(args.file),
        settings=settings,
        now=loop.time(),
    )
    web = http_server.SessionHttp(args.session, wire, args.file)
    runner, http_port = await http_server.start(web, args.listen, args.port)
    try:
        sock = open_sender_socket(args.interface)
        print(
            f"wds send: session {args.session} on http://{args.listen}:{http_port} "
            f"group {group}:{args.group_port} key {keys.fingerprint(key)}",
            flush=True,
        )
        if args.insecure:
            print("wds send: --insecure: receivers must pin the key above or use --insecure")
        service = SenderService(sender, sock, (group, args.group_port), gso=not args.no_gso)
        started = loop.time()
        with contextlib.suppress(TimeoutError):
            await service.run(args.timeout)
        # receivers may be topping up over HTTP: serve until HTTP has been idle a while
        while web.idle_for() < HTTP_LINGER and loop.time() - started < args.timeout:
            await asyncio.sleep(0.2)
    finally:
        await runner.cleanup()
    print(
        f"wds send: finished completed={sender.completed} data={sender.data_sent} "
        f"repairs={sender.repairs_sent} gso_sends={service.gso_sends} "
        f"http_requests={web.requests} range_requests={web.image_requests}",
        flush=True,
    )
    # 0: somebody got the image (by multicast, or by HTTP ranges: --unicast receivers do not
    # join the multicast session, a sender serving only them runs until --timeout or SIGTERM)
    return EXIT_OK if sender.completed or web.image_requests > 0 else EXIT_FAILED


# ----------------------------------------------------------------------------------- receive


@dataclass
class Summary:
    """What ``wds receive --json`` prints (and the human line is made of)."""

    session: str
    out: str
    exit: int = EXIT_FAILED
    verified: bool = False
    bytes: int = 0
    bytes_received: int = 0
    seconds: float = 0.0
    mbit_per_s: float = 0.0
    chunks: int = 0
    chunks_resumed: int = 0
    chunks_received: int = 0
    chunks_multicast: int = 0
    chunks_unicast: int = 0
    chunks_repaired: int = 0
    chunks_rejected: int = 0
    naks_sent: int = 0
    datagrams: int = 0
    reads: int = 0
    fallback_used: bool = False
    redirected: bool = False
    mode: str = "multicast"
    failure: str | None = None
    _rejected: set[int] = field(default_factory=set, repr=False)
    _unicast: bool = field(default=False, repr=False)

    def on_event(self, e: object) -> None:
        if isinstance(e, WriteChunk):
            self.chunks_received += 1
            self.bytes_received += len(e.data)
            if self._unicast:
                self.chunks_unicast += 1
            else:
                self.chunks_multicast += 1
        elif isinstance(e, ChunkRejected):
            self.chunks_rejected += 1
            self._rejected.add(e.index)

    def public(self) -> dict[str, object]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}


def run_receive(args: argparse.Namespace) -> int:
    host, _, port = args.server.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--server {args.server!r}: expected ADDR:PORT")
    args.host, args.http_port = host.strip("[]"), int(port)
    if args.interface is None:
        args.interface = _route_source(args.host, args.http_port)
    summary = Summary(session=args.session, out=str(args.out))
    summary.mode = "unicast" if args.unicast else "multicast"
    try:
        code = _run_main(_receive(args, summary))
    except WdsError as exc:
        summary.failure = str(exc)
        code = exc.exit_code
    summary.exit = code
    summary.verified = code == EXIT_OK
    if code != EXIT_OK and summary.failure is None:
        summary.failure = "interrupted" if code == 130 else "incomplete"
    if args.json:
        print(json.dumps(summary.public()), flush=True)
    else:
        verdict = "verified" if summary.verified else f"FAILED ({summary.failure})"
        print(
            f"wds receive: {args.out}: {verdict}; {summary.bytes_received} bytes in "
            f"{summary.seconds:.2f} s ({summary.mbit_per_s:.0f} Mbit/s), "
            f"{summary.chunks_resumed} chunks resumed, {summary.chunks_repaired} repaired, "
            f"{summary.chunks_rejected} rejected, {summary.chunks_unicast} over HTTP",
            file=sys.stderr,
        )
    return code


def _route_source(host: str, port: int) -> str:
    """The local address the kernel would use towards ``host`` (connect() sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((host, port))
        except OSError as exc:
            raise UsageError(f"no route to {host}: {exc}; give --interface") from None
        return str(s.getsockname()[0])


def _run_main(coro: Any) -> int:
    """asyncio.run with SIGTERM treated like Ctrl-C (exit 130, REPORT(LEAVE) sent).

    The objects made by start-up (imports, parsers) are moved out of the cyclic collector's
    sight first (``gc.freeze``): the transfer allocates a small tuple per datagram, and each
    older-generation collection would otherwise walk every module's objects again."""
    gc.freeze()

    async def main() -> int:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        assert task is not None
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            return int(await coro)
        except asyncio.CancelledError:
            return 130

    try:
        return asyncio.run(main())
    except KeyboardInterrupt:
        return 130


#: connection errors that mean "not yet": nothing listens (the server is starting), the network
#: or its route is not up (a machine that just booted); anything else fails at once
_NOT_YET = (ConnectionRefusedError, ConnectionResetError)
_NOT_YET_ERRNOS = (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EADDRNOTAVAIL)


async def _fetch_manifest(args: argparse.Namespace, path: str) -> bytes:
    """The manifest, retried (50 ms doubling to 250 ms: a refused connection costs nothing,
    and a receiver should not sleep through the sender's first second) while the server cannot
    be reached yet, for at most ``--wait-server`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(0.0, args.wait_server)
    pause = 0.05
    while True:
        try:
            return await fetch_whole(
                args.host, args.http_port, path, max_length=MAX_MANIFEST_BYTES, timeout=30.0
            )
        except OSError as exc:
            not_yet = isinstance(exc, _NOT_YET) or exc.errno in _NOT_YET_ERRNOS
            left = deadline - loop.time()
            if not not_yet or left <= 0:
                raise
        await asyncio.sleep(min(pause, left))  # the last try is at the deadline
        pause = min(0.25, pause * 2)


async def _receive(args: argparse.Namespace, summary: Summary) -> int:
    loop = asyncio.get_running_loop()
    base = f"/sessions/{args.session}"
    try:
        wire = await _fetch_manifest(args, f"{base}/manifest")
    except (OSError, TimeoutError) as exc:
        summary.failure = f"cannot fetch the manifest from {args.server}: {exc}"
        return EXIT_FAILED
    public = keys.load_public_key(args.pubkey) if args.pubkey else None
    manifest = verify_manifest(
        wire, public_key=public, key_fingerprint=args.fingerprint, insecure=args.insecure
    )
    summary.bytes, summary.chunks = manifest.image_size, manifest.chunk_count
    output = ImageOutput(args.out, manifest, readback=args.readback)
    fetch = functools.partial(fetch_range, args.host, args.http_port, f"{base}/image")
    started = time.monotonic()
    try:
        machine = Receiver(
            manifest,
            manifest_digest=manifest_digest(wire),
            rng=random.Random(secrets.randbits(64)),
            now=loop.time(),
            have=output.have,
            settings=ReceiverSettings(
                sender_timeout=args.sender_timeout, max_open_bytes=OPEN_CHUNK_BYTES
            ),
        )
        summary.chunks_resumed = machine.verified_chunks
        with _progress(machine, args.json) as progress:
            if args.unicast:
                code = await asyncio.wait_for(
                    _unicast_only(machine, output, fetch, summary, args.parallel), args.timeout
                )
            else:
                code = await _multicast(args, machine, output, fetch, summary)
            progress()
    finally:
        output.close()
        summary.seconds = round(time.monotonic() - started, 3)
        if summary.seconds > 0:
            summary.mbit_per_s = round(summary.bytes_received * 8 / summary.seconds / 1e6, 1)
        summary.naks_sent = machine.naks_sent
        repaired = machine.repair_chunks | summary._rejected
        summary.chunks_repaired = sum(1 for i in repaired if machine.has_chunk(i))
    return code


async def _multicast(
    args: argparse.Namespace,
    machine: Receiver,
    output: ImageOutput,
    fetch: Any,
    summary: Summary,
) -> int:
    m = machine.manifest

    async def http_fetch(start: int, length: int) -> bytes:
        summary.fallback_used = True
        summary._unicast = True  # every chunk from here on comes over HTTP
        return await fetch(start, length)  # type: ignore[no-any-return]

    service = ReceiverService(
        machine,
        output,
        open_group_socket(m.group, m.port, args.interface),
        open_feedback_socket(args.interface),
        unicast=http_fetch,
        on_event=summary.on_event,
        gro=not args.no_gro,
    )
    try:
        code = await service.run(args.timeout)
    except TimeoutError:
        summary.failure = f"timed out after {args.timeout:.0f} s (run again to resume)"
        return EXIT_FAILED
    summary.redirected = service.redirected
    summary.datagrams, summary.reads = service.datagrams, service.reads
    summary.failure = service.failure
    return code


async def _unicast_only(
    machine: Receiver, output: ImageOutput, fetch: Any, summary: Summary, parallel: int
) -> int:
    summary._unicast = True

    async def on_events(events: Any) -> None:
        for e in events:
            summary.on_event(e)
            if isinstance(e, WriteChunk):
                await asyncio.to_thread(output.write_chunk, e.index, e.data)

    complete = await fetch_missing(
        machine, fetch, asyncio.get_running_loop().time, on_events, parallel=parallel
    )
    if not complete:
        summary.failure = "some chunks could not be fetched over HTTP (run again to resume)"
        return EXIT_FAILED
    await asyncio.to_thread(output.verify_whole)
    return EXIT_OK


@contextlib.contextmanager
def _progress(machine: Receiver, quiet: bool) -> Any:
    """A rich progress bar on a terminal (stderr), refreshed from a task; nothing otherwise."""
    if quiet or not sys.stderr.isatty():
        yield lambda: None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    m = machine.manifest

    def done_bytes() -> int:
        return min(m.image_size, machine.verified_chunks * m.chunk_size)

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        transient=False,
    ) as bar:
        task = bar.add_task(m.name, total=m.image_size, completed=done_bytes())

        async def refresh() -> None:
            while True:
                bar.update(task, completed=done_bytes())
                await asyncio.sleep(0.2)

        ticker = asyncio.get_running_loop().create_task(refresh())
        try:
            yield lambda: bar.update(task, completed=done_bytes())
        finally:
            ticker.cancel()
