"""A LAN on one host, built from network namespaces (see shared LAB.md).

A :class:`Lab` owns everything it creates: namespaces named ``wds-<pid>-<n>-<name>`` (unique per
run and per lab), the veth pairs and bridges inside them, nftables tables and the processes
started with :meth:`Namespace.popen`. :meth:`Lab.close` removes all of it and is safe to call twice
and after a partial setup; pytest fixtures call it from a finalizer, scripts use ``with Lab()``.

Nothing is created in the host's own namespace: veth pairs are created directly inside lab
namespaces (``ip -n NS link add ... peer ... netns OTHER``), so a crash can leave at most namespaces
behind, which :func:`cleanup_stale` removes on the next run.

Lab interfaces carry one datagram per frame (``gso_max_segs 1``: UDP GSO bursts are segmented
before the veth), so loss rules and counters act on datagrams as a real wire would.

Every lab namespace gets an nftables output guard that drops any packet not addressed to
198.18.0.0/15 (the benchmarking range the lab addresses come from), 239.0.0.0/8 or its own loopback,
so a test that gets an address wrong fails instead of talking to the world.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

#: every lab object's name starts with this
NAME_ROOT = "wds"
#: lab addresses come from here (RFC 2544 benchmarking range)
LAB_NET = ipaddress.IPv4Network("198.18.0.0/15")
#: multicast groups come from here (RFC 2365 administratively scoped)
MCAST_NET = ipaddress.IPv4Network("239.0.0.0/8")

GUARD_TABLE = "wds_guard"
LOSS_TABLE = "wds_loss"
COUNT_TABLE = "wds_count"

_STALE_RE = re.compile(rf"^{NAME_ROOT}-(\d+)-")
_lab_serial = itertools.count(1)


class LabError(RuntimeError):
    """A lab command failed; the message carries the command and its stderr."""


def run_prefix(pid: int | None = None) -> str:
    """The name prefix of this process's lab objects: ``wds-<pid>-``."""
    return f"{NAME_ROOT}-{os.getpid() if pid is None else pid}-"


def _run(
    cmd: Sequence[str], *, timeout: float = 30.0, check: bool = True, input_text: str | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        list(cmd), capture_output=True, text=True, timeout=timeout, input=input_text, check=False
    )
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(cmd)!r} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


def capabilities_missing() -> str | None:
    """Why a lab cannot be built here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, nftables)"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables"), ("tc", "iproute2")):
        if shutil.which(tool) is None:
            return f"{tool} not found (apt-get install {package})"
    return None


def list_namespaces() -> list[str]:
    proc = _run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_namespace(name: str) -> None:
    """Kill every process inside namespace ``name`` and delete it (no error if already gone)."""
    proc = _run(["ip", "netns", "pids", name], check=False)
    for token in proc.stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(token), signal.SIGKILL)
    _run(["ip", "netns", "del", name], check=False)


def cleanup_stale() -> list[str]:
    """Remove ``wds-<pid>-*`` namespaces left by runs whose process is gone; return their names.

    Namespaces of a live process (this one, or a concurrent test run) are left alone.
    """
    removed = []
    for name in list_namespaces():
        match = _STALE_RE.match(name)
        if match is None or _pid_alive(int(match.group(1))):
            continue
        kill_namespace(name)
        removed.append(name)
    return removed


def guard_ruleset(table: str = GUARD_TABLE) -> str:
    """nft script: drop every output packet that leaves the lab's address space."""
    return f"""
table inet {table} {{
  chain output {{
    type filter hook output priority 0; policy accept;
    oifname "lo" accept
    meta nfproto ipv4 ip daddr {{ {LAB_NET}, {MCAST_NET} }} accept
    counter drop comment "wds lab guard: destination outside the lab"
  }}
}}
"""


@dataclass
class Namespace:
    """One lab host. ``name`` is the full namespace name (with the run prefix)."""

    name: str
    short: str
    processes: list[subprocess.Popen[Any]] = field(default_factory=list)
    addresses: dict[str, ipaddress.IPv4Interface] = field(default_factory=dict)

    def argv(self, cmd: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *cmd]

    def run(
        self,
        cmd: Sequence[str],
        *,
        timeout: float = 60.0,
        check: bool = True,
        input_text: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` inside the namespace, wait (bounded), capture text output."""
        return _run(self.argv(cmd), timeout=timeout, check=check, input_text=input_text)

    def popen(
        self,
        cmd: Sequence[str],
        *,
        stdout: int | IO[Any] | None = subprocess.PIPE,
        stderr: int | IO[Any] | None = subprocess.PIPE,
        **kwargs: Any,
    ) -> subprocess.Popen[Any]:
        """Start ``cmd`` inside the namespace; the lab kills it on teardown."""
        proc: subprocess.Popen[Any] = subprocess.Popen(
            self.argv(cmd), stdout=stdout, stderr=stderr, start_new_session=True, **kwargs
        )
        self.processes.append(proc)
        return proc

    def addr(self, ifname: str = "eth0") -> str:
        """The IPv4 address (no prefix length) the lab gave ``ifname``."""
        return str(self.addresses[ifname].ip)

    def nft(self, script: str) -> None:
        self.run(["nft", "-f", "-"], input_text=script)

    def guard_drops(self) -> int:
        """Packets the output guard has dropped in this namespace so far."""
        text = self.run(["nft", "list", "table", "inet", GUARD_TABLE], check=False).stdout
        match = re.search(r"counter packets (\d+)", text)
        return int(match.group(1)) if match else 0

    def snmp_udp(self) -> dict[str, int]:
        """The ``Udp:`` counters of /proc/net/snmp as seen inside this namespace."""
        text = self.run(["cat", "/proc/net/snmp"]).stdout
        rows = [line.split()[1:] for line in text.splitlines() if line.startswith("Udp:")]
        return {key: int(value) for key, value in zip(rows[0], rows[1], strict=True)}

    def stop_processes(self, grace: float = 3.0) -> None:
        """SIGTERM every tracked process group, SIGKILL what is left after ``grace`` seconds."""
        for proc in self.processes:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        self.processes.clear()


class Lab:
    """Namespaces, links and processes of one test or bench, torn down by :meth:`close`.

    ``subnet`` is the /24 (inside 198.18.0.0/15) that hosts get addresses from: ``.1``, ``.2``...
    in the order they are attached.
    """

    def __init__(self, subnet: str | None = None, *, guard: bool = True) -> None:
        self.serial = next(_lab_serial)
        self.prefix = f"{run_prefix()}{self.serial}-"
        if subnet is None:
            subnet = f"198.18.{self.serial % 256}.0/24"
        self.subnet = ipaddress.IPv4Network(subnet)
        if not self.subnet.subnet_of(LAB_NET):
            raise LabError(f"lab subnet {self.subnet} is outside {LAB_NET}")
        self.guard = guard
        self.namespaces: dict[str, Namespace] = {}
        self._hosts = itertools.islice(self.subnet.hosts(), 250)
        self._closed = False

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add_namespace(self, short: str) -> Namespace:
        """Create namespace ``<prefix><short>`` with loopback up and the output guard."""
        if not re.fullmatch(r"[a-z0-9]{1,12}", short) or short in self.namespaces:
            raise LabError(f"bad or duplicate namespace name {short!r}")
        ns = Namespace(self.prefix + short, short)
        _run(["ip", "netns", "add", ns.name])
        self.namespaces[short] = ns  # registered at once: close() removes it whatever follows
        # IPv4 only: no IPv6 router solicitations or MLD reports chattering on lab links
        for key in ("all", "default"):
            ns.run(["sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=1"], check=False)
        _run(["ip", "-n", ns.name, "link", "set", "lo", "up"])
        if self.guard:
            ns.nft(guard_ruleset())
        return ns

    def _next_address(self) -> ipaddress.IPv4Interface:
        try:
            host = next(self._hosts)
        except StopIteration:
            raise LabError(f"no addresses left in {self.subnet}") from None
        return ipaddress.IPv4Interface(f"{host}/{self.subnet.prefixlen}")

    def _configure(self, ns: Namespace, ifname: str) -> None:
        address = self._next_address()
        # One frame per datagram, as on a real wire: without this a UDP GSO send (UDP_SEGMENT)
        # crosses the veth as one super-packet of up to 64 datagrams, so the loss rule would drop
        # (and an nft counter count) whole bursts instead of datagrams. Past gso_max_segs the
        # kernel segments in software before the veth.
        _run(["ip", "-n", ns.name, "link", "set", "dev", ifname, "gso_max_segs", "1"])
        _run(["ip", "-n", ns.name, "addr", "add", str(address), "dev", ifname])
        _run(["ip", "-n", ns.name, "link", "set", ifname, "up"])
        # LAB.md: a namespace has no default route, multicast needs one on the lab interface
        _run(["ip", "-n", ns.name, "route", "add", "224.0.0.0/4", "dev", ifname])
        ns.addresses[ifname] = address

    def pair(self, a: str, b: str, *, mtu: int = 1500) -> tuple[Namespace, Namespace]:
        """Two namespaces joined by one veth pair, ``eth0`` on each side, addressed."""
        ns_a, ns_b = self.add_namespace(a), self.add_namespace(b)
        _run(
            [
                "ip",
                "-n",
                ns_a.name,
                "link",
                "add",
                "eth0",
                "mtu",
                str(mtu),
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "mtu",
                str(mtu),
                "netns",
                ns_b.name,
            ]
        )
        self._configure(ns_a, "eth0")
        self._configure(ns_b, "eth0")
        return ns_a, ns_b

    def bridged(
        self, hosts: Sequence[str], *, bridge: str = "br"
    ) -> tuple[Namespace, list[Namespace]]:
        """Hosts each joined by a veth pair to a Linux bridge living in its own namespace.

        The bridge has multicast snooping off (no IGMP querier in the lab: flood groups to every
        port). Returns the bridge's namespace and the hosts, each with an addressed ``eth0``.
        """
        br_ns = self.add_namespace(bridge)
        _run(
            ["ip", "-n", br_ns.name, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0"]
        )
        _run(["ip", "-n", br_ns.name, "link", "set", "br0", "up"])
        members = []
        for index, short in enumerate(hosts):
            ns = self.add_namespace(short)
            port = f"p{index}"
            _run(
                [
                    "ip",
                    "-n",
                    br_ns.name,
                    "link",
                    "add",
                    port,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    ns.name,
                ]
            )
            _run(["ip", "-n", br_ns.name, "link", "set", port, "master", "br0"])
            _run(["ip", "-n", br_ns.name, "link", "set", port, "up"])
            self._configure(ns, "eth0")
            members.append(ns)
        return br_ns, members

    def close(self) -> None:
        """Stop every tracked process and delete every namespace; safe to call again."""
        if self._closed:
            return
        self._closed = True
        for ns in self.namespaces.values():
            with contextlib.suppress(Exception):
                ns.stop_processes()
        for ns in self.namespaces.values():
            kill_namespace(ns.name)  # also kills untracked processes left inside
        self.namespaces.clear()


def set_loss(ns: Namespace, percent: float) -> None:
    """Drop ``percent`` % of the UDP datagrams arriving in ``ns`` (0 removes the rule).

    Loss on the receiver's input hook (LAB.md): independent per receiver, as on a real LAN. nft
    ``numgen random mod 100`` has a resolution of 1 %; fractions are refused rather than rounded.
    """
    if percent != int(percent) or not 0 <= percent <= 100:
        raise LabError(f"loss must be a whole percentage 0..100, not {percent}")
    ns.run(["nft", "delete", "table", "inet", LOSS_TABLE], check=False)
    if percent == 0:
        return
    sample = "" if percent == 100 else f"numgen random mod 100 < {int(percent)} "
    ns.nft(f"""
table inet {LOSS_TABLE} {{
  chain input {{
    type filter hook input priority -10; policy accept;
    meta l4proto udp {sample}counter drop
  }}
}}
""")


def dropped_by_loss(ns: Namespace) -> int:
    """Datagrams the :func:`set_loss` rule of ``ns`` has dropped so far (0 without a rule)."""
    proc = ns.run(["nft", "list", "table", "inet", LOSS_TABLE], check=False)
    match = re.search(r"counter packets (\d+)", proc.stdout)
    return int(match.group(1)) if match else 0


def count_udp_from(ns: Namespace, source: str) -> None:
    """Count, on the input of ``ns``, every UDP datagram from ``source``, before any loss rule."""
    ns.run(["nft", "delete", "table", "inet", COUNT_TABLE], check=False)
    ns.nft(f"""
table inet {COUNT_TABLE} {{
  chain input {{
    type filter hook input priority -20; policy accept;
    ip saddr {source} meta l4proto udp counter
  }}
}}
""")


def counted_udp(ns: Namespace) -> int:
    """Datagrams counted by :func:`count_udp_from` in ``ns`` so far."""
    proc = ns.run(["nft", "list", "table", "inet", COUNT_TABLE], check=False)
    match = re.search(r"counter packets (\d+)", proc.stdout)
    return int(match.group(1)) if match else 0


def set_rate(
    ns: Namespace, ifname: str, rate: str | None, *, burst: str = "64kb", latency: str = "50ms"
) -> None:
    """Shape the egress of ``ifname`` in ``ns`` with tbf (e.g. ``"500mbit"``); None removes it."""
    if rate is None:
        ns.run(["tc", "qdisc", "del", "dev", ifname, "root"], check=False)
        return
    ns.run(
        [
            "tc",
            "qdisc",
            "replace",
            "dev",
            ifname,
            "root",
            "tbf",
            "rate",
            rate,
            "burst",
            burst,
            "latency",
            latency,
        ]
    )


def wait_for_line(stream: IO[Any], pattern: str, timeout: float) -> re.Match[str]:
    """Read ``stream`` until a line matches ``pattern``; bounded by ``timeout`` seconds.

    Reads the file descriptor directly (no Python buffering that select() cannot see).
    """
    import selectors

    regex = re.compile(pattern)
    fd = stream.fileno()
    buffer = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0:
            if not sel.select(timeout=left):
                break
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buffer += chunk
            for line in buffer.decode(errors="replace").splitlines():
                if match := regex.search(line):
                    return match
    raise LabError(f"no line matching {pattern!r} within {timeout}s; got {buffer!r}")


def sha256_file(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def lab(subnet: str | None = None) -> Iterator[Lab]:
    """``with lab() as lab:`` for scripts; the lab is closed whatever happens."""
    instance = Lab(subnet)
    try:
        yield instance
    finally:
        instance.close()
