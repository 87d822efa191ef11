"""``wds pxe --config FILE``: run only the PXE side (ProxyDHCP and TFTP), in the foreground.

It prints one line per started service, as ``wds serve`` does, then ``wds pxe: ready``::

    wds pxe: pxe on 0.0.0.0 ports 67 and 4011 (ProxyDHCP, answer=all, record_pending=false)
    wds pxe: tftp on 0.0.0.0:69 serving /var/lib/wds/tftp

and stops cleanly on SIGTERM and SIGINT (exit 0). ``[pxe] enabled`` and ``[tftp] enabled`` still
decide which of the two run; HTTP and multicast sessions of the config are not started.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from functools import partial
from typing import Any

from wds.config import Config, load_config

DEFAULT_CONFIG = "config/wds.toml"


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "pxe",
        help="run only the PXE side: ProxyDHCP and TFTP, in the foreground",
        description="Load FILE and run its [pxe] ProxyDHCP server and its [tftp] server until "
        "SIGTERM or SIGINT (exit 0). One line per service on stdout says where it listens.",
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        default=DEFAULT_CONFIG,
        help=f"config file (default: {DEFAULT_CONFIG})",
    )
    p.set_defaults(handler=run)


def pxe_only(config: Config) -> Config:
    """``config`` with everything but [pxe] and [tftp] switched off."""
    import dataclasses

    http = dataclasses.replace(config.http, enabled=False)
    return dataclasses.replace(config, http=http, session=())


def run(args: argparse.Namespace) -> int:
    from wds.server import prepare_directories, serve

    config = pxe_only(load_config(args.config))
    if args.verbose == 0:
        logging.getLogger().setLevel(config.server.log_level.upper())
    prepare_directories(config)
    asyncio.run(serve(config, announce=partial(_announce, print)))
    return 0


def _announce(out: Any, line: str) -> None:
    out(line.replace("wds serve:", "wds pxe:", 1), flush=True)
