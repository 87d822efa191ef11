"""``wds serve --config FILE``: run every configured service in one process."""

from __future__ import annotations

import argparse
import asyncio
import logging
from functools import partial
from pathlib import Path
from typing import Any

from wds.config import load_config


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "serve",
        help="run the deployment server (every service of the config)",
        description="Load FILE, create the state directory, store and TFTP root if missing, bind "
        "every enabled service (ProxyDHCP, TFTP, HTTP), drop root for [server] user, start the "
        "multicast sessions, and run until SIGTERM or SIGINT: running transfers then get "
        "[server] stop_grace seconds to finish (exit 0). SIGHUP reads FILE again (sessions "
        "added, removed or changed; other changes need a restart). One line per service on "
        "stdout says where it listens, then 'wds serve: ready'.",
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        default="config/wds.toml",
        help="config file (default: config/wds.toml)",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from wds.server import prepare_directories, serve

    config = load_config(args.config)
    if args.verbose == 0:
        logging.getLogger().setLevel(config.server.log_level.upper())
    prepare_directories(config)
    asyncio.run(serve(config, announce=partial(print, flush=True), config_path=Path(args.config)))
    return 0
