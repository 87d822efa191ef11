"""``wds session list|show|start|stop|create``: the running server's multicast sessions.

Every action is one request to the admin API of ``wds serve`` (``/api/v1/sessions``); see
docs/API.md. ``create`` takes the keys of a ``[[session]]`` entry as flags and is checked by the
server exactly like the config (the error names the key).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from wds.web.client import add_server_arguments, client_from_args, quote

#: ``create`` flags: (key of [[session]], type, help)
SPEC_FLAGS: tuple[tuple[str, type, str], ...] = (
    ("image", str, "install image: GROUP/NAME or GROUP/NAME:INDEX (required)"),
    ("mode", str, "auto (start on the first client) or scheduled"),
    ("start_at", str, "scheduled: start at this ISO 8601 time"),
    ("min_clients", int, "scheduled: start when this many clients joined"),
    ("max_wait", float, "scheduled: start after this many seconds"),
    ("rate_mbps", float, "maximum rate, Mbit/s (0 = [multicast] max_rate_mbps)"),
    ("group", str, "multicast group (default: from the pool)"),
    ("port", int, "UDP port (default: from the pool)"),
    ("slow_client", str, "unicast, wait or drop"),
    ("min_goodput_mbps", float, "goodput below which a client counts as slow"),
)


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "session",
        help="list, show, start, stop and create the running server's sessions",
        description="Multicast sessions of the running `wds serve`, through its admin API.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", title="actions", required=True)
    ls = actions.add_parser("list", help="every session with its state and progress")
    ls.set_defaults(handler=_list)
    show = actions.add_parser("show", help="one session with per-receiver progress")
    show.add_argument("name", metavar="NAME")
    show.set_defaults(handler=_show)
    for name, what in (("start", "start a session now"), ("stop", "stop a session")):
        action = actions.add_parser(name, help=what)
        action.add_argument("name", metavar="NAME")
        action.set_defaults(handler=_start_stop, verb=name)
    create = actions.add_parser(
        "create", help="create a session at run time (flags = the keys of [[session]])"
    )
    create.add_argument("name", metavar="NAME")
    for key, kind, what in SPEC_FLAGS:
        create.add_argument(
            "--" + key.replace("_", "-"), dest=key, type=kind, help=what, metavar=key.upper()
        )
    create.set_defaults(handler=_create)
    for parser in (ls, show, create, *(actions.choices[n] for n in ("start", "stop"))):
        add_server_arguments(parser)
        parser.add_argument("--json", action="store_true", help="print the JSON answer")


def _progress(s: dict[str, Any]) -> str:
    receivers = s.get("receivers") or []
    if not receivers:
        return "-"
    done = sum(1 for r in receivers if r["state"] == "done")
    return f"{len(receivers)} ({done} done)"


def _list(args: argparse.Namespace) -> int:
    sessions = client_from_args(args).get("/api/v1/sessions")["sessions"]
    if args.json:
        print(json.dumps(sessions, indent=2))
        return 0
    if not sessions:
        print("no sessions")
        return 0
    rows = [
        (
            s["name"],
            s["state"],
            s["mode"],
            s["image"],
            f"{s['group']}:{s['port']}" if s.get("group") else "-",
            _progress(s),
        )
        for s in sessions
    ]
    print(render_table(("NAME", "STATE", "MODE", "IMAGE", "GROUP", "RECEIVERS"), rows))
    return 0


def render_table(
    headers: tuple[str, ...],
    rows: Sequence[Sequence[str]],
    *,
    right: frozenset[str] = frozenset(),
) -> str:
    """A rich table as plain text (no colours, no wrapping), so it reads the same when piped."""
    import io

    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for header in headers:
        table.add_column(header, justify="right" if header in right else "left", no_wrap=True)
    for row in rows:
        table.add_row(*(escape(str(cell)) for cell in row))
    out = io.StringIO()
    Console(file=out, width=400, color_system=None, highlight=False).print(table)
    return "\n".join(line.rstrip() for line in out.getvalue().splitlines() if line.strip())


def _rate(bps: float) -> str:
    return f"{bps * 8 / 1e6:.1f} Mbit/s"


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def describe(s: dict[str, Any]) -> str:
    started = s.get("started_at")
    lines = [
        f"name:       {s['name']}",
        f"state:      {s['state']}" + (f" ({s['message']})" if s.get("message") else ""),
        f"mode:       {s['mode']} ({s['origin']})",
        f"image:      {s['image']}",
        f"group:      {s['group']}:{s['port']}" if s.get("group") else "group:      -",
        f"rate:       {s['rate_mbps']:g} Mbit/s max",
        f"size:       {s['size']} bytes in {s['chunks']} chunks",
        "started:    "
        + (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "-"),
        f"sent:       {s['bytes_sent']} bytes, {s['repairs_sent']} blocks repaired",
    ]
    receivers = s.get("receivers") or []
    if not receivers:
        lines.append("receivers:  none")
        return "\n".join(lines)
    lines.append(f"receivers:  {len(receivers)}")
    rows = [
        (
            r["address"],
            r["device"] or "-",
            r["state"],
            f"{r['verified_chunks']}/{r['chunks']}",
            _rate(r["rate_bps"]),
            f"{r['loss'] * 100:.1f}%",
            str(r["repairs"]),
            str(r["rejected_chunks"]),
            _eta(r["eta_s"]),
        )
        for r in receivers
    ]
    headers = ("ADDRESS", "DEVICE", "STATE", "CHUNKS", "RATE", "LOSS", "REPAIRS", "REJECTED", "ETA")
    numbers = frozenset({"CHUNKS", "RATE", "LOSS", "REPAIRS", "REJECTED", "ETA"})
    table = render_table(headers, rows, right=numbers)
    lines += ["  " + line for line in table.splitlines()]
    return "\n".join(lines)


def _show(args: argparse.Namespace) -> int:
    session = client_from_args(args).get(f"/api/v1/sessions/{quote(args.name)}")
    print(json.dumps(session, indent=2) if args.json else describe(session))
    return 0


def _start_stop(args: argparse.Namespace) -> int:
    session = client_from_args(args).post(f"/api/v1/sessions/{quote(args.name)}/{args.verb}")
    print(json.dumps(session, indent=2) if args.json else f"{session['name']}: {session['state']}")
    return 0


def _create(args: argparse.Namespace) -> int:
    spec: dict[str, Any] = {"name": args.name}
    for key, _, _ in SPEC_FLAGS:
        value = getattr(args, key)
        if value is not None:
            spec[key] = value
    session = client_from_args(args).post("/api/v1/sessions", spec)
    if args.json:
        print(json.dumps(session, indent=2))
    else:
        sys.stdout.write(f"{session['name']}: {session['state']}\n")
    return 0
