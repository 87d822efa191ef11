"""``wds status``: what the running server does, from its admin API (``GET /api/v1/status``)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from wds.web.client import add_server_arguments, client_from_args


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "status",
        help="show what the running server does (version, services, sessions, devices)",
        description="Ask the running `wds serve` (its admin API) for its version, uptime, "
        "services and counts of sessions, devices and images.",
    )
    add_server_arguments(p)
    p.add_argument("--json", action="store_true", help="print the JSON answer")
    p.set_defaults(handler=run)


def duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h {minutes}m"
    if hours:
        return f"{hours}h {minutes}m {secs}s"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


def counts(values: dict[str, int]) -> str:
    if not values:
        return "none"
    return ", ".join(f"{n} {state}" for state, n in sorted(values.items()))


def run(args: argparse.Namespace) -> int:
    status = client_from_args(args).get("/api/v1/status")
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    started = status.get("started") or 0
    lines = [
        f"wds {status['version']} up {duration(status['uptime_s'])}"
        + (
            f" (since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(started))})"
            if started
            else ""
        ),
        f"config:      {status.get('config') or '-'}",
        f"fingerprint: {status.get('fingerprint') or '-'}",
    ]
    services = status.get("services", {})
    http = services.get("http", {})
    if http:
        token = "token required" if http.get("token_required") else "no token"
        lines.append(
            f"http:        content {http.get('content')}, admin {http.get('admin')} ({token})"
        )
    if "pxe" in services:
        lines.append(f"pxe:         {services['pxe'].get('replies_sent', 0)} replies sent")
    if "tftp" in services:
        t = services["tftp"]
        lines.append(
            f"tftp:        {t.get('completed', 0)} transfers completed, {t.get('failed', 0)} "
            f"failed, {t.get('bytes', 0)} bytes"
        )
    c = status.get("counts", {})
    lines += [
        f"sessions:    {counts(c.get('sessions', {}))}",
        f"devices:     {counts(c.get('devices', {}))}",
        f"images:      {c.get('images', 0)}",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
