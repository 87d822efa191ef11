"""Per-receiver progress of a session, as the sender sees it (rate, loss, repairs, ETA).

The sender machine keeps its peers private; this module watches the same input instead: the
feedback datagrams it is fed (REPORTs carry each receiver's verified and rejected chunk counts and
its loss; NAKs name the blocks it asked to be repaired) and the events it returns (joined, done,
left, moved to unicast, dropped). :class:`TrackedSender` is a :class:`multicast.sender.Sender`
that shows every feedback datagram to a :class:`ReceiverTracker` after the machine handled it.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from multicast.codec import MalformedDatagram, ReceiverReport, RepairRequest, parse_datagram
from multicast.events import (
    Address,
    MoveToUnicast,
    ReceiverDone,
    ReceiverDropped,
    ReceiverJoined,
    ReceiverLeft,
)
from multicast.sender import Event, Sender
from wds.context import ReceiverStatus

#: receivers remembered per session (the oldest that ended are forgotten first)
MAX_RECEIVERS = 1024
#: seconds of progress history the rate is measured over
RATE_WINDOW = 10.0
#: progress samples kept per receiver (a REPORT is sent every ~0.25-1 s)
MAX_SAMPLES = 64
#: seconds between two "progress" device events of one receiver
PROGRESS_EVENT_EVERY = 5.0

RxState = Literal["joined", "unicast", "done", "left", "dropped"]


@dataclass
class _Receiver:
    receiver_id: int
    address: str
    state: RxState = "joined"
    verified: int = 0
    rejected: int = 0
    repairs: int = 0
    loss: float = 0.0
    reason: str = ""
    progress_at: float = float("-inf")  # when its last progress event went out
    samples: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=MAX_SAMPLES))

    def rate(self, chunk_size: int) -> float:
        if len(self.samples) < 2:
            return 0.0
        (t0, v0), (t1, v1) = self.samples[0], self.samples[-1]
        return (v1 - v0) * chunk_size / (t1 - t0) if t1 > t0 else 0.0


class ReceiverTracker:
    """What one sender run knows about its receivers; read by :meth:`statuses`."""

    def __init__(
        self,
        chunks: int,
        chunk_size: int,
        image_size: int,
        on_progress: Callable[[str, int, int], None] | None = None,
    ) -> None:
        """``on_progress(address, verified, chunks)`` is called for a receiver that progressed,
        at most every :data:`PROGRESS_EVENT_EVERY` seconds each."""
        self.chunks = chunks
        self._on_progress = on_progress
        self.chunk_size = chunk_size
        self.image_size = image_size
        self._rx: OrderedDict[int, _Receiver] = OrderedDict()

    def _get(self, receiver_id: int, addr: Address) -> _Receiver:
        rx = self._rx.get(receiver_id)
        if rx is None:
            rx = self._rx[receiver_id] = _Receiver(receiver_id, addr[0])
            while len(self._rx) > MAX_RECEIVERS:
                ended = next((k for k, r in self._rx.items() if r.state not in ("joined",)), None)
                del self._rx[ended if ended is not None else next(iter(self._rx))]
        return rx

    def feedback(self, datagram: bytes, addr: Address, now: float) -> None:
        """A feedback datagram the sender accepted (or ignored: unknown ids are not recorded)."""
        try:
            d = parse_datagram(datagram)
        except MalformedDatagram:
            return
        rx = self._rx.get(getattr(d, "receiver_id", -1))
        if rx is None or rx.address != addr[0]:
            return
        if isinstance(d, ReceiverReport):
            rx.verified = min(d.verified_chunks, self.chunks)
            rx.rejected = max(rx.rejected, d.rejected_chunks)
            rx.loss = d.loss_permille / 1000
            while rx.samples and rx.samples[0][0] < now - RATE_WINDOW:
                rx.samples.popleft()
            rx.samples.append((now, rx.verified))
            due = now - rx.progress_at >= PROGRESS_EVENT_EVERY
            if self._on_progress is not None and due and 0 < rx.verified < self.chunks:
                rx.progress_at = now
                self._on_progress(rx.address, rx.verified, self.chunks)
        elif isinstance(d, RepairRequest):
            rx.repairs += sum(r.block_count for r in d.ranges)

    def event(self, e: Event, now: float) -> None:
        if isinstance(e, ReceiverJoined):
            rx = self._get(e.receiver_id, e.addr)
            rx.state = "joined"
            rx.samples.append((now, rx.verified))
        elif isinstance(e, ReceiverDone):
            rx = self._get(e.receiver_id, e.addr)
            rx.state, rx.verified = "done", self.chunks
        elif isinstance(e, ReceiverLeft):
            rx = self._get(e.receiver_id, e.addr)
            rx.state, rx.reason = "left", e.reason
        elif isinstance(e, MoveToUnicast):
            self._get(e.receiver_id, e.addr).state = "unicast"
        elif isinstance(e, ReceiverDropped):
            self._get(e.receiver_id, e.addr).state = "dropped"

    def statuses(self, device_for: Callable[[str], str | None]) -> tuple[ReceiverStatus, ...]:
        out = []
        for rx in self._rx.values():
            rate = rx.rate(self.chunk_size) if rx.state == "joined" else 0.0
            left = max(0, self.image_size - rx.verified * self.chunk_size)
            eta: float | None = None
            if rx.state == "done":
                eta = 0.0
            elif rate > 0:
                eta = round(left / rate, 1)
            out.append(
                ReceiverStatus(
                    receiver_id=f"{rx.receiver_id:016x}",
                    address=rx.address,
                    device=device_for(rx.address),
                    state=rx.state,
                    verified_chunks=rx.verified,
                    chunks=self.chunks,
                    rejected_chunks=rx.rejected,
                    repairs=rx.repairs,
                    loss=rx.loss,
                    rate_bps=round(rate, 1),
                    eta_s=eta,
                )
            )
        return tuple(out)


class TrackedSender(Sender):
    """A sender whose feedback input is also shown to a :class:`ReceiverTracker`."""

    def __init__(self, *args: Any, tracker: ReceiverTracker, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tracker = tracker

    def receive(self, datagram: bytes, addr: Address, now: float) -> list[Event]:
        events = super().receive(datagram, addr, now)
        for e in events:
            self.tracker.event(e, now)
        self.tracker.feedback(datagram, addr, now)
        return events

    def handle_timer(self, now: float) -> list[Event]:
        events = super().handle_timer(now)
        for e in events:
            self.tracker.event(e, now)
        return events
