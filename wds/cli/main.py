"""Entry point of the ``wds`` console script."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from wds import __version__
from wds.errors import WdsError
from wds.logs import setup_logging

DESCRIPTION = """\
wds - network deployment server.

Machines PXE-boot from wds, load a boot image over TFTP, and receive an install image
(a Windows WIM) by multicast or unicast, verified chunk by chunk.
"""

EPILOG = """\
exit status: 0 success, 1 failure (a bad config, a corrupt image, a refused request),
2 unreadable input or wrong usage, 130 interrupted.
Run 'wds COMMAND --help' for the options of one command.
"""

#: command modules, each with register(subparsers); imported lazily so one broken optional
#: dependency cannot break unrelated commands.
COMMAND_MODULES = (
    "wds.cli.config_cmd",
    "wds.cli.image_cmd",
    "wds.cli.tftp_cmd",
    "wds.cli.serve_cmd",
    "wds.cli.device_cmd",
    "wds.cli.status_cmd",
    "wds.cli.session_cmd",
    "wds.cli.pxe_cmd",
    "wds.cli.stream_cmd",
    "wds.cli.lab_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wds",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"wds {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-v info, -vv debug)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    import importlib

    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # that command group is not built yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    setup_logging(level)  # journald-ready under systemd (wds.logs)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args))
    except WdsError as exc:
        print(f"wds: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("wds: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `wds image dir ... | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
