"""The WMTP receiver as a pure state machine (docs/PROTOCOL.md section 7).

No sockets, clocks or randomness of its own: ``now`` is passed in and the rng injected. It turns
DATA into verified chunks (``WriteChunk`` only after SHA-256 matched the signed manifest), NAKs gaps
after a random back-off unless a REPAIR_ADV (anyone's NAK, echoed by the sender) suppresses them,
and reports its need bitmap so the sender's carousel brings back whole chunks it missed.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from typing import Protocol

from multicast.codec import (
    DATA_HEADER_SIZE,
    DATA_LEAD,
    DATA_REPAIR_WORD,
    DATA_WORDS,
    MAX_BITMAP_BITS,
    MAX_BLOCK_SIZE,
    MAX_RANGES,
    Announce,
    BlockRange,
    ChunkManifest,
    DataBlock,
    Datagram,
    MalformedDatagram,
    ReceiverReport,
    Redirect,
    RedirectReason,
    RepairAdvertisement,
    RepairRequest,
    ReportFlags,
    SenderState,
    build_datagram,
    build_ranges_fast,
    parse_any,
)
from multicast.events import (
    Address,
    ChunkRejected,
    Ignored,
    SwitchToUnicast,
    TransferComplete,
    TransferFailed,
    WriteChunk,
)
from multicast.peers import after
from wds.errors import LocalProtocolError

Event = Ignored | WriteChunk | ChunkRejected | SwitchToUnicast | TransferComplete | TransferFailed
PAGE_BYTES = MAX_BITMAP_BITS // 8


class Rng(Protocol):
    """What the machines need of ``random.Random`` (injected, seeded in tests)."""

    def random(self) -> float: ...

    def getrandbits(self, k: int, /) -> int: ...


#: how often the NAK hold-off of one chunk doubles (PROTOCOL.md 7)
NAK_BACKOFF_DOUBLINGS = 3


class ReceiverState(enum.Enum):
    LISTENING = "listening"
    JOINED = "joined"
    UNICAST = "unicast"
    DONE = "done"
    FAILED = "failed"


_ENDED = (ReceiverState.DONE, ReceiverState.FAILED)


@dataclass(frozen=True)
class ReceiverSettings:
    max_open_bytes: int = 32 * 1024 * 1024  # chunk buffers being assembled, at least one chunk
    nak_backoff: float = 0.03
    nak_holdoff: float = 0.03
    max_naks_per_chunk: int = 20
    report_interval: float = 0.5
    report_jitter: float = 0.25
    max_pages_per_report: int = 4
    done_reports: int = 3
    #: the DONE reports go out this far apart: a client whose image is complete is not kept
    #: waiting (the adapter exits after the last one), yet one lost datagram does not lose them
    done_report_interval: float = 0.05
    sender_timeout: float = 15.0
    #: no DATA for this long: the carousel has stopped, so the blocks still missing at the end
    #: of open chunks (a lost tail that no later DATA revealed) are gaps to NAK (PROTOCOL.md 7)
    tail_timeout: float = 0.05


class _OpenChunk:
    """One chunk being assembled. ``holdoff[k]``: do not NAK block k before that time."""

    def __init__(self, index: int, length: int, nblocks: int, now: float) -> None:
        self.index = index
        self.buf = bytearray(length)
        self.nblocks = nblocks
        self.got = bytearray(nblocks)
        self.received = 0
        self.gap_end = 0  # blocks below this that are not received are known lost
        self.holdoff = [0.0] * nblocks
        self.nak_due: float | None = None
        self.naks_sent = 0
        self.last_activity = now

    def missing_gaps(self) -> list[int]:
        got = self.got
        return [k for k in range(self.gap_end) if not got[k]]


class Receiver:
    def __init__(
        self,
        manifest: ChunkManifest,
        *,
        manifest_digest: bytes,
        rng: Rng,
        now: float,
        have: bytes | None = None,
        settings: ReceiverSettings | None = None,
    ) -> None:
        self.manifest = manifest
        self.settings = settings or ReceiverSettings()
        self.receiver_id = rng.getrandbits(64)
        self.state = ReceiverState.LISTENING
        self.rejected_chunks = 0
        self.naks_sent = 0
        #: chunks this run had to repair (a NAK sent or a rejected assembly): bounded by
        #: chunk_count; the adapter's summary counts those that ended verified
        self.repair_chunks: set[int] = set()
        self._digest = manifest_digest
        self._rng = rng
        count = manifest.chunk_count
        self._have = bytearray((count + 7) // 8)
        if have is not None:
            if len(have) != len(self._have):
                raise LocalProtocolError("resume bitmap does not fit this manifest")
            self._have[:] = have
            spare = -count % 8
            if spare:
                self._have[-1] &= 0xFF ^ ((1 << spare) - 1)
        self.verified_chunks = sum(bin(b).count("1") for b in self._have)
        self._open: dict[int, _OpenChunk] = {}
        # the geometry DATA is checked against, per datagram: full chunks and the last one
        self._full_blocks = manifest.blocks_in_chunk(0)
        self._full_tail = manifest.block_length(0, self._full_blocks - 1)
        self._last_index = count - 1
        self._last_blocks = manifest.blocks_in_chunk(count - 1) if count else 0
        self._last_tail = manifest.block_length(count - 1, self._last_blocks - 1) if count else 0
        self._max_open = max(1, self.settings.max_open_bytes // manifest.chunk_size)
        self._carousel_chunk = -1
        self._sender: Address | None = None
        self._out: list[tuple[bytes, Address]] = []
        self._events: list[Event] = []
        self._last_heard = now
        self._last_data = now
        self._next_report: float | None = None
        self._pages = (count + MAX_BITMAP_BITS - 1) // MAX_BITMAP_BITS
        self._dirty_pages: set[int] = set(range(self._pages))
        self._page_cursor = 0
        self._joined_sent = False
        self._done_left = 0
        # loss measurement from DATA seq (PROTOCOL.md 4.1)
        self._seq_start: int | None = None
        self._seq_high = 0
        self._seq_received = 0
        self._announced_seq = 0
        if self.verified_chunks == count:
            self._complete(now)

    # ---------------------------------------------------------------- public API

    @property
    def have_bitmap(self) -> bytes:
        """Verified chunks, one bit each, MSB first: what the adapter persists for resume."""
        return bytes(self._have)

    def has_chunk(self, index: int) -> bool:
        return bool(self._have[index >> 3] & (0x80 >> (index & 7)))

    def receive(
        self, datagram: bytes | bytearray | memoryview, addr: Address, now: float
    ) -> list[Event]:
        """One datagram (bytes, or a memoryview of the adapter's receive buffer: DATA is
        copied into its chunk buffer here, and nothing keeps a reference to ``datagram``)."""
        data = memoryview(datagram)
        if (
            len(data) > DATA_HEADER_SIZE
            and data[3] == 1  # DATA: the hot path, no object per datagram (PROTOCOL.md 11)
            and (self._sender is None or addr == self._sender)
        ):
            lead, sid, seq, chunk, block, length, flags = DATA_WORDS.unpack_from(data)
            if (
                lead == DATA_LEAD
                and sid == self.manifest.session_id
                and (flags == 0 or flags == DATA_REPAIR_WORD)
                and length == len(data) - DATA_HEADER_SIZE
                and length <= MAX_BLOCK_SIZE
            ):
                self._last_heard = now
                self._on_block(chunk, block, seq, data[DATA_HEADER_SIZE:], bool(flags), now)
                return self._drain()
        try:
            d = parse_any(bytes(data))
        except MalformedDatagram as exc:
            return [Ignored(str(exc))]
        if d.session_id != self.manifest.session_id:
            return [Ignored("another session")]
        if self._sender is not None and addr != self._sender and not isinstance(d, Announce):
            return [Ignored(f"{type(d).__name__} not from the session's sender {self._sender}")]
        self._dispatch(d, addr, now)
        return self._drain()

    def receive_batch(
        self, buf: memoryview, n: int, seg: int, addr: Address, now: float
    ) -> list[Event]:
        """The first ``n`` bytes of ``buf`` hold datagrams of ``seg`` bytes each (the last may be
        shorter), all from ``addr``: one UDP_GRO read. The same as ``receive`` for each of them,
        in order, with the per-datagram work of the DATA path only (no call, view or event list
        per datagram; PROTOCOL.md 11). ``buf`` is not kept."""
        if seg <= 0 or seg >= n:  # one datagram (an empty one included)
            return self.receive(buf[:n], addr, now)
        if self._sender is not None and addr != self._sender:
            out: list[Event] = []
            for off in range(0, n, seg):
                out.extend(self.receive(buf[off : min(off + seg, n)], addr, now))
            return out
        unpack, on_block = DATA_WORDS.unpack_from, self._on_block
        sid, payload_max = self.manifest.session_id, seg - DATA_HEADER_SIZE
        bs = self.manifest.block_size
        heard = False
        # the open chunk the carousel is on: its next full-size block, the common case, is taken
        # here with what _on_block would do for it; anything else goes through _on_block (or
        # receive), after which this is looked up again
        cur = self._carousel_open()
        for off in range(0, n, seg):
            end = off + seg
            if end > n:
                end, payload_max = n, n - off - DATA_HEADER_SIZE
            if payload_max > 0 and buf[off + 3] == 1:
                lead, s, seq, chunk, block, length, flags = unpack(buf, off)
                if (
                    lead == DATA_LEAD
                    and s == sid
                    and (flags == 0 or flags == DATA_REPAIR_WORD)
                    and length == payload_max
                    and length <= MAX_BLOCK_SIZE
                ):
                    heard = True
                    if (
                        cur is not None
                        and chunk == cur.index
                        and flags == 0
                        and length == bs
                        and 0 <= block < cur.nblocks - 1
                        and cur.received + 1 < cur.nblocks
                    ):
                        if 0 < (seq - self._seq_high) & 0xFFFFFFFF < 0x80000000:
                            self._seq_high = seq
                        self._seq_received += 1
                        cur.last_activity = now
                        if block > cur.gap_end:
                            cur.gap_end = block
                            if cur.nak_due is None and cur.received < block:
                                cur.nak_due = now + self._rng.random() * self.settings.nak_backoff
                        got = cur.got
                        if not got[block]:
                            start = block * bs
                            cur.buf[start : start + bs] = buf[off + DATA_HEADER_SIZE : end]
                            got[block] = 1
                            cur.received += 1
                        continue
                    on_block(chunk, block, seq, buf[off + DATA_HEADER_SIZE : end], flags != 0, now)
                    cur = self._carousel_open()
                    continue
            # receive() drains self._events (those of this batch so far included): keep them all
            drained = self.receive(buf[off:end], addr, now)
            self._events.extend(drained)
            cur = self._carousel_open()
        if heard:
            self._last_heard = now
        return self._drain()

    def _carousel_open(self) -> _OpenChunk | None:
        """The open chunk the carousel's DATA is on (receive_batch's fast path), if any: only
        after DATA was seen (loss counting has started) and while the transfer runs."""
        if self._seq_start is None or self.state in _ENDED:
            return None
        return self._open.get(self._carousel_chunk)

    def receive_chunk(self, index: int, data: bytes, now: float) -> list[Event]:
        """A chunk fetched by unicast (HTTP range): verified exactly like multicast ones."""
        if not 0 <= index < self.manifest.chunk_count:
            return [Ignored(f"chunk {index} outside the manifest")]
        if not self.has_chunk(index) and self.state is not ReceiverState.DONE:
            self._open.pop(index, None)
            if len(data) != self.manifest.chunk_length(index) or not self._verify(index, data):
                self.rejected_chunks += 1
                self._events.append(ChunkRejected(index))
            else:
                self._accept(index, data, now)
        return self._drain()

    def leave(self, now: float) -> list[Event]:
        """Give up (interrupted, timed out): tell the sender with REPORT(LEAVE), then FAILED."""
        if self.state in (ReceiverState.JOINED, ReceiverState.LISTENING):
            if self._sender is not None:
                self._send_report(0, ReportFlags.LEAVE)
            self._fail("left the session")
        return self._drain()

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out, self._out = self._out, []
        return out

    def next_timer(self) -> float | None:
        times: list[float] = []
        if self.state in (ReceiverState.LISTENING, ReceiverState.JOINED, ReceiverState.UNICAST):
            times.append(self._last_heard + self.settings.sender_timeout)
        if self.state in (ReceiverState.LISTENING, ReceiverState.JOINED):  # the states that NAK
            times.extend(ch.nak_due for ch in self._open.values() if ch.nak_due is not None)
            if any(ch.gap_end < len(ch.got) for ch in self._open.values()):
                times.append(self._last_data + self.settings.tail_timeout)
        if self._next_report is not None:
            times.append(self._next_report)
        return min(times) if times else None

    def handle_timer(self, now: float) -> list[Event]:
        active = (ReceiverState.LISTENING, ReceiverState.JOINED, ReceiverState.UNICAST)
        if self.state in active and now >= self._last_heard + self.settings.sender_timeout:
            if self.state is ReceiverState.UNICAST:
                self._last_heard = now  # the HTTP top-up, not the sender, drives us now
            else:
                self._fail(f"no datagram from the sender for {self.settings.sender_timeout:.0f} s")
        if self.state in (ReceiverState.JOINED, ReceiverState.LISTENING):
            if now >= self._last_data + self.settings.tail_timeout:
                for ch in self._open.values():  # the carousel went quiet: a lost tail is a gap
                    self._mark_gaps(ch, len(ch.got), now)
            ranges: list[BlockRange] = []
            for ch in list(self._open.values()):
                if ch.nak_due is not None and ch.nak_due <= now:
                    ranges += self._due_ranges(ch, now)
            self._send_naks(ranges)
        if self._next_report is not None and now >= self._next_report:
            self._report(now)
        return self._drain()

    # ---------------------------------------------------------------- datagrams

    def _dispatch(self, d: Datagram, addr: Address, now: float) -> None:
        match d:
            case DataBlock():
                self._last_heard = now
                self._on_data(d, now)
            case Announce():
                self._on_announce(d, addr, now)
            case RepairAdvertisement():
                self._last_heard = now
                self._on_repair_adv(d, now)
            case Redirect():
                self._on_redirect(d, now)
            case ReceiverReport() | RepairRequest():
                self._events.append(Ignored("receiver feedback is for the sender"))

    def _on_announce(self, d: Announce, addr: Address, now: float) -> None:
        if d.manifest_digest != self._digest:
            self._events.append(Ignored("ANNOUNCE for another manifest"))
            return
        self._last_heard = now
        self._sender = addr
        self._announced_seq = d.seq
        if d.state is SenderState.FINISHED:
            if self.state in (ReceiverState.LISTENING, ReceiverState.JOINED):
                self._fail("the sender finished the session before every chunk arrived")
            return
        if self.state is ReceiverState.LISTENING:
            self.state = ReceiverState.JOINED
            self._next_report = now  # JOIN at once

    def _on_redirect(self, d: Redirect, now: float) -> None:
        if d.receiver_id != self.receiver_id:
            self._events.append(Ignored("REDIRECT for another receiver"))
            return
        if self.state is not ReceiverState.JOINED:
            return
        if d.reason is RedirectReason.SLOW:
            self.state = ReceiverState.UNICAST
            self._next_report = None
            self._open.clear()
            self._events.append(SwitchToUnicast())
        else:
            self._fail("the sender dropped this receiver from the session", dropped=True)

    def _on_data(self, d: DataBlock, now: float) -> None:
        self._on_block(d.chunk, d.block, d.seq, memoryview(d.payload), d.repair, now)

    def _on_block(
        self, chunk: int, block: int, seq: int, payload: memoryview, repair: bool, now: float
    ) -> None:
        """One DATA block, whichever path parsed it. Runs once per datagram: plain ints, one
        slice copy into the chunk buffer, no object and no event unless a chunk completes."""
        m = self.manifest
        if not 0 <= chunk <= self._last_index:
            self._events.append(Ignored(f"DATA chunk {chunk} block {block} out of range"))
            return
        if chunk == self._last_index:
            nblocks, tail = self._last_blocks, self._last_tail
        else:
            nblocks, tail = self._full_blocks, self._full_tail
        if not 0 <= block < nblocks:
            self._events.append(Ignored(f"DATA chunk {chunk} block {block} out of range"))
            return
        if len(payload) != (m.block_size if block < nblocks - 1 else tail):
            self._events.append(Ignored("DATA length disagrees with the manifest"))
            return
        # loss measurement from DATA seq (PROTOCOL.md 4.1), inline: this runs per datagram
        if self._seq_start is None:
            self._seq_start = self._seq_high = seq
        elif 0 < (seq - self._seq_high) & 0xFFFFFFFF < 0x80000000:
            self._seq_high = seq
        self._seq_received += 1
        if self.state in _ENDED:
            return
        if not repair:
            # the carousel's own DATA: repairs flowing to others in the end game do not hide a
            # lost tail from the tail timer (PROTOCOL.md 7)
            self._last_data = now
        if not repair and chunk != self._carousel_chunk:
            # the carousel moved on: whatever an open chunk still lacks was lost (PROTOCOL.md 7)
            self._carousel_chunk = chunk
            for other in self._open.values():
                if other.index != chunk:
                    self._mark_gaps(other, other.nblocks, now)
        if self._have[chunk >> 3] & (0x80 >> (chunk & 7)):
            return
        ch = self._open.get(chunk) or self._open_chunk(chunk, now)
        ch.last_activity = now
        if not repair and block > ch.gap_end:  # _mark_gaps, inline: in order, every block
            ch.gap_end = block
            if ch.nak_due is None and ch.received < block:
                ch.nak_due = now + self._rng.random() * self.settings.nak_backoff
        got = ch.got
        if got[block]:
            return  # the first copy wins; a later duplicate cannot change a block
        start = block * m.block_size
        ch.buf[start : start + len(payload)] = payload
        got[block] = 1
        ch.received += 1
        if ch.received == ch.nblocks:
            self._finish_chunk(ch, now)

    def _open_chunk(self, index: int, now: float) -> _OpenChunk:
        if len(self._open) >= self._max_open:
            # bounded buffers: drop the chunk that cost least so far; the carousel brings it back
            victim = min(self._open.values(), key=lambda ch: (ch.received, ch.last_activity))
            del self._open[victim.index]
        m = self.manifest
        ch = _OpenChunk(index, m.chunk_length(index), m.blocks_in_chunk(index), now)
        self._open[index] = ch
        return ch

    def _mark_gaps(self, ch: _OpenChunk, upto: int, now: float) -> None:
        if upto <= ch.gap_end:
            return
        ch.gap_end = upto
        if ch.nak_due is None and ch.received < upto:
            ch.nak_due = now + self._rng.random() * self.settings.nak_backoff

    def _finish_chunk(self, ch: _OpenChunk, now: float) -> None:
        # hashed in place, once per chunk; copied to bytes only once it is known good
        if self._verify(ch.index, ch.buf):
            del self._open[ch.index]
            self._accept(ch.index, bytes(ch.buf), now)
            return
        # a damaged or forged block: count it, throw the chunk away, ask for all of it again
        self.rejected_chunks += 1
        self._events.append(ChunkRejected(ch.index))
        ch.got = bytearray(len(ch.got))
        ch.received = 0
        ch.holdoff = [0.0] * len(ch.got)
        ch.naks_sent = 0
        ch.gap_end = 0
        ch.nak_due = None
        self._mark_gaps(ch, len(ch.got), now)

    def _verify(self, index: int, data: bytes | bytearray | memoryview) -> bool:
        return hashlib.sha256(data).digest() == self.manifest.chunk_sha256[index]

    def _accept(self, index: int, data: bytes, now: float) -> None:
        self._have[index >> 3] |= 0x80 >> (index & 7)
        self.verified_chunks += 1
        self._dirty_pages.add(index // MAX_BITMAP_BITS)
        self._events.append(WriteChunk(index, data))
        if self.verified_chunks == self.manifest.chunk_count:
            self._complete(now)

    def _on_repair_adv(self, d: RepairAdvertisement, now: float) -> None:
        until = now + self.settings.nak_holdoff
        for r in d.ranges:
            ch = self._open.get(r.chunk)
            if ch is None:
                continue
            lo, hi = r.first_block, min(r.first_block + r.block_count, len(ch.got))
            if lo < hi:  # a slice assignment: bounded by the chunk's block count
                ch.holdoff[lo:hi] = [max(until, t) for t in ch.holdoff[lo:hi]]

    # ---------------------------------------------------------------- feedback

    def _send_naks(self, ranges: list[BlockRange]) -> None:
        """NAK ``ranges`` (of one or several chunks): as few datagrams as the sender's bounds
        allow (128 ranges, one chunk's worth of blocks each). One datagram per chunk made a
        lagging receiver with many open chunks flood the sender's socket (PROTOCOL.md 7)."""
        if not ranges or self._sender is None:
            return
        limit = self._full_blocks
        batch: list[BlockRange] = []
        blocks = 0
        for r in ranges:
            if batch and (len(batch) == MAX_RANGES or blocks + r.block_count > limit):
                self._send_nak(batch)
                batch, blocks = [], 0
            batch.append(r)
            blocks += r.block_count
        self._send_nak(batch)

    def _send_nak(self, ranges: list[BlockRange]) -> None:
        assert self._sender is not None
        nak = RepairRequest(
            self.manifest.session_id, self.receiver_id, tuple(ranges), self._seen_seq()
        )
        self._out.append((build_ranges_fast(nak), self._sender))
        self.naks_sent += 1

    def _due_ranges(self, ch: _OpenChunk, now: float) -> list[BlockRange]:
        """The gaps of ``ch`` to NAK now (not held off), and the chunk's next NAK time."""
        s = self.settings
        gaps = ch.missing_gaps()
        if not gaps:
            ch.nak_due = None
            return []
        if self._sender is None:  # no ANNOUNCE yet: nowhere to send a NAK
            ch.nak_due = now + s.nak_holdoff
            return []
        due = [k for k in gaps if ch.holdoff[k] <= now]
        ranges: list[BlockRange] = []
        if due and ch.naks_sent < s.max_naks_per_chunk:
            ranges = _to_ranges(ch.index, due)
            self.repair_chunks.add(ch.index)
            ch.naks_sent += 1
            # exponential back-off (30, 60, 120, 240 ms, then 240): a repair that is late
            # because the sender or this host is loaded must not be asked for again and again
            until = now + s.nak_holdoff * (1 << min(ch.naks_sent - 1, NAK_BACKOFF_DOUBLINGS))
            for k in due:
                ch.holdoff[k] = until
        if ch.naks_sent >= s.max_naks_per_chunk:
            ch.nak_due = None  # give up NAKing: the carousel's next round brings the chunk
            return ranges
        next_free = min(ch.holdoff[k] for k in gaps)
        ch.nak_due = max(next_free, now) + self._rng.random() * s.nak_backoff
        return ranges

    def _report(self, now: float) -> None:
        s = self.settings
        if self.state is ReceiverState.DONE:
            if self._done_left > 0:
                if self._sender is not None:
                    self._send_report(0, ReportFlags.DONE)
                self._done_left -= 1
            self._next_report = now + s.done_report_interval if self._done_left > 0 else None
            return
        if self.state is not ReceiverState.JOINED:
            self._next_report = None
            return
        pages = sorted(self._dirty_pages)[: s.max_pages_per_report]
        if len(pages) < s.max_pages_per_report and self._page_cursor not in pages:
            pages.append(self._page_cursor)
        self._page_cursor = (self._page_cursor + 1) % self._pages
        flags = ReportFlags(0) if self._joined_sent else ReportFlags.JOIN
        for page in pages:
            self._send_report(page, flags)
            self._dirty_pages.discard(page)
        self._joined_sent = True
        jitter = 1 + s.report_jitter * (2 * self._rng.random() - 1)
        self._next_report = now + s.report_interval * jitter

    def _send_report(self, page: int, flags: ReportFlags) -> None:
        assert self._sender is not None
        base = page * MAX_BITMAP_BITS
        bits = min(MAX_BITMAP_BITS, self.manifest.chunk_count - base)
        have = self._have[page * PAGE_BYTES : page * PAGE_BYTES + (bits + 7) // 8]
        need = bytearray(b ^ 0xFF for b in have)
        if flags & ReportFlags.DONE:
            need = bytearray(len(need))
        for ch in self._open.values():
            # being repaired by NAK: asking the carousel for it too would resend the whole chunk.
            # Only if every missing block is a known gap: a lost tail is found by no NAK.
            if (
                not base <= ch.index < base + bits
                or ch.naks_sent >= self.settings.max_naks_per_chunk
            ):
                continue
            if ch.gap_end == len(ch.got) and ch.received < len(ch.got):
                j = ch.index - base
                need[j >> 3] &= 0xFF ^ (0x80 >> (j & 7))
        spare = -bits % 8
        if spare:
            need[-1] &= 0xFF ^ ((1 << spare) - 1)
        report = ReceiverReport(
            self.manifest.session_id,
            self.receiver_id,
            flags,
            self._loss_permille(),
            self.verified_chunks,
            self.rejected_chunks,
            base,
            bits,
            bytes(need),
            self._seen_seq(),
        )
        self._out.append((build_datagram(report), self._sender))

    def _seen_seq(self) -> int:
        """The newest DATA seq read (before any DATA: the one before the ANNOUNCE's next seq).
        Every chunk this run's REPORT leaves out, every block its NAK lists, was sent at or
        before it: the sender tells lost from not yet read by it (PROTOCOL.md 4.4, 6)."""
        before_announce = (self._announced_seq - 1) & 0xFFFFFFFF
        if self._seq_start is None:
            return before_announce
        # an ANNOUNCE read says every DATA before its seq was sent before it, on the same path:
        # what of that was not read is lost, not queued. At the end of a session, where no DATA
        # follows a lost repair, that is the only way the sender can tell (PROTOCOL.md 4.4)
        if self._sender is not None and after(before_announce, self._seq_high):  # read one
            return before_announce
        return self._seq_high

    def _loss_permille(self) -> int:
        if self._seq_start is None or self._seq_received == 0:
            return 0
        span = (self._seq_high - self._seq_start) % (1 << 32)
        received, self._seq_received = self._seq_received, 0
        self._seq_start = (self._seq_high + 1) % (1 << 32)
        if span >= 1 << 31:
            return 0  # only reordered old datagrams since the last report
        expected = span + 1
        return (expected - min(received, expected)) * 1000 // expected

    # ---------------------------------------------------------------- endings

    def _complete(self, now: float) -> None:
        self.state = ReceiverState.DONE
        self._open.clear()
        self._events.append(TransferComplete())
        self._done_left = self.settings.done_reports
        self._next_report = now

    def _fail(self, reason: str, *, dropped: bool = False) -> None:
        self.state = ReceiverState.FAILED
        self._open.clear()
        self._next_report = None
        self._events.append(TransferFailed(reason, dropped))

    def _drain(self) -> list[Event]:
        events, self._events = self._events, []
        return events


def _to_ranges(chunk: int, blocks: list[int]) -> list[BlockRange]:
    """Sorted block indices to coalesced ranges."""
    ranges: list[BlockRange] = []
    start = prev = blocks[0]
    for k in blocks[1:]:
        if k != prev + 1:
            ranges.append(BlockRange(chunk, start, prev - start + 1))
            start = k
        prev = k
    ranges.append(BlockRange(chunk, start, prev - start + 1))
    return ranges
