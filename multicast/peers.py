"""What the WMTP sender knows of each receiver, and the decisions made from it alone
(docs/PROTOCOL.md section 6): the need bitmap a REPORT page overwrites, the rate step from
reported loss (AIMD), and the goodput test that finds a slow receiver. Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from multicast.events import Address


def after(seq: int, other: int) -> bool:
    """``seq`` was sent after ``other`` (serial arithmetic mod 2^32, RFC 1982)."""
    return 0 < (seq - other) & 0xFFFFFFFF < 0x80000000


class Peer:
    """One active receiver: its need bitmap (chunk ``i`` is bit ``0x80 >> (i % 8)`` of byte
    ``i // 8``; undescribed chunks are needed), its loss and its progress."""

    def __init__(self, receiver_id: int, addr: Address, chunks: int, now: float) -> None:
        self.receiver_id = receiver_id
        self.addr = addr
        self.joined_at = now
        self.last_report = now
        self.need = bytearray(b"\xff" * ((chunks + 7) // 8))
        if chunks % 8:
            self.need[-1] = 0xFF ^ ((1 << (8 - chunks % 8)) - 1)  # no chunks past the end
        self.verified = 0
        self.worst_loss = 0
        self.progress: deque[tuple[float, int]] = deque([(now, 0)])
        self.offered: deque[tuple[float, int]] = deque()

    def needs(self, index: int) -> bool:
        return bool(self.need[index >> 3] & (0x80 >> (index & 7)))

    def presume_received(self, index: int) -> None:
        self.need[index >> 3] &= 0xFF ^ (0x80 >> (index & 7))

    def apply_page(self, base_chunk: int, bit_count: int, bitmap: bytes, chunk_count: int) -> bool:
        """Overwrite the need bits a REPORT page describes. Pages are byte-aligned (base is a
        multiple of 8192); any other page is ignored (False)."""
        if bit_count == 0 or base_chunk % 8 or base_chunk + bit_count > chunk_count:
            return False
        start = base_chunk // 8
        full, spare = divmod(bit_count, 8)
        self.need[start : start + full] = bitmap[:full]
        if spare:
            mask = 0xFF ^ ((1 << (8 - spare)) - 1)
            old = self.need[start + full]
            self.need[start + full] = (old & ~mask & 0xFF) | (bitmap[full] & mask)
        return True

    def is_slow(self, now: float, window: float, min_goodput: float, chunk_size: int) -> bool:
        """Prune the histories to ``window`` seconds, then: was this receiver offered enough
        chunk bytes to show ``min_goodput`` (bytes/s) and verified less? (PROTOCOL.md 6)"""
        while len(self.progress) > 1 and self.progress[1][0] <= now - window:
            self.progress.popleft()
        while self.offered and self.offered[0][0] < now - window:
            self.offered.popleft()
        if now - self.joined_at < window:
            return False
        offered = sum(n for _, n in self.offered)
        goodput = (self.progress[-1][1] - self.progress[0][1]) * chunk_size
        # offered with a margin over min_goodput (the min_rate floor is 2x min_goodput, and
        # offered counts chunk bytes, not headers or control traffic)
        return offered >= 1.25 * min_goodput * window and goodput < min_goodput * window


def next_rate(
    rate: float,
    losses: Iterable[int],
    *,
    slowest_sets_pace: bool,
    threshold: int,
    min_rate: float,
    max_rate: float,
    decrease: float,
    increase: float,
) -> float:
    """One AIMD step from the receivers' worst loss (permille) since the last step.

    With ``slowest_sets_pace`` (slow_client "wait") the worst receiver decides; otherwise the
    typical one does (the lower median): congestion shows at most receivers, a bad NIC at one,
    and that one is the slow-receiver check's business, not a reason to slow everybody down.
    Random loss below ``threshold`` (a lossy LAN) is not congestion (PROTOCOL.md 6).
    """
    ordered = sorted(losses)
    if not ordered:
        return rate
    loss = ordered[-1] if slowest_sets_pace else ordered[(len(ordered) - 1) // 2]
    if loss > threshold:
        return max(min_rate, rate * decrease)
    return min(max_rate, rate + max_rate * increase)
