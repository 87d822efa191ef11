"""``wds check-config FILE``: validate a config file without starting anything."""

from __future__ import annotations

import argparse
from typing import Any

from wds.config import load_config


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "check-config",
        help="validate a config file and print what it configures",
        description="Load FILE as wds would and report the first problem: the key, the value "
        "and what to do. Exit 0 when valid, 1 when not.",
    )
    p.add_argument("file", metavar="FILE", help="config file, e.g. config/wds.toml")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing when valid")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    if not args.quiet:
        enabled = [
            name
            for name, on in (
                ("tftp", config.tftp.enabled),
                ("pxe", config.pxe.enabled),
                ("http", config.http.enabled),
            )
            if on
        ]
        print(f"{args.file}: ok")
        print(f"  services: {', '.join(enabled) or 'none'}")
        print(f"  store: {config.server.store}")
        print(f"  sessions: {len(config.session)}")
    return 0
