"""``wds serve``: every service of a config in one asyncio process.

Start order: the config was validated before this module runs; the state directory, the store and
the TFTP root are created if missing; then every enabled service binds its ports. A service whose
ports cannot be bound stops the start-up with a clear error (nothing is left half-running). SIGTERM
and SIGINT stop every service cleanly (exit 0).

Services that are configured but not built yet in this version (see README "What works today") are
named in one WARNING line at start-up instead of being silently ignored.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from wds.config import Config
from wds.errors import ConfigError, WdsError

log = logging.getLogger(__name__)


class Service(Protocol):
    """What the server needs from a service: start (bind, return a description) and stop."""

    name: str

    async def start(self) -> str: ...

    async def stop(self) -> None: ...


@dataclass
class TftpService:
    config: Config
    name: str = "tftp"

    async def start(self) -> str:
        import dataclasses

        from pxe.tftp.server import TftpServer

        tftp = self.config.tftp
        if not tftp.address:
            tftp = dataclasses.replace(tftp, address=self.config.server.address)
        self._server = TftpServer(tftp)
        host, port = await self._server.start()
        return f"{host}:{port} serving {tftp.root}"

    async def stop(self) -> None:
        await self._server.stop()


@dataclass
class PxeService:
    """ProxyDHCP on ``[pxe] dhcp_port``/``pxe_port``, answering from the device records."""

    config: Config
    name: str = "pxe"

    async def start(self) -> str:
        from pxe.dhcp.server import proxy_dhcp_from_config
        from wds.devices import SERVER_BUSY_TIMEOUT_MS, DeviceStore

        self._store = DeviceStore.open(
            self.config.server.state_dir, busy_timeout_ms=SERVER_BUSY_TIMEOUT_MS
        )
        self._server = proxy_dhcp_from_config(self.config, store=self._store)
        try:
            ports = await self._server.start()
        except BaseException:
            self._store.close()
            raise
        pxe = self.config.pxe
        return (
            f"{self.config.server.address} ports {ports.dhcp} and {ports.pxe} "
            f"(ProxyDHCP, answer={pxe.answer}, record_pending={str(pxe.record_pending).lower()})"
        )

    async def stop(self) -> None:
        await self._server.stop()
        self._store.close()


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


def build_services(config: Config) -> tuple[list[Service], list[str]]:
    """The services this version can run for ``config``, and the configured ones it cannot yet."""
    services: list[Service] = []
    missing: list[str] = []
    if config.tftp.enabled:
        services.append(TftpService(config))
    if config.pxe.enabled:
        services.append(PxeService(config))
    if config.http.enabled:
        missing.append("http")
    if config.session:
        missing.append(f"multicast sessions ({len(config.session)})")
    return services, missing


async def serve(config: Config, *, announce: Callable[[str], None] = print) -> None:
    """Run until SIGTERM or SIGINT. ``announce`` gets one line per started service."""
    services, missing = build_services(config)
    if missing:
        log.warning("configured but not available in this version, skipped: %s", ", ".join(missing))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    started: list[Service] = []
    try:
        for service in services:
            try:
                where = await service.start()
            except OSError as exc:
                raise WdsError(
                    f"{service.name}: cannot bind its port: {exc.strerror}; is another "
                    "server using it, or does this need root?"
                ) from None
            started.append(service)
            announce(f"wds serve: {service.name} on {where}")
        if not started:
            announce("wds serve: no service enabled; nothing to do (see [tftp] enabled, ...)")
            return
        announce("wds serve: ready")
        await stop.wait()
        log.info("stopping on signal")
    finally:
        for service in reversed(started):
            await service.stop()
