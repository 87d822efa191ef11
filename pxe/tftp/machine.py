"""One TFTP read transfer as a pure state machine: datagrams and time in, datagrams out.

No sockets, no clock: the adapter passes ``now`` (seconds, any monotonic origin) to every call,
sends what :meth:`ReadTransfer.datagrams_to_send` returns to the client, arms one timer at
:meth:`ReadTransfer.next_timer` and calls :meth:`ReadTransfer.handle_timer` when it fires.

Loss handling (docs/TFTP.md has the why):

* Retransmit only on timeout. A duplicate ACK never triggers a send (RFC 1350's Sorcerer's
  Apprentice bug), an ACK for an earlier block of the window makes us go back to the first
  unacknowledged block (RFC 7440 section 4), a stale ACK from before the window is ignored.
* The retransmission timeout comes from measured round trips (RFC 6298 SRTT/RTTVAR, Karn's rule:
  no sample from a retransmitted block), starts at the configured or client-asked timeout, doubles
  on every timeout and is clamped. The transfer gives up after ``max_retries`` timeouts in a row
  and at least ``timeout * max_retries`` seconds without progress.
* The effective window ``cwnd`` follows AIMD: halved once per loss event, one block more per clean
  window, never above the negotiated windowsize. The client still acknowledges every windowsize
  blocks, so a smaller ``cwnd`` does not mean fewer blocks per window but a window sent in bursts of
  ``cwnd`` blocks, one round trip apart: a lossy client gets cwnd blocks per round trip.
* Block numbers are 16 bits on the wire and wrap from 65535 to 0 (as tftp-hpa, curl and atftp
  expect); internally blocks are counted without wrapping.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from pxe.tftp.codec import (
    DATA_HEADERS,
    ErrorCode,
    TftpError,
    TftpOptionAck,
    build_error,
    build_packet,
    parse_packet,
)
from pxe.tftp.options import Negotiated
from wds.errors import LocalProtocolError, RemoteProtocolError

#: RFC 6298 section 2: clock granularity term in RTO = SRTT + max(G, 4 * RTTVAR).
CLOCK_GRANULARITY = 0.001
#: largest retransmission timeout after backoff, seconds
MAX_RTO = 60.0
#: largest UDP payload of one IPv4 datagram: the most one datagram group may hold
MAX_GROUP_BYTES = 65507
#: (buffers laid end to end, size of each datagram, number of datagrams)
DatagramGroup = tuple[list[bytes | memoryview], int, int]
#: shortest gap between two bursts of a paced window (the event loop's timer resolution)
MIN_PACE = 0.001


class TransferState(enum.Enum):
    NEGOTIATING = "negotiating"  # OACK sent, waiting for ACK 0
    SENDING = "sending"
    DONE = "done"


class Outcome(enum.Enum):
    COMPLETED = "completed"
    DECLINED = "declined"  # the client answered the OACK with an ERROR (PXE ROMs do, for tsize)
    ABORTED = "aborted"  # the client sent an ERROR during the transfer
    TIMED_OUT = "timed out"


@dataclass(frozen=True)
class TransferSettings:
    """Server-side knobs of one transfer (from TftpConfig and the negotiated options)."""

    timeout: float = 1.0  # first RTO, seconds (the client's timeout option wins)
    min_timeout: float = 0.05  # smallest RTO the round-trip estimate may give
    max_retries: int = 6
    adaptive: bool = True  # measured RTO and AIMD window; False: fixed timeout, full window
    initial_window: float | None = None  # cwnd learned from this client's last transfer


@dataclass
class TransferStats:
    datagrams_sent: int = 0
    retransmitted: int = 0  # DATA/OACK datagrams sent more than once
    timeouts: int = 0
    go_backs: int = 0  # ACKs for an earlier block of the window
    duplicate_acks: int = 0
    ignored: int = 0
    rtt_samples: int = 0
    min_window: float = 0.0


class ReadTransfer:
    """Serves ``data`` (a buffer already in wire format: netascii converted) to one client."""

    def __init__(
        self,
        data: memoryview | bytes,
        negotiated: Negotiated,
        settings: TransferSettings,
        peer: tuple[str, int],
    ) -> None:
        self.peer = peer
        self.data = data if isinstance(data, memoryview) else memoryview(data)
        self.size = len(self.data)
        self.blksize = negotiated.blksize
        self.windowsize = negotiated.windowsize
        self.negotiated = negotiated
        self.settings = settings
        #: blocks in the file; the last is shorter than blksize, possibly empty
        self.nblocks = self.size // self.blksize + 1
        self.state = TransferState.SENDING
        self.outcome: Outcome | None = None
        self.message = ""
        self.stats = TransferStats()
        self.started_at = 0.0
        self.finished_at = 0.0
        first = negotiated.timeout if negotiated.timeout is not None else settings.timeout
        self._initial_rto = first
        self.rto = first
        self._srtt: float | None = None
        self._rttvar = 0.0
        self.cwnd = float(self.windowsize)
        if settings.adaptive and settings.initial_window is not None:
            self.cwnd = max(1.0, min(self.cwnd, settings.initial_window))
        self.stats.min_window = self.cwnd
        self.acked = 0  # highest block acknowledged
        self.next_block = 1  # next block to send
        self.sent_hi = 0  # highest block ever sent
        self._recover = 0  # a loss at or below this block belongs to the last loss event
        self._rtt_block = 0  # block whose ACK gives an RTT sample (0: none timed)
        self._rtt_sent = 0.0
        self._retries = 0
        self._last_progress = 0.0
        self._rto_deadline: float | None = None
        self._pace_deadline: float | None = None
        # what to send, in order: control datagrams, and (first, last) block ranges built lazily
        self._out: list[bytes | tuple[int, int]] = []
        self._strangers: list[tuple[bytes, tuple[str, int]]] = []
        self._oack = b""

    # ----------------------------------------------------------------------------------------
    # The interface the adapter uses

    def start(self, now: float) -> None:
        """Queue the first datagram: the OACK if options were granted, else the first window."""
        if self.started_at:
            raise LocalProtocolError("transfer started twice")
        self.started_at = self._last_progress = now
        if self.negotiated.oack:
            self.state = TransferState.NEGOTIATING
            self._oack = build_packet(TftpOptionAck(self.negotiated.oack))
            self._send_oack(now)
        else:
            self._send_burst(now)

    @property
    def finished(self) -> bool:
        return self.state is TransferState.DONE

    def datagrams_to_send(self) -> Iterable[bytes]:
        """Datagrams for the client, in order; iterate at once and send each as it comes.

        DATA packets are built while the caller iterates (header + slice of the file), so the
        first one is on the wire before the last one exists.
        """
        join = b"".join
        return (join(iov) for iov, _size, _count in self.datagram_groups(1))

    def datagram_groups(self, max_count: int = 64, lead: int = 0) -> Iterable[DatagramGroup]:
        """The same datagrams, as runs of up to ``max_count`` consecutive equal-sized DATA packets.

        Each group is ``(iovec, size, count)``: ``count`` datagrams of ``size`` bytes laid end to
        end in the buffers of ``iovec`` (header, payload slice, header, ...); only the last may be
        shorter. An adapter can hand a group to the kernel in one call (UDP segmentation offload)
        or send it datagram by datagram. A group never exceeds 65507 bytes (one IPv4 datagram).

        ``lead`` > 0 caps the first group of each burst at ``lead`` datagrams: groups are built
        while the caller iterates, so an adapter that sends that group at once has the first
        block on the wire, and the client waking up, while the rest is still being built and
        segmented (docs/TFTP.md, "Performance").
        """
        items = self._out
        if not items:
            return ()
        self._out = []
        return self._groups(items, max_count, lead)

    def _groups(
        self, items: list[bytes | tuple[int, int]], max_count: int, lead: int
    ) -> Iterator[DatagramGroup]:
        data, bs, headers = self.data, self.blksize, DATA_HEADERS
        size = bs + 4
        per_group = max(1, min(max_count, MAX_GROUP_BYTES // size))
        for item in items:
            if isinstance(item, bytes):
                yield [item], len(item), 1
                continue
            first, last = item
            offset = (first - 1) * bs
            count = min(lead, per_group) if lead > 0 else per_group
            while first <= last:
                end = min(last, first + count - 1)
                count = per_group
                iov: list[bytes | memoryview] = []
                append = iov.append
                for block in range(first, end + 1):
                    append(headers[block & 0xFFFF])
                    append(data[offset : offset + bs])
                    offset += bs
                yield iov, size, end - first + 1
                first = end + 1

    def stranger_replies(self) -> list[tuple[bytes, tuple[str, int]]]:
        """ERROR 5 datagrams for senders that are not this transfer's client (RFC 1350 TID)."""
        out = self._strangers
        if out:
            self._strangers = []
        return out

    @property
    def has_stranger_replies(self) -> bool:
        return bool(self._strangers)

    @property
    def waiting_for_ack(self) -> bool:
        """All the window allows is sent: only the client's answer (or a timeout) moves on."""
        return self.state is not TransferState.DONE and self._pace_deadline is None

    def next_timer(self) -> float | None:
        rto, pace = self._rto_deadline, self._pace_deadline
        if pace is None:
            return rto
        if rto is None:
            return pace
        return pace if pace < rto else rto

    def receive(self, data: bytes, addr: tuple[str, int], now: float) -> str | None:
        """Feed one datagram. Returns why it was ignored, or None when it was used."""
        if addr != self.peer:
            # RFC 1350 section 4: a packet from a wrong TID gets ERROR 5, the transfer goes on.
            self._strangers.append(
                (build_error(ErrorCode.UNKNOWN_TRANSFER_ID, "unknown transfer ID"), addr)
            )
            self.stats.ignored += 1
            return f"datagram from {addr[0]}:{addr[1]}, not the transfer's client"
        if len(data) == 4 and data[1] == 4 and data[0] == 0:
            reason = self._on_ack((data[2] << 8) | data[3], now)
        else:
            reason = self._on_other(data, now)
        if reason is not None:
            self.stats.ignored += 1
        return reason

    def handle_timer(self, now: float) -> None:
        if self.state is TransferState.DONE:
            return
        pace = self._pace_deadline
        if pace is not None and now >= pace:
            self._pace_deadline = None
            self._send_burst(now)
        rto = self._rto_deadline
        if rto is not None and now >= rto:
            self._on_timeout(now)

    # ----------------------------------------------------------------------------------------
    # Input

    def _on_ack(self, wire: int, now: float) -> str | None:
        if self.state is not TransferState.SENDING:
            if self.state is TransferState.NEGOTIATING and wire == 0:
                # RFC 2347: ACK 0 accepts the OACK; the OACK round trip is a fine first sample.
                self.state = TransferState.SENDING
                if self._retries == 0:
                    self._sample_rtt(now - self._rtt_sent)
                self._progress(now)
                self._send_burst(now)
                return None
            if self.state is TransferState.NEGOTIATING:
                return f"ACK {wire} before the OACK was acknowledged"
            return f"ACK {wire} after the transfer ended"
        acked = self.acked
        block = acked + ((wire - acked) & 0xFFFF)  # undo the 16-bit wrap
        if block == acked:
            # Sorcerer's Apprentice: a duplicate ACK never causes a retransmission.
            self.stats.duplicate_acks += 1
            return f"duplicate ACK {wire}"
        if block > self.sent_hi:
            return f"ACK {wire} is older than the window or for a block not sent"
        self.acked = block
        if self._rtt_block and block >= self._rtt_block:
            self._sample_rtt(now - self._rtt_sent)
            self._rtt_block = 0
        self._progress(now)
        if block >= self.nblocks:
            self._finish(Outcome.COMPLETED, "", now)
            return None
        if block < self.next_block - 1:
            # RFC 7440: the client missed block+1 -- go back to it. One loss event per flight.
            self.stats.go_backs += 1
            self._loss(self.next_block - 1)
            self.next_block = block + 1
            self._rtt_block = 0  # Karn: what follows is partly retransmitted
        elif self.settings.adaptive and self.cwnd < self.windowsize and block > self._recover:
            self.cwnd = min(float(self.windowsize), self.cwnd + 1.0)  # additive increase
        self._pace_deadline = None
        self._send_burst(now)
        return None

    def _on_other(self, data: bytes, now: float) -> str | None:
        try:
            packet = parse_packet(data)
        except RemoteProtocolError as exc:
            return str(exc)
        if isinstance(packet, TftpError):
            if self.state is TransferState.NEGOTIATING:
                # RFC 2347: a client may refuse the OACK with ERROR 8 and ask again; normal for PXE.
                self._finish(Outcome.DECLINED, f"error {packet.code}: {packet.message}", now)
            elif self.state is TransferState.SENDING:
                self._finish(Outcome.ABORTED, f"error {packet.code}: {packet.message}", now)
            return None
        return f"unexpected {type(packet).__name__} on a read transfer"

    # ----------------------------------------------------------------------------------------
    # Output

    def _send_oack(self, now: float) -> None:
        self._out.append(self._oack)
        self.stats.datagrams_sent += 1
        self._rtt_sent = now
        self._rto_deadline = now + self.rto

    def _send_burst(self, now: float) -> None:
        """Send the next blocks of the window: all of it, or ``cwnd`` blocks when pacing."""
        first = self.next_block
        limit = self.acked + self.windowsize
        if limit > self.nblocks:
            limit = self.nblocks
        if first > limit:
            return
        last = limit
        cwnd = self.cwnd
        paced = cwnd < self.windowsize
        if paced:
            last = min(limit, first + math.ceil(cwnd) - 1)
        self._out.append((first, last))
        count = last - first + 1
        stats = self.stats
        stats.datagrams_sent += count
        sent_hi = self.sent_hi
        if first <= sent_hi:
            stats.retransmitted += min(last, sent_hi) - first + 1
        if last > sent_hi:
            self.sent_hi = last
            if not self._rtt_block and last == limit:
                # time the block the client acknowledges; never a retransmitted one (Karn)
                self._rtt_block, self._rtt_sent = last, now
        self.next_block = last + 1
        self._rto_deadline = now + self.rto
        if paced and last < limit:
            srtt = self._srtt if self._srtt is not None else MIN_PACE
            self._pace_deadline = now + max(MIN_PACE, srtt)

    # ----------------------------------------------------------------------------------------
    # Timers, round trips, window

    def _on_timeout(self, now: float) -> None:
        self._retries += 1
        self.stats.timeouts += 1
        silent = now - self._last_progress
        give_up_after = self._initial_rto * self.settings.max_retries
        if self._retries > self.settings.max_retries and silent >= give_up_after:
            self._finish(
                Outcome.TIMED_OUT,
                f"no answer after {self._retries - 1} retransmissions and {silent:.1f} s",
                now,
            )
            return
        self.rto = min(MAX_RTO, self.rto * 2)  # RFC 6298 5.5: back off
        self._rtt_block = 0  # Karn
        if self.state is TransferState.NEGOTIATING:
            self.stats.retransmitted += 1
            self._send_oack(now)
            return
        self._loss(self.next_block - 1)
        self.next_block = self.acked + 1
        self._pace_deadline = None
        self._send_burst(now)

    def _loss(self, highest_sent: int) -> None:
        if not self.settings.adaptive or self.acked < self._recover:
            return
        self._recover = highest_sent
        self.cwnd = max(1.0, self.cwnd / 2)  # multiplicative decrease, once per loss event
        if self.cwnd < self.stats.min_window:
            self.stats.min_window = self.cwnd

    def _progress(self, now: float) -> None:
        self._last_progress = now
        if self._retries:  # the RTO was backed off: back to the estimate (or the initial)
            self._retries = 0
            if not self.settings.adaptive:
                self.rto = self._initial_rto
            elif self._srtt is not None:
                self.rto = self._rto_from_estimate()

    def _sample_rtt(self, sample: float) -> None:
        if not self.settings.adaptive:
            return
        self.stats.rtt_samples += 1
        if self._srtt is None:  # RFC 6298 2.2
            self._srtt, self._rttvar = sample, sample / 2
        else:  # RFC 6298 2.3
            self._rttvar = 0.75 * self._rttvar + 0.25 * abs(self._srtt - sample)
            self._srtt = 0.875 * self._srtt + 0.125 * sample
        self.rto = self._rto_from_estimate()

    def _rto_from_estimate(self) -> float:
        assert self._srtt is not None
        variance = 4 * self._rttvar
        rto = self._srtt + (variance if variance > CLOCK_GRANULARITY else CLOCK_GRANULARITY)
        floor = self.settings.min_timeout
        return floor if rto < floor else (MAX_RTO if rto > MAX_RTO else rto)

    @property
    def srtt(self) -> float | None:
        return self._srtt

    def _finish(self, outcome: Outcome, message: str, now: float) -> None:
        self.state = TransferState.DONE
        self.outcome = outcome
        self.message = message
        self.finished_at = now
        self._rto_deadline = self._pace_deadline = None
