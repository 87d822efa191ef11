"""A WebService run in-process for the API tests: a fake session manager, a real DeviceStore.

The service runs on its own event loop in a thread, so tests (and hypothesis) talk to it with a
plain synchronous HTTP client over real loopback sockets. Everything that touches the device
database runs on that loop's thread (SQLite connections belong to one thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http.client
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from wds.config import Config, HttpConfig, ServerConfig, SessionConfig
from wds.context import ReceiverStatus, ServerContext, SessionContent, SessionStatus
from wds.devices import Device, DeviceEvents, DeviceStore
from wds.errors import Conflict, NotFound, RequestError

T = TypeVar("T")
MANIFEST = b"WMTP manifest bytes"


class FakeSessions:
    """A SessionControl with sessions in a dict; start/stop move the state as the real one."""

    def __init__(self, image: Path) -> None:
        self.image = image
        receiver = ReceiverStatus(
            receiver_id="0a0b",
            address="127.0.0.1",
            device="52:54:00:18:00:01",
            state="joined",
            verified_chunks=3,
            chunks=10,
            rejected_chunks=1,
            repairs=4,
            loss=0.02,
            rate_bps=12.5e6,
            eta_s=4.2,
        )
        self.sessions: dict[str, SessionStatus] = {
            "lab": self._status("lab", "lab/win11:1", "running", receivers=(receiver,)),
            "idle": self._status("idle", "lab/win10", "idle"),
        }

    def _status(
        self,
        name: str,
        image: str,
        state: Any,
        *,
        origin: Any = "config",
        receivers: tuple[ReceiverStatus, ...] = (),
    ) -> SessionStatus:
        return SessionStatus(
            name=name,
            image=image,
            mode="auto",
            state=state,
            origin=origin,
            group="239.255.42.1",
            port=9000,
            rate_mbps=100.0,
            size=self.image.stat().st_size,
            chunks=10,
            started_at=None,
            bytes_sent=123456,
            repairs_sent=7,
            receivers=receivers,
        )

    def list(self) -> list[SessionStatus]:
        return list(self.sessions.values())

    def get(self, name: str) -> SessionStatus:
        try:
            return self.sessions[name]
        except KeyError:
            raise NotFound(f"no session {name!r}") from None

    async def start(self, name: str) -> SessionStatus:
        status = self.get(name)
        if status.state == "running":
            raise Conflict(f"session {name!r} is already running")
        self.sessions[name] = dataclasses.replace(status, state="running")
        return self.sessions[name]

    async def stop(self, name: str) -> SessionStatus:
        status = self.get(name)
        if status.state != "running":
            raise Conflict(f"session {name!r} is not running ({status.state})")
        self.sessions[name] = dataclasses.replace(status, state="stopped")
        return self.sessions[name]

    async def create(self, spec: SessionConfig) -> SessionStatus:
        if spec.name in self.sessions:
            raise Conflict(f"session {spec.name!r} exists")
        if not spec.image.startswith("lab/"):
            raise RequestError(f"no image {spec.image} in the store")
        self.sessions[spec.name] = self._status(spec.name, spec.image, "idle", origin="runtime")
        return self.sessions[spec.name]

    def content(self, name: str) -> SessionContent:
        self.get(name)
        return SessionContent(manifest=MANIFEST, image=self.image)

    def for_device(self, device: Device) -> SessionStatus | None:
        return self.sessions.get(device.session)

    @property
    def fingerprint(self) -> str:
        return "sha256:" + "ab" * 32


@dataclass
class Running:
    """A started WebService: its two base URLs and what it was built from."""

    content: str  # http://127.0.0.1:PORT
    admin: str
    ctx: ServerContext
    sessions: FakeSessions
    token: str
    loop: asyncio.AbstractEventLoop
    headers: dict[str, str] = field(default_factory=dict)

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the service's thread (the device database lives there)."""

        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)


def web_config(tmp_path: Path, **http: Any) -> Config:
    values: dict[str, Any] = {
        "address": "127.0.0.1",
        "port": 0,
        "admin_address": "127.0.0.1",
        "admin_port": 0,
    }
    values.update(http)
    server = ServerConfig(
        address="127.0.0.1", state_dir=tmp_path / "state", store=tmp_path / "store"
    )
    return Config(server=server, http=HttpConfig(**values))


@contextlib.contextmanager
def running_service(tmp_path: Path, *, token: str = "", **http: Any) -> Iterator[Running]:
    """Start a WebService on loopback (``token``: write a token file and require it)."""
    from wds.web import WebService

    image = tmp_path / "image.bin"
    image.write_bytes(bytes(range(256)) * 64)
    if token:
        token_file = tmp_path / "admin.token"
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
        http["token_file"] = token_file
    config = web_config(tmp_path, **http)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    sessions = FakeSessions(image)
    state: dict[str, Any] = {}

    async def start() -> Running:
        store = DeviceStore.open(config.server.state_dir)
        ctx = ServerContext(config, store, DeviceEvents(store), sessions, started=1.0)
        service = WebService(ctx)
        state.update(store=store, service=service)
        await service.start()
        assert service.content_address and service.admin_address
        return Running(
            content="http://{}:{}".format(*service.content_address),
            admin="http://{}:{}".format(*service.admin_address),
            ctx=ctx,
            sessions=sessions,
            token=token,
            loop=loop,
            headers={"Authorization": f"Bearer {token}"} if token else {},
        )

    async def stop() -> None:
        if "service" in state:
            await state["service"].stop()
        if "store" in state:
            state["store"].close()

    try:
        running = asyncio.run_coroutine_threadsafe(start(), loop).result(20)
        yield running
    finally:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), loop).result(20)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    base: str,
    method: str,
    path: str,
    body: bytes | str | dict[str, Any] | list[Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    """One HTTP request, the path sent exactly as given (no client-side normalisation)."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        data: bytes | None
        if isinstance(body, dict | list):
            data = json.dumps(body).encode()
        elif isinstance(body, str):
            data = body.encode()
        else:
            data = body
        conn.request(method, path, body=data, headers=headers or {})
        response = conn.getresponse()
        return Answer(
            response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        )
    finally:
        conn.close()
