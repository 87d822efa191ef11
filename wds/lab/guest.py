"""Inside the deployment environment: receive the session's image, report, print the result.

Run by the initramfs's ``/init`` as ``python3 -m wds.lab.guest --server HOST:PORT --session NAME
--fingerprint sha256:HEX --device MAC --out PATH``. It runs the same code as ``wds receive --json``
(in-process, so only :mod:`wds.cli.stream_cmd` and what it imports must be in the initramfs),
retries a bounded number of times while the receiver says "incomplete, run again" (it resumes
from its on-disk record), then POSTs the summary plus ``device``, ``status`` and ``reason`` to
``http://HOST:PORT/sessions/NAME/report`` and prints one line ``WDS-RESULT {json}`` on the
console, which the lab reads.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: marker of the machine-readable result line on the serial console
RESULT_MARKER = "WDS-RESULT"
#: marker of the progress lines (verified chunks / bitmap slots)
PROGRESS_MARKER = "WDS-PROGRESS"
PROGRESS_EVERY = 2.0
#: multicast/output.py: the bitmap's header (magic + 8 bytes of the image's SHA-256)
BITMAP_HEADER = 16
#: receiver runs in one boot (each resumes where the previous one stopped)
MAX_ATTEMPTS = 3
EXIT_INCOMPLETE = 1


def _receive_once(args: argparse.Namespace) -> dict[str, Any]:
    from wds.cli import stream_cmd
    from wds.errors import WdsError

    parser = argparse.ArgumentParser(prog="wds")
    stream_cmd.register(parser.add_subparsers())
    argv = [
        *("receive", "--server", args.server, "--session", args.session, "--out", args.out),
        *("--fingerprint", args.fingerprint, "--json", "--timeout", str(args.timeout)),
    ]
    if args.interface:
        argv += ["--interface", args.interface]
    parsed = parser.parse_args(argv)
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            code = stream_cmd.run_receive(parsed)
    except WdsError as exc:  # a usage error before the summary exists
        return {"exit": exc.exit_code, "verified": False, "failure": str(exc)}
    except Exception as exc:  # a bug or a broken environment: still report it, on one line
        return {"exit": 70, "verified": False, "failure": f"{type(exc).__name__}: {exc}"}
    lines = [line for line in out.getvalue().splitlines() if line.startswith("{")]
    if not lines:
        return {"exit": code, "verified": False, "failure": "the receiver printed no summary"}
    summary: dict[str, Any] = json.loads(lines[-1])
    return summary


def _merge(first: dict[str, Any] | None, last: dict[str, Any]) -> dict[str, Any]:
    """One summary for all attempts: the last one, with received counts added up."""
    if first is None:
        return last
    merged = dict(last)
    for key in ("bytes_received", "chunks_received", "chunks_repaired", "chunks_rejected"):
        merged[key] = int(first.get(key, 0)) + int(last.get(key, 0))
    merged["chunks_resumed"] = first.get("chunks_resumed", 0)
    merged["seconds"] = round(float(first.get("seconds", 0)) + float(last.get("seconds", 0)), 3)
    return merged


def report(server: str, session: str, body: dict[str, Any]) -> str:
    """POST the result to the server; a short note on what happened (never raises)."""
    request = urllib.request.Request(
        f"http://{server}/sessions/{session}/report",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return f"HTTP {response.status}"
    except Exception as exc:  # the report is best effort: the console line still tells the lab
        return f"not reported: {exc}"


def _progress_printer(out: str, stop: threading.Event) -> None:
    """Print ``WDS-PROGRESS VERIFIED/SLOTS`` every 2 s from the receiver's on-disk bitmap.

    SLOTS is the bitmap's size in bits (the chunk count rounded up to 8). The lab resets a
    ``--reset`` machine once a quarter of them are verified (a reset that has something to resume).
    """
    bitmap = Path(out + ".wds-bitmap")
    last = ""
    while not stop.wait(PROGRESS_EVERY):
        with contextlib.suppress(OSError):
            data = bitmap.read_bytes()[BITMAP_HEADER:]
            line = f"{PROGRESS_MARKER} {sum(bin(b).count('1') for b in data)}/{len(data) * 8}"
            if line != last:  # to fd 1 itself: the receiver's stdout is redirected meanwhile
                os.write(1, (line + "\n").encode())
                last = line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wds.lab.guest", description=__doc__)
    parser.add_argument("--server", required=True)
    parser.add_argument("--session", required=True)
    parser.add_argument("--fingerprint", required=True)
    parser.add_argument("--device", default="")
    parser.add_argument("--interface", default="")
    parser.add_argument("--out", required=True)
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args(argv)
    started = time.monotonic()
    summary: dict[str, Any] | None = None
    stop = threading.Event()
    printer = threading.Thread(target=_progress_printer, args=(args.out, stop), daemon=True)
    printer.start()
    try:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            print(f"WDS-ENV: receive attempt {attempt} from {args.server}", flush=True)
            summary = _merge(summary, _receive_once(args))
            if summary.get("exit") != EXIT_INCOMPLETE:
                break
            time.sleep(2.0)
    finally:
        stop.set()
    assert summary is not None
    verified = bool(summary.get("verified"))
    body = {
        **summary,
        "device": args.device,
        "status": "verified" if verified else "failed",
        "reason": "" if verified else str(summary.get("failure") or "failed"),
        "attempts": attempt,
        "env_seconds": round(time.monotonic() - started, 3),
    }
    body["report"] = report(args.server, args.session, body)
    print(f"{RESULT_MARKER} {json.dumps(body, sort_keys=True)}", flush=True)
    return 0 if verified else 1


if __name__ == "__main__":
    sys.exit(main())
