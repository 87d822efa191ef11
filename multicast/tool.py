"""``python -m multicast send|receive``: one session's sender or receiver as a process.

A stand-alone runner for the lab, benchmarks and manual tests until the ``wds`` CLI and the HTTP
server grow their session commands. The manifest travels as a file here (``--manifest-out`` /
``--manifest``); over HTTP later. Receiver exit codes are those of PROTOCOL.md section 8.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import random
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path

from multicast import keys
from multicast.codec import MAX_CHUNK_COUNT, MAX_NAME_BYTES, block_size_for_mtu, build_manifest
from multicast.events import Ignored
from multicast.manifest import build_manifest_from_file, manifest_digest, sign_manifest
from multicast.manifest import verify_manifest as verify
from multicast.net import (
    ReceiverService,
    SenderService,
    open_feedback_socket,
    open_group_socket,
    open_sender_socket,
)
from multicast.output import ImageOutput
from multicast.receiver import Receiver, ReceiverSettings
from multicast.sender import Event, Sender, SenderSettings
from multicast.unicast import Fetch, fetch_range, fetch_whole
from wds.errors import WdsError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNTRUSTED = 0, 1, 2, 3
#: the largest manifest PROTOCOL.md allows (section 2), read no further
MAX_MANIFEST_BYTES = 177 + MAX_NAME_BYTES + 32 * MAX_CHUNK_COUNT


class _Source:
    def __init__(self, path: Path) -> None:
        self._file = path.open("rb")

    def read(self, offset: int, length: int) -> bytes:
        self._file.seek(offset)
        return self._file.read(length)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m multicast", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("send", help="serve one image to a multicast group until all are done")
    s.add_argument("image", type=Path)
    s.add_argument("--key", type=Path, required=True, help="Ed25519 key (created if missing)")
    s.add_argument("--manifest-out", type=Path, required=True)
    s.add_argument("--group", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--interface", required=True, help="IPv4 address of the sending interface")
    s.add_argument("--name", default="image")
    s.add_argument("--rate-mbps", type=float, default=100.0)
    s.add_argument("--min-rate-mbps", type=float, default=0.0)
    s.add_argument("--mtu", type=int, default=1500)
    s.add_argument("--chunk-size", type=int, default=1024 * 1024)
    s.add_argument("--ttl", type=int, default=1)
    s.add_argument("--min-clients", type=int, default=0)
    s.add_argument("--max-wait", type=float, default=0.0)
    s.add_argument("--slow-client", choices=("unicast", "wait", "drop"), default="unicast")
    s.add_argument("--min-goodput-mbps", type=float, default=10.0)
    s.add_argument("--slow-window", type=float, default=5.0, help="seconds goodput is judged on")
    s.add_argument("--linger", type=float, default=2.0)
    s.add_argument("--timeout", type=float, default=600.0)
    r = sub.add_parser("receive", help="receive one image into a file (resumable)")
    r.add_argument("target", type=Path)
    r.add_argument("--manifest", required=True, help="a file or http://HOST:PORT/PATH")
    trust = r.add_mutually_exclusive_group(required=True)
    trust.add_argument("--fingerprint", help="sha256:... of the server's manifest key")
    trust.add_argument("--public-key", type=Path, help="the server's manifest.pub")
    trust.add_argument("--insecure", action="store_true", help="do not check who signed")
    r.add_argument("--interface", required=True, help="IPv4 address of the receiving interface")
    r.add_argument(
        "--http", help="HOST:PORT/PATH of the image for the unicast top-up (HTTP range requests)"
    )
    r.add_argument("--timeout", type=float, default=600.0)
    r.add_argument(
        "--sender-timeout", type=float, default=15.0, help="seconds of silence that end multicast"
    )
    p.add_argument("-v", "--verbose", action="count", default=0)
    return p


async def _send(args: argparse.Namespace) -> int:
    key = keys.load_or_create_private_key(args.key)
    manifest = build_manifest_from_file(
        args.image,
        session_id=secrets.randbits(64),
        name=args.name,
        chunk_size=args.chunk_size,
        block_size=block_size_for_mtu(args.mtu),
        group=args.group,
        port=args.port,
        rate_kbps=int(args.rate_mbps * 1000),
    )
    wire = build_manifest(sign_manifest(manifest, key))
    args.manifest_out.write_bytes(wire)
    rate = args.rate_mbps * 1e6 / 8
    min_rate = args.min_rate_mbps * 1e6 / 8 or min(rate, max(125e3, args.min_goodput_mbps * 25e4))
    settings = SenderSettings(
        max_rate=rate,
        min_rate=min_rate,
        mode="scheduled" if args.min_clients or args.max_wait else "auto",
        min_clients=args.min_clients,
        max_wait=args.max_wait,
        slow_client=args.slow_client,
        min_goodput=args.min_goodput_mbps * 1e6 / 8,
        slow_window=args.slow_window,
        linger=args.linger,
    )
    loop = asyncio.get_running_loop()
    sender = Sender(
        manifest,
        manifest_digest=manifest_digest(wire),
        source=_Source(args.image),
        settings=settings,
        now=loop.time(),
    )
    sock = open_sender_socket(args.interface, args.ttl)
    host, port = sock.getsockname()
    print(f"ready {keys.fingerprint(key)} {host}:{port}", flush=True)

    def event(e: Event) -> None:
        if not isinstance(e, Ignored):
            print(type(e).__name__, *vars(e).values(), flush=True)

    service = SenderService(sender, sock, (args.group, args.port), on_event=event)
    await service.run(args.timeout)
    print(
        f"finished completed={sender.completed} data={sender.data_sent} "
        f"repairs={sender.repairs_sent}",
        flush=True,
    )
    return EXIT_OK if sender.completed else EXIT_FAILED


async def _receive(args: argparse.Namespace) -> int:
    try:
        wire = await _read_manifest(args.manifest)
    except OSError as exc:
        print(f"error: cannot read the manifest: {exc}", file=sys.stderr)
        return EXIT_USAGE
    public = keys.load_public_key(args.public_key) if args.public_key else None
    manifest = verify(
        wire, public_key=public, key_fingerprint=args.fingerprint, insecure=args.insecure
    )
    output = ImageOutput(args.target, manifest)
    try:
        loop = asyncio.get_running_loop()
        machine = Receiver(
            manifest,
            manifest_digest=manifest_digest(wire),
            rng=random.Random(secrets.randbits(64)),
            now=loop.time(),
            have=output.have,
            settings=ReceiverSettings(sender_timeout=args.sender_timeout),
        )
        print(f"resuming with {machine.verified_chunks}/{manifest.chunk_count} chunks", flush=True)
        service = ReceiverService(
            machine,
            output,
            open_group_socket(manifest.group, manifest.port, args.interface),
            open_feedback_socket(args.interface),
            unicast=_http_fetch(args.http) if args.http else None,
        )
        code = await service.run(args.timeout)
    finally:
        output.close()
    print(
        f"exit={code} verified={machine.verified_chunks}/{manifest.chunk_count} "
        f"rejected={machine.rejected_chunks} naks={machine.naks_sent} "
        f"redirected={int(service.redirected)} "
        f"failure={service.failure or '-'}",
        flush=True,
    )
    return code


async def _read_manifest(where: str) -> bytes:
    """A file, or ``http://HOST:PORT/PATH`` (PROTOCOL.md 5: the transport is not trusted)."""
    if where.startswith("http://"):
        hostport, _, path = where.removeprefix("http://").partition("/")
        host, _, port = hostport.rpartition(":")
        return await fetch_whole(
            host, int(port or 80), "/" + path, max_length=MAX_MANIFEST_BYTES, timeout=30.0
        )
    with open(where, "rb") as f:
        return f.read(MAX_MANIFEST_BYTES + 1)


def _http_fetch(spec: str) -> Fetch:
    hostport, _, path = spec.partition("/")
    host, _, port = hostport.rpartition(":")
    return functools.partial(fetch_range, host, int(port), "/" + path)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)])
    try:
        return asyncio.run(_send(args) if args.command == "send" else _receive(args))
    except TimeoutError:
        print("error: timed out", file=sys.stderr)
        return EXIT_FAILED
    except WdsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
