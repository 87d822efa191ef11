"""asyncio adapters for the WMTP machines: read sockets, feed the machine, send, arm one timer.

No protocol decisions here (docs/PROTOCOL.md sections 6-7 live in sender.py / receiver.py). The
clock is ``loop.time()``: create the machines with ``now=loop.time()``.

Sockets: the sender has one UDP socket bound to ``(interface, 0)`` with ``IP_MULTICAST_IF`` set,
sending to the group and receiving receivers' unicast feedback. A receiver has two: one bound to
``(group, port)`` that joined the group on ``interface`` (binding the group address keeps other
groups on the same port out), and one unicast socket bound to ``(interface, 0)`` for its feedback
and the sender's REDIRECT -- so every receiver has its own feedback address even when several
run on one host.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import struct
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from multicast.codec import SenderState
from multicast.events import (
    Address,
    ChunkRejected,
    Ignored,
    SwitchToUnicast,
    TransferComplete,
    TransferFailed,
    WriteChunk,
)
from multicast.output import ImageMismatch, ImageOutput
from multicast.receiver import Receiver, ReceiverState
from multicast.unicast import Fetch, top_up

if TYPE_CHECKING:  # a receiver process never loads the sender
    from multicast.sender import Event as SenderEvent
    from multicast.sender import Sender

log = logging.getLogger(__name__)


class SessionLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Every line names the session (and the peer when there is one)."""

    def process(self, msg: object, kwargs: Any) -> tuple[str, Any]:
        extra = self.extra or {}
        where = " ".join(f"{k}={v}" for k, v in extra.items() if v is not None)
        return f"[{where}] {msg}", kwargs


SOCKET_BUFFER = 4 * 1024 * 1024
SEND_BUDGET = 256
#: UDP segmentation offload (<linux/udp.h>, Linux 4.18+): one sendmsg carries many datagrams of
#: one size (the last may be shorter); the kernel cuts them. GRO (5.0+) is the receiving mirror:
#: one recvmsg returns several datagrams of the same flow back to back, with their size in a cmsg.
SOL_UDP = getattr(socket, "SOL_UDP", 17)
UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)
UDP_GRO = getattr(socket, "UDP_GRO", 104)
#: at most this many bytes / datagrams per GSO send (an IP datagram is < 64 KiB; UDP_MAX_SEGMENTS)
GSO_MAX_BYTES = 65000
GSO_MAX_SEGMENTS = 64
#: one receive buffer, reused for every recvmsg_into (a GRO batch is at most 64 KiB)
RECV_BUFFER = 65536
#: datagrams (or GRO batches) read per wake-up before the loop gets a turn for timers
RECV_BATCH = 512
#: after a wake-up that read something, the group socket is left alone this long (seconds), so
#: that the next wake-up finds a batch instead of one datagram: interrupt moderation in user
#: space. 2 ms is ~90 datagrams at 500 Mbit/s, far below the 4 MiB socket buffer; NAK and
#: REPORT timers are tens of milliseconds (PROTOCOL.md 11)
RECV_PAUSE = 0.002
#: feedback datagrams the sender reads per wake-up before it sends again
FEEDBACK_BATCH = 256
#: verified chunks queued for the writer thread before the loop waits for the disk
MAX_PENDING_WRITES = 16


def open_sender_socket(interface: str, ttl: int = 1, *, loopback: bool = True) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1 if loopback else 0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        # feedback from every receiver arrives here in bursts while the loop is busy sending:
        # with the default ~200 KiB, NAKs of lagging receivers overflowed it (PROTOCOL.md 11)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        sock.bind((interface, 0))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def open_group_socket(group: str, port: int, interface: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        sock.bind((group, port))
        mreq = struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton(interface))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def open_feedback_socket(interface: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((interface, 0))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


_GRO_CMSG_SPACE = socket.CMSG_SPACE(4)


def enable_gro(sock: socket.socket) -> bool:
    """Ask for GRO batches on ``sock``; False (plain datagrams) where the kernel has no UDP_GRO."""
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    except OSError:
        return False
    return True


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, Address], None]) -> None:
        self._on_datagram = on_datagram
        #: asyncio's write buffer is above its high-water mark (64 KiB): the kernel is behind
        self.paused = False

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self._on_datagram(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        log.debug("socket error: %s", exc)


class SenderService:
    """Runs one :class:`Sender` until it has finished (or ``run``'s timeout)."""

    def __init__(
        self,
        sender: Sender,
        sock: socket.socket,
        group: Address,
        *,
        on_event: Callable[[SenderEvent], None] | None = None,
        gso: bool = True,
    ) -> None:
        self.sender = sender
        self.gso = gso
        self.gso_sends = 0
        self.log = SessionLog(log, {"session": sender.manifest.name})
        self._sock = sock
        self._group = group
        self._on_event = on_event
        self._transport: asyncio.DatagramTransport | None = None
        self._protocol = _Datagrams(self._on_datagram)
        self._timer: asyncio.TimerHandle | None = None
        self._done: asyncio.Future[None] | None = None

    async def run(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        transport, _ = await loop.create_datagram_endpoint(lambda: self._protocol, sock=self._sock)
        self._transport = transport
        try:
            self._step()
            await asyncio.wait_for(asyncio.shield(self._done), timeout)
        finally:
            if self._timer is not None:
                self._timer.cancel()
            transport.close()

    def _on_datagram(self, data: bytes, addr: Address) -> None:
        """Feedback: this datagram and whatever else is queued (asyncio reads one datagram per
        loop turn, and each turn also sends: NAKs of many receivers queued up for seconds, and
        a NAK handled late is a NAK for a repair long gone), then one _step for them all."""
        now = asyncio.get_running_loop().time()
        receive, sock = self.sender.receive, self._sock
        self._events(receive(data, addr, now))
        for _ in range(FEEDBACK_BATCH):
            try:
                more, source = sock.recvfrom(RECV_BUFFER)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self.log.debug("feedback socket: %s", exc)
                break
            self._events(receive(more, (str(source[0]), int(source[1])), now))
        self._step()

    def _on_timer(self) -> None:
        self._timer = None
        now = asyncio.get_running_loop().time()
        self._events(self.sender.handle_timer(now))
        self._step()

    def _step(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._transport is not None
        now = loop.time()
        budget = SEND_BUDGET
        if self._protocol.paused:
            budget = 0  # the kernel is behind: let it drain (bounded user-space queue)
        if budget:
            control, data = self.sender.next_datagrams(now, budget)
            for o in control:
                self._transport.sendto(o.data, o.to or self._group)
            if data:
                self._send_group(data)
        when = self.sender.next_timer()
        if budget == 0:
            when = now + 0.001
        if self._timer is not None:
            if when is not None and self._timer.when() == when:
                return
            self._timer.cancel()
            self._timer = None
        if when is None:
            if self.sender.state is SenderState.FINISHED and self._done and not self._done.done():
                self._done.set_result(None)
            return
        self._timer = loop.call_at(when, self._on_timer)

    def _send_group(self, data: list[bytes]) -> None:
        """Runs of same-sized DATA datagrams go out in one GSO sendmsg (the last of a run may be
        shorter); without GSO, one sendto each."""
        assert self._transport is not None
        i, count = 0, len(data)
        while i < count:
            size = len(data[i])
            j = i + 1
            if self.gso:
                limit = min(count, i + GSO_MAX_SEGMENTS, i + GSO_MAX_BYTES // size)
                while j < limit and len(data[j]) == size:
                    j += 1
                if j < limit and len(data[j]) < size:
                    j += 1  # only the last segment may be shorter
                if j - i > 1 and self._send_segmented(data[i:j], size):
                    i = j
                    continue
            for d in data[i:j]:
                self._transport.sendto(d, self._group)
            i = j

    def _send_segmented(self, datagrams: list[bytes], size: int) -> bool:
        assert self._transport is not None
        pending = getattr(self._transport, "get_write_buffer_size", lambda: 0)()
        if pending:
            return False  # asyncio still holds older datagrams: keep the order
        try:
            self._sock.sendmsg(
                datagrams, [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", size))], 0, self._group
            )
        except BlockingIOError:
            return False  # the socket buffer is full: asyncio queues them and pauses us
        except OSError as exc:  # EIO/EINVAL: no GSO on this route or kernel
            self.log.info("UDP segmentation offload refused (%s): one datagram per send", exc)
            self.gso = False
            return False
        self.gso_sends += 1
        return True

    def _events(self, events: list[SenderEvent]) -> None:
        for e in events:
            if isinstance(e, Ignored):
                self.log.debug("ignored: %s", e.reason)
            else:
                self.log.info("%s", e)
            if self._on_event is not None:
                self._on_event(e)


class ReceiverService:
    """Runs one :class:`Receiver` into an :class:`ImageOutput`; ``run`` returns an exit code.

    Exit codes as in PROTOCOL.md section 8: 0 complete and verified, 1 failed (resumable),
    4 whole-file SHA-256 mismatch. After a REDIRECT(SLOW) the missing chunks are fetched with
    ``unicast`` (HTTP ranges, :mod:`multicast.unicast`); without it the receiver ends with 1.
    """

    def __init__(
        self,
        receiver: Receiver,
        output: ImageOutput,
        group_sock: socket.socket,
        feedback_sock: socket.socket,
        *,
        unicast: Fetch | None = None,
        on_event: Callable[[object], None] | None = None,
        gro: bool = True,
        read_pause: float = RECV_PAUSE,
    ) -> None:
        self.receiver = receiver
        self._want_gro = gro
        self._on_event = on_event
        self.log = SessionLog(
            log, {"session": receiver.manifest.name, "receiver": f"{receiver.receiver_id:016x}"}
        )
        self._unicast = unicast
        self._top_up_task: asyncio.Task[None] | None = None
        self.redirected = False
        self._topped_up = False
        self.output = output
        self._group_sock = group_sock
        self._feedback_sock = feedback_sock
        self._rbuf = bytearray(RECV_BUFFER)
        self._rview = memoryview(self._rbuf)
        self._gro = False
        self.datagrams = 0  # group datagrams received, and the recvmsg calls they took
        self.reads = 0
        self.wakeups = 0  # group-socket drains
        self._read_pause = read_pause
        self._paused_read: asyncio.TimerHandle | None = None
        self._feedback: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._ended: asyncio.Future[int] | None = None
        self.failure: str | None = None
        # one writer thread: pwrite + fdatasync must not stall the socket loop; FIFO keeps each
        # chunk's bitmap bit after its data (output.py)
        self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="wds-writer")
        self._pending: set[asyncio.Future[None]] = set()
        self._write_error: BaseException | None = None

    async def run(self, timeout: float) -> int:
        try:
            code = await self._run(timeout)
            if self._pending:
                await asyncio.wait(self._pending)
        finally:
            self._writer.shutdown(wait=True)
        if self._write_error is not None:
            self.failure = str(self._write_error)
            return getattr(self._write_error, "exit_code", 1)
        if code == 0:
            try:
                await asyncio.to_thread(self.output.verify_whole)
            except ImageMismatch as exc:
                self.failure = str(exc)
                return exc.exit_code
        return code

    async def _run(self, timeout: float) -> int:
        loop = asyncio.get_running_loop()
        self._ended = loop.create_future()
        self._gro = self._want_gro and enable_gro(self._group_sock)
        loop.add_reader(self._group_sock.fileno(), self._read_group)
        feedback, _ = await loop.create_datagram_endpoint(
            lambda: _Datagrams(self._on_datagram), sock=self._feedback_sock
        )
        self._feedback = feedback
        try:
            self._step()
            code = await asyncio.wait_for(asyncio.shield(self._ended), timeout)
        except (TimeoutError, asyncio.CancelledError):
            # interrupted: say so (REPORT LEAVE), so the sender stops counting us at once
            self._events(self.receiver.leave(loop.time()))
            for data, to in self.receiver.datagrams_to_send(loop.time()):
                feedback.sendto(data, to)
            raise
        finally:
            if self._timer is not None:
                self._timer.cancel()
            if self._paused_read is not None:
                self._paused_read.cancel()
            if self._top_up_task is not None:
                self._top_up_task.cancel()
            loop.remove_reader(self._group_sock.fileno())
            self._group_sock.close()
            feedback.close()
        return code

    def _write(self, index: int, data: bytes) -> None:
        if len(self._pending) >= MAX_PENDING_WRITES:
            # the disk is behind: block the loop until the writer catches up (bounded memory;
            # the kernel then drops datagrams, which NAKs and the carousel absorb)
            try:
                self._writer.submit(self.output.write_chunk, index, data).result()
            except Exception as exc:  # reported through run()'s exit code
                self._write_failed(exc)
            return
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._writer, self.output.write_chunk, index, data)
        self._pending.add(future)
        future.add_done_callback(self._written)

    def _written(self, future: asyncio.Future[None]) -> None:
        self._pending.discard(future)
        if not future.cancelled() and future.exception() is not None:
            self._write_failed(future.exception())  # type: ignore[arg-type]

    def _write_failed(self, exc: BaseException) -> None:
        if self._write_error is None:
            self._write_error = exc
            self.log.warning("cannot write: %s", exc)
        self._end(getattr(exc, "exit_code", 1))

    def _on_datagram(self, data: bytes, addr: Address) -> None:
        now = asyncio.get_running_loop().time()
        self._events(self.receiver.receive(data, addr, now))
        self._step()

    def _read_group(self) -> None:
        """The group socket is readable: drain it, then leave it alone for ``read_pause``."""
        if self._drain_group() and self._read_pause > 0:
            loop = asyncio.get_running_loop()
            loop.remove_reader(self._group_sock.fileno())
            self._paused_read = loop.call_later(self._read_pause, self._resume_reading)

    def _resume_reading(self) -> None:
        self._paused_read = None
        if self._group_sock.fileno() < 0:
            return
        loop = asyncio.get_running_loop()
        if self._drain_group():  # still busy: read again after the next pause
            self._paused_read = loop.call_later(self._read_pause, self._resume_reading)
        else:
            loop.add_reader(self._group_sock.fileno(), self._read_group)

    def _drain_group(self) -> int:
        """recvmsg_into one reused buffer, split GRO batches, feed the machine; then one _step
        (feedback, timer) for the whole drain. Returns the reads that returned a datagram."""
        now = asyncio.get_running_loop().time()
        sock, buf, view = self._group_sock, self._rbuf, self._rview
        receive_batch, handle = self.receiver.receive_batch, self._events
        self.wakeups += 1
        reads = 0
        for _ in range(RECV_BATCH):
            try:
                n, ancillary, _flags, addr = sock.recvmsg_into([buf], _GRO_CMSG_SPACE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self.log.debug("group socket: %s", exc)
                break
            reads += 1
            seg = n
            for level, kind, data in ancillary:
                if level == SOL_UDP and kind == UDP_GRO and len(data) >= 4:
                    seg = struct.unpack("=i", data[:4])[0] or n
            source = (str(addr[0]), int(addr[1]))
            self.datagrams += (n + seg - 1) // seg if seg < n else 1
            events = receive_batch(view, n, seg, source, now)
            if events:
                handle(events)
        self.reads += reads
        self._step()
        return reads

    def _on_timer(self) -> None:
        self._timer = None
        self._events(self.receiver.handle_timer(asyncio.get_running_loop().time()))
        self._step()

    def _step(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._feedback is not None
        for data, to in self.receiver.datagrams_to_send(loop.time()):
            self._feedback.sendto(data, to)
        when = self.receiver.next_timer()
        timer = self._timer
        if when is not None:
            # an armed timer that is not later stays: firing early costs one handle_timer,
            # re-arming on every drain cost a cancel and a heap push per wake-up
            if timer is not None and timer.when() <= when:
                return
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(when, self._on_timer)
            return
        if timer is not None:
            timer.cancel()
            self._timer = None
        if self._top_up_task is not None and not self._topped_up:
            return  # the machine is idle, the HTTP top-up is not
        self._end(0 if self.receiver.state is ReceiverState.DONE else 1)

    def _end(self, code: int) -> None:
        if self._ended is not None and not self._ended.done():
            self._ended.set_result(code)

    async def _top_up(self, fetch: Fetch) -> None:
        loop = asyncio.get_running_loop()
        complete = await top_up(self.receiver, fetch, loop.time, self._events)
        self._topped_up = True
        self._step()
        if not complete:
            self.failure = "the unicast top-up could not fetch every chunk"
            self._end(1)

    def _events(self, events: Sequence[object]) -> None:
        for e in events:
            if self._on_event is not None:
                self._on_event(e)
            if isinstance(e, WriteChunk):
                self._write(e.index, e.data)
            elif isinstance(e, Ignored):
                self.log.debug("ignored: %s", e.reason)
            elif isinstance(e, ChunkRejected):
                self.log.warning("chunk %d failed its SHA-256; re-requested", e.index)
            elif isinstance(e, TransferFailed):
                self.failure = e.reason
                self.log.warning("transfer failed: %s", e.reason)
                if self._unicast is not None and not e.dropped and self._top_up_task is None:
                    # the multicast session is over for us; the chunks still missing can come
                    # over HTTP (PROTOCOL.md 7)
                    self.failure = None
                    self._top_up_task = asyncio.get_running_loop().create_task(
                        self._top_up(self._unicast)
                    )
            elif isinstance(e, SwitchToUnicast):
                self.redirected = True
                if self._unicast is None:
                    self.failure = "redirected to unicast, but no HTTP source was given"
                    self.log.warning("%s", self.failure)
                    self._end(1)
                elif self._top_up_task is None:
                    self.log.info("redirected: fetching the missing chunks over HTTP")
                    self._top_up_task = asyncio.get_running_loop().create_task(
                        self._top_up(self._unicast)
                    )
            elif isinstance(e, TransferComplete):
                self.log.info("every chunk verified")
