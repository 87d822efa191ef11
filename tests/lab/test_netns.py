"""The lab library itself: links carry datagrams, the guard holds, teardown leaves nothing."""

from __future__ import annotations

import subprocess
import sys

import pytest
import wds_testsupport

from lab import fixtures, netns

pytestmark = pytest.mark.lab

# a bounded UDP exchange run inside a namespace: send COUNT datagrams, print how many came back
ECHO_SERVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 0))
print(s.getsockname()[1], flush=True)
s.settimeout(10)
for _ in range(int(sys.argv[2])):
    try:
        data, peer = s.recvfrom(2048)
    except TimeoutError:
        break
    s.sendto(data, peer)
"""

SENDER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.2)
got = 0
for i in range(int(sys.argv[3])):
    try:
        s.sendto(b"x%d" % i, (sys.argv[1], int(sys.argv[2])))
        s.recvfrom(2048)
        got += 1
    except TimeoutError:
        pass
    except PermissionError:
        print("EPERM", flush=True)
        sys.exit(3)
print(got)
"""


def exchange(server: netns.Namespace, client: netns.Namespace, count: int) -> int:
    echo = server.popen([sys.executable, "-c", ECHO_SERVER, server.addr(), str(count)], text=True)
    assert echo.stdout is not None
    port = netns.wait_for_line(echo.stdout, r"^(\d+)$", timeout=10).group(1)
    out = client.run([sys.executable, "-c", SENDER, server.addr(), port, str(count)], timeout=60)
    return int(out.stdout.strip())


def test_pair_carries_datagrams(lab_pair: tuple[netns.Namespace, netns.Namespace]) -> None:
    srv, cli = lab_pair
    assert srv.addr().startswith("198.18.") and cli.addr().startswith("198.18.")
    assert exchange(srv, cli, 20) == 20


GSO_BURST = """
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_UDP, 103, 100)  # UDP_SEGMENT: 100-byte datagrams
s.sendto(b"x" * 1600, (sys.argv[1], 9))  # one send, 16 datagrams
"""


def test_udp_gso_bursts_cross_the_link_as_single_datagrams(
    lab_pair: tuple[netns.Namespace, netns.Namespace],
) -> None:
    srv, cli = lab_pair
    assert "gso_max_segs 1 " in srv.run(["ip", "-d", "link", "show", "eth0"]).stdout
    netns.count_udp_from(cli, srv.addr())
    srv.run([sys.executable, "-c", GSO_BURST, cli.addr()])
    assert netns.counted_udp(cli) == 16


def test_bridge_joins_hosts_with_snooping_off(lab: netns.Lab) -> None:
    br, (a, b, c) = lab.bridged(["a", "b", "c"])
    details = br.run(["ip", "-d", "link", "show", "br0"]).stdout
    assert "mcast_snooping 0" in details
    assert exchange(a, c, 5) == 5
    assert exchange(b, a, 5) == 5


def test_guard_drops_destinations_outside_the_lab(
    lab_pair: tuple[netns.Namespace, netns.Namespace],
) -> None:
    _, cli = lab_pair
    # a route to TEST-NET-1 through the lab link: were the guard missing, the datagram would
    # still only reach the lab's own peer namespace
    cli.run(["ip", "route", "add", "192.0.2.0/24", "dev", "eth0"])
    before = cli.guard_drops()
    proc = cli.run([sys.executable, "-c", SENDER, "192.0.2.1", "9", "1"], check=False)
    assert proc.returncode == 3 and "EPERM" in proc.stdout
    assert cli.guard_drops() == before + 1


def test_loss_drops_and_counts(lab_pair: tuple[netns.Namespace, netns.Namespace]) -> None:
    srv, cli = lab_pair
    netns.set_loss(cli, 100)
    assert exchange(srv, cli, 5) == 0
    assert netns.dropped_by_loss(cli) == 5
    netns.set_loss(cli, 0)
    assert netns.dropped_by_loss(cli) == 0
    assert exchange(srv, cli, 5) == 5
    with pytest.raises(netns.LabError):
        netns.set_loss(cli, 0.5)


def test_rate_installs_tbf(lab_pair: tuple[netns.Namespace, netns.Namespace]) -> None:
    srv, _ = lab_pair
    netns.set_rate(srv, "eth0", "500mbit")
    assert "tbf" in srv.run(["tc", "qdisc", "show", "dev", "eth0"]).stdout
    netns.set_rate(srv, "eth0", None)
    assert "tbf" not in srv.run(["tc", "qdisc", "show", "dev", "eth0"]).stdout


def test_close_kills_processes_and_removes_namespaces() -> None:
    fixtures.require_root()
    lab = netns.Lab()
    try:
        srv, _ = lab.pair("srv", "cli")
        sleeper = srv.popen(["sleep", "600"])
        names = [ns.name for ns in lab.namespaces.values()]
        assert all(name.startswith(netns.run_prefix()) for name in names)
    finally:
        lab.close()
    assert sleeper.poll() is not None
    left = netns.list_namespaces()
    assert not set(names) & set(left)
    lab.close()  # idempotent


def test_cleanup_stale_removes_only_dead_runs() -> None:
    fixtures.require_root()
    dead = 4_000_000  # above any pid_max Linux allows by default: no such process
    assert not netns._pid_alive(dead)
    stale = f"{netns.run_prefix(dead)}1-x"
    mine = f"{netns.run_prefix()}999-x"
    try:
        subprocess.run(["ip", "netns", "add", stale], check=True)
        subprocess.run(["ip", "netns", "add", mine], check=True)
        removed = netns.cleanup_stale()
        assert stale in removed and mine not in removed
        left = netns.list_namespaces()
        assert stale not in left and mine in left
    finally:
        netns.kill_namespace(stale)
        netns.kill_namespace(mine)


def test_require_root_fails_in_ci_and_skips_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netns, "capabilities_missing", lambda: "needs root (test)")
    monkeypatch.setattr(wds_testsupport, "IN_CI", True)
    with pytest.raises(pytest.fail.Exception, match="CI must provide this: needs root"):
        fixtures.require_root()
    monkeypatch.setattr(wds_testsupport, "IN_CI", False)
    with pytest.raises(pytest.skip.Exception, match="needs root"):
        fixtures.require_root()


def test_lab_refuses_subnets_outside_the_benchmark_range() -> None:
    with pytest.raises(netns.LabError):
        netns.Lab("10.0.0.0/24")


MCAST_RECEIVER = """
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("", int(sys.argv[2])))
mreq = struct.pack("4s4s", socket.inet_aton(sys.argv[1]), socket.inet_aton(sys.argv[3]))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
print("joined", flush=True)
s.settimeout(5)
data, _ = s.recvfrom(2048)
print(data.decode(), flush=True)
"""

MCAST_SENDER = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
for _ in range(20):  # bounded: a few copies in case a receiver joined late
    s.sendto(b"hello-group", (sys.argv[1], int(sys.argv[2])))
    time.sleep(0.05)
"""


def test_bridge_floods_multicast_to_every_host(lab: netns.Lab) -> None:
    group, port = "239.255.42.1", "45001"
    _, (sender, *receivers) = lab.bridged(["s", "r1", "r2"])
    procs = []
    for ns in receivers:
        proc = ns.popen([sys.executable, "-c", MCAST_RECEIVER, group, port, ns.addr()], text=True)
        assert proc.stdout is not None
        netns.wait_for_line(proc.stdout, "^joined$", timeout=10)
        procs.append(proc)
    sender.run([sys.executable, "-c", MCAST_SENDER, group, port], timeout=30)
    for proc in procs:
        out, _ = proc.communicate(timeout=10)
        assert "hello-group" in out
