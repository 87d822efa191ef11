"""Admission control: how many transfers run at once, who waits, who is refused.

Pure; time is passed in.

* At most ``max_total`` transfers run, at most ``max_per_client`` per client address.
* A request over a cap waits in a queue: FIFO per client address, round-robin across addresses
  when a slot frees, so one machine asking for many files cannot starve the others.
  The queue holds at most ``max_queued`` requests, at most ``max_per_client`` of them per
  address, each for at most ``max_wait`` seconds (after that the client has given up asking).
* A request that cannot queue is refused with a message that says which cap was hit.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Admitted:
    pass


@dataclass(frozen=True)
class Queued:
    position: int  # requests ahead of this one in the whole queue


@dataclass(frozen=True)
class Refused:
    message: str


@dataclass(frozen=True)
class AlreadyWaiting:
    """The same request (same client address and port) is queued: a client retransmission."""


Decision = Admitted | Queued | Refused | AlreadyWaiting


class AdmissionControl(Generic[T]):
    def __init__(
        self, *, max_total: int, max_per_client: int, max_queued: int, max_wait: float
    ) -> None:
        self.max_total = max_total
        self.max_per_client = max_per_client
        self.max_queued = max_queued
        self.max_wait = max_wait
        self.running = 0
        self._per_client: dict[str, int] = {}
        self._queues: OrderedDict[str, deque[tuple[object, T, float]]] = OrderedDict()
        self._queued_keys: set[object] = set()

    @property
    def queued(self) -> int:
        return len(self._queued_keys)

    def running_for(self, client: str) -> int:
        return self._per_client.get(client, 0)

    def request(self, client: str, key: object, item: T, now: float) -> Decision:
        """Decide on a new request; ``key`` identifies retransmissions of the same request."""
        if key in self._queued_keys:
            return AlreadyWaiting()
        mine = self._per_client.get(client, 0)
        if (
            self.running < self.max_total
            and mine < self.max_per_client
            and client not in self._queues  # FIFO per client: earlier requests go first
        ):
            self._start(client)
            return Admitted()
        waiting = self._queues.get(client)
        if len(self._queued_keys) >= self.max_queued:
            return Refused(self._busy_message(client))
        if waiting is not None and len(waiting) >= self.max_per_client:
            return Refused(
                f"too many requests from {client}: {mine} running, {len(waiting)} waiting"
            )
        if waiting is None:
            waiting = self._queues[client] = deque()
        waiting.append((key, item, now))
        self._queued_keys.add(key)
        return Queued(len(self._queued_keys) - 1)

    def _busy_message(self, client: str) -> str:
        if self.running_for(client) >= self.max_per_client:
            return f"too many transfers from {client} ({self.running_for(client)} running); retry"
        return f"server busy: {self.running} transfers running, queue full; retry later"

    def _start(self, client: str) -> None:
        self.running += 1
        self._per_client[client] = self._per_client.get(client, 0) + 1

    def release(self, client: str) -> None:
        """A transfer of ``client`` ended."""
        left = self._per_client[client] - 1
        if left:
            self._per_client[client] = left
        else:
            del self._per_client[client]
        self.running -= 1

    def next_ready(self, now: float) -> list[tuple[str, T]]:
        """Requests that may start now, round-robin across clients; they count as running."""
        ready: list[tuple[str, T]] = []
        progress = True
        while progress and self.running < self.max_total and self._queues:
            progress = False
            for client in list(self._queues):
                if self.running >= self.max_total:
                    break
                if self._per_client.get(client, 0) >= self.max_per_client:
                    continue
                waiting = self._queues[client]
                key, item, _ = waiting.popleft()
                self._queued_keys.discard(key)
                if not waiting:
                    del self._queues[client]
                else:
                    self._queues.move_to_end(client)  # round-robin: this client goes last
                self._start(client)
                ready.append((client, item))
                progress = True
        return ready

    def expire(self, now: float) -> list[T]:
        """Drop requests that waited longer than ``max_wait``; the caller tells their clients."""
        expired: list[T] = []
        for client in list(self._queues):
            waiting = self._queues[client]
            while waiting and now - waiting[0][2] >= self.max_wait:
                key, item, _ = waiting.popleft()
                self._queued_keys.discard(key)
                expired.append(item)
            if not waiting:
                del self._queues[client]
        return expired

    def next_expiry(self) -> float | None:
        times = [q[0][2] + self.max_wait for q in self._queues.values() if q]
        return min(times) if times else None
