"""``wds device list|show|approve|reject|prestage|assign``: the device records.

Two ways to reach the records, the same output either way:

* through the admin API of the running ``wds serve`` (``--server URL``, default the config's
  ``[http] admin_address:admin_port``; ``--token-file``), which is what happens when a server
  answers;
* directly on the SQLite file of ``[server] state_dir`` (``--state-dir DIR``, or when no server
  answers at the default address): the database is in WAL mode, so this works beside a running
  ``wds pxe`` too; see :mod:`wds.devices`.

``-v`` says on stderr which one was used. An approval is seen by the PXE server on the client's
next DISCOVER either way.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wds.config import Config, load_config
from wds.devices import Device, DeviceEvent, DeviceStore, parse_device_id
from wds.web.client import (
    DEFAULT_CONFIG,
    AdminClient,
    ServerUnavailable,
    add_server_arguments,
    client_from_args,
    quote,
)


def register(sub: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    add_server_arguments(common)
    where = common.add_argument_group("state directory (without a server)")
    where.add_argument(
        "--state-dir",
        metavar="DIR",
        type=Path,
        help="work on this state directory's database directly, not through a server",
    )
    common.add_argument("--json", action="store_true", help="print JSON instead of text")
    p: argparse.ArgumentParser = sub.add_parser(
        "device",
        help="list, approve, reject and prestage PXE devices",
        description="Device records: prestaged devices (answered, with their own boot file), "
        "pending ones (unknown clients recorded with [pxe] record_pending, answered once "
        "approved) and rejected ones (never answered). Through the running server's admin API "
        "when one answers, else on the database of [server] state_dir.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", title="actions", required=True)
    ls = actions.add_parser("list", parents=[common], help="list every device")
    ls.set_defaults(handler=_list)
    show = actions.add_parser("show", parents=[common], help="show one device and its history")
    show.add_argument("device", metavar="MAC|UUID")
    show.set_defaults(handler=_show)
    for name, state, what in (
        ("approve", "approved", "answer this pending (or rejected) device from now on"),
        ("reject", "rejected", "never answer this device"),
    ):
        action = actions.add_parser(name, parents=[common], help=what)
        action.add_argument("device", metavar="MAC|UUID")
        action.set_defaults(handler=_set_state, state=state, verb=name)
    pre = actions.add_parser(
        "prestage", parents=[common], help="add (or update) a known device, answered from now on"
    )
    pre.add_argument("device", metavar="MAC|UUID")
    pre.add_argument("--boot-file", default="", metavar="F", help="its own boot file")
    pre.add_argument("--image", default="", metavar="REF", help="install image to deploy")
    pre.add_argument("--session", default="", metavar="NAME", help="multicast session to join")
    pre.set_defaults(handler=_prestage)
    assign = actions.add_parser(
        "assign", parents=[common], help="set the boot file, image or session of a device"
    )
    assign.add_argument("device", metavar="MAC|UUID")
    assign.add_argument("--boot-file", metavar="F", help="its own boot file ('' = default)")
    assign.add_argument("--image", metavar="REF", help="install image to deploy")
    assign.add_argument("--session", metavar="NAME", help="multicast session to join")
    assign.set_defaults(handler=_assign)


# -- where the records are -------------------------------------------------------------------


def _say(args: argparse.Namespace, text: str) -> None:
    if getattr(args, "verbose", 0):
        print(f"wds: {text}", file=sys.stderr)


def _client(args: argparse.Namespace) -> AdminClient | None:
    """The admin API to use, or None for the database (``--state-dir``, or no server)."""
    if args.state_dir is not None:
        _say(args, f"device records: the database in {args.state_dir} (--state-dir)")
        return None
    client = client_from_args(args)
    try:
        client.get("/api/v1/status")
    except ServerUnavailable:
        if args.server:  # asked for this server explicitly: say it is not there
            raise
        _say(args, f"device records: no server at {client.url}; using the database directly")
        return None
    _say(args, f"device records: through the admin API at {client.url}")
    return client


def _open(args: argparse.Namespace) -> DeviceStore:
    state_dir = args.state_dir
    if state_dir is None:
        config_file = args.config or (DEFAULT_CONFIG if Path(DEFAULT_CONFIG).is_file() else None)
        state_dir = (load_config(config_file) if config_file else Config()).server.state_dir
        _say(args, f"device records: the database in {state_dir}")
    return DeviceStore.open(state_dir, create=True)


def _either(
    args: argparse.Namespace,
    api: Callable[[AdminClient], Any],
    direct: Callable[[DeviceStore], Any],
) -> Any:
    client = _client(args)
    if client is not None:
        return api(client)
    with _open(args) as store:
        return direct(store)


def device_from_json(data: dict[str, Any]) -> Device:
    return Device(
        mac=data.get("mac"),
        uuid=uuid.UUID(data["uuid"]) if data.get("uuid") else None,
        state=data["state"],
        boot_file=data.get("boot_file", ""),
        image=data.get("image", ""),
        session=data.get("session", ""),
        arch=data.get("arch", ""),
        first_seen=data.get("first_seen"),
        last_seen=data.get("last_seen"),
        changed=data.get("changed", 0.0),
    )


# -- output ----------------------------------------------------------------------------------


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


def _describe(device: Device, events: list[DeviceEvent]) -> str:
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
    if not events:
        lines.append("events:     none")
    else:
        lines.append(f"events:     {len(events)}, oldest first")
        lines += [f"  {_when(e.when)}  {e.kind:<9}  {e.detail}" for e in events]
    return "\n".join(lines)


def _done(args: argparse.Namespace, device: Device) -> int:
    print(
        json.dumps(device.to_json(), indent=2)
        if args.json
        else f"{device.mac or device.uuid}: {device.state}"
    )
    return 0


# -- actions ---------------------------------------------------------------------------------


def _list(args: argparse.Namespace) -> int:
    devices: list[Device] = _either(
        args,
        lambda c: [device_from_json(d) for d in c.get("/api/v1/devices")["devices"]],
        lambda store: store.list(),
    )
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


def _show_api(client: AdminClient, text: str) -> tuple[Device, list[DeviceEvent]]:
    data = client.get(f"/api/v1/devices/{quote(text)}")
    events = [
        DeviceEvent(when=e["when"], kind=e["kind"], detail=e["detail"], mac=e.get("mac", ""))
        for e in data.pop("events", [])
    ]
    return device_from_json(data), events


def _show_direct(store: DeviceStore, text: str) -> tuple[Device, list[DeviceEvent]]:
    device = store.get(text)
    return device, store.events(text)


def _show(args: argparse.Namespace) -> int:
    parse_device_id(args.device)  # a bad MAC is reported before anything is opened
    device, events = _either(
        args,
        lambda c: _show_api(c, args.device),
        lambda store: _show_direct(store, args.device),
    )
    if args.json:
        print(json.dumps({**device.to_json(), "events": [e.to_json() for e in events]}, indent=2))
    else:
        print(_describe(device, events))
    return 0


def _set_state(args: argparse.Namespace) -> int:
    parse_device_id(args.device)
    device: Device = _either(
        args,
        lambda c: device_from_json(c.post(f"/api/v1/devices/{quote(args.device)}/{args.verb}")),
        lambda store: store.set_state(args.device, args.state),
    )
    return _done(args, device)


def _prestage(args: argparse.Namespace) -> int:
    mac, device_uuid = parse_device_id(args.device)
    values = {"boot_file": args.boot_file, "image": args.image, "session": args.session}
    device: Device = _either(
        args,
        lambda c: device_from_json(c.post("/api/v1/devices", {"device": args.device, **values})),
        lambda store: store.prestage(mac=mac, uuid=device_uuid, **values),
    )
    return _done(args, device)


def _assign(args: argparse.Namespace) -> int:
    parse_device_id(args.device)
    values = {
        k: getattr(args, k)
        for k in ("boot_file", "image", "session")
        if getattr(args, k) is not None
    }
    if not values:
        from wds.errors import WdsError

        raise WdsError("give at least one of --boot-file, --image, --session")
    device: Device = _either(
        args,
        lambda c: device_from_json(c.patch(f"/api/v1/devices/{quote(args.device)}", values)),
        lambda store: store.update(args.device, **values),
    )
    return _done(args, device)
