"""What the services of one ``wds serve`` process share, and the small interfaces between them.

``wds serve`` (:mod:`wds.server`) builds one :class:`ServerContext` at start-up and hands it to
every service:

* the PXE and TFTP services tell :attr:`ServerContext.events` what each device did (booted, got
  its boot file), keyed by MAC address or, when only the IP address is known, by IP;
* the session manager (:mod:`wds.sessions`) implements :class:`SessionControl`: it prepares the
  ``[[session]]`` entries, runs their multicast senders and reports per-receiver progress;
* the HTTP service (:mod:`wds.web`) answers the boot and content endpoints and the admin API
  from :attr:`ServerContext.sessions`, :attr:`ServerContext.devices` and the store;
* ``/metrics`` reads the counters of :attr:`ServerContext.tftp`, :attr:`ServerContext.pxe` and
  the sessions when it is scraped.

Nothing here does I/O; the types are plain data with a ``to_json`` for the API.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from wds.config import Config, SessionConfig

if TYPE_CHECKING:
    from pxe.dhcp.server import ProxyDhcpServer
    from pxe.tftp.server import TftpServer
    from wds.devices import Device, DeviceStore

__all__ = [
    "EventKind",
    "EventSink",
    "ReceiverStatus",
    "ServerContext",
    "SessionContent",
    "SessionControl",
    "SessionState",
    "SessionStatus",
]

#: what happened to a device, in the order a deployment goes through them
EventKind = Literal["booted", "boot-file", "script", "joined", "progress", "finished", "failed"]

#: idle: prepared, no sender yet (auto: waits for the first client to ask); waiting: a
#: scheduled sender waits for its time or clients; running: sending; finished: every receiver
#: done; stopped: by the admin; failed: could not be prepared or sent (``message`` says why)
SessionState = Literal["idle", "waiting", "running", "finished", "stopped", "failed"]


@dataclass(frozen=True)
class ReceiverStatus:
    """One receiver of a session, as the sender sees it from its REPORTs."""

    receiver_id: str  # hex, random per receiver run
    address: str  # its IPv4 address
    device: str | None  # MAC of the device at that address, when the server knows it
    state: Literal["joined", "unicast", "done", "left", "dropped"]
    verified_chunks: int
    chunks: int
    rejected_chunks: int  # chunks that failed their SHA-256 at the receiver
    repairs: int  # blocks repaired at its request
    loss: float  # fraction of DATA lost, from its last REPORT
    rate_bps: float  # goodput, bytes per second
    eta_s: float | None  # seconds to done at that rate; None when unknown

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SessionStatus:
    """A session as the admin API shows it."""

    name: str
    image: str  # store reference, e.g. "lab/win11:1"
    mode: Literal["auto", "scheduled"]
    state: SessionState
    origin: Literal["config", "runtime"]  # from [[session]] or started through the API
    group: str | None  # multicast group and port, once allocated
    port: int | None
    rate_mbps: float
    size: int  # bytes of the image; 0 until prepared
    chunks: int
    started_at: float | None  # wall-clock time the sender started
    bytes_sent: int
    repairs_sent: int
    receivers: tuple[ReceiverStatus, ...] = ()
    message: str = ""  # why it waits, failed or stopped

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["receivers"] = [r.to_json() for r in self.receivers]
        return data


@dataclass(frozen=True)
class SessionContent:
    """What the content endpoints serve for a session: the signed manifest and the image."""

    manifest: bytes
    image: Path


class SessionControl(Protocol):
    """The session manager as the web layer and the boot scripts use it.

    Lookups raise :class:`wds.errors.NotFound` for an unknown name; a start or stop that does not
    fit the session's state raises :class:`wds.errors.Conflict`; a spec naming an image that is not
    in the store raises :class:`wds.errors.RequestError`.
    """

    def list(self) -> list[SessionStatus]: ...

    def get(self, name: str) -> SessionStatus: ...

    async def start(self, name: str) -> SessionStatus: ...

    async def create(self, spec: SessionConfig) -> SessionStatus: ...

    async def stop(self, name: str) -> SessionStatus: ...

    def content(self, name: str) -> SessionContent: ...

    def for_device(self, device: Device) -> SessionStatus | None:
        """The session a device is to join: its own ``session``, else one sending its ``image``."""
        ...

    @property
    def fingerprint(self) -> str:
        """``sha256:HEX`` of the key that signs the manifests (passed to the deploy environment)."""
        ...


class EventSink(Protocol):
    """Where services report what a device did; by MAC, or by IP when that is all they know."""

    def record(
        self, kind: EventKind, detail: str, *, mac: str | None = None, ip: str | None = None
    ) -> None: ...

    def remember_address(self, ip: str, mac: str) -> None:
        """Learn which device uses an IP address (from DHCP REQUESTs and iPXE script fetches)."""
        ...


@dataclass
class ServerContext:
    """Everything one ``wds serve`` process shares; built by :func:`wds.server.serve`."""

    config: Config
    devices: DeviceStore
    events: EventSink
    sessions: SessionControl
    tftp: TftpServer | None = None
    pxe: ProxyDhcpServer | None = None
    started: float = 0.0  # wall-clock start time
    #: called (from the event loop) to reload the config, as SIGHUP does; set by the server
    reload: Callable[[], Any] | None = field(default=None)
