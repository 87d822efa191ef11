"""Multicast groups and ports for sessions, from ``[multicast] group_pool`` and ``port_pool``.

Every session gets a group and a port no other session of the server has (config, reloaded or
runtime sessions alike), so two sessions never share a ``(group, port)`` and a receiver's group
socket sees one session only. The first choice is derived from the session name (a hash into
the pool), so a session keeps its group and port across restarts and reloads -- they are part of
the signed manifest a resuming receiver compares.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable

from wds.errors import Conflict

#: hosts of a pool tried before giving up (bounded work for a huge pool)
MAX_PROBES = 65536


class Pool:
    """Allocation state: which groups and ports are taken, and by which session."""

    def __init__(self, group_pool: str, port_pool: str) -> None:
        net = ipaddress.IPv4Network(group_pool)
        first = int(net.network_address) + (1 if net.num_addresses > 2 else 0)
        last = int(net.broadcast_address) - (1 if net.num_addresses > 2 else 0)
        self._groups = (first, last - first + 1)
        low, high = (int(p) for p in port_pool.split("-"))
        self._ports = (low, high - low + 1)
        self.groups: dict[str, str] = {}  # group -> session
        self.ports: dict[int, str] = {}  # port -> session

    def reserve(self, name: str, group: str, port: int) -> None:
        """Take an explicit group and port; Conflict when another session has either."""
        other = self.groups.get(group)
        if other is not None and other != name:
            raise Conflict(f"session {name}: group {group} is used by session {other}")
        holder = self.ports.get(port)
        if holder is not None and holder != name:
            raise Conflict(f"session {name}: port {port} is used by session {holder}")
        self.groups[group] = name
        self.ports[port] = name

    def allocate(self, name: str, group: str = "", port: int = 0) -> tuple[str, int]:
        """A group and port for ``name`` (the given ones, or free ones from the pools)."""
        if not group:
            group = str(ipaddress.IPv4Address(self._pick(name, self._groups, self._group_free)))
        if not port:
            port = self._pick(name, self._ports, self._port_free)
        self.reserve(name, group, port)
        return group, port

    def release(self, name: str) -> None:
        self.groups = {g: n for g, n in self.groups.items() if n != name}
        self.ports = {p: n for p, n in self.ports.items() if n != name}

    def _group_free(self, value: int, name: str) -> bool:
        return self.groups.get(str(ipaddress.IPv4Address(value)), name) == name

    def _port_free(self, value: int, name: str) -> bool:
        return self.ports.get(value, name) == name

    @staticmethod
    def _pick(name: str, space: tuple[int, int], free: Callable[[int, str], bool]) -> int:
        start, size = space
        h = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")
        for i in range(min(size, MAX_PROBES)):
            value = start + (h + i) % size
            if free(value, name):
                return value
        raise Conflict(
            f"session {name}: the multicast pool is exhausted; widen [multicast] group_pool "
            "or port_pool, or remove a session"
        )
