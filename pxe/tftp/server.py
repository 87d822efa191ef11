"""The asyncio adapter: sockets in, machines fed, datagrams out, one timer per transfer.

No protocol decisions here (those are in :mod:`pxe.tftp.requests` and :mod:`pxe.tftp.machine`).
Sockets are raw non-blocking sockets watched with ``loop.add_reader``: cheaper per datagram than a
DatagramProtocol transport, and the send path is a bare ``sendto`` of header + mapped slice.

* The listening socket has IP_PKTINFO: each request tells which local address and interface it came
  to. The transfer's socket is bound to that address on a new ephemeral port (RFC 1350 TID), so
  replies come from the address the client talked to, and blksize is clamped to that
  interface's MTU.
* Timers are lazy: each transfer has at most one pending ``call_at``; an ACK that moves the deadline
  later does not touch it, the timer re-arms itself when it fires early.
* Busy-poll: while at most :data:`BUSY_POLL_MAX_TRANSFERS` transfers run, after a window has gone
  out the transfer socket is polled for the client's ACK for up to ``[tftp] busy_poll_us``
  instead of sleeping in the event loop. A sleeping process on an idle CPU takes tens of
  microseconds to wake (much more in a VM, where the idle CPU halts), and that wake-up is paid
  once per window; docs/TFTP.md ("Performance") has the measurements.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pxe.tftp.admission import AdmissionControl, Admitted, AlreadyWaiting, Queued, Refused
from pxe.tftp.codec import ErrorCode, TftpReadRequest, build_error
from pxe.tftp.files import FileSource, RootFileSource, ServedFile, SharedFileCache
from pxe.tftp.logs import log_transfer_end, peer_log
from pxe.tftp.machine import Outcome, ReadTransfer, TransferSettings
from pxe.tftp.netif import IP_PKTINFO, PKTINFO_SPACE, MtuCache, parse_pktinfo
from pxe.tftp.options import OptionLimits, format_options
from pxe.tftp.requests import (
    Accept,
    Drop,
    PreparedTransfer,
    Reject,
    classify_request,
    prepare_transfer,
)
from pxe.tftp.udpsend import GSO_MAX_SEGMENTS, gso_unsupported, send_each, send_segmented
from wds.config import TftpConfig

log = logging.getLogger(__name__)

#: datagrams read per socket wakeup before other sockets get their turn
READ_BUDGET = 64
#: largest datagram read on the listening port (a request is at most 1024 bytes, see codec)
MAX_LISTEN_DATAGRAM = 2048
#: a transfer socket only ever needs ACK and ERROR packets; longer datagrams are read truncated
MAX_TRANSFER_DATAGRAM = 1024
#: clients whose last effective window is remembered for their next transfer
HISTORY_SIZE = 4096
SEND_BUFFER = 4 * 1024 * 1024
#: longest busy-poll for a client's answer after a window burst, seconds (0: never poll)
BUSY_POLL = 200e-6  # the default of [tftp] busy_poll_us, in seconds
#: busy-poll only while at most this many transfers run (a poll watches one socket)
BUSY_POLL_MAX_TRANSFERS = 1
#: longest stretch the poll keeps the event loop from other work before it yields a turn, seconds
BUSY_POLL_SLICE = 1e-3
#: polls in a row that ran out without an answer before a transfer stops polling (a slow client)
BUSY_POLL_MISSES = 2
#: answers a transfer that stopped polling takes from the event loop before it tries again
BUSY_POLL_RETRY = 64


@dataclass(frozen=True)
class TransferEnd:
    """What :attr:`TftpServer.on_transfer_end` is told about an ended transfer."""

    client: tuple[str, int]
    name: str  # the file as served (relative to the root)
    size: int
    completed: bool
    seconds: float
    retransmitted: int
    message: str  # why it failed; empty when completed


@dataclass
class _Pending:
    request: TftpReadRequest
    client: tuple[str, int]
    local: str
    ifindex: int


@dataclass
class _Session:
    request: TftpReadRequest
    prepared: PreparedTransfer
    client: tuple[str, int]
    sock: socket.socket
    timer: asyncio.TimerHandle | None = None
    deadline: float = 0.0
    send_failures: int = 0
    gso: bool = True  # send window bursts with UDP segmentation offload
    polling: bool = False  # a busy-poll of this socket is running or scheduled
    poll_misses: int = 0  # busy-polls in a row that ran out without an answer
    unpolled: int = 0  # answers taken from the event loop since polling stopped
    closed: bool = False

    @property
    def machine(self) -> ReadTransfer:
        return self.prepared.transfer


class TftpServer:
    """A TFTP read-only server. ``await start()`` binds and returns (address, port)."""

    def __init__(
        self,
        config: TftpConfig,
        *,
        source: FileSource | None = None,
        gso: bool = True,
        busy_poll: float | None = None,
    ) -> None:
        self.config = config
        #: try UDP segmentation offload for window bursts (falls back per transfer by itself)
        self.gso = gso
        #: seconds to poll for a client's answer after a burst (see the module docstring)
        self.busy_poll = config.busy_poll_us / 1e6 if busy_poll is None else busy_poll
        self.cache = SharedFileCache()
        self.source: FileSource = source or RootFileSource(
            Path(config.root), case_insensitive=config.case_insensitive, cache=self.cache
        )
        self.admission: AdmissionControl[_Pending] = AdmissionControl(
            max_total=config.max_transfers,
            max_per_client=config.max_transfers_per_client,
            max_queued=config.max_queued,
            max_wait=config.max_queue_wait,
        )
        self._sessions: dict[tuple[str, int], _Session] = {}
        self._history: OrderedDict[str, float] = OrderedDict()
        self._mtus = MtuCache()
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._time: Callable[[], float] = time.monotonic  # the loop's clock once started
        self._call_at: Callable[..., asyncio.TimerHandle] = _not_started
        self._expiry_timer: asyncio.TimerHandle | None = None
        self.address: tuple[str, int] = ("", 0)
        self.completed = 0
        self.failed = 0
        #: client answers read by the busy-poll, and polls that ran out without one
        self.polled_answers = 0
        self.poll_timeouts = 0
        self.bytes_sent = 0  # file bytes of completed transfers
        self.retransmitted = 0  # DATA datagrams sent again, over all ended transfers
        #: called once per ended transfer (not for declined option sets): the server's device
        #: events and metrics listen here; it must not block
        self.on_transfer_end: Callable[[TransferEnd], None] | None = None

    # ----------------------------------------------------------------------------------------
    # Life cycle

    async def start(self) -> tuple[str, int]:
        self._loop = asyncio.get_running_loop()
        self._time = self._loop.time
        self._call_at = self._loop.call_at
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            sock.bind((self.config.address or "0.0.0.0", self.config.port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self.address = sock.getsockname()
        self._loop.add_reader(sock.fileno(), self._on_listen_readable)
        log.info("TFTP serving %s on %s:%d", self.config.root, *self.address)
        return self.address

    async def stop(self) -> None:
        if self._sock is not None and self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        for session in list(self._sessions.values()):
            self._close_session(session, "server stopping")
        self.admission.expire(float("inf"))
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()

    @property
    def active_transfers(self) -> int:
        return len(self._sessions)

    @property
    def queued_requests(self) -> int:
        return self.admission.queued

    # ----------------------------------------------------------------------------------------
    # Listening port

    def _on_listen_readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        for _ in range(READ_BUDGET):
            try:
                data, ancdata, _flags, addr = sock.recvmsg(MAX_LISTEN_DATAGRAM, PKTINFO_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("listening socket: %s", exc)
                return
            info = parse_pktinfo(ancdata)
            ifindex, local = info if info is not None else (0, self.address[0])
            self._on_request(data, (addr[0], addr[1]), local, ifindex)

    def _on_request(self, data: bytes, client: tuple[str, int], local: str, ifindex: int) -> None:
        decision = classify_request(data)
        if isinstance(decision, Drop):
            peer_log(client).debug("ignored on port %d: %s", self.address[1], decision.reason)
            return
        if isinstance(decision, Reject):
            peer_log(client).info("%s", decision.reason)
            self._send_from(local, decision.datagram, client)
            return
        assert isinstance(decision, Accept)
        running = self._sessions.get(client)
        if running is not None:
            if running.request == decision.request:
                peer_log(client).debug("repeated its request; the transfer is running")
                return
            # The same client port asks for something else: it has given up the running
            # transfer (PXE ROMs re-ask without tsize, and their ERROR may arrive after this).
            self._close_session(
                running, "the client asked again with a different request", logging.DEBUG
            )
        pending = _Pending(decision.request, client, local, ifindex)
        now = self._now()
        verdict = self.admission.request(client[0], client, pending, now)
        if isinstance(verdict, Admitted):
            self._begin(pending)
        elif isinstance(verdict, Queued):
            peer_log(client).info(
                "request for %r waits (%d ahead)",
                pending.request.filename,
                verdict.position,
            )
            self._arm_expiry()
        elif isinstance(verdict, Refused):
            peer_log(client).info(
                "request for %r refused: %s",
                pending.request.filename,
                verdict.message,
            )
            self._send_from(local, build_error(ErrorCode.NOT_DEFINED, verdict.message), client)
        elif isinstance(verdict, AlreadyWaiting):
            peer_log(client).debug("repeated its queued request")

    def _send_from(self, local: str, datagram: bytes, client: tuple[str, int]) -> None:
        """Send an error from a fresh socket on ``local`` (never from port 69: RFC 1350 TID)."""
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                with contextlib.suppress(OSError):
                    s.bind((local, 0))
                s.setblocking(False)
                s.sendto(datagram, client)
        except OSError as exc:
            peer_log(client).debug("cannot send error: %s", exc)

    # ----------------------------------------------------------------------------------------
    # Transfers

    def _begin(self, pending: _Pending) -> None:
        client = pending.client
        config = self.config
        mtu = self._mtus.get(pending.ifindex) if pending.ifindex else None
        limits = OptionLimits(config.max_blksize, config.max_windowsize, mtu)
        settings = TransferSettings(
            timeout=config.timeout,
            min_timeout=config.min_timeout,
            max_retries=config.max_retries,
            adaptive=config.adaptive,
            initial_window=self._history.get(client[0]),
        )
        prepared = prepare_transfer(
            pending.request,
            client,
            source=self.source,
            cache=self.cache,
            limits=limits,
            settings=settings,
        )
        if isinstance(prepared, Reject):
            peer_log(client).info("%s", prepared.reason)
            self._send_from(pending.local, prepared.datagram, client)
            self._release_slot(client[0])
            return
        try:
            sock = self._transfer_socket(pending.local)
        except OSError as exc:
            peer_log(client).warning("cannot open a transfer socket: %s", exc)
            prepared.served.close()
            self._release_slot(client[0])
            return
        session = _Session(pending.request, prepared, client, sock, gso=self.gso)
        self._sessions[client] = session
        loop = self._loop
        assert loop is not None
        loop.add_reader(sock.fileno(), self._on_readable, session)
        peer_log(client).debug(
            "RRQ %r mode %s options %s (granted %s, mtu %s) from %s:%d",
            pending.request.filename,
            prepared.mode,
            format_options(pending.request.options),
            format_options(prepared.transfer.negotiated.oack),
            mtu,
            *sock.getsockname(),
        )
        session.machine.start(self._now())
        self._flush(session)

    def _transfer_socket(self, local: str) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
            try:
                sock.bind((local, 0))
            except OSError:  # the address went away since the request: any address will do
                sock.bind((self.address[0], 0))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    def _on_readable(self, session: _Session) -> None:
        # One datagram per wakeup: the selector is level-triggered and calls again while more
        # are queued, and a second recvfrom that fails with EAGAIN costs more than that call.
        try:
            data, addr = session.sock.recvfrom(MAX_TRANSFER_DATAGRAM)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # e.g. an ICMP error reported on the socket
            peer_log(session.client).debug("transfer socket: %s", exc)
            return
        self._feed(session, data, addr)
        if session.polling:
            return
        if session.poll_misses >= BUSY_POLL_MISSES:
            # the client answered slower than the poll bound: poll again once in a while
            session.unpolled += 1
            if session.unpolled < BUSY_POLL_RETRY:
                return
            session.poll_misses = session.unpolled = 0
        if self._may_poll(session):
            self._busy_poll(session, self._time() + self.busy_poll)

    def _feed(self, session: _Session, data: bytes, addr: tuple[str, int]) -> None:
        reason = session.machine.receive(data, addr, self._time())
        if reason is not None and log.isEnabledFor(logging.DEBUG):
            peer_log(session.client).debug("ignored: %s", reason)
        self._flush(session)

    def _may_poll(self, session: _Session) -> bool:
        """Poll for the answer when the window is out and few transfers run."""
        return (
            self.busy_poll > 0
            and len(self._sessions) <= BUSY_POLL_MAX_TRANSFERS
            and not session.closed
            and session.machine.waiting_for_ack
        )

    def _busy_poll(self, session: _Session, deadline: float) -> None:
        """Read the client's answers as they come, until ``deadline`` passes without one.

        Bounded: each wait for an answer lasts at most ``busy_poll`` seconds, and after
        :data:`BUSY_POLL_SLICE` the loop gets a turn (timers, the listening socket) before the
        poll goes on. Between two reads the CPU is offered to any other runnable task.
        """
        recvfrom = session.sock.recvfrom
        clock = self._time
        offer_cpu = os.sched_yield
        slice_end = clock() + BUSY_POLL_SLICE
        session.polling = True
        while True:
            try:
                data, addr = recvfrom(MAX_TRANSFER_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                now = clock()
                if now >= deadline:  # the client is slower than the bound: sleep in the loop
                    session.poll_misses += 1
                    self.poll_timeouts += 1
                    break
                if now >= slice_end:
                    assert self._loop is not None
                    self._loop.call_soon(self._resume_poll, session, deadline)
                    return
                offer_cpu()
                continue
            except OSError as exc:
                peer_log(session.client).debug("transfer socket: %s", exc)
                break
            session.poll_misses = 0
            self.polled_answers += 1
            self._feed(session, data, addr)
            if not self._may_poll(session):
                break
            now = clock()
            deadline = now + self.busy_poll
            if now >= slice_end:
                assert self._loop is not None
                self._loop.call_soon(self._resume_poll, session, deadline)
                return
        session.polling = False

    def _resume_poll(self, session: _Session, deadline: float) -> None:
        if self._may_poll(session):
            self._busy_poll(session, deadline)
        else:
            session.polling = False

    def _flush(self, session: _Session) -> None:
        machine = session.machine
        # With segmentation offload the first block of a burst goes alone (lead=1): the client
        # starts waking up while the kernel segments the rest of the window.
        if session.gso:
            groups = machine.datagram_groups(GSO_MAX_SEGMENTS, lead=1)
        else:
            groups = machine.datagram_groups(1)
        if groups:
            sock = session.sock
            client = session.client
            try:
                for iov, size, count in groups:
                    if count == 1:
                        sock.sendto(b"".join(iov), client)
                    elif session.gso:
                        self._send_group(session, iov, size)
                    else:
                        send_each(sock, iov, client)
            except (BlockingIOError, InterruptedError):
                # the socket buffer is full: the rest counts as lost, the timer resends it
                session.send_failures += 1
            except OSError as exc:
                session.send_failures += 1
                peer_log(client).debug("send failed: %s", exc)
        if machine.has_stranger_replies:
            for datagram, addr in machine.stranger_replies():
                with contextlib.suppress(OSError):
                    session.sock.sendto(datagram, addr)
        if machine.finished:
            self._end(session)
            return
        deadline = machine.next_timer()
        if deadline is not None and (session.timer is None or deadline < session.deadline):
            if session.timer is not None:
                session.timer.cancel()
            session.deadline = deadline
            session.timer = self._call_at(deadline, self._on_timer, session)

    def _send_group(self, session: _Session, iov: list[bytes | memoryview], size: int) -> None:
        """Hand ``count`` datagrams to the kernel in one call (UDP_SEGMENT, Linux 4.18+)."""
        try:
            send_segmented(session.sock, iov, size, session.client)
        except OSError as exc:
            if not gso_unsupported(exc):
                raise
            # no segmentation offload on this path (old kernel, a route MTU below the segment):
            # this transfer sends datagram by datagram from now on
            session.gso = False
            peer_log(session.client).debug("UDP segmentation offload unavailable: %s", exc)
            send_each(session.sock, iov, session.client)

    def _on_timer(self, session: _Session) -> None:
        session.timer = None
        machine = session.machine
        deadline = machine.next_timer()
        if deadline is None:
            return
        # asyncio fires up to one clock resolution early: the deadline counts as reached
        now = max(self._now(), session.deadline)
        if now >= deadline:
            machine.handle_timer(now)
        self._flush(session)

    def _end(self, session: _Session) -> None:
        machine = session.machine
        client = session.client
        served = session.prepared.served
        elapsed = max(machine.finished_at - machine.started_at, 1e-6)
        stats = machine.stats
        if machine.outcome is not Outcome.DECLINED:
            self.retransmitted += stats.retransmitted
            if self.on_transfer_end is not None:
                done = machine.outcome is Outcome.COMPLETED
                self.on_transfer_end(
                    TransferEnd(
                        client=client,
                        name=served.name,
                        size=machine.size,
                        completed=done,
                        seconds=elapsed,
                        retransmitted=stats.retransmitted,
                        message="" if done else machine.message,
                    )
                )
        if machine.outcome is Outcome.COMPLETED:
            self.completed += 1
            self.bytes_sent += machine.size
        elif machine.outcome is not Outcome.DECLINED:
            self.failed += 1
        log_transfer_end(client, machine, served.name, session.prepared.mode)
        self._remember_window(client[0], machine)
        self._close_session(session, None)

    def _remember_window(self, client: str, machine: ReadTransfer) -> None:
        if machine.cwnd < machine.windowsize:
            self._history[client] = machine.cwnd
            self._history.move_to_end(client)
            while len(self._history) > HISTORY_SIZE:
                self._history.popitem(last=False)
        else:
            self._history.pop(client, None)

    def _close_session(self, session: _Session, why: str | None, level: int = logging.INFO) -> None:
        if why is not None:
            peer_log(session.client).log(
                level,
                "transfer of %s stopped: %s",
                session.prepared.served.name,
                why,
            )
        session.closed = True
        if self._sessions.get(session.client) is session:
            del self._sessions[session.client]
        if session.timer is not None:
            session.timer.cancel()
            session.timer = None
        if self._loop is not None:
            self._loop.remove_reader(session.sock.fileno())
        session.sock.close()
        session.prepared.served.close()
        self._release_slot(session.client[0])

    def _release_slot(self, client: str) -> None:
        self.admission.release(client)
        if self._sock is None:
            return
        for _ip, pending in self.admission.next_ready(self._now()):
            self._begin(pending)

    def _arm_expiry(self) -> None:
        when = self.admission.next_expiry()
        if when is None or self._loop is None:
            return
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
        self._expiry_timer = self._loop.call_at(when, self._on_expiry)

    def _on_expiry(self) -> None:
        self._expiry_timer = None
        for pending in self.admission.expire(self._now() + 1e-3):
            message = "server busy: waited too long for a free transfer slot; retry later"
            peer_log(pending.client).info(
                "request for %r dropped from the queue",
                pending.request.filename,
            )
            self._send_from(
                pending.local, build_error(ErrorCode.NOT_DEFINED, message), pending.client
            )
        self._arm_expiry()

    def _now(self) -> float:
        loop = self._loop
        assert loop is not None
        return loop.time()


def _not_started(*_args: object) -> asyncio.TimerHandle:
    raise RuntimeError("TftpServer.start() was not called")


async def run_tftp_server(
    config: TftpConfig,
    *,
    source: FileSource | None = None,
    ready: asyncio.Future[tuple[str, int]] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until ``stop`` is set (or the task is cancelled); ``ready`` gets the bound address."""
    server = TftpServer(config, source=source)
    address = await server.start()
    if ready is not None and not ready.done():
        ready.set_result(address)
    try:
        if stop is None:
            await asyncio.Event().wait()
        else:
            await stop.wait()
    finally:
        await server.stop()


__all__ = ["ServedFile", "TftpServer", "run_tftp_server"]
