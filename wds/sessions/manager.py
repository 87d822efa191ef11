"""The session manager: every multicast session of a ``wds serve`` process.

Each session has one task that prepares it (find the image in the store, export one image of a
multi-image WIM, hash and sign the manifest -- in a worker thread) and then runs a
:class:`multicast.sender.Sender` through :class:`multicast.net.SenderService`:

* ``auto`` -- the sender is ready from the start and begins when the first receiver joins; when
  it has finished, a fresh sender is armed for the next clients (WDS Auto-Cast);
* ``scheduled`` -- the sender waits for ``start_at``, ``min_clients`` or ``max_wait``, runs once
  and the session is ``finished`` until it is started again.

Stopping a session cancels its sender: receivers hear nothing more and fall back to HTTP (the
content stays served) or fail with "sender silent". A stopping server first closes the sessions
to new receivers (:meth:`SessionManager.drain`), lets running transfers finish within the grace
period, then cancels the rest; receivers keep their on-disk record and resume against the
restarted server, which publishes byte-identical manifests (:mod:`wds.sessions.prepare`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from multicast import keys
from multicast.codec import SenderState
from multicast.events import (
    Address,
    MoveToUnicast,
    ReceiverDone,
    ReceiverDropped,
    ReceiverJoined,
    ReceiverLeft,
    SessionFinished,
    SessionStarted,
)
from multicast.net import SenderService, open_sender_socket
from multicast.sender import Event, sender_settings, start_at_on_clock
from wds.config import Config, SessionConfig
from wds.context import EventKind, EventSink, SessionContent, SessionState, SessionStatus
from wds.errors import ConfigError, Conflict, NotFound, RequestError, WdsError
from wds.sessions.pool import Pool
from wds.sessions.prepare import (
    Prepared,
    build_signed,
    check_image_ref,
    find_image,
    load_key,
    resolve_image,
    sending_address,
)
from wds.sessions.tracking import ReceiverTracker, TrackedSender

log = logging.getLogger(__name__)

#: a sender runs until it has finished; this only bounds a run that never does (30 days)
RUN_LIMIT = 30 * 86400.0
#: sessions in total (config and runtime)
MAX_SESSIONS = 256
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

Phase = Literal["preparing", "ready", "finished", "stopped", "failed"]


class _Gate:
    """The sender's join policy: closed while the server stops (no new receivers)."""

    def __init__(self) -> None:
        self.open = True

    def admit(self, receiver_id: int, addr: Address) -> bool:
        return self.open


class _FileSource:
    """The image bytes for the sender (``pread`` on a file kept open: a store change that
    replaces the file cannot pull it away under a running session)."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDONLY)

    def read(self, offset: int, length: int) -> bytes:
        return os.pread(self._fd, length, offset)

    def close(self) -> None:
        os.close(self._fd)


@dataclasses.dataclass
class _Session:
    spec: SessionConfig
    origin: Literal["config", "runtime"]
    group: str
    port: int
    phase: Phase = "preparing"
    message: str = "preparing: hashing the image"
    prepared: Prepared | None = None
    source: _FileSource | None = None
    task: asyncio.Task[None] | None = None
    sender: TrackedSender | None = None
    tracker: ReceiverTracker | None = None
    gate: _Gate = dataclasses.field(default_factory=_Gate)
    started_at: float | None = None
    sent_before: int = 0  # DATA datagrams of earlier runs
    repairs_before: int = 0
    runs: int = 0
    completed: int = 0
    force_start: bool = False
    retire: bool = False  # removed from the config: goes away once idle
    pending: SessionConfig | None = None  # changed in the config: applied once idle

    @property
    def busy(self) -> bool:
        """A transfer is under way (receivers joined, or the sender is sending)."""
        sender = self.sender
        if sender is None or sender.state is SenderState.FINISHED:
            return False
        return sender.state is SenderState.RUNNING or sender.active_receivers > 0

    def close_source(self) -> None:
        if self.source is not None:
            self.source.close()
            self.source = None


class SessionManager:
    """Implements :class:`wds.context.SessionControl` for ``wds serve``."""

    def __init__(
        self,
        config: Config,
        *,
        events: EventSink | None = None,
        device_for: Callable[[str], str | None] | None = None,
        announce: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self._events = events
        self._device_for = device_for or (lambda ip: None)
        self._announce = announce or (lambda line: None)
        try:
            self._key = load_key(Path(config.server.state_dir))
        except OSError as exc:
            raise ConfigError(
                f"cannot create or read the manifest key in {str(config.server.state_dir)!r}: "
                f"{exc.strerror}",
                file=str(config.source),
                key="server.state_dir",
            ) from None
        self._fingerprint = keys.fingerprint(self._key)
        self._pool = Pool(config.multicast.group_pool, config.multicast.port_pool)
        self._sessions: dict[str, _Session] = {}
        self._address: str | None = None
        self._closing = False

    # ------------------------------------------------------------------ service life

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    async def open(self) -> str:
        """Prepare and start every ``[[session]]``; returns the line ``wds serve`` prints."""
        try:
            where = self._sending_address()
        except WdsError as exc:  # each session fails with the reason when it tries to send
            where = "no multicast route (see the log)"
            log.warning("sessions cannot multicast: %s", exc)
        for spec in self.config.session:
            try:
                self._add(spec, "config")
            except RequestError as exc:
                log.error("session %s not started: %s", spec.name, exc)
        names = ", ".join(self._sessions) or "none configured"
        return f"{where} ({len(self._sessions)}: {names}); manifests signed by {self._fingerprint}"

    def _sending_address(self) -> str:
        if self._address is None:
            self._address = sending_address(self.config)
        return self._address

    async def drain(self, grace: float) -> None:
        """Stop taking receivers; wait up to ``grace`` seconds for running transfers."""
        self._closing = True
        for s in self._sessions.values():
            s.gate.open = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        busy = [s.spec.name for s in self._sessions.values() if s.busy]
        if busy:
            log.info("letting %s finish (up to %.0f s)", ", ".join(busy), grace)
        while loop.time() < deadline and any(s.busy for s in self._sessions.values()):
            await asyncio.sleep(0.1)
        still = [s.spec.name for s in self._sessions.values() if s.busy]
        if still:
            log.warning(
                "stopping with transfers under way (%s): their receivers resume after a restart",
                ", ".join(still),
            )

    async def close(self) -> None:
        self._closing = True
        for s in list(self._sessions.values()):
            await self._cancel(s)
            s.close_source()

    # ------------------------------------------------------------------ SessionControl

    def list(self) -> list[SessionStatus]:
        return [self._status(s) for s in self._sessions.values()]

    def get(self, name: str) -> SessionStatus:
        return self._status(self._find(name))

    def content(self, name: str) -> SessionContent:
        s = self._find(name)
        if s.prepared is None:
            why = s.message if s.phase == "failed" else "it is still being prepared; try again"
            raise Conflict(f"session {name} has no manifest yet: {why}")
        return SessionContent(manifest=s.prepared.wire, image=s.prepared.image)

    def for_device(self, device: object) -> SessionStatus | None:
        session = getattr(device, "session", "") or ""
        if session and session in self._sessions:
            return self.get(session)
        image = (getattr(device, "image", "") or "").lower()
        if not image:
            return None
        for s in self._sessions.values():
            if s.spec.image.lower() == image and s.phase not in ("failed", "stopped"):
                return self._status(s)
        return None

    async def start(self, name: str) -> SessionStatus:
        s = self._find(name)
        if s.retire:
            raise Conflict(f"session {name} was removed from the config; it is not restarted")
        state = self._state(s)
        if state == "waiting":  # a scheduled session told to go now
            s.force_start = True
            await self._cancel(s)
        elif state in ("idle", "running"):
            raise Conflict(f"session {name} is already {state}; stop it first")
        elif state == "failed":
            s.prepared = None
            s.close_source()
        s.phase = "ready" if s.prepared is not None else "preparing"
        s.message = ""
        self._spawn(s)
        log.info("session %s started by the admin", name)
        return self._status(s)

    async def stop(self, name: str) -> SessionStatus:
        s = self._find(name)
        if s.phase in ("stopped", "failed") or (
            s.phase == "finished" and (s.task is None or s.task.done())
        ):
            raise Conflict(f"session {name} is {self._state(s)}; there is nothing to stop")
        busy = s.busy
        await self._cancel(s)
        s.phase = "stopped"
        s.message = "stopped by the admin" + ("; its receivers fall back to HTTP" if busy else "")
        log.info("session %s stopped by the admin", name)
        return self._status(s)

    async def create(self, spec: SessionConfig) -> SessionStatus:
        if not _NAME.fullmatch(spec.name):
            raise RequestError(
                f"session name {spec.name!r} must be 1-64 letters, digits, '.', '_' or '-'"
            )
        if spec.name in self._sessions:
            raise Conflict(f"session {spec.name} exists; stop it or pick another name")
        if spec.mode == "scheduled" and not (spec.start_at or spec.min_clients or spec.max_wait):
            raise RequestError(
                f"session {spec.name}: a scheduled session needs start_at, min_clients or max_wait"
            )
        check_image_ref(spec.image)
        await asyncio.to_thread(find_image, self.config.server.store, spec.image)
        s = self._add(spec, "runtime")
        log.info("session %s created at run time (%s)", spec.name, spec.image)
        return self._status(s)

    # ------------------------------------------------------------------ reload

    async def reload(self, config: Config) -> None:
        """Apply a reloaded config's ``[[session]]`` list without dropping running transfers."""
        wanted = {spec.name: spec for spec in config.session}
        for s in list(self._sessions.values()):
            if s.origin != "config":
                continue
            spec = wanted.get(s.spec.name)
            if spec is None:
                await self._retire(s)
                continue
            if s.retire:  # removed by an earlier reload, back before its transfer ended
                s.retire, s.message = False, ""
            if spec == s.spec:
                s.pending = None  # a change made and taken back before it was applied
            elif spec != s.pending:
                await self._change(s, spec)
        for name, spec in wanted.items():
            if name not in self._sessions:
                try:
                    self._add(spec, "config")
                    log.info("reload: session %s added", name)
                except RequestError as exc:
                    log.error("reload: session %s not started: %s", name, exc)
            elif self._sessions[name].origin == "runtime":
                log.error("reload: session %s exists as a runtime session; not replaced", name)
        self.config = dataclasses.replace(self.config, session=config.session)

    async def _retire(self, s: _Session) -> None:
        name = s.spec.name
        if s.busy:
            s.retire = True
            s.message = "removed from the config; goes away when its transfer is done"
            log.info("reload: session %s removed; it finishes its running transfer first", name)
            return
        await self._cancel(s)
        self._remove(s)
        log.info("reload: session %s removed", name)

    async def _change(self, s: _Session, spec: SessionConfig) -> None:
        if s.busy:
            s.pending = spec
            s.message = "changed in the config; re-prepared when its transfer is done"
            log.info("reload: session %s changed; applied after its running transfer", s.spec.name)
            return
        await self._cancel(s)
        self._remove(s)
        self._add(spec, "config")
        log.info("reload: session %s changed; prepared again", spec.name)

    # ------------------------------------------------------------------ internals

    def _find(self, name: str) -> _Session:
        s = self._sessions.get(name)
        if s is None:
            raise NotFound(f"no session {name!r}; 'wds session list' shows the sessions")
        return s

    def _add(self, spec: SessionConfig, origin: Literal["config", "runtime"]) -> _Session:
        if len(self._sessions) >= MAX_SESSIONS:
            raise Conflict(f"{MAX_SESSIONS} sessions already; remove one first")
        group, port = self._pool.allocate(spec.name, spec.group, spec.port)
        s = _Session(spec=spec, origin=origin, group=group, port=port)
        self._sessions[spec.name] = s
        self._spawn(s)
        return s

    def _remove(self, s: _Session) -> None:
        self._sessions.pop(s.spec.name, None)
        self._pool.release(s.spec.name)
        s.close_source()

    def _spawn(self, s: _Session) -> None:
        loop = asyncio.get_running_loop()
        s.task = loop.create_task(self._lifecycle(s), name=f"session {s.spec.name}")

    async def _cancel(self, s: _Session) -> None:
        task, s.task = s.task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _lifecycle(self, s: _Session) -> None:
        name = s.spec.name
        try:
            if s.prepared is None:
                await self._prepare(s)
            s.phase, s.message = "ready", ""
            while True:
                await self._run_once(s)
                if s.spec.mode != "auto" or self._closing or s.retire or s.pending:
                    break
        except asyncio.CancelledError:
            raise
        except (WdsError, OSError, ValueError) as exc:
            s.phase, s.message = "failed", str(exc)
            log.error("session %s failed: %s", name, exc)
            return
        except Exception as exc:  # a bug: shown as the session's failure, with its traceback
            s.phase, s.message = "failed", f"internal error: {exc!r}"
            log.exception("session %s failed", name)
            return
        s.phase = "finished"
        s.message = f"{s.completed} receivers verified the image in {s.runs} runs"
        if s.retire:
            self._remove(s)
            log.info("session %s removed (its transfer is done)", name)
        elif s.pending is not None and not self._closing:
            spec = s.pending
            self._remove(s)
            self._add(spec, "config")
            log.info("session %s prepared again with its changed config", name)

    async def _prepare(self, s: _Session) -> None:
        cfg, spec = self.config, s.spec
        s.phase, s.message = "preparing", "preparing: hashing the image"

        def work() -> Prepared:
            image = resolve_image(cfg.server.store, cfg.server.state_dir, spec.image)
            return build_signed(image, spec, cfg, self._key, group=s.group, port=s.port)

        prepared = await asyncio.to_thread(work)
        s.close_source()
        s.source = _FileSource(prepared.image)
        s.prepared, s.tracker = prepared, None
        m = prepared.manifest
        self._announce(
            f"wds serve: session {spec.name} on {s.group}:{s.port} ({spec.mode}, {spec.image}, "
            f"{m.image_size} bytes, {m.chunk_count} chunks)"
        )

    async def _run_once(self, s: _Session) -> None:
        loop = asyncio.get_running_loop()
        p, spec = s.prepared, s.spec
        assert p is not None and s.source is not None
        m = p.manifest
        start_at = None
        if spec.mode == "scheduled":
            start_at = start_at_on_clock(spec.start_at, wall_now=time.time(), clock_now=loop.time())
        if s.force_start:
            start_at, s.force_start = loop.time(), False
        settings = sender_settings(self.config.multicast, spec, start_at=start_at)
        if start_at is not None and spec.mode == "auto":
            settings = dataclasses.replace(settings, mode="scheduled")
        tracker = s.tracker  # one per preparation: earlier runs' receivers stay listed
        if tracker is None:
            progress = functools.partial(self._progress, s.spec.name)
            tracker = ReceiverTracker(m.chunk_count, m.chunk_size, m.image_size, progress)
            s.tracker = tracker
        sender = TrackedSender(
            m,
            manifest_digest=p.digest,
            source=s.source,
            settings=settings,
            now=loop.time(),
            policy=s.gate,
            tracker=tracker,
        )
        sock = open_sender_socket(self._sending_address(), self.config.multicast.ttl)
        service = SenderService(
            sender, sock, (s.group, s.port), on_event=functools.partial(self._on_event, s)
        )
        s.sender = sender
        try:
            with contextlib.suppress(TimeoutError):
                await service.run(RUN_LIMIT)
        finally:
            s.sent_before += sender.data_sent
            s.repairs_before += sender.repairs_sent
            s.completed += sender.completed
            s.runs += 1
            s.sender = None

    def _on_event(self, s: _Session, e: Event) -> None:
        name = s.spec.name
        if isinstance(e, SessionStarted):
            s.started_at = time.time()
            log.info("session %s: sending to %d receivers", name, e.receivers)
        elif isinstance(e, SessionFinished):
            log.info("session %s: finished, %d receivers verified the image", name, e.completed)
        elif isinstance(e, ReceiverJoined):
            self._record("joined", f"session {name}", e.addr)
        elif isinstance(e, ReceiverDone):
            self._record("finished", f"session {name}: image verified", e.addr)
        elif isinstance(e, ReceiverLeft):
            self._record("failed", f"session {name}: {e.reason}", e.addr)
        elif isinstance(e, ReceiverDropped):
            self._record("failed", f"session {name}: dropped as a slow client", e.addr)
        elif isinstance(e, MoveToUnicast):
            self._record("progress", f"session {name}: slow, continues over HTTP", e.addr)

    def _progress(self, name: str, address: str, verified: int, chunks: int) -> None:
        self._record("progress", f"session {name}: {verified}/{chunks} chunks", (address, 0))

    def _record(self, kind: EventKind, detail: str, addr: Address) -> None:
        if self._events is None:
            return
        try:
            self._events.record(kind, detail, ip=addr[0])
        except Exception as exc:  # a broken event store must not stop a session
            log.warning("cannot record the %s event of %s: %s", kind, addr[0], exc)

    def _state(self, s: _Session) -> SessionState:
        if s.phase in ("failed", "stopped", "finished"):
            return s.phase
        sender = s.sender
        if s.phase == "preparing" or sender is None:
            return "idle"
        if sender.state is SenderState.RUNNING:
            return "running"
        if sender.state is SenderState.FINISHED:
            return "finished"
        return "idle" if sender.settings.mode == "auto" else "waiting"

    def _status(self, s: _Session) -> SessionStatus:
        p, sender, spec = s.prepared, s.sender, s.spec
        sent = s.sent_before + (sender.data_sent if sender else 0)
        repairs = s.repairs_before + (sender.repairs_sent if sender else 0)
        rate = spec.rate_mbps or self.config.multicast.max_rate_mbps
        if sender is not None and sender.state is SenderState.RUNNING:
            rate = round(sender.rate * 8 / 1e6, 1)
        message = s.message
        state = self._state(s)
        if state == "waiting" and not message:
            message = _waiting_for(spec)
        return SessionStatus(
            name=spec.name,
            image=spec.image,
            mode=spec.mode,
            state=state,
            origin=s.origin,
            group=s.group,
            port=s.port,
            rate_mbps=rate,
            size=p.manifest.image_size if p else 0,
            chunks=p.manifest.chunk_count if p else 0,
            started_at=s.started_at,
            bytes_sent=sent * (p.manifest.block_size if p else 0),
            repairs_sent=repairs,
            receivers=s.tracker.statuses(self._device_for) if s.tracker else (),
            message=message,
        )


def _waiting_for(spec: SessionConfig) -> str:
    parts = []
    if spec.start_at:
        parts.append(f"until {spec.start_at}")
    if spec.min_clients:
        parts.append(f"for {spec.min_clients} clients")
    if spec.max_wait:
        parts.append(f"at most {spec.max_wait:g} s")
    return "waiting " + ", ".join(parts)
