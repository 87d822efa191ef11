"""One sender and several receivers wired in memory with a float clock (machine test tier).

Delivery is instant; multicast datagrams are copied to every receiver that has not been dropped
by its own loss function, so loss is independent per receiver unless a test says otherwise.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from multicast.codec import ChunkManifest, DatagramType, build_manifest
from multicast.events import Address, SwitchToUnicast, TransferComplete, TransferFailed, WriteChunk
from multicast.manifest import manifest_digest
from multicast.receiver import Receiver, ReceiverSettings
from multicast.sender import Event as SenderEvent
from multicast.sender import Sender, SenderSettings

SENDER: Address = ("198.18.0.1", 9000)
CHUNK = 65536
BLOCK = 1444

#: (receiver index, datagram bytes, now) -> drop it?
LossFn = Callable[[int, bytes, float], bool]
#: (receiver index, now) -> is that receiver frozen (receives, sends and times out nothing)?
StallFn = Callable[[int, float], bool]


class BytesSource:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.reads = 0

    def read(self, offset: int, length: int) -> bytes:
        self.reads += 1
        return self.data[offset : offset + length]


def make_manifest(
    data: bytes, *, session_id: int = 0x5EED, chunk: int = CHUNK, block: int = BLOCK
) -> tuple[ChunkManifest, bytes]:
    m = ChunkManifest(
        session_id=session_id,
        name="test-image",
        image_size=len(data),
        chunk_size=chunk,
        block_size=block,
        group="239.255.42.1",
        port=9000,
        rate_kbps=80_000,
        image_sha256=hashlib.sha256(data).digest(),
        chunk_sha256=tuple(
            hashlib.sha256(data[i : i + chunk]).digest() for i in range(0, len(data), chunk)
        ),
    )
    return m, manifest_digest(build_manifest(m))


@dataclass
class Client:
    index: int
    addr: Address
    machine: Receiver
    out: bytearray
    writes: list[int] = field(default_factory=list)
    complete_at: float | None = None
    failed: str | None = None
    unicast: bool = False
    naks: int = 0


class Lan:
    def __init__(
        self,
        data: bytes,
        *,
        settings: SenderSettings | None = None,
        receiver_settings: ReceiverSettings | None = None,
        seed: int = 1,
        loss: LossFn | None = None,
        feedback_loss: float = 0.0,
        stall: StallFn | None = None,
        session_id: int = 0x5EED,
    ) -> None:
        self.data = data
        self.now = 0.0
        self.rng = random.Random(seed)
        self.stall = stall
        self.manifest, self.digest = make_manifest(data, session_id=session_id)
        self.source = BytesSource(data)
        self.sender = Sender(
            self.manifest,
            manifest_digest=self.digest,
            source=self.source,
            settings=settings or SenderSettings(max_rate=10e6),
            now=0.0,
        )
        self.receiver_settings = receiver_settings
        self.clients: list[Client] = []
        self.loss = loss
        self.feedback_loss = feedback_loss
        self.sender_events: list[SenderEvent] = []
        self.sent: list[tuple[float, int, int]] = []  # (now, type, bytes) of multicast datagrams
        self.hooks: list[Callable[[Client, bytes], list[bytes]]] = []

    def add_client(self, have: bytes | None = None) -> Client:
        i = len(self.clients)
        machine = Receiver(
            self.manifest,
            manifest_digest=self.digest,
            rng=random.Random(1000 + i),
            now=self.now,
            have=have,
            settings=self.receiver_settings,
        )
        out = bytearray(len(self.data))
        client = Client(i, (f"198.18.1.{i + 10}", 40000 + i), machine, out)
        self.clients.append(client)
        return client

    # ------------------------------------------------------------------ delivery

    def stalled(self, c: Client) -> bool:
        return self.stall is not None and self.stall(c.index, self.now)

    def _deliver_to(self, c: Client, datagram: bytes) -> None:
        if c.complete_at is not None or c.failed is not None or self.stalled(c):
            return
        copies = [datagram]
        for hook in self.hooks:
            copies = [x for d in copies for x in hook(c, d)]
        for d in copies:
            self._handle_client_events(c, c.machine.receive(d, SENDER, self.now))

    def _handle_client_events(self, c: Client, events: Sequence[object]) -> None:
        cs = self.manifest.chunk_size
        for e in events:
            if isinstance(e, WriteChunk):
                assert e.index not in c.writes, f"chunk {e.index} written twice"
                c.writes.append(e.index)
                c.out[e.index * cs : e.index * cs + len(e.data)] = e.data
            elif isinstance(e, TransferComplete):
                c.complete_at = self.now
            elif isinstance(e, TransferFailed):
                c.failed = e.reason
            elif isinstance(e, SwitchToUnicast):
                c.unicast = True

    def pump(self) -> bool:
        """Exchange every datagram both sides have at ``now``. True if anything moved."""
        moved = False
        for _ in range(10_000):
            progress = False
            for o in self.sender.datagrams_to_send(self.now, budget=256):
                progress = True
                if o.to is None:
                    self.sent.append((self.now, o.data[3], len(o.data)))
                    for c in self.clients:
                        if self.loss is None or not self.loss(c.index, o.data, self.now):
                            self._deliver_to(c, o.data)
                else:
                    for c in self.clients:
                        if c.addr == o.to:
                            self._deliver_to(c, o.data)
            for c in self.clients:
                if self.stalled(c):
                    continue
                for data, to in c.machine.datagrams_to_send(self.now):
                    progress = True
                    assert to == SENDER
                    if data[3] == DatagramType.NAK:
                        c.naks += 1
                    if self.rng.random() < self.feedback_loss:
                        continue
                    self.sender_events += self.sender.receive(data, c.addr, self.now)
            if not progress:
                return moved
            moved = True
        raise AssertionError("pump did not settle")

    def unicast_top_up(self, c: Client) -> None:
        """What the HTTP adapter will do: fetch every missing chunk by range request."""
        m = self.manifest
        for i in range(m.chunk_count):
            if not c.machine.has_chunk(i) and c.complete_at is None:
                chunk = self.data[i * m.chunk_size : i * m.chunk_size + m.chunk_length(i)]
                self._handle_client_events(c, c.machine.receive_chunk(i, chunk, self.now))

    def run(self, until: float, *, stop: Callable[[], bool] | None = None) -> None:
        for _ in range(2_000_000):
            self.pump()
            if stop is not None and stop():
                return
            timers = [self.sender.next_timer()]
            timers += [c.machine.next_timer() for c in self.clients if not self.stalled(c)]
            if self.stall is not None:
                timers.append(self.now + 0.05)  # look again: a stall may end
            due = [t for t in timers if t is not None]
            if not due:
                return
            t = min(due)
            if t > until:
                self.now = until
                return
            self.now = max(self.now, t)
            self.sender_events += self.sender.handle_timer(self.now)
            for c in self.clients:
                timer = c.machine.next_timer()
                if self.stalled(c):
                    continue
                if timer is not None and timer <= self.now:
                    self._handle_client_events(c, c.machine.handle_timer(self.now))
                    if c.unicast and c.complete_at is None:
                        self.unicast_top_up(c)
        raise AssertionError("simulation did not settle")

    def all_done(self) -> bool:
        return all(c.complete_at is not None for c in self.clients)

    def assert_byte_exact(self) -> None:
        for c in self.clients:
            assert c.failed is None, f"client {c.index} failed: {c.failed}"
            assert c.complete_at is not None, f"client {c.index} incomplete"
            assert bytes(c.out) == self.data, f"client {c.index} differs"
