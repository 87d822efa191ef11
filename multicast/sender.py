"""The WMTP sender as a pure state machine (docs/PROTOCOL.md section 6).

No sockets, clocks or randomness: ``now`` is passed in, image bytes come from an injected
:class:`ChunkSource`, admission from an injected :class:`JoinPolicy`. It announces the session,
waits for its start condition, then runs a carousel over every chunk some active receiver still
needs, multicasts each NAKed block once for everyone (after advertising it, which suppresses
other receivers' NAKs), adapts its rate to reported loss (AIMD) and flags slow receivers.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

from multicast.codec import (
    ETHERNET_OVERHEAD,
    IP_UDP_OVERHEAD,
    MAX_RANGES,
    UNKNOWN_START,
    Announce,
    BlockRange,
    ChunkManifest,
    DataBlock,
    MalformedDatagram,
    ReceiverReport,
    Redirect,
    RedirectReason,
    RepairAdvertisement,
    RepairRequest,
    ReportFlags,
    SenderState,
    build_data_fast,
    build_datagram,
    build_ranges_fast,
    pack_data_head,
    parse_any,
)
from multicast.events import (
    Address,
    Ignored,
    MoveToUnicast,
    Outgoing,
    ReceiverDone,
    ReceiverDropped,
    ReceiverJoined,
    ReceiverLeft,
    SessionFinished,
    SessionStarted,
)
from multicast.peers import Peer, after, next_rate
from multicast.settings import SenderSettings as SenderSettings
from multicast.settings import sender_settings as sender_settings
from multicast.settings import start_at_on_clock as start_at_on_clock

Event = (
    Ignored
    | SessionStarted
    | ReceiverJoined
    | ReceiverDone
    | ReceiverLeft
    | MoveToUnicast
    | ReceiverDropped
    | SessionFinished
)


#: bytes of float rounding forgiven in the token bucket, so a timer never fires short of a send
_TOKEN_SLACK = 1e-3


#: bytes a datagram costs in the token bucket beyond its UDP payload: the rate is the link's
_WIRE_OVERHEAD = IP_UDP_OVERHEAD + ETHERNET_OVERHEAD
#: how soon an ANNOUNCE follows a NAK for a repair presumed in flight while no DATA is left to
#: send (at most one such ANNOUNCE per this many seconds)
ANNOUNCE_SOON = 0.02


class ChunkSource(Protocol):
    """The image bytes (the store's file, or bytes in a test)."""

    def read(self, offset: int, length: int) -> bytes: ...


class JoinPolicy(Protocol):
    """Who may join a session."""

    def admit(self, receiver_id: int, addr: Address) -> bool: ...


class AdmitAll:
    def admit(self, receiver_id: int, addr: Address) -> bool:
        return True


class Sender:
    def __init__(
        self,
        manifest: ChunkManifest,
        *,
        manifest_digest: bytes,
        source: ChunkSource,
        settings: SenderSettings,
        now: float,
        policy: JoinPolicy | None = None,
    ) -> None:
        self.manifest = manifest
        self.settings = settings
        self.state = SenderState.WAITING
        self.rate = settings.max_rate
        self.completed = 0
        self.ended = 0  # receivers done, left, timed out, redirected or dropped
        self.repairs_sent = 0
        self.data_sent = 0
        self._digest = manifest_digest
        self._source = source
        self._policy = policy or AdmitAll()
        self._opened_at = now
        self._peers: dict[int, Peer] = {}
        self._union: int | None = None  # cache of the union of needs, see _needed_after
        #: (time, chunk, seq of its last block) of chunks sent within report_grace, oldest first
        self._recent: deque[tuple[float, int, int]] = deque()
        self._redirected: dict[int, tuple[RedirectReason, Address]] = {}
        self._events: list[Event] = []
        self._control: list[Outgoing] = []
        self._next_announce = now
        self._finish_announcements_left = settings.finish_announcements
        self._next_rate_step = now + settings.rate_interval
        self._next_slow_check = now + settings.slow_check_interval
        self._finish_at: float | None = None
        self._seq = 0
        # carousel position and the chunk being sent
        self._cursor: int | None = None
        self._last_chunk = -1
        self._block = 0
        self._chunk_data = b""
        self._chunk_view = memoryview(b"")
        # repairs: queued (chunk, block) in NAK order, each sent once
        self._repairs: dict[tuple[int, int], None] = {}
        #: blocks repaired within report_grace: (chunk, block) -> (when, seq), oldest first. A
        #: NAK for one of them whose seen_seq is older than the repair's seq comes from a
        #: receiver that has not yet read the repair (its queue, our queue, the link):
        #: repairing it again would only add load where load is the problem. One whose
        #: seen_seq is newer lost the repair: it is repaired again at once (PROTOCOL.md 6).
        self._repaired: dict[tuple[int, int], tuple[float, int]] = {}
        self._repair_credit = 64.0  # repairs allowed before carousel DATA earns more
        self._credit_per_block = settings.repair_share / (1 - settings.repair_share)
        # token bucket (PROTOCOL.md section 6)
        self._datagram_cost = manifest.block_size + 28 + _WIRE_OVERHEAD
        self._tokens = 0.0
        self._tokens_at = now

    # ---------------------------------------------------------------- public API

    @property
    def active_receivers(self) -> int:
        return len(self._peers)

    def receive(self, datagram: bytes, addr: Address, now: float) -> list[Event]:
        try:
            d = parse_any(datagram)
        except MalformedDatagram as exc:
            return [Ignored(str(exc))]
        if d.session_id != self.manifest.session_id:
            return [Ignored("another session")]
        if isinstance(d, ReceiverReport):
            self._on_report(d, addr, now)
        elif isinstance(d, RepairRequest):
            self._on_nak(d, addr, now)
        else:
            return [Ignored(f"{type(d).__name__} is sent by senders, not to them")]
        return self._drain()

    def datagrams_to_send(self, now: float, budget: int = 64) -> list[Outgoing]:
        """Up to ``budget`` datagrams; DATA only as far as the token bucket allows."""
        control, data = self.next_datagrams(now, budget)
        return control + [Outgoing(d, None) for d in data]

    def next_datagrams(self, now: float, budget: int = 64) -> tuple[list[Outgoing], list[bytes]]:
        """:meth:`datagrams_to_send` for adapters that batch: the control datagrams, then the
        DATA datagrams for the group, to be sent in that order (no object per DATA datagram)."""
        self._refill(now)
        if self.state is not SenderState.FINISHED and now >= self._next_announce:
            self._control.append(Outgoing(build_datagram(self._announce(now)), None))
            s = self.settings
            early = self.state is SenderState.WAITING or not self._peers
            self._next_announce = now + (
                s.first_announce_interval if early else s.announce_interval
            )
        control = self._control[:budget]
        del self._control[:budget]
        for o in control:
            if o.to is None:
                self._tokens -= len(o.data) + _WIRE_OVERHEAD
        data: list[bytes] = []
        if self.state is not SenderState.RUNNING:
            return control, data
        room = budget - len(control)
        need = self._datagram_cost - _TOKEN_SLACK
        while room > 0 and self._tokens >= need:
            datagram = self._next_data(now)
            if datagram is None:
                break
            data.append(datagram)
            self._tokens -= len(datagram) + _WIRE_OVERHEAD
            room -= 1
        return control, data

    def next_timer(self) -> float | None:
        s = self.settings
        if self.state is SenderState.FINISHED:
            return self._next_announce if self._finish_announcements_left > 0 else None
        times = [self._next_announce]
        if self._peers:
            times.append(min(p.last_report for p in self._peers.values()) + s.receiver_timeout)
        if self.state is SenderState.WAITING:
            times.extend(t for t in (self._start_deadline(),) if t is not None)
        else:
            times += [self._next_rate_step, self._next_slow_check]
            if self._finish_at is not None:
                times.append(self._finish_at)
            if self._has_data():
                wait = max(0.0, self._datagram_cost - _TOKEN_SLACK / 2 - self._tokens) / self.rate
                times.append(self._tokens_at + wait)
        return min(times)

    def handle_timer(self, now: float) -> list[Event]:
        s = self.settings
        for peer in list(self._peers.values()):
            if now >= peer.last_report + s.receiver_timeout:
                self._end(peer, ReceiverLeft(peer.receiver_id, peer.addr, "timed out"))
        if self.state is SenderState.WAITING:
            self._maybe_start(now)
        elif self.state is SenderState.RUNNING:
            if now >= self._next_rate_step:
                self._rate_step()
                self._next_rate_step = now + s.rate_interval
            if now >= self._next_slow_check:
                self._slow_check(now)
                self._next_slow_check = now + s.slow_check_interval
            self._maybe_finish(now)
        elif (
            self.state is SenderState.FINISHED
            and now >= self._next_announce
            and self._finish_announcements_left > 0
        ):
            self._finish_announcements_left -= 1
            self._control.append(Outgoing(build_datagram(self._announce(now)), None))
            self._next_announce = now + s.announce_interval
        return self._drain()

    # ---------------------------------------------------------------- session life

    def _start_deadline(self) -> float | None:
        s = self.settings
        if s.mode == "auto":
            return None
        times = [t for t in (s.start_at,) if t is not None]
        if s.max_wait > 0:
            times.append(self._opened_at + s.max_wait)
        return min(times) if times else None

    def _maybe_start(self, now: float) -> None:
        s = self.settings
        if s.mode == "auto":
            go = bool(self._peers)
        else:
            deadline = self._start_deadline()
            go = (deadline is not None and now >= deadline) or (
                s.min_clients > 0 and len(self._peers) >= s.min_clients
            )
        if go:
            self.state = SenderState.RUNNING
            self._tokens_at = now
            self._next_rate_step = now + s.rate_interval
            self._next_slow_check = now + s.slow_check_interval
            for peer in self._peers.values():
                peer.progress = deque([(now, peer.verified)])
                peer.joined_at = now
            self._next_announce = now  # tell everyone at once
            self._events.append(SessionStarted(len(self._peers)))

    def _maybe_finish(self, now: float) -> None:
        if self._peers or self.ended == 0:
            self._finish_at = None
            return
        if self._finish_at is None:
            self._finish_at = now + self.settings.linger
        if now >= self._finish_at:
            self.state = SenderState.FINISHED
            self._finish_at = None
            self._next_announce = now
            self._events.append(SessionFinished(self.completed))

    def _announce(self, now: float) -> Announce:
        starts = UNKNOWN_START
        deadline = self._start_deadline()
        if self.state is SenderState.WAITING and deadline is not None:
            starts = min(UNKNOWN_START - 1, max(0, int((deadline - now) * 1000)))
        return Announce(
            self.manifest.session_id,
            self.state,
            min(len(self._peers), 0xFFFF),
            min(int(self.rate * 8 / 1000), 0xFFFFFFFF),
            self._seq,
            self._digest,
            starts,
        )

    # ---------------------------------------------------------------- feedback

    def _on_report(self, d: ReceiverReport, addr: Address, now: float) -> None:
        peer = self._peers.get(d.receiver_id)
        if peer is None and d.receiver_id in self._redirected:
            # its REDIRECT was lost: say it again instead of taking it back into the session
            reason, where = self._redirected[d.receiver_id]
            if where == addr:
                redirect = Redirect(self.manifest.session_id, d.receiver_id, reason)
                self._control.append(Outgoing(build_datagram(redirect), addr))
            self._events.append(Ignored("REPORT from a redirected receiver"))
            return
        if peer is None:
            if d.flags & (ReportFlags.DONE | ReportFlags.LEAVE):
                self._events.append(Ignored("final REPORT from a receiver not in the session"))
                return
            if self.state is SenderState.FINISHED:
                self._events.append(Ignored("REPORT after the session finished"))
                return
            if len(self._peers) >= self.settings.max_receivers:
                self._events.append(Ignored(f"{self.settings.max_receivers} receivers already"))
                return
            if not self._policy.admit(d.receiver_id, addr):
                self._events.append(Ignored("the join policy refused this receiver"))
                return
            peer = Peer(d.receiver_id, addr, self.manifest.chunk_count, now)
            self._peers[d.receiver_id] = peer
            self._union = None
            self._finish_at = None
            self._events.append(ReceiverJoined(d.receiver_id, addr))
        elif addr != peer.addr:
            self._events.append(Ignored("REPORT for a receiver id from another address"))
            return
        peer.last_report = now
        if d.flags & ReportFlags.DONE:
            self.completed += 1
            self._end(peer, ReceiverDone(peer.receiver_id, peer.addr))
            return
        if d.flags & ReportFlags.LEAVE:
            self._end(peer, ReceiverLeft(peer.receiver_id, peer.addr, "left"))
            return
        peer.verified = min(d.verified_chunks, self.manifest.chunk_count)
        peer.progress.append((now, peer.verified))
        peer.worst_loss = max(peer.worst_loss, d.loss_permille)
        self._apply_page(peer, d, now)
        self._union = None
        if self.state is SenderState.WAITING:
            self._maybe_start(now)

    def _apply_page(self, peer: Peer, d: ReceiverReport, now: float) -> None:
        if not peer.apply_page(d.base_chunk, d.bit_count, d.need_bitmap, self.manifest.chunk_count):
            return
        # the report raced the carousel: a chunk that just went out is still presumed received
        # (the receiver's next REPORT asks again if it really lost all of it). Without this,
        # every REPORT written while a chunk was in flight resends that whole chunk to everyone.
        recent = self._recent
        while recent and recent[0][0] < now - self.settings.report_grace:
            recent.popleft()
        seen = d.seen_seq
        for _, index, last_seq in recent:
            if after(last_seq, seen):  # still on its way to (or queued at) that receiver
                peer.presume_received(index)

    def _on_nak(self, d: RepairRequest, addr: Address, now: float) -> None:
        peer = self._peers.get(d.receiver_id)
        if peer is None or peer.addr != addr:
            self._events.append(Ignored("NAK from a receiver not in the session"))
            return
        m = self.manifest
        # a receiver NAKs at most one chunk's blocks per datagram: bound the work a NAK causes
        if sum(r.block_count for r in d.ranges) > m.blocks_in_chunk(0):
            self._events.append(Ignored("NAK asks for more blocks than a chunk has"))
            return
        for r in d.ranges:
            if not 0 <= r.chunk < m.chunk_count or (
                r.first_block + r.block_count > m.blocks_in_chunk(r.chunk)
            ):
                self._events.append(Ignored(f"NAK range {r} outside the manifest"))
                return
        repaired = self._repaired
        while repaired:
            oldest = next(iter(repaired))
            if repaired[oldest][0] >= now - self.settings.report_grace:
                break
            del repaired[oldest]
        seen = d.seen_seq
        queued: list[BlockRange] = []
        held = False
        for r in d.ranges:
            run: list[int] = []
            for k in range(r.first_block, r.first_block + r.block_count):
                full = len(self._repairs) >= self.settings.max_repair_blocks
                sent = repaired.get((r.chunk, k))
                in_flight = sent is not None and after(sent[1], seen)
                held = held or in_flight
                if full or in_flight or (r.chunk, k) in self._repairs:
                    if run:
                        queued.append(BlockRange(r.chunk, run[0], len(run)))
                        run = []
                    if full:
                        break  # bounded; the carousel covers the rest
                    continue
                self._repairs[(r.chunk, k)] = None
                run.append(k)
            if run:
                queued.append(BlockRange(r.chunk, run[0], len(run)))
        # advertise what will be repaired: the echo that suppresses other receivers' NAKs
        for i in range(0, len(queued), MAX_RANGES):
            adv = RepairAdvertisement(m.session_id, tuple(queued[i : i + MAX_RANGES]))
            self._control.append(Outgoing(build_ranges_fast(adv), None))
        if held and not self._has_data():
            # a repair presumed in flight, and no DATA after it to move this receiver's
            # seen_seq past it: an ANNOUNCE soon carries our seq, so that if the repair was
            # lost the next NAK says so (else it waits out report_grace; PROTOCOL.md 6)
            self._next_announce = min(self._next_announce, now + ANNOUNCE_SOON)

    def _end(self, peer: Peer, event: Event) -> None:
        del self._peers[peer.receiver_id]
        self._union = None
        self.ended += 1
        self._events.append(event)

    # ---------------------------------------------------------------- rate and slow receivers

    def _rate_step(self) -> None:
        s = self.settings
        losses = [p.worst_loss for p in self._peers.values()]
        for p in self._peers.values():
            p.worst_loss = 0
        self.rate = next_rate(
            self.rate,
            losses,
            slowest_sets_pace=s.slow_client == "wait",
            threshold=s.loss_threshold,
            min_rate=s.min_rate,
            max_rate=s.max_rate,
            decrease=s.rate_decrease,
            increase=s.rate_increase,
        )

    def _slow_check(self, now: float) -> None:
        s = self.settings
        for peer in list(self._peers.values()):
            # is_slow prunes the histories whatever the policy: they stay bounded by the window
            slow = peer.is_slow(now, s.slow_window, s.min_goodput, self.manifest.chunk_size)
            if slow and s.slow_client != "wait":
                event: Event
                if s.slow_client == "unicast":
                    reason, event = RedirectReason.SLOW, MoveToUnicast(peer.receiver_id, peer.addr)
                else:
                    reason = RedirectReason.DROPPED
                    event = ReceiverDropped(peer.receiver_id, peer.addr)
                redirect = Redirect(self.manifest.session_id, peer.receiver_id, reason)
                self._control.append(Outgoing(build_datagram(redirect), peer.addr))
                self._end(peer, event)
                if len(self._redirected) >= s.max_receivers:  # bounded: forget the oldest
                    del self._redirected[next(iter(self._redirected))]
                self._redirected[peer.receiver_id] = (reason, peer.addr)

    # ---------------------------------------------------------------- data

    def _refill(self, now: float) -> None:
        burst = max(4 * self._datagram_cost, self.rate * 0.005)
        if now > self._tokens_at:
            self._tokens = min(burst, self._tokens + (now - self._tokens_at) * self.rate)
            self._tokens_at = now

    def _has_data(self) -> bool:
        if self._repairs or self._cursor is not None:
            return True
        return self._needed_after(self._last_chunk) is not None

    def _needed_after(self, index: int) -> int | None:
        """The next chunk after ``index`` (wrapping) that some active receiver needs.

        The union of the receivers' need bitmaps is kept as one int (chunk ``i`` is bit
        ``width - 1 - i``), rebuilt only when a need changes: big-int operations, not loops.
        """
        if self._union is None:
            union = 0
            for p in self._peers.values():
                union |= int.from_bytes(p.need, "big")
            self._union = union
        union = self._union
        if not union:
            return None
        width = 8 * ((self.manifest.chunk_count + 7) // 8)
        later = union & ((1 << max(0, width - 1 - index)) - 1)  # chunks index+1 ..
        top = (later or union).bit_length() - 1
        return width - 1 - top

    def _next_data(self, now: float) -> bytes | None:
        m = self.manifest
        # repairs first, but within their share: one receiver NAKing everything (a bad NIC)
        # must not starve the carousel everybody else is progressing on
        carousel_waiting = (
            self._cursor is not None or self._needed_after(self._last_chunk) is not None
        )
        if self._repairs and (self._repair_credit >= 1 or not carousel_waiting):
            self._repair_credit = max(0.0, self._repair_credit - 1)
            chunk, block = next(iter(self._repairs))
            del self._repairs[(chunk, block)]
            offset = chunk * m.chunk_size + block * m.block_size
            payload = self._source.read(offset, m.block_length(chunk, block))
            self.repairs_sent += 1
            self._repaired.pop((chunk, block), None)  # keep the dict in time order
            self._repaired[(chunk, block)] = (now, self._seq)
            if len(self._repaired) > self.settings.max_repair_blocks:
                del self._repaired[next(iter(self._repaired))]
            return self._data(chunk, block, payload, repair=True)
        if self._cursor is None:
            nxt = self._needed_after(self._last_chunk)
            if nxt is None:
                return None
            self._start_chunk(nxt, now)
        assert self._cursor is not None
        credit = self._repair_credit + self._credit_per_block
        self._repair_credit = credit if credit < 64.0 else 64.0
        chunk, block = self._cursor, self._block
        start = block * m.block_size
        end = min(start + m.block_size, len(self._chunk_data))
        # the header packed here (build_data_fast's layout, no DataBlock): once per datagram
        datagram = pack_data_head(m.session_id, self._seq, chunk, block, end - start, 0)
        datagram += self._chunk_view[start:end]
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        self.data_sent += 1
        self._block = block + 1
        if end >= len(self._chunk_data):
            self._last_chunk = chunk
            self._cursor = None
            self._chunk_data = b""
            self._chunk_view = memoryview(b"")
            self._presume_sent(chunk)
            self._recent.append((now, chunk, (self._seq - 1) & 0xFFFFFFFF))
        return datagram

    def _presume_sent(self, index: int) -> None:
        """Optimism: a chunk just sent is presumed received until a REPORT says otherwise.

        Without it the carousel would resend everything a receiver verified since its last
        REPORT (up to ``report_interval`` of data at full rate) at the end of every round.
        """
        for peer in self._peers.values():
            peer.presume_received(index)
        self._union = None

    def _start_chunk(self, index: int, now: float) -> None:
        m = self.manifest
        self._cursor, self._block = index, 0
        self._chunk_data = self._source.read(index * m.chunk_size, m.chunk_length(index))
        self._chunk_view = memoryview(self._chunk_data)
        for peer in self._peers.values():
            if peer.needs(index):
                peer.offered.append((now, m.chunk_length(index)))

    def _data(self, chunk: int, block: int, payload: bytes, *, repair: bool) -> bytes:
        d = DataBlock(self.manifest.session_id, self._seq, chunk, block, payload, repair)
        self._seq = (self._seq + 1) % (1 << 32)
        self.data_sent += 1
        return build_data_fast(d)

    def _drain(self) -> list[Event]:
        events, self._events = self._events, []
        return events
