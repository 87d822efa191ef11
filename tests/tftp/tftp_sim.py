"""An in-memory network and an RFC 7440 client for the pure transfer machine (float clock)."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from pxe.tftp.codec import TftpAck, TftpData, TftpError, TftpOptionAck, build_packet, parse_packet
from pxe.tftp.machine import ReadTransfer

PEER = ("192.0.2.10", 40000)
#: (index of the datagram in its direction, 1-based; the datagram) -> drop it?
DropRule = Callable[[int, bytes], bool]


def never(_i: int, _d: bytes) -> bool:
    return False


@dataclass
class SimClient:
    """A receiver as RFC 7440 describes: ACK every ``windowsize`` blocks and at the end.

    ``gap_ack``: on an out-of-order block, ACK the last in-order block once (many clients do).
    ``ack_duplicates``: on a repeated earlier block, ACK it again (RFC 1350 lockstep clients).
    ``timeout``: re-send the last ACK after this long without a new block (bounded).
    ``refuse_oack``: answer the OACK with ERROR 8 (a PXE ROM's tsize probe).
    """

    windowsize: int = 1
    blksize: int = 512
    gap_ack: bool = True
    ack_duplicates: bool = False
    timeout: float = 1.0
    max_timeouts: int = 20
    refuse_oack: bool = False
    received: bytearray = field(default_factory=bytearray)
    next_block: int = 1
    since_ack: int = 0
    done: bool = False
    declined: bool = False
    oack: dict[str, str] | None = None
    gap_acked: bool = False
    last_ack: int = 0
    last_progress: float = 0.0
    timeouts: int = 0
    acks_sent: int = 0
    wire_blocks: list[int] = field(default_factory=list)

    def on_datagram(self, data: bytes, now: float) -> list[bytes]:
        packet = parse_packet(data)
        if isinstance(packet, TftpOptionAck):
            if self.oack is None:
                self.oack = dict(packet.options)
                self.blksize = int(self.oack.get("blksize", self.blksize))
                self.windowsize = int(self.oack.get("windowsize", 1))
            self.last_progress = now
            if self.refuse_oack:
                self.declined = True
                return [build_packet(TftpError(8, "tsize probe only"))]
            return [self._ack(0)]
        assert isinstance(packet, TftpData), packet
        if self.done:  # dally (RFC 1350 section 6): the final ACK may have been lost
            return [self._ack(self.last_ack)]
        expected = self.next_block & 0xFFFF
        if packet.block == expected:
            self.wire_blocks.append(packet.block)
            self.received += packet.payload
            self.next_block += 1
            self.since_ack += 1
            self.gap_acked = False
            self.last_progress = now
            if len(packet.payload) < self.blksize:
                self.done = True
                return [self._ack(packet.block)]
            if self.since_ack >= self.windowsize:
                return [self._ack(packet.block)]
            return []
        if packet.block == (self.next_block - 1) & 0xFFFF and self.ack_duplicates:
            return [self._ack(packet.block)]
        ahead = 0 < (packet.block - expected) & 0xFFFF < 0x8000
        if not self.gap_acked and (self.gap_ack or not ahead):
            # a gap, or an old block resent because our ACK was lost: say where we are, once
            self.gap_acked = True
            return [self._ack((self.next_block - 1) & 0xFFFF)]
        return []

    def _ack(self, wire: int) -> bytes:
        self.since_ack = 0
        self.last_ack = wire
        self.acks_sent += 1
        return build_packet(TftpAck(wire))

    def next_timer(self) -> float | None:
        if self.done or self.declined or self.timeouts >= self.max_timeouts:
            return None
        return self.last_progress + self.timeout

    def handle_timer(self, now: float) -> list[bytes]:
        self.timeouts += 1
        self.last_progress = now
        return [self._ack(self.last_ack)]


@dataclass
class SimResult:
    now: float
    s2c_sent: int
    c2s_sent: int
    send_times: list[float]


def run(
    transfer: ReadTransfer,
    client: SimClient,
    *,
    drop_s2c: DropRule = never,
    drop_c2s: DropRule = never,
    dup_c2s: DropRule = never,
    drop_in_burst: DropRule = never,
    delay: float = 0.0005,
    ack_delay: Callable[[int], float] | None = None,
    until: float = 600.0,
    max_steps: int = 5_000_000,
) -> SimResult:
    """Run both ends until the transfer ends (or nothing is left to happen).

    ``drop_in_burst`` sees the position of a datagram among those the machine sent at once.
    """
    now = 0.0
    heap: list[tuple[float, int, str, bytes]] = []
    seq = itertools.count()
    s2c = itertools.count(1)
    c2s = itertools.count(1)
    result = SimResult(0.0, 0, 0, [])

    def from_server() -> None:
        for position, d in enumerate(transfer.datagrams_to_send(), 1):
            i = next(s2c)
            result.s2c_sent += 1
            result.send_times.append(now)
            if not drop_s2c(i, d) and not drop_in_burst(position, d):
                heapq.heappush(heap, (now + delay, next(seq), "s2c", d))

    def from_client(datagrams: list[bytes]) -> None:
        for d in datagrams:
            i = next(c2s)
            result.c2s_sent += 1
            if drop_c2s(i, d):
                continue
            extra = ack_delay(i) if ack_delay is not None else 0.0
            heapq.heappush(heap, (now + delay + extra, next(seq), "c2s", d))
            if dup_c2s(i, d):
                heapq.heappush(heap, (now + delay + extra, next(seq), "c2s", d))

    transfer.start(now)
    from_server()
    for _ in range(max_steps):
        if transfer.finished:
            break
        times = [t for t in (transfer.next_timer(), client.next_timer()) if t is not None]
        if heap:
            times.append(heap[0][0])
        if not times:
            break
        now = min(times)
        if now > until:
            break
        if heap and heap[0][0] <= now:
            _, _, direction, data = heapq.heappop(heap)
            if direction == "s2c":
                from_client(client.on_datagram(data, now))
            else:
                transfer.receive(data, PEER, now)
                from_server()
            continue
        t = transfer.next_timer()
        if t is not None and t <= now:
            transfer.handle_timer(now)
            from_server()
            continue
        from_client(client.handle_timer(now))
    result.now = now
    return result
