"""``wds tftp --root DIR``: run the TFTP server alone, in the foreground (like in.tftpd).

On startup it prints one line on stdout, which scripts and tests read to learn the port::

    wds tftp: serving DIR on ADDRESS:PORT

It stops cleanly on SIGTERM and SIGINT (exit 0).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import resource
import signal
import sys
from pathlib import Path
from typing import Any

from wds.config import TftpConfig, load_config
from wds.errors import ConfigError

#: command-line option -> TftpConfig key
_OVERRIDES = {
    "listen": "address",
    "port": "port",
    "blksize_max": "max_blksize",
    "windowsize_max": "max_windowsize",
    "timeout": "timeout",
    "retries": "max_retries",
    "max_transfers": "max_transfers",
    "max_transfers_per_client": "max_transfers_per_client",
    "max_queued": "max_queued",
}


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "tftp",
        help="run the TFTP server alone, in the foreground",
        description="Serve the files below DIR over TFTP (read-only; RFC 1350, 2347-2349, 7440). "
        "Prints 'wds tftp: serving DIR on ADDRESS:PORT' once listening; stops on SIGTERM/SIGINT.",
    )
    p.add_argument("--root", metavar="DIR", help="directory to serve (default: [tftp] root)")
    p.add_argument("--config", metavar="FILE", help="take the [tftp] settings from this config")
    p.add_argument("--listen", metavar="ADDR", help="IPv4 address to listen on (default 0.0.0.0)")
    p.add_argument("--port", type=int, metavar="N", help="UDP port (default 69; 0 = any free)")
    p.add_argument("--blksize-max", type=int, metavar="N", help="largest blksize granted")
    p.add_argument("--windowsize-max", type=int, metavar="N", help="largest windowsize granted")
    p.add_argument("--timeout", type=float, metavar="S", help="first retransmission timeout")
    p.add_argument("--retries", type=int, metavar="N", help="retransmissions before giving up")
    p.add_argument("--max-transfers", type=int, metavar="N", help="concurrent transfers in total")
    p.add_argument(
        "--max-transfers-per-client", type=int, metavar="N", help="concurrent transfers per client"
    )
    p.add_argument("--max-queued", type=int, metavar="N", help="requests waiting for a slot")
    p.add_argument(
        "--case-sensitive", action="store_true", help="match file names exactly (default: any case)"
    )
    p.add_argument(
        "--fixed-timeout",
        action="store_true",
        help="no round-trip measurement or adaptive window (plain RFC 1350 timeouts)",
    )
    p.add_argument(
        "--no-gso",
        action="store_true",
        help="send every datagram with its own system call (no UDP segmentation offload)",
    )
    p.set_defaults(handler=run)


def tftp_config_from_args(args: argparse.Namespace) -> TftpConfig:
    """The [tftp] config (from --config or defaults) with the command-line options applied."""
    if args.config:
        full = load_config(args.config)
        config = full.tftp
        if not config.address:
            config = dataclasses.replace(config, address=full.server.address)
    else:
        config = TftpConfig(address="0.0.0.0")
    fields = {f.name: f for f in dataclasses.fields(TftpConfig)}
    changes: dict[str, Any] = {}
    for option, key in _OVERRIDES.items():
        value = getattr(args, option)
        if value is None:
            continue
        check = fields[key].metadata.get("check")
        problem = check(value) if check is not None else None
        if problem:
            flag = "--" + option.replace("_", "-")
            raise ConfigError(f"{flag} {value} {problem}", key=f"tftp.{key}")
        changes[key] = value
    if args.root:
        changes["root"] = Path(args.root)
    if args.case_sensitive:
        changes["case_insensitive"] = False
    if args.fixed_timeout:
        changes["adaptive"] = False
    config = dataclasses.replace(config, **changes)
    if not config.address:
        config = dataclasses.replace(config, address="0.0.0.0")
    if not Path(config.root).is_dir():
        raise ConfigError(
            f"root {str(config.root)!r} is not a directory; pass --root DIR", key="tftp.root"
        )
    return config


def run(args: argparse.Namespace) -> int:
    config = tftp_config_from_args(args)
    _raise_file_limit(config.max_transfers + 64)
    try:
        asyncio.run(_serve(config, gso=not args.no_gso))
    except OSError as exc:
        print(
            f"wds: error: cannot listen on {config.address}:{config.port}: {exc}", file=sys.stderr
        )
        return 1
    return 0


async def _serve(config: TftpConfig, *, gso: bool = True) -> None:
    from pxe.tftp.server import TftpServer

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = TftpServer(config, gso=gso)
    host, port = await server.start()
    print(f"wds tftp: serving {config.root} on {host}:{port}", flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop()


def _raise_file_limit(wanted: int) -> None:
    """One socket per transfer: make sure the descriptor limit allows max_transfers of them."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
