#!/usr/bin/env python3
"""TFTP throughput bench: wds against tftpd-hpa, atftpd and dnsmasq, through a namespace link.

One run builds a lab (server namespace <-> client namespace, one veth pair, 198.18.x.0/24), starts
every server at once, each on port 69 of an address of its own in the server namespace (a port
private to that namespace: no clash with services of the host), and fetches the same file from
each with the same clients (curl for lockstep transfers, atftp for windowsize runs), the servers
taking turns within each repetition so load from other work hits them alike. It checks every
byte, and records throughput, datagrams the server sent (counted on the wire: nftables on the
client's input, before the loss rule), its send calls (UdpOutDatagrams: one per UDP GSO burst),
and the CPU the server and the client used. Then it repeats at 1 % loss (nftables on the
client's input), with a smaller file and a per-transfer time limit, and prints tables, ratios and
PASS/FAIL goals.

Run as root:  python bench/tftp_bench.py [--size 64] [--quick] [--json out.json]
See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import platform
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from lab import netns, tftp_peers  # noqa: E402 - the lab library lives with the tests

PORT = 69  # inside the server namespace only
MIB = 1024 * 1024
ATFTPD_CANDIDATES = ("atftpd", "/opt/wds-atftpd/usr/sbin/atftpd")
CPU_BOUND = 85.0  # % of one core


# ------------------------------------------------------------------------------ servers


@dataclass(frozen=True)
class ServerSpec:
    name: str
    binary: str | None
    note: str = ""

    def argv(self, root: Path, host: str) -> list[str]:
        assert self.binary is not None
        if self.name == "wds":
            return [
                *tftp_peers.wds_command(),
                "tftp",
                "--root",
                str(root),
                "--listen",
                host,
                "--port",
                str(PORT),
            ]
        if self.name == "tftpd-hpa":
            # -L: foreground; -s: chroot to root; -u root: no 'tftp' user needed in the lab
            return [self.binary, "-L", "-s", str(root), "--address", f"{host}:{PORT}", "-u", "root"]
        if self.name == "atftpd":
            return [
                self.binary,
                "--daemon",
                "--no-fork",
                "--port",
                str(PORT),
                "--bind-address",
                host,
                "--user",
                "root",
                "--group",
                "root",
                "--logfile",
                "/dev/null",
                str(root),
            ]
        if self.name == "dnsmasq":
            # TFTP only: --port=0 turns DNS off; no config file, no pid file, no DHCP
            return [
                self.binary,
                "-d",
                "--conf-file=/dev/null",
                "--port=0",
                "--enable-tftp",
                f"--tftp-root={root}",
                f"--listen-address={host}",
                "--bind-interfaces",
                "--user=root",
                "--pid-file=",
                "--log-facility=-",
            ]
        raise ValueError(self.name)


def find_servers() -> list[ServerSpec]:
    wds = tftp_peers.wds_command()[0] if tftp_peers.wds_tftp_available() else None
    atftpd = next((p for p in map(shutil.which, ATFTPD_CANDIDATES) if p), None)
    atftpd = os.environ.get("WDS_ATFTPD", atftpd)
    return [
        ServerSpec("wds", wds),
        ServerSpec("tftpd-hpa", shutil.which("in.tftpd")),
        ServerSpec("atftpd", atftpd),
        ServerSpec("dnsmasq", shutil.which("dnsmasq")),
    ]


def version_of(spec: ServerSpec) -> str:
    flags = {"wds": ["--version"], "tftpd-hpa": ["-V"], "atftpd": ["-V"], "dnsmasq": ["-v"]}
    cmd = tftp_peers.wds_command() if spec.name == "wds" else [spec.binary or "false"]
    try:
        out = subprocess.run([*cmd, *flags[spec.name]], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else "?"


class CpuMeter:
    """CPU seconds of a server and all its children (cgroup v1 cpuacct, else /proc of the pid)."""

    def __init__(self, name: str) -> None:
        self.path: Path | None = Path("/sys/fs/cgroup/cpuacct") / name
        try:
            self.path.mkdir()
        except OSError:
            self.path = None
        self.pid = 0

    def attach(self, pid: int) -> None:
        self.pid = pid
        if self.path is not None:
            try:
                (self.path / "cgroup.procs").write_text(str(pid))
            except OSError:
                self.path = None

    def seconds(self) -> float:
        if self.path is not None:
            return int((self.path / "cpuacct.usage").read_text()) / 1e9
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.rmdir()


def wait_listening(
    ns: netns.Namespace, host: str, proc: subprocess.Popen[bytes], timeout: float = 20
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise netns.LabError(f"server exited with {proc.returncode}")
        out = ns.run(["ss", "-Hlun", "src", f"{host}:{PORT}"], check=False).stdout
        if f":{PORT}" in out:
            return
        time.sleep(0.05)
    raise netns.LabError(f"server not listening on {host}:{PORT} after {timeout}s")


@contextlib.contextmanager
def running(
    spec: ServerSpec, ns: netns.Namespace, host: str, root: Path, logdir: Path, pin: list[str]
) -> Iterator[CpuMeter]:
    """Run one server on ``host``:69 of ``ns`` (the lab's processes are stopped by the caller)."""
    log = (logdir / f"{spec.name}.log").open("ab")
    meter = CpuMeter(f"{netns.run_prefix()}bench-{spec.name}")
    proc = ns.popen([*pin, *spec.argv(root, host)], stdout=log, stderr=log)
    try:
        meter.attach(proc.pid)
        wait_listening(ns, host, proc)
        yield meter
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, 15)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        log.close()
        meter.close()


# ------------------------------------------------------------------------------ one transfer


@dataclass
class Result:
    server: str
    client: str
    blksize: int
    windowsize: int  # requested
    effective_windowsize: int  # what the server's OACK granted (1 when it ignores the option)
    loss: int
    size: int
    status: str  # ok, timeout, failed, corrupt
    seconds: float
    mib_s: float
    datagrams: int  # on the wire
    sends: int  # UdpOutDatagrams of the server namespace: one per send call, GSO burst or not
    server_cpu_pct: float
    client_cpu_pct: float
    detail: str = ""

    @property
    def bottleneck(self) -> str:
        if self.server_cpu_pct >= CPU_BOUND:
            return "server CPU"
        if self.client_cpu_pct >= CPU_BOUND:
            return "client CPU"
        if self.loss:
            return "loss recovery"
        if self.server_cpu_pct + self.client_cpu_pct >= CPU_BOUND:
            # stop-and-wait (per block or per window): the two sides take turns, together
            # using about one core; a faster side shortens every turn
            return "turn-taking"
        return "round trips"


def client_argv(
    client: str, host: str, remote: str, out: Path, blksize: int, window: int, limit: float
) -> list[str]:
    if client == "curl":
        return tftp_peers.curl_get(host, PORT, remote, out, blksize=blksize, max_time=limit)
    options: dict[str, int | None] = {"blksize": blksize}
    if window > 1:
        options["windowsize"] = window
    return tftp_peers.atftp_get(host, PORT, remote, out, options)


def pick(runs: list[Result]) -> Result:
    """The median run by throughput, or the first that did not succeed (never hide a failure)."""
    bad = [r for r in runs if r.status != "ok"]
    if bad:
        return bad[0]
    return sorted(runs, key=lambda r: r.mib_s)[len(runs) // 2]


def transfer(
    srv: netns.Namespace,
    cli: netns.Namespace,
    meter: CpuMeter,
    *,
    host: str,
    server: str,
    client: str,
    blksize: int,
    window: int,
    effective: int,
    loss: int,
    file: Path,
    digest: str,
    limit: float,
    outdir: Path,
    pin: list[str],
) -> Result:
    out = outdir / "received.bin"
    out.unlink(missing_ok=True)
    argv = client_argv(client, host, file.name, out, blksize, window, limit)
    wire0, sent0, cpu0 = netns.counted_udp(cli), srv.snmp_udp()["OutDatagrams"], meter.seconds()
    usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    proc = cli.popen([*pin, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, err = proc.communicate(timeout=limit)
        status = "ok" if proc.returncode == 0 else "failed"
    except subprocess.TimeoutExpired:
        cli.stop_processes(grace=1)
        err, status = b"", "timeout"
    seconds = time.monotonic() - start
    usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu1, sent1, wire1 = meter.seconds(), srv.snmp_udp()["OutDatagrams"], netns.counted_udp(cli)
    if proc in cli.processes:
        cli.processes.remove(proc)
    got = out.stat().st_size if out.exists() else 0
    if status == "ok" and (got != file.stat().st_size or netns.sha256_file(out) != digest):
        status = "corrupt"
    client_cpu = (usage1.ru_utime + usage1.ru_stime) - (usage0.ru_utime + usage0.ru_stime)
    moved = file.stat().st_size if status == "ok" else got
    detail = err.decode(errors="replace").strip()[-200:] if status == "failed" else ""
    if status == "timeout":
        detail = f"{got / MIB:.1f} MiB in {limit:.0f} s"
    out.unlink(missing_ok=True)
    return Result(
        server,
        client,
        blksize,
        window,
        effective,
        loss,
        file.stat().st_size,
        status,
        round(seconds, 3),
        round(moved / MIB / seconds, 4) if seconds else 0.0,
        wire1 - wire0,
        sent1 - sent0,
        round(100 * (cpu1 - cpu0) / seconds, 1),
        round(100 * client_cpu / seconds, 1),
        detail,
    )


def granted_windowsize(cli: netns.Namespace, host: str, probe: str, window: int) -> int:
    """Ask the running server for ``window`` with a raw RRQ from the client namespace."""
    code = f"""
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
s.sendto({tftp_peers.build_request(1, probe, {"windowsize": str(window)})!r}, ({host!r}, {PORT}))
reply, peer = s.recvfrom(65536)
s.sendto(struct.pack("!HH", 5, 0) + b"probe done\\0", peer)
print(reply.hex())
"""
    proc = cli.run([sys.executable, "-c", code], check=False, timeout=20)
    reply = bytes.fromhex(proc.stdout.strip() or "")
    if len(reply) < 2 or struct.unpack_from("!H", reply)[0] != tftp_peers.OACK:
        return 1
    return int(tftp_peers.parse_oack(reply[2:]).get("windowsize", "1"))


# ------------------------------------------------------------------------------ the plan


@dataclass(frozen=True)
class Case:
    client: str
    blksize: int
    window: int


def plan(blksizes: list[int], windows: list[int]) -> list[Case]:
    cases = [Case("curl", b, 1) for b in blksizes]
    cases += [Case("atftp", b, w) for b in blksizes for w in windows]
    return cases


def run_all(args: argparse.Namespace, specs: list[ServerSpec], work: Path) -> list[Result]:
    results: list[Result] = []
    files = {}
    for label, mib in (("big", args.size), ("lossy", args.loss_size)):
        path = work / "root" / f"{label}.bin"
        path.parent.mkdir(exist_ok=True)
        with path.open("wb") as handle:  # incompressible, made once per run
            for _ in range(int(mib)):
                handle.write(os.urandom(MIB))
        files[label] = (path, netns.sha256_file(path))
    (work / "root" / "probe.txt").write_bytes(b"probe\n")
    cases = plan(args.blksizes, args.windowsizes)
    present = []
    for spec in specs:
        if spec.binary is None:
            print(f"# {spec.name}: not installed, skipped", flush=True)
        else:
            present.append(spec)
    with netns.lab(args.subnet) as lab, contextlib.ExitStack() as stack:
        srv, cli = lab.pair("srv", "cli")  # one datagram per frame (gso_max_segs 1)
        netns.count_udp_from(cli, args.subnet)  # every server address is in the lab subnet
        if args.rate:
            netns.set_rate(srv, "eth0", args.rate)
        # Every server runs at once, each on port 69 of an address of its own, so lossless
        # repetitions can take turns: load from other work on the host then hits every server
        # alike instead of whichever one happened to run during it. An idle server sleeps.
        hosts = server_addresses(srv, args.subnet, len(present))
        meters: dict[str, CpuMeter] = {}
        granted: dict[str, dict[int, int]] = {}
        for spec, host in zip(present, hosts, strict=True):
            meters[spec.name] = stack.enter_context(
                running(spec, srv, host, work / "root", work, pin_argv(args.cpus, 0))
            )
            granted[spec.name] = {
                w: granted_windowsize(cli, host, "probe.txt", w) for w in args.windowsizes
            }
        address = {spec.name: host for spec, host in zip(present, hosts, strict=True)}
        for loss in args.loss:
            netns.set_loss(cli, loss)
            label = "lossy" if loss else "big"
            limit = args.loss_timeout if loss else args.timeout
            for size_label in [label] + (["lossy"] if loss == 0 else []):
                for case in cases:
                    # wds's lossless baseline at the loss file size: the datagram goal needs it
                    names = [
                        spec.name
                        for spec in present
                        if (size_label == label or spec.name == "wds")
                        and not (
                            case.client == "atftp"
                            and case.window > 1
                            and granted[spec.name][case.window] == 1
                        )  # a server that ignores windowsize: its window-1 run stands
                    ]
                    runs: dict[str, list[Result]] = {name: [] for name in names}
                    for rep in range(1 if loss else args.repeat):
                        turn = rep % len(names) if names else 0
                        for name in names[turn:] + names[:turn]:  # a different one goes first
                            path, digest = files[size_label]
                            runs[name].append(
                                transfer(
                                    srv,
                                    cli,
                                    meters[name],
                                    host=address[name],
                                    server=name,
                                    client=case.client,
                                    blksize=case.blksize,
                                    window=case.window,
                                    effective=(
                                        granted[name][case.window] if case.client == "atftp" else 1
                                    ),
                                    loss=loss,
                                    file=path,
                                    digest=digest,
                                    limit=limit,
                                    outdir=work,
                                    pin=pin_argv(args.cpus, 1),
                                )
                            )
                    for name in names:
                        r = pick(runs[name])
                        results.append(r)
                        print(
                            f"# {r.server:9} {r.client:5} blk {r.blksize:5} win "
                            f"{r.windowsize:2} loss {r.loss}% {r.size / MIB:5.0f} MiB: "
                            f"{r.status:7} {r.mib_s:8.3f} MiB/s {r.datagrams:8} dgrams "
                            f"{r.sends:8} sends "
                            f"srv {r.server_cpu_pct:5.1f}% cli {r.client_cpu_pct:5.1f}% "
                            f"{r.detail}",
                            flush=True,
                        )
        netns.set_loss(cli, 0)
        srv.stop_processes()
    order = {spec.name: i for i, spec in enumerate(present)}
    results.sort(key=lambda r: order[r.server])  # stable: each server's runs in plan order
    return results


def server_addresses(srv: netns.Namespace, subnet: str, count: int) -> list[str]:
    """``count`` addresses on the server's eth0: its own, then extra ones from the lab subnet."""
    network = ipaddress.IPv4Network(subnet)
    extra = [str(network.network_address + 200 + i) for i in range(max(0, count - 1))]
    for host in extra:
        srv.run(["ip", "addr", "add", f"{host}/{network.prefixlen}", "dev", "eth0"])
    return [srv.addr(), *extra]


# ------------------------------------------------------------------------------ report


def pin_argv(cpus: str, side: int) -> list[str]:
    """``taskset -c N`` for the server (side 0) or the client (side 1), or nothing."""
    if cpus == "none":
        return []
    return ["taskset", "-c", cpus.split(",")[side]]


def find(results: list[Result], **want: object) -> Result | None:
    for r in results:
        if all(getattr(r, k) == v for k, v in want.items()):
            return r
    return None


def ratio(a: Result | None, b: Result | None) -> float | None:
    if a is None or b is None or b.mib_s == 0:
        return None
    return a.mib_s / b.mib_s


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def print_table(results: list[Result], loss: int) -> None:
    rows = [r for r in results if r.loss == loss]
    print(f"\n## {'lossless' if loss == 0 else f'{loss}% loss on the client input'}")
    print(
        f"{'server':10} {'client':6} {'blk':>5} {'win':>7} {'MiB':>4} {'status':8} "
        f"{'MiB/s':>8} {'dgrams':>8} {'sends':>8} {'srvCPU':>7} {'cliCPU':>7} {'bottleneck':12} "
        f"{'wds/hpa':>8} {'wds/atftpd':>10} {'wds/dnsmasq':>11}"
    )
    for r in rows:
        win = (
            f"{r.windowsize}"
            if r.windowsize == r.effective_windowsize
            else f"{r.windowsize}->{r.effective_windowsize}"
        )
        ratios = ["", "", ""]
        if r.server == "wds":
            for i, other in enumerate(("tftpd-hpa", "atftpd", "dnsmasq")):
                peer = find(
                    results,
                    server=other,
                    client=r.client,
                    blksize=r.blksize,
                    loss=r.loss,
                    size=r.size,
                    windowsize=r.windowsize,
                )
                if peer is None:  # the peer ignores windowsize: compare with its window-1 run
                    peer = find(
                        results,
                        server=other,
                        client=r.client,
                        blksize=r.blksize,
                        loss=r.loss,
                        size=r.size,
                        windowsize=1,
                    )
                ratios[i] = fmt_ratio(ratio(r, peer))
        print(
            f"{r.server:10} {r.client:6} {r.blksize:5} {win:>7} {r.size / MIB:4.0f} "
            f"{r.status:8} {r.mib_s:8.3f} {r.datagrams:8} {r.sends:8} {r.server_cpu_pct:6.1f}% "
            f"{r.client_cpu_pct:6.1f}% {r.bottleneck:12} {ratios[0]:>8} {ratios[1]:>10} "
            f"{ratios[2]:>11}" + (f"  [{r.detail}]" if r.detail else "")
        )


def goals(results: list[Result], args: argparse.Namespace) -> list[tuple[bool | None, str]]:
    out: list[tuple[bool | None, str]] = []
    big = args.size * MIB
    lossy = args.loss_size * MIB
    for w in [w for w in args.windowsizes if w >= 16]:
        mine = find(
            results, server="wds", client="atftp", blksize=1468, windowsize=w, loss=0, size=big
        )
        hpa = find(
            results,
            server="tftpd-hpa",
            client="atftp",
            blksize=1468,
            windowsize=1,
            loss=0,
            size=big,
        )
        atf = find(
            results, server="atftpd", client="atftp", blksize=1468, windowsize=w, loss=0, size=big
        )
        r1, r2 = ratio(mine, hpa), ratio(mine, atf)
        out.append(
            (
                None if r1 is None else r1 >= 3.0,
                f"lossless, atftp blksize 1468 windowsize {w}: wds/tftpd-hpa "
                f"{fmt_ratio(r1)} >= 3x (tftpd-hpa has no windowsize: lockstep)",
            )
        )
        out.append(
            (
                None if r2 is None else r2 >= 1.0,
                f"lossless, atftp blksize 1468 windowsize {w}: wds/atftpd {fmt_ratio(r2)} >= 1x",
            )
        )
    wds_lossy = [r for r in results if r.server == "wds" and r.loss > 0]
    failed = [r for r in wds_lossy if r.status != "ok"]
    out.append(
        (
            None if not wds_lossy else not failed,
            f"{args.loss[-1]}% loss: no wds transfer fails ({len(wds_lossy) - len(failed)}/"
            f"{len(wds_lossy)} ok)",
        )
    )
    for r in wds_lossy:
        hpa = find(
            results,
            server="tftpd-hpa",
            client=r.client,
            blksize=r.blksize,
            windowsize=1,
            loss=r.loss,
            size=r.size,
        )
        ra = ratio(r, hpa)
        out.append(
            (
                None if ra is None else ra >= 10.0,
                f"{r.loss}% loss, {r.client} blksize {r.blksize} windowsize {r.windowsize}: "
                f"wds/tftpd-hpa {fmt_ratio(ra)} >= 10x"
                + (f" (tftpd-hpa {hpa.status})" if hpa and hpa.status != "ok" else ""),
            )
        )
        base = find(
            results,
            server="wds",
            client=r.client,
            blksize=r.blksize,
            windowsize=r.windowsize,
            loss=0,
            size=lossy,
        )
        if r.status != "ok":
            out.append(
                (
                    False,
                    f"{r.loss}% loss, {r.client} blksize {r.blksize} windowsize "
                    f"{r.windowsize}: wds transfer {r.status}, datagram count not comparable",
                )
            )
        elif base is not None and base.datagrams:
            q = r.datagrams / base.datagrams
            out.append(
                (
                    q <= 1.2,
                    f"{r.loss}% loss, {r.client} blksize {r.blksize} windowsize "
                    f"{r.windowsize}: wds datagrams {r.datagrams} = {q:.3f}x lossless "
                    f"{base.datagrams} <= 1.2x",
                )
            )
    return out


def conditions(args: argparse.Namespace, specs: list[ServerSpec]) -> list[str]:
    clients = []
    for tool, flag in (("curl", "--version"), ("atftp", "-V")):
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            proc = subprocess.run([tool, flag], capture_output=True, text=True, timeout=10)
            clients.append((proc.stdout or proc.stderr).splitlines()[0])
    return [
        f"host: {platform.node()} {platform.machine()} {os.cpu_count()} CPUs, kernel "
        f"{platform.release()}; load average {args.load[0][0]:.2f} at the start, "
        f"{args.load[1][0]:.2f} at the end (other work on the host skews the figures)",
        "link: one veth pair, server namespace <-> client namespace, MTU 1500, "
        + (f"tbf {args.rate} on the server's egress" if args.rate else "no rate limit (tbf off)"),
        f"loss: {', '.join(f'{x}%' for x in args.loss)} (nftables numgen drop of UDP on the "
        "client namespace's input, i.e. data packets; ACKs are not dropped)",
        f"files: {args.size} MiB lossless, {args.loss_size} MiB with loss; time limit "
        f"{args.timeout:.0f} s lossless, {args.loss_timeout:.0f} s with loss per transfer; "
        f"lossless figures are the median of {args.repeat} runs, lossy ones single runs",
        "servers: "
        + "; ".join(f"{s.name} = {version_of(s) if s.binary else 'absent'}" for s in specs),
        "clients: " + "; ".join(clients) + " (curl: lockstep with blksize; atftp: windowsize)",
        "CPUs: "
        + (
            "scheduler's choice (no pinning)"
            if args.cpus == "none"
            else f"server pinned to CPU {args.cpus.split(',')[0]}, client to CPU "
            f"{args.cpus.split(',')[1]} (taskset)"
        ),
        "dgrams: UDP datagrams from the server counted on the client namespace's input before "
        "the loss rule (the link carries one datagram per frame: gso_max_segs 1, so a UDP GSO "
        "burst is segmented before the veth and loses datagrams one by one); sends: the server "
        "namespace's UdpOutDatagrams, one per send call (a GSO burst counts once)",
        f"CPU: server = its cgroup (children included), client = rusage; >= {CPU_BOUND:.0f}% "
        "of one core counts as CPU-bound. wds busy-polls its transfer socket for the client's "
        "answer while a single transfer runs (docs/TFTP.md, Performance): its server CPU "
        "includes that polling, so a wds 'server CPU' row is a core kept awake, not one "
        "saturated by work",
        "servers without windowsize (their OACK omits it) run only at window 1; shown as "
        "requested->granted and compared at that",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=64, help="MiB, lossless runs (default 64)")
    parser.add_argument("--loss-size", type=int, default=8, help="MiB at loss (default 8)")
    parser.add_argument("--loss", default="0,1", help="loss percentages (default 0,1)")
    parser.add_argument("--blksizes", default="512,1468")
    parser.add_argument("--windowsizes", default="1,16,64")
    parser.add_argument("--servers", default="wds,tftpd-hpa,atftpd,dnsmasq")
    parser.add_argument("--timeout", type=float, default=120, help="s per lossless transfer")
    parser.add_argument("--loss-timeout", type=float, default=60, help="s per lossy transfer")
    parser.add_argument("--rate", default=None, help="tbf rate on the server egress, e.g. 500mbit")
    parser.add_argument("--subnet", default="198.19.69.0/24")
    parser.add_argument(
        "--cpus",
        default="0,1",
        help="pin server,client to these CPUs (taskset; default 0,1: one core each, as two "
        "machines would have); 'none' lets the scheduler place them",
    )
    parser.add_argument(
        "--quick", action="store_true", help="blksize 1468, windowsize 1,16, 16 MiB: a few minutes"
    )
    parser.add_argument("--repeat", type=int, default=3, help="lossless runs per case (median)")
    parser.add_argument("--json", type=Path, help="write every result here")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.blksizes, args.windowsizes = min(args.size, 16), "1468", "1,16"
    args.loss = [int(x) for x in args.loss.split(",")]
    args.blksizes = [int(x) for x in args.blksizes.split(",")]
    args.windowsizes = [int(x) for x in args.windowsizes.split(",")]
    if (missing := netns.capabilities_missing()) is not None:
        print(f"tftp_bench: {missing}", file=sys.stderr)
        return 2
    for tool, package in (("curl", "curl"), ("atftp", "atftp"), ("ss", "iproute2")):
        if shutil.which(tool) is None:
            print(f"tftp_bench: {tool} not found (apt-get install {package})", file=sys.stderr)
            return 2
    netns.cleanup_stale()
    wanted = args.servers.split(",")
    specs = [s for s in find_servers() if s.name in wanted]
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(prefix=netns.run_prefix() + "bench-", dir=base) as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)
        load_before = os.getloadavg()
        results = run_all(args, specs, work)
        args.load = (load_before, os.getloadavg())
    print("\n# TFTP bench: conditions")
    for line in conditions(args, specs):
        print(f"- {line}")
    for loss in args.loss:
        print_table(results, loss)
    print("\n## goals")
    verdicts = goals(results, args)
    for ok, text in verdicts:
        print(f"{'PASS' if ok else 'n/a ' if ok is None else 'FAIL'}  {text}")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1))
    return 0 if all(ok is not False for ok, _ in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
