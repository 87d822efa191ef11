"""The boot policy built from ``[pxe]`` and a table of prestaged devices.

:class:`ConfigBootPolicy` implements :class:`pxe.dhcp.decide.BootPolicy`:

* ``answer = "none"`` answers nobody; ``"known"`` only devices in the device table (by MAC or by
  option 97 UUID); ``"all"`` everybody whose architecture has a boot file.
* iPXE (already running) gets the iPXE script URL, never an iPXE binary again: that is what keeps
  a BIOS PXE ROM -> undionly.kpxe -> iPXE chain from looping.
* UEFI HTTP Boot clients get ``http_url`` + ``boot/`` + the boot file of their architecture:
  ``wds serve`` serves ``[tftp] root`` under ``/boot/`` (:mod:`wds.web.boot`), beside the iPXE
  script at ``http_url`` + ``ipxe_script``.
* Everybody else gets the boot file of their architecture from ``[pxe.boot]``; a prestaged device
  may name its own.
* ``proxy_mode`` decides whether the file travels in the proxy offer or on port 4011.

:class:`StoreBootPolicy` puts the device records of the state directory (:mod:`wds.devices`) in
front of it: prestaged and approved devices are answered (with their own boot file), pending and
rejected ones are not, and with ``record_pending`` an unknown client is recorded as pending and
not answered until an admin approves it. :class:`InMemoryDeviceTable` is the table of tests.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Literal, Protocol

from pxe.dhcp.arch import Firmware
from pxe.dhcp.decide import BootDecision, ClientIdentity, Ignore
from wds.config import PxeConfig
from wds.devices import DeviceError, DeviceStore
from wds.errors import LocalProtocolError

__all__ = [
    "HTTP_BOOT_PREFIX",
    "ConfigBootPolicy",
    "DeviceLookup",
    "InMemoryDeviceTable",
    "PrestagedDevice",
    "StoreBootPolicy",
    "default_http_url",
    "normalize_mac",
]

#: prestaged devices one in-memory table holds
MAX_DEVICES = 100_000
#: where the HTTP server of ``wds serve`` serves ``[tftp] root`` (wds.web.boot's /boot/{path})
HTTP_BOOT_PREFIX = "boot/"


def normalize_mac(mac: str) -> str:
    """ "52-54-00-AB-00-01", "525400ab0001" or "52:54:00:ab:00:01" -> "52:54:00:ab:00:01"."""
    digits = mac.replace(":", "").replace("-", "").replace(".", "").lower()
    if len(digits) != 12 or any(c not in "0123456789abcdef" for c in digits):
        raise LocalProtocolError(f"{mac!r} is not a MAC address")
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


@dataclass(frozen=True)
class PrestagedDevice:
    """A device the admin knows. Empty ``boot_file``/``ipxe_script`` = the configured default."""

    name: str
    mac: str | None = None
    uuid: uuid.UUID | None = None
    boot_file: str = ""
    ipxe_script: str = ""


class DeviceLookup(Protocol):
    def find(self, *, mac: str, uuid: uuid.UUID | None) -> PrestagedDevice | None: ...


class InMemoryDeviceTable:
    """Prestaged devices by MAC and by UUID; a MAC match wins over a UUID match."""

    def __init__(self, devices: Iterable[PrestagedDevice] = ()) -> None:
        self._by_mac: dict[str, PrestagedDevice] = {}
        self._by_uuid: dict[uuid.UUID, PrestagedDevice] = {}
        for device in devices:
            self.add(device)

    def add(self, device: PrestagedDevice) -> None:
        if device.mac is None and device.uuid is None:
            raise LocalProtocolError(f"device {device.name!r} needs a MAC or a UUID")
        if len(self._by_mac) + len(self._by_uuid) >= MAX_DEVICES:
            raise LocalProtocolError(f"more than {MAX_DEVICES} prestaged devices")
        if device.mac is not None:
            self._by_mac[normalize_mac(device.mac)] = device
        if device.uuid is not None:
            self._by_uuid[device.uuid] = device

    def find(self, *, mac: str, uuid: uuid.UUID | None) -> PrestagedDevice | None:
        device = self._by_mac.get(mac)
        if device is None and uuid is not None:
            device = self._by_uuid.get(uuid)
        return device


def default_http_url(address: IPv4Address, port: int) -> str:
    """The ``http_url`` used when ``[pxe] http_url`` is empty."""
    return f"http://{address}:{port}/" if port != 80 else f"http://{address}/"


class ConfigBootPolicy:
    """Boot files from ``[pxe]``; see the module docstring."""

    def __init__(
        self,
        config: PxeConfig,
        *,
        http_url: str = "",
        http_port: int = 8080,
        devices: DeviceLookup | None = None,
        next_server: IPv4Address | None = None,
    ) -> None:
        """URLs start with ``[pxe] http_url``, else ``http_url``, else
        ``http://ADDRESS:http_port/`` with the address the client reached us on."""
        self._config = config
        self._http_url = config.http_url or http_url
        self._http_port = http_port
        self._devices = devices if devices is not None else InMemoryDeviceTable()
        self._next_server = next_server

    def boot_for(self, client: ClientIdentity) -> BootDecision | Ignore:
        if self._config.answer == "none":
            return Ignore("[pxe] answer = 'none': no PXE client is answered")
        return self.boot_for_device(client, self._devices.find(mac=client.mac, uuid=client.uuid))

    def boot_for_device(
        self, client: ClientIdentity, device: PrestagedDevice | None
    ) -> BootDecision | Ignore:
        """The answer for ``client`` once its device (None = unknown) has been looked up."""
        config = self._config
        if device is None and config.answer == "known":
            who = client.mac + (f" / {client.uuid}" if client.uuid else "")
            return Ignore(f"unknown client {who}: [pxe] answer = 'known'")
        if client.ipxe:
            script = (device.ipxe_script if device else "") or config.boot.ipxe_script
            if not script:
                return Ignore("iPXE client but [pxe.boot] ipxe_script is empty")
            return BootDecision(self._url(script, client), self._next_server, "offer")
        if client.arch.firmware is Firmware.OTHER:
            return Ignore(f"no boot files for architecture {client.arch}")
        key = client.arch.firmware.value
        boot_file = (device.boot_file if device else "") or getattr(config.boot, key)
        if not boot_file:
            return Ignore(f"no boot file for {client.arch}: [pxe.boot] {key} is empty")
        if client.http:
            path = boot_file if _is_url(boot_file) else HTTP_BOOT_PREFIX + boot_file.lstrip("/")
            return BootDecision(self._url(path, client), self._next_server, "offer")
        return BootDecision(boot_file, self._next_server, self._delivery(client))

    def _delivery(self, client: ClientIdentity) -> Literal["offer", "port4011"]:
        mode = self._config.proxy_mode
        if mode != "auto":
            return mode
        return "offer" if client.arch.firmware is Firmware.BIOS else "port4011"

    def _url(self, path: str, client: ClientIdentity) -> str:
        if _is_url(path):  # already a URL: as is
            return path
        base = self._http_url or default_http_url(client.server_ip, self._http_port)
        return base.rstrip("/") + "/" + path.lstrip("/")


def _is_url(path: str) -> bool:
    return path.startswith(("http://", "https://", "tftp://"))


class StoreBootPolicy:
    """:class:`ConfigBootPolicy` behind the device records of :mod:`wds.devices`.

    * ``rejected``: never answered; ``pending``: not answered until approved.
    * ``prestaged``/``approved``: answered (also with ``answer = "known"``), with their boot file.
    * unknown, ``record_pending = true``: recorded as pending, not answered (WDS's "require
      administrator approval for unknown computers"); unknown otherwise: as ``answer`` says.

    The store is read on every request, so an approval changes the answer to the next DISCOVER.
    """

    def __init__(
        self,
        config: PxeConfig,
        store: DeviceStore,
        *,
        http_url: str = "",
        http_port: int = 8080,
        next_server: IPv4Address | None = None,
    ) -> None:
        self._config = config
        self._store = store
        self._inner = ConfigBootPolicy(
            config, http_url=http_url, http_port=http_port, next_server=next_server
        )

    def boot_for(self, client: ClientIdentity) -> BootDecision | Ignore:
        if self._config.answer == "none":
            return Ignore("[pxe] answer = 'none': no PXE client is answered")
        try:
            return self._boot_for(client)
        except (DeviceError, sqlite3.Error) as exc:  # a locked or broken database: stay silent
            return Ignore(f"device database unavailable: {exc}")

    def _boot_for(self, client: ClientIdentity) -> BootDecision | Ignore:
        record = self._store.find(mac=client.mac, uuid=client.uuid)
        if record is not None:
            if record.state == "rejected":
                return Ignore(f"device {client.mac} was rejected by an admin")
            if record.state == "pending":
                self._store.record_pending(mac=client.mac, uuid=client.uuid, arch=str(client.arch))
                return Ignore(f"device {client.mac} is pending: 'wds device approve {client.mac}'")
        elif self._config.record_pending:
            if self._store.record_pending(mac=client.mac, uuid=client.uuid, arch=str(client.arch)):
                return Ignore(f"unknown device {client.mac} recorded as pending approval")
            return Ignore(f"unknown device {client.mac}: too many pending devices to record it")
        device = None
        if record is not None:  # prestaged or approved
            name = record.mac or str(record.uuid)
            device = PrestagedDevice(name, record.mac, record.uuid, boot_file=record.boot_file)
        return self._inner.boot_for_device(client, device)
