"""The lab's private network: namespaces, one bridge, veth links, taps, nftables guards.

Everything lives in network namespaces named ``wdslab-TAG-*``; nothing is created in the host's
own namespace (a veth pair is created inside a lab namespace and its peer moved to another), so
deleting the namespaces removes every link, tap and rule, and kills the processes inside. The
caller records each namespace name in the lab's state file *before* creating it, which is what
lets ``wds lab down`` clean up after a crash.

Every host namespace gets an nftables output guard: only 198.18.0.0/15, 239.0.0.0/8 and the DHCP
broadcast address may be reached (LAB.md), so a wrong address fails instead of leaking.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import subprocess
from collections.abc import Sequence

from wds.errors import WdsError

LAB_NET = ipaddress.IPv4Network("198.18.0.0/15")
BRIDGE = "br0"
GUARD = """
table inet wds_guard {
  chain output {
    type filter hook output priority 0; policy accept;
    oifname "lo" accept
    ip daddr { 198.18.0.0/15, 239.0.0.0/8, 255.255.255.255 } accept
    counter drop comment "wds lab guard: destination outside the lab"
  }
}
"""


class LabNetError(WdsError):
    """A lab network command failed (names the command and its error)."""


def run(cmd: Sequence[str], *, check: bool = True, input_text: str | None = None) -> str:
    proc = subprocess.run(
        list(cmd), capture_output=True, text=True, timeout=60, input=input_text, check=False
    )
    if check and proc.returncode != 0:
        raise LabNetError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def netns_exec(ns: str, cmd: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *cmd]


def check_subnet(text: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.IPv4Network(text)
    except ValueError as exc:
        raise LabNetError(f"--subnet {text!r}: {exc}") from None
    if net.prefixlen != 24 or not net.subnet_of(LAB_NET):
        raise LabNetError(f"--subnet {text}: a /24 inside {LAB_NET} (LAB.md), e.g. 198.19.77.0/24")
    return net


def existing_namespaces() -> set[str]:
    out = run(["ip", "netns", "list"], check=False)
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def add_namespace(name: str, *, guard: bool = True) -> None:
    run(["ip", "netns", "add", name])
    for key in ("all", "default"):  # IPv4 only: no router solicitations on lab links
        run(netns_exec(name, ["sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=1"]), check=False)
    run(["ip", "-n", name, "link", "set", "lo", "up"])
    if guard:
        run(netns_exec(name, ["nft", "-f", "-"]), input_text=GUARD)


def add_bridge(ns: str) -> None:
    # no IGMP querier in the lab: flood multicast to every port (LAB.md)
    run(["ip", "-n", ns, "link", "add", BRIDGE, "type", "bridge", "mcast_snooping", "0"])
    run(["ip", "-n", ns, "link", "set", BRIDGE, "up"])


def attach_host(bridge_ns: str, port: str, host_ns: str, address: str, prefixlen: int) -> None:
    """A veth from ``bridge_ns`` (port ``port`` on the bridge) to ``eth0`` in ``host_ns``."""
    run(
        [
            *("ip", "-n", bridge_ns, "link", "add", port, "type", "veth"),
            *("peer", "name", "eth0", "netns", host_ns),
        ]
    )
    run(["ip", "-n", bridge_ns, "link", "set", port, "master", BRIDGE, "up"])
    run(["ip", "-n", host_ns, "addr", "add", f"{address}/{prefixlen}", "dev", "eth0"])
    run(["ip", "-n", host_ns, "link", "set", "eth0", "up"])
    # a namespace has no default route: multicast needs one on the lab interface (LAB.md)
    run(["ip", "-n", host_ns, "route", "add", "224.0.0.0/4", "dev", "eth0"])


def add_tap(bridge_ns: str, tap: str) -> None:
    run(["ip", "-n", bridge_ns, "tuntap", "add", "dev", tap, "mode", "tap"])
    run(["ip", "-n", bridge_ns, "link", "set", tap, "master", BRIDGE, "up"])


def set_tap_loss(bridge_ns: str, tap: str, percent: int) -> None:
    """Drop ``percent`` % of the multicast datagrams the bridge forwards to ``tap``.

    The kernel here has no netem (LAB.md): an nftables bridge rule on the tap's egress instead,
    only for multicast (239.0.0.0/8) so DHCP, TFTP and HTTP boot normally.
    """
    table = f"wds_loss_{tap}"
    run(netns_exec(bridge_ns, ["nft", "delete", "table", "bridge", table]), check=False)
    if percent <= 0:
        return
    sample = "" if percent >= 100 else f"numgen random mod 100 < {percent} "
    script = f"""
table bridge {table} {{
  chain forward {{
    type filter hook forward priority -10; policy accept;
    oifname "{tap}" ip daddr 239.0.0.0/8 {sample}counter drop
  }}
}}
"""
    run(netns_exec(bridge_ns, ["nft", "-f", "-"]), input_text=script)


def tap_loss_dropped(bridge_ns: str, tap: str) -> int:
    out = run(
        netns_exec(bridge_ns, ["nft", "list", "table", "bridge", f"wds_loss_{tap}"]), check=False
    )
    for part in out.split("counter packets ")[1:]:
        return int(part.split()[0])
    return 0


def kill_pid(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


def delete_namespace(name: str) -> bool:
    """Kill every process inside ``name`` and delete it; False when it did not exist."""
    if name not in existing_namespaces():
        return False
    for token in run(["ip", "netns", "pids", name], check=False).split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(token), signal.SIGKILL)
    run(["ip", "netns", "del", name], check=False)
    return True
