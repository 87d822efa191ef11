"""``wds device list|show|approve|reject|prestage``: the device records of the state directory.

The records live in ``[server] state_dir`` (``--config FILE``, default config/wds.toml) or in
``--state-dir DIR``; see :mod:`wds.devices`. These commands may run while ``wds serve`` or
``wds pxe`` is running: an approval is seen by the PXE server on the client's next DISCOVER.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from wds.config import load_config
from wds.devices import Device, DeviceStore, parse_device_id

DEFAULT_CONFIG = "config/wds.toml"


def register(sub: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_argument_group("state directory")
    where.add_argument(
        "--config",
        metavar="FILE",
        default=DEFAULT_CONFIG,
        help=f"config whose [server] state_dir holds the records (default: {DEFAULT_CONFIG})",
    )
    where.add_argument(
        "--state-dir", metavar="DIR", type=Path, help="use this state directory instead"
    )
    p: argparse.ArgumentParser = sub.add_parser(
        "device",
        help="list, approve, reject and prestage PXE devices",
        description="Device records: prestaged devices (answered, with their own boot file), "
        "pending ones (unknown clients recorded with [pxe] record_pending, answered once "
        "approved) and rejected ones (never answered).",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", title="actions", required=True)
    ls = actions.add_parser("list", parents=[common], help="list every device")
    ls.add_argument("--json", action="store_true", help="one JSON array instead of a table")
    ls.set_defaults(handler=_list)
    show = actions.add_parser("show", parents=[common], help="show one device")
    show.add_argument("device", metavar="MAC|UUID")
    show.set_defaults(handler=_show)
    for name, state, what in (
        ("approve", "approved", "answer this pending (or rejected) device from now on"),
        ("reject", "rejected", "never answer this device"),
    ):
        action = actions.add_parser(name, parents=[common], help=what)
        action.add_argument("device", metavar="MAC|UUID")
        action.set_defaults(handler=_set_state, state=state)
    pre = actions.add_parser(
        "prestage", parents=[common], help="add (or update) a known device, answered from now on"
    )
    pre.add_argument("device", metavar="MAC|UUID")
    pre.add_argument("--boot-file", default="", metavar="F", help="its own boot file")
    pre.add_argument("--image", default="", metavar="REF", help="install image to deploy")
    pre.add_argument("--session", default="", metavar="NAME", help="multicast session to join")
    pre.set_defaults(handler=_prestage)


def _open(args: argparse.Namespace, *, create: bool = False) -> DeviceStore:
    state_dir = args.state_dir
    if state_dir is None:
        state_dir = load_config(args.config).server.state_dir
    return DeviceStore.open(state_dir, create=create)


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


def _describe(device: Device) -> str:
    lines = [
        f"mac:        {device.mac or '-'}",
        f"uuid:       {device.uuid or '-'}",
        f"state:      {device.state}",
        f"boot file:  {device.boot_file or '(configured default)'}",
        f"image:      {device.image or '-'}",
        f"session:    {device.session or '-'}",
        f"arch:       {device.arch or '-'}",
        f"first seen: {_when(device.first_seen)}",
        f"last seen:  {_when(device.last_seen)}",
    ]
    return "\n".join(lines)


def _list(args: argparse.Namespace) -> int:
    with _open(args, create=True) as store:
        devices = store.list()
    if args.json:
        print(json.dumps([d.to_json() for d in devices], indent=2))
        return 0
    if not devices:
        print("no devices")
        return 0
    print(f"{'MAC':<17}  {'UUID':<36}  {'STATE':<9}  {'BOOT FILE':<20}  LAST SEEN")
    for d in devices:
        print(
            f"{d.mac or '-':<17}  {d.uuid or '-'!s:<36}  {d.state:<9}  "
            f"{d.boot_file or '-':<20}  {_when(d.last_seen)}"
        )
    return 0


def _show(args: argparse.Namespace) -> int:
    parse_device_id(args.device)  # a bad MAC is reported before the database is opened
    with _open(args, create=True) as store:
        print(_describe(store.get(args.device)))
    return 0


def _set_state(args: argparse.Namespace) -> int:
    parse_device_id(args.device)
    with _open(args, create=True) as store:
        device = store.set_state(args.device, args.state)
    print(f"{device.mac or device.uuid}: {device.state}")
    return 0


def _prestage(args: argparse.Namespace) -> int:
    mac, device_uuid = parse_device_id(args.device)
    with _open(args, create=True) as store:
        device = store.prestage(
            mac=mac,
            uuid=device_uuid,
            boot_file=args.boot_file,
            image=args.image,
            session=args.session,
        )
    print(f"{device.mac or device.uuid}: {device.state}")
    return 0
