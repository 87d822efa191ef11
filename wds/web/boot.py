"""The boot routes of the content app: HTTP boot files, iPXE scripts, the deploy environment.

* ``GET /boot/{path}`` -- a file under ``[tftp] root`` for UEFI HTTP Boot and iPXE, resolved
  exactly as TFTP resolves it (:class:`pxe.tftp.files.RootFileSource`: no ``..``, no symlink out
  of the root, regular files only, any case when ``[tftp] case_insensitive``);
* ``GET /{[pxe.boot] ipxe_script}`` (default ``/boot.ipxe``) -- the entry script every iPXE client
  is given by the ProxyDHCP server; it chains to the device's own script by MAC;
* ``GET /ipxe/{mac}`` -- what this device is to do now (:func:`device_script`): boot the deploy
  environment with its session, wait for approval (retrying every :data:`RETRY_SECONDS`), or
  leave the network boot (``exit``: the firmware goes on to the local disk);
* ``GET /deploy/vmlinuz``, ``GET /deploy/initrd.img`` -- ``[deploy] kernel`` and ``initrd``.

A script fetch teaches the server the device's address (:meth:`EventSink.remember_address`)
and is a "script" event saying what the device was told. Every answer is cheap: one indexed
read of the device table, at most one short write.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from aiohttp import web

from pxe.tftp.codec import ErrorCode
from pxe.tftp.files import FileRefusal, RootFileSource
from wds.context import ServerContext, SessionStatus
from wds.devices import Device, DeviceError, parse_mac

__all__ = ["RETRY_SECONDS", "ScriptAnswer", "add_boot_routes", "device_script", "entry_script"]

log = logging.getLogger(__name__)

#: seconds a pending device waits between two asks
RETRY_SECONDS = 10
#: a "script" event identical to the device's last one is not written again within this time
SAME_SCRIPT_EVERY = 300.0
#: bytes written per chunk when streaming a boot file
CHUNK = 256 * 1024
#: what may appear in a kernel command line value without quoting
_SAFE_VALUE = re.compile(r"[A-Za-z0-9._:/@+=,-]{1,255}")
#: sessions in these states are not sent to: the device boots from its disk
_DEAD_SESSIONS = frozenset({"stopped", "failed"})

_CTX: Final = web.AppKey("wds_boot_ctx", ServerContext)
_FILES: Final = web.AppKey("wds_boot_files", RootFileSource)


@dataclass(frozen=True)
class ScriptAnswer:
    """An iPXE script and the one-line summary recorded as the device's "script" event."""

    script: str
    summary: str


def add_boot_routes(app: web.Application, ctx: ServerContext) -> None:
    """Add the routes of the module docstring to the content app."""
    app[_CTX] = ctx
    tftp = ctx.config.tftp
    app[_FILES] = RootFileSource(tftp.root, case_insensitive=tftp.case_insensitive)
    entry = ctx.config.pxe.boot.ipxe_script
    if entry and not entry.startswith(("http://", "https://", "tftp://")):
        app.router.add_get("/" + entry.lstrip("/"), _entry_script)
    app.router.add_get("/ipxe/{mac}", _device_script)
    app.router.add_get("/deploy/vmlinuz", _deploy_kernel)
    app.router.add_get("/deploy/initrd.img", _deploy_initrd)
    app.router.add_get("/boot/{path:.+}", _boot_file)


# -- scripts ------------------------------------------------------------------------------------


def entry_script(base: str) -> str:
    """The script every iPXE client gets first: chain to its own script by MAC.

    ``${netX/mac:hexhyp}`` is the MAC of the interface iPXE booted from (netX: the last one
    opened), hyphen-separated so the URL needs no escaping (ipxe.org/cfg/mac, /settings).
    """
    return (
        "#!ipxe\n"
        "# wds: ask for this machine's own script\n"
        f"chain --replace {base}/ipxe/${{netX/mac:hexhyp}} || goto failed\n"
        ":failed\n"
        "echo wds: the boot server did not answer; booting from the local disk\n"
        "exit\n"
    )


def device_script(ctx: ServerContext, mac: str, device: Device | None, base: str) -> ScriptAnswer:
    """What ``device`` (None: not in the table) is told, by its state and session."""
    if device is None:
        if ctx.config.pxe.answer == "all":
            return _exit(f"unknown device {mac}: nothing to deploy", "exit: unknown device")
        return _exit(f"unknown device {mac} ([pxe] answer = {ctx.config.pxe.answer!r})", "refused")
    if device.state == "pending":
        return _wait(mac, base)
    if device.state == "rejected":
        return _exit(f"device {mac} was rejected by an admin", "exit: rejected")
    session = ctx.sessions.for_device(device)
    if session is None:
        return _exit(f"device {mac} has no session to join", "exit: no session")
    if session.state in _DEAD_SESSIONS:
        why = f"session {session.name} is {session.state}"
        return _exit(f"{why}: nothing to deploy", f"exit: {why}")
    if _deployed_since_change(ctx, mac, device):
        why = f"deployed since its record last changed (re-prestage {mac} to deploy again)"
        return _exit(f"device {mac} was {why}", "exit: already deployed")
    return _deploy(ctx, mac, session, base)


def _exit(why: str, summary: str) -> ScriptAnswer:
    script = f"#!ipxe\n# wds: {why}\necho wds: {why}\necho wds: booting from the local disk\nexit\n"
    return ScriptAnswer(script, summary)


def _wait(mac: str, base: str) -> ScriptAnswer:
    # iPXE retries on its own; each ask costs the server one indexed read
    script = (
        "#!ipxe\n"
        f"echo wds: device {mac} is waiting for approval (wds device approve {mac})\n"
        f"sleep {RETRY_SECONDS}\n"
        f"chain --replace {base}/ipxe/{mac.replace(':', '-')}\n"
    )
    return ScriptAnswer(script, "waiting for approval")


def _deploy(ctx: ServerContext, mac: str, session: SessionStatus, base: str) -> ScriptAnswer:
    deploy = ctx.config.deploy
    server = base.split("://", 1)[1].split("/", 1)[0]
    values = {
        "wds.server": server,
        "wds.session": session.name,
        "wds.fingerprint": ctx.sessions.fingerprint,
        "wds.device": mac,
        "wds.target": deploy.target,
    }
    unsafe = [key for key, value in values.items() if not _SAFE_VALUE.fullmatch(value)]
    if unsafe:
        log.warning("deploy command line for %s not built: unsafe %s", mac, ", ".join(unsafe))
        return _exit(f"cannot build the deploy command line ({', '.join(unsafe)})", "exit: error")
    cmdline = " ".join(f"{key}={value}" for key, value in values.items())
    # iPXE's EFI build hands the initrd to the kernel's EFI stub only when the command line
    # names it (the BIOS build ignores it): name it always, so UEFI machines get their initramfs
    cmdline += " initrd=initrd.img"
    extra = " ".join(
        w for w in deploy.cmdline.split() if w != "initrd=initrd.img"
    )  # one line: a newline would end the command
    if extra:
        cmdline += " " + extra
    script = (
        "#!ipxe\n"
        f"echo wds: deploying session {session.name} to {deploy.target} of {mac}\n"
        f"kernel {base}/deploy/vmlinuz {cmdline}\n"
        f"initrd {base}/deploy/initrd.img\n"
        "boot\n"
    )
    return ScriptAnswer(script, f"deploy session {session.name}")


def _deployed_since_change(ctx: ServerContext, mac: str, device: Device) -> bool:
    """A "finished" event newer than the record's last change: do not deploy in a loop."""
    try:
        events = ctx.devices.events(mac, limit=50)
    except DeviceError:
        return False
    return any(e.kind == "finished" and e.when > device.changed for e in events)


def _base_url(request: web.Request, ctx: ServerContext) -> str:
    """``http://HOST:PORT`` the client reached us at (not its Host header), or [pxe] http_url."""
    if ctx.config.pxe.http_url:
        return ctx.config.pxe.http_url.rstrip("/")
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if sockname:
        return f"http://{sockname[0]}:{sockname[1]}"
    return f"http://{ctx.config.server.address}:{ctx.config.http.port}"


def _script_response(script: str) -> web.Response:
    return web.Response(text=script, content_type="text/plain", charset="utf-8")


async def _entry_script(request: web.Request) -> web.Response:
    return _script_response(entry_script(_base_url(request, request.app[_CTX])))


async def _device_script(request: web.Request) -> web.Response:
    ctx = request.app[_CTX]
    try:
        mac = parse_mac(request.match_info["mac"])
    except DeviceError as exc:
        return web.Response(status=400, text=f"{exc}\n")
    base = _base_url(request, ctx)
    if request.remote:
        ctx.events.remember_address(request.remote, mac)
    try:
        device = ctx.devices.find(mac=mac)
        if device is None and ctx.config.pxe.record_pending:
            device = ctx.devices.record_pending(mac=mac, uuid=None, arch="")
            if device is None:  # the pending table is full
                answer = _exit(f"unknown device {mac}: too many pending devices", "refused")
                return _script_response(answer.script)
        answer = device_script(ctx, mac, device, base)
    except (DeviceError, sqlite3.Error) as exc:  # a busy database: ask again shortly
        log.info("script for %s: device database unavailable: %s", mac, exc)
        script = _wait(mac, base).script.replace("is waiting for approval", "waits: server busy")
        return _script_response(script)
    new = _record_script(ctx, mac, answer.summary)
    # a pending device asks every RETRY_SECONDS: its repeats are DEBUG
    log.log(
        logging.INFO if new else logging.DEBUG,
        "iPXE script for %s from %s: %s",
        mac,
        request.remote,
        answer.summary,
    )
    return _script_response(answer.script)


def _record_script(ctx: ServerContext, mac: str, summary: str) -> bool:
    """One "script" event, unless the last event said the same thing recently; True if new."""
    try:
        last = ctx.devices.events(mac, limit=1)
    except (DeviceError, sqlite3.Error):
        last = []
    if last:
        same = last[-1].kind == "script" and last[-1].detail == summary
        if same and time.time() - last[-1].when < SAME_SCRIPT_EVERY:
            return False
    ctx.events.record("script", summary, mac=mac)
    return True


# -- files --------------------------------------------------------------------------------------


async def _deploy_kernel(request: web.Request) -> web.StreamResponse:
    return _deploy_file(request.app[_CTX].config.deploy.kernel, "kernel")


async def _deploy_initrd(request: web.Request) -> web.StreamResponse:
    return _deploy_file(request.app[_CTX].config.deploy.initrd, "initrd")


def _deploy_file(path: Path, key: str) -> web.StreamResponse:
    if not path.is_file():
        why = f"[deploy] {key} {str(path)!r} is missing: build it with `wds lab build-env`"
        return web.Response(status=404, text=why + "\n")
    return web.FileResponse(path, headers={"Content-Type": "application/octet-stream"})


async def _boot_file(request: web.Request) -> web.StreamResponse:
    files = request.app[_FILES]
    peer = (request.remote or "", 0)
    served = files.open(request.match_info["path"], peer)
    if isinstance(served, FileRefusal):
        log.info("boot file %r for %s refused: %s", request.path, peer[0], served.message)
        status = 404 if served.code == ErrorCode.FILE_NOT_FOUND else 403
        return web.Response(status=status, text=served.message + "\n")
    try:
        response = web.StreamResponse(
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(served.size)}
        )
        await response.prepare(request)
        if request.method != "HEAD":
            for offset in range(0, served.size, CHUNK):
                # a copy: the transport may keep what it could not send yet, and the mapping
                # is closed when the transfer ends
                await response.write(bytes(served.data[offset : offset + CHUNK]))
        await response.write_eof()
    finally:
        served.close()
    if request.method != "HEAD" and request.remote:
        detail = f"http {served.name} {served.size} bytes"
        request.app[_CTX].events.record("boot-file", detail, ip=request.remote)
    return response
