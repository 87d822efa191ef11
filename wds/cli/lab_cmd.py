"""``wds lab build-env|up|run|down``: the QEMU netboot lab (README, docs/LAB.md).

``build-env`` builds the deployment environment (kernel + initramfs from Debian packages);
``up`` builds a private lab of network namespaces on this host with ``wds serve`` in it; ``run``
PXE-boots N QEMU machines that deploy an image and prints one line per machine; ``down`` removes
everything ``up`` created (a state file in the lab directory records it, so this also works after
a crash). ``run`` without a lab that is up does up + run + down.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from wds.errors import WdsError

DEFAULT_DIR = Path("/tmp/wds-lab")


class LabUsageError(WdsError):
    exit_code = 2


def _loss(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--loss {text!r}: a whole percentage 0..100") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"--loss {text!r}: a whole percentage 0..100")
    return value


def _rate_mbps(text: str) -> float:
    """``40mbit``, ``1g``, ``500k``... -> Mbit/s (the syntax of ``wds send --rate``)."""
    from wds.cli.stream_cmd import parse_rate

    return round(parse_rate(text) * 8 / 1e6, 3)


def _firmware(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    bad = [name for name in names if name not in ("bios", "uefi")]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"--firmware {text!r}: a list of bios and uefi")
    return names


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "lab",
        help="QEMU netboot lab: machines PXE-boot from wds and deploy an image",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", title="actions", required=True)
    build = actions.add_parser("build-env", help="build the deployment kernel and initramfs")
    build.add_argument("--out", required=True, type=Path, metavar="DIR")
    build.add_argument("--cache", type=Path, metavar="DIR", help="where .debs are kept")
    build.add_argument("--force", action="store_true", help="rebuild even if up to date")
    build.set_defaults(handler=_build_env)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--dir", type=Path, default=DEFAULT_DIR, metavar="DIR", help=f"default {DEFAULT_DIR}"
    )
    up = actions.add_parser("up", parents=[common], help="build the lab and start wds serve in it")
    up.add_argument("--subnet", default="198.19.77.0/24", help="lab /24 inside 198.18.0.0/15")
    up.add_argument("--cache", type=Path, metavar="DIR", help="where .debs are kept")
    up.set_defaults(handler=_up)
    run = actions.add_parser("run", parents=[common], help="deploy an image to N QEMU machines")
    run.add_argument("--machines", type=int, default=2, metavar="N", help="1..8 (default 2)")
    run.add_argument("--image", required=True, type=Path, metavar="PATH", help="WIM to deploy")
    run.add_argument(
        "--firmware",
        type=_firmware,
        default=["bios", "uefi"],
        metavar="LIST",
        help="firmware of the machines in turn (default bios,uefi)",
    )
    run.add_argument("--loss", type=_loss, default=0, metavar="PCT", help="on the first machine")
    run.add_argument("--late", type=int, default=0, metavar="N", help="N machines start late")
    run.add_argument(
        "--late-after",
        type=float,
        default=0.0,
        metavar="S",
        help="after the first transfer began (5)",
    )
    run.add_argument("--reset", type=int, default=0, metavar="N", help="reset N mid-transfer")
    run.add_argument(
        "--rate", type=_rate_mbps, default=40.0, metavar="RATE", help="session rate (40mbit)"
    )
    run.add_argument(
        "--mode",
        choices=["auto", "scheduled"],
        default="",
        help="session mode (default: scheduled for the machines that boot together, "
        "auto with --reset or one machine)",
    )
    run.add_argument("--timeout", type=float, default=900.0, metavar="S", help="whole run")
    run.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    run.add_argument("--subnet", default="198.19.77.0/24", help="when run does its own up")
    run.add_argument("--cache", type=Path, metavar="DIR", help="where .debs are kept")
    run.set_defaults(handler=_run)
    down = actions.add_parser("down", parents=[common], help="remove everything up created")
    down.set_defaults(handler=_down)


def _build_env(args: argparse.Namespace) -> int:
    from wds.lab.env import DEFAULT_CACHE, build_env

    files = build_env(args.out, cache=args.cache or DEFAULT_CACHE, force=args.force)
    state = "built" if files.rebuilt else "up to date"
    print(f"wds lab: {state}: {files.kernel} {files.initrd} (kernel {files.kernel_version})")
    return 0


def _up(args: argparse.Namespace) -> int:
    from wds.lab import control

    running = control.up(args.dir, subnet=args.subnet, cache=args.cache)
    print(f"wds lab: up in {args.dir}: wds serve at {running.server_url}; `wds lab down` ends it")
    return 0


def _run(args: argparse.Namespace) -> int:
    from wds.lab import control

    if not 1 <= args.machines <= 8:
        raise LabUsageError(f"--machines {args.machines}: 1..8 machines")
    if not 0 <= args.late < args.machines:
        raise LabUsageError(
            f"--late {args.late}: 0..{args.machines - 1} (one machine must go first)"
        )
    if not 0 <= args.reset <= args.machines:
        raise LabUsageError(f"--reset {args.reset}: 0..{args.machines} machines")
    if not args.image.is_file():
        raise LabUsageError(f"--image {args.image}: no such file")
    result = control.run_deployment(args)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(result.table())
    return 0 if result.ok else 1


def _down(args: argparse.Namespace) -> int:
    from wds.lab import control

    removed = control.down(args.dir)
    print(f"wds lab: down: removed {removed}")
    return 0
