"""Events the pure sender and receiver machines return (docs/PROTOCOL.md sections 6-7).

Adapters act on them (write a chunk, start an HTTP top-up, log a refusal); tests assert on them.
"""

from __future__ import annotations

from dataclasses import dataclass

#: (host, port) as asyncio and socket give it
Address = tuple[str, int]


@dataclass(frozen=True)
class Outgoing:
    """A datagram to send: to ``to``, or to the session's multicast group when ``to`` is None."""

    data: bytes
    to: Address | None


@dataclass(frozen=True)
class Ignored:
    """A datagram was dropped; ``reason`` is for a DEBUG log line."""

    reason: str


# Receiver events


@dataclass(frozen=True)
class WriteChunk:
    """Chunk ``index`` passed its SHA-256: write ``data`` at ``index * chunk_size``."""

    index: int
    data: bytes


@dataclass(frozen=True)
class ChunkRejected:
    """Chunk ``index`` was assembled but failed its SHA-256; it is re-requested."""

    index: int


@dataclass(frozen=True)
class SwitchToUnicast:
    """The sender redirected us: fetch the chunks still missing over HTTP."""


@dataclass(frozen=True)
class TransferComplete:
    """Every chunk is verified (the adapter still checks the whole-file SHA-256 on disk)."""


@dataclass(frozen=True)
class TransferFailed:
    reason: str
    #: the sender refused this receiver (REDIRECT DROPPED): do not fall back to unicast either
    dropped: bool = False


# Sender events


@dataclass(frozen=True)
class SessionStarted:
    receivers: int


@dataclass(frozen=True)
class ReceiverJoined:
    receiver_id: int
    addr: Address


@dataclass(frozen=True)
class ReceiverDone:
    receiver_id: int
    addr: Address


@dataclass(frozen=True)
class ReceiverLeft:
    receiver_id: int
    addr: Address
    reason: str


@dataclass(frozen=True)
class MoveToUnicast:
    """``slow_client = unicast``: this receiver tops up over HTTP from now on."""

    receiver_id: int
    addr: Address


@dataclass(frozen=True)
class ReceiverDropped:
    """``slow_client = drop``: this receiver was told to leave."""

    receiver_id: int
    addr: Address


@dataclass(frozen=True)
class SessionFinished:
    completed: int
