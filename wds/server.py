"""``wds serve``: every service of a config in one asyncio process.

Start: the config was validated before this module runs and ``[server] user`` is looked up
before anything binds (an unknown user is a ConfigError naming ``server.user``); the state
directory, the store and the TFTP root are created if missing. Then the services bind their ports
in this order -- PXE, TFTP, HTTP (:class:`wds.web.WebService`) -- a port that cannot be bound
stops the start-up with a clear error; then the process drops root for ``[server] user`` (the
state directory and the store are handed to that user first), and the multicast sessions start
(:mod:`wds.sessions`). One line per service on stdout, then ``wds serve: ready``.

SIGTERM / SIGINT: ProxyDHCP stops answering, the sessions take no new receivers, running
transfers get ``[server] stop_grace`` seconds to finish, then every service stops (exit 0).
Receivers of a transfer cut short keep their on-disk record and resume against the restarted
server, which publishes the same manifests.

SIGHUP: the config file is read again. A config error keeps the running config (one ERROR
line). Sessions added are prepared and started, sessions removed stop once their transfer is
done, changed idle sessions are prepared again; changes elsewhere are logged as needing a
restart, except ``[server] log_level``, which applies at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import grp
import logging
import os
import pwd
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from wds.config import Config, load_config
from wds.context import ServerContext
from wds.errors import ConfigError, WdsError

if TYPE_CHECKING:
    from wds.sessions import SessionManager

log = logging.getLogger(__name__)

#: config sections whose change a SIGHUP cannot apply to running services
RESTART_SECTIONS = ("server", "tftp", "pxe", "http", "multicast", "deploy")
#: files and directories handed to [server] user before dropping root (bounded walk)
MAX_CHOWN_ENTRIES = 100_000


class Service(Protocol):
    """What the server needs from a service: start (bind, return a description) and stop."""

    name: str

    async def start(self) -> str: ...

    async def stop(self) -> None: ...


@dataclass
class TftpService:
    ctx: ServerContext
    name: str = "tftp"

    async def start(self) -> str:
        from pxe.tftp.server import TftpServer

        config = self.ctx.config
        tftp = config.tftp
        if not tftp.address:
            tftp = dataclasses.replace(tftp, address=config.server.address)
        self._server = TftpServer(tftp)
        self._server.on_transfer_end = self._ended
        self.ctx.tftp = self._server
        host, port = await self._server.start()
        return f"{host}:{port} serving {tftp.root}"

    def _ended(self, end: Any) -> None:
        if end.completed:
            self.ctx.events.record("boot-file", f"tftp {end.name}", ip=end.client[0])
        else:
            detail = f"tftp {end.name} failed: {end.message}"
            self.ctx.events.record("boot-file", detail, ip=end.client[0])

    async def stop(self) -> None:
        await self._server.stop()


@dataclass
class PxeService:
    """ProxyDHCP on ``[pxe] dhcp_port``/``pxe_port``, answering from the device records."""

    ctx: ServerContext
    name: str = "pxe"

    async def start(self) -> str:
        from pxe.dhcp.server import proxy_dhcp_from_config

        config = self.ctx.config
        self._server = proxy_dhcp_from_config(
            config, store=self.ctx.devices, events=self.ctx.events
        )
        self.ctx.pxe = self._server
        ports = await self._server.start()
        pxe = config.pxe
        return (
            f"{config.server.address} ports {ports.dhcp} and {ports.pxe} "
            f"(ProxyDHCP, answer={pxe.answer}, record_pending={str(pxe.record_pending).lower()})"
        )

    async def stop(self) -> None:
        await self._server.stop()


@dataclass
class SessionService:
    """The multicast sessions (:class:`wds.sessions.SessionManager`) as a service."""

    manager: SessionManager
    name: str = "sessions"

    async def start(self) -> str:
        return await self.manager.open()

    async def stop(self) -> None:
        await self.manager.close()


def prepare_directories(config: Config) -> None:
    """Create the directories the services need; a path that cannot be made is a ConfigError."""
    from wds.store import ImageStore

    wanted = [("server.state_dir", config.server.state_dir)]
    if config.tftp.enabled:
        wanted.append(("tftp.root", config.tftp.root))
    for key, path in wanted:
        try:
            Path(path).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create directory {str(path)!r}: {exc.strerror}",
                file=str(config.source),
                key=key,
            ) from None
    try:
        ImageStore.open(config.server.store, create=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the image store {str(config.server.store)!r}: {exc.strerror}",
            file=str(config.source),
            key="server.store",
        ) from None


def lookup_user(config: Config) -> pwd.struct_passwd | None:
    """``[server] user`` as a passwd entry (None: stay as we are); checked before any bind."""
    name = config.server.user
    if not name:
        return None
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise ConfigError(
            f"user = {name!r}: no such user on this system; create it or leave user empty",
            file=str(config.source),
            key="server.user",
        ) from None
    if os.geteuid() != 0 and entry.pw_uid != os.geteuid():
        raise ConfigError(
            f"user = {name!r}: only root can switch to another user; run as root or leave "
            "user empty",
            file=str(config.source),
            key="server.user",
        )
    return entry


def drop_privileges(config: Config, user: pwd.struct_passwd) -> None:
    """Hand the state directory and the store to ``user``, then become that user for good."""
    if os.geteuid() != 0:
        return
    _preload()
    try:
        for top in (Path(config.server.state_dir), Path(config.server.store)):
            _chown_tree(top, user.pw_uid, user.pw_gid)
        os.initgroups(user.pw_name, user.pw_gid)
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)
    except OSError as exc:
        raise WdsError(
            f"cannot switch to user {user.pw_name!r} ([server] user): {exc}; check that the "
            "state directory and the store are on a file system that allows chown"
        ) from None
    group = grp.getgrgid(user.pw_gid).gr_name
    log.info("running as user %s (uid %d, group %s)", user.pw_name, user.pw_uid, group)


def _preload() -> None:
    """Import what asyncio and aiohttp import lazily at run time, while root can still read
    every module (the Python installation may not be readable by the unprivileged user)."""
    import concurrent.futures.process
    import concurrent.futures.thread  # noqa: F401
    import encodings.idna  # noqa: F401


def _chown_tree(top: Path, uid: int, gid: int) -> None:
    count = 0
    os.lchown(top, uid, gid)
    for root, dirs, files in os.walk(top):
        for name in dirs + files:
            os.lchown(os.path.join(root, name), uid, gid)
            count += 1
            if count >= MAX_CHOWN_ENTRIES:
                log.warning("%s: more than %d entries; not all were handed over", top, count)
                return


def _web_service(ctx: ServerContext) -> Service | None:
    try:
        from wds.web import WebService
    except ImportError:  # the HTTP service is not part of this build
        return None
    service: Service = WebService(ctx)
    return service


def build_context(config: Config, *, announce: Callable[[str], None]) -> ServerContext:
    """The shared state of one server: device records, events, the session manager."""
    from wds.devices import SERVER_BUSY_TIMEOUT_MS, DeviceEvents, DeviceStore
    from wds.sessions import SessionManager

    devices = DeviceStore.open(config.server.state_dir, busy_timeout_ms=SERVER_BUSY_TIMEOUT_MS)
    events = DeviceEvents(devices)
    manager = SessionManager(config, events=events, device_for=devices.mac_for, announce=announce)
    return ServerContext(
        config=config, devices=devices, events=events, sessions=manager, started=time.time()
    )


def build_services(ctx: ServerContext) -> tuple[list[Service], list[str]]:
    """The services this version runs for the config, in start order, and those it cannot."""
    config = ctx.config
    services: list[Service] = []
    missing: list[str] = []
    if config.pxe.enabled:
        services.append(PxeService(ctx))
    if config.tftp.enabled:
        services.append(TftpService(ctx))
    if config.http.enabled:
        web = _web_service(ctx)
        if web is None:
            missing.append("http")
        else:
            services.append(web)
    if config.session or config.http.enabled:  # runtime sessions come through the admin API
        services.append(SessionService(cast("SessionManager", ctx.sessions)))
    return services, missing


async def serve(
    config: Config, *, announce: Callable[[str], None] = print, config_path: Path | None = None
) -> None:
    """Run until SIGTERM or SIGINT. ``announce`` gets one line per started service."""
    user = lookup_user(config)
    ctx = build_context(config, announce=announce)
    services, missing = build_services(ctx)
    if missing:
        log.warning("configured but not available in this version, skipped: %s", ", ".join(missing))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    path = config_path or config.source
    manager = next((s.manager for s in services if isinstance(s, SessionService)), None)
    reloads: set[asyncio.Task[None]] = set()

    def reload() -> None:
        if path is None:
            log.error("reload: the config came from no file; nothing to read again")
            return
        task = loop.create_task(reload_config(ctx, Path(path), sessions=manager))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    ctx.reload = reload
    loop.add_signal_handler(signal.SIGHUP, reload)
    started: list[Service] = []
    if not services:
        announce("wds serve: no service enabled; nothing to do (see [tftp] enabled, ...)")
        ctx.devices.close()
        return
    try:
        for service in services:
            if isinstance(service, SessionService) and user is not None:
                drop_privileges(config, user)  # every port is bound: root is not needed any more
                user = None
            try:
                where = await service.start()
            except OSError as exc:
                raise WdsError(
                    f"{service.name}: cannot bind its port: {exc.strerror}; is another "
                    "server using it, or does this need root?"
                ) from None
            started.append(service)
            announce(f"wds serve: {service.name} on {where}")
        if user is not None:
            drop_privileges(config, user)
        announce("wds serve: ready")
        await stop.wait()
        stop.clear()
        log.info(
            "stopping on signal: no new clients; running transfers get %.0f s (signal again to "
            "stop at once)",
            ctx.config.server.stop_grace,
        )
        graceful = loop.create_task(_stop_gracefully(ctx, started))
        again = loop.create_task(stop.wait())
        await asyncio.wait({graceful, again}, return_when=asyncio.FIRST_COMPLETED)
        for task in (graceful, again):
            task.cancel()
        await asyncio.gather(graceful, again, return_exceptions=True)
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        for task in list(reloads):
            task.cancel()
        for service in reversed(started):
            await service.stop()
        ctx.devices.close()


async def _stop_gracefully(ctx: ServerContext, started: list[Service]) -> None:
    """ProxyDHCP first (no new boots), then let the sessions' running transfers finish."""
    for service in list(started):
        if isinstance(service, PxeService):
            await service.stop()
            started.remove(service)
    for service in started:
        if isinstance(service, SessionService):
            await service.manager.drain(ctx.config.server.stop_grace)


async def reload_config(ctx: ServerContext, path: Path, *, sessions: SessionManager | None) -> None:
    """SIGHUP: apply what can change at run time; keep the running config on any error.
    ``sessions``: the running session manager (None: this process runs no sessions)."""
    try:
        new = await asyncio.to_thread(load_config, path)
    except WdsError as exc:
        one_line = " ".join(str(exc).split())
        log.error("reload refused, the running config stays: %s", one_line)
        return
    old = ctx.config
    for section in RESTART_SECTIONS:
        before, after = getattr(old, section), getattr(new, section)
        if section == "server":
            before = dataclasses.replace(before, log_level=after.log_level)
        if before != after:
            log.warning("reload: [%s] changed; that needs a restart to take effect", section)
    if new.server.log_level != old.server.log_level:
        logging.getLogger().setLevel(new.server.log_level.upper())
        log.warning("reload: log_level is now %s", new.server.log_level)
    server = dataclasses.replace(old.server, log_level=new.server.log_level)
    sessions_now = new.session if sessions is not None else old.session
    ctx.config = dataclasses.replace(old, server=server, session=sessions_now)
    if sessions is not None:
        await sessions.reload(new)
    log.info("reload: %s read; %d sessions configured", path, len(new.session))
