"""Entry point of the ``wds`` console script."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

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

#: command modules, each with register(subparsers), by the top-level commands they add. Imported
#: lazily: ``wds receive`` builds only its own module's parser, so a machine booting into the
#: deploy environment (or eight receivers started at once) does not pay for the image store,
#: the WIM reader and the web client at start-up; ``wds --help`` imports them all. A module
#: whose optional dependency is missing cannot break unrelated commands either.
COMMAND_MODULES: dict[str, str] = {
    "check-config": "wds.cli.config_cmd",
    "image": "wds.cli.image_cmd",
    "tftp": "wds.cli.tftp_cmd",
    "serve": "wds.cli.serve_cmd",
    "device": "wds.cli.device_cmd",
    "status": "wds.cli.status_cmd",
    "session": "wds.cli.session_cmd",
    "pxe": "wds.cli.pxe_cmd",
    "send": "wds.cli.stream_cmd",
    "receive": "wds.cli.stream_cmd",
    "keygen": "wds.cli.stream_cmd",
    "lab": "wds.cli.lab_cmd",
}


class _VersionAction(argparse.Action):
    """``--version``: the package metadata is read only when asked for."""

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        import wds

        print(f"wds {wds.__version__}")
        parser.exit()


def command_of(argv: Sequence[str]) -> str | None:
    """The command word of ``argv`` (the first argument that is not a global option), if it
    names a known command; None for ``wds``, ``wds --help``, ``wds -v`` or a typo."""
    for arg in argv:
        if arg == "--":
            return None
        if not arg.startswith("-"):
            return arg if arg in COMMAND_MODULES else None
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or (``command`` given) one with only that command's module loaded:
    the same options and help for that command, a faster start."""
    parser = argparse.ArgumentParser(
        prog="wds",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action=_VersionAction, nargs=0, help="show the version and exit"
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-v info, -vv debug)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    import importlib

    names = (COMMAND_MODULES[command],) if command else dict.fromkeys(COMMAND_MODULES.values())
    for name in names:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # that command group is not built yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(command_of(args_list))
    args = parser.parse_args(args_list)
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
