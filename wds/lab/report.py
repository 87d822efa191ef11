"""Running the machines of one ``wds lab run`` and the per-machine result.

The loop is bounded by ``--timeout``: it starts the machines (the ``--late`` ones once the first
machine's transfer has run ``--late-after`` seconds), resets the ``--reset`` ones once through
the QEMU monitor when a quarter of their image is on their disk (the environment prints its
progress on the console), reads every console, and ends when every QEMU has exited (the
environment powers off when done). Then each disk is checked on the host: the image is copied
out of the disk's file system with debugfs and compared byte for byte with the source.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wds.lab import net
from wds.lab.machines import Machine, image_on_disk, probe_accel, same_bytes

#: a ``--reset`` machine is reset once 1/RESET_AT_FRACTION of its chunks are verified on its disk
RESET_AT_FRACTION = 4
#: default delay of ``--late`` machines after the first transfer started
LATE_AFTER = 5.0


@dataclass
class LabRun:
    """Everything ``wds lab run`` prints."""

    machines: list[Machine]
    accel: str
    seconds: float
    image_bytes: int
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.machines) and all(m.verified_on_disk for m in self.machines)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "accel": self.accel,
            "seconds": round(self.seconds, 1),
            "image_bytes": self.image_bytes,
            "notes": self.notes,
            "machines": [machine_json(m) for m in self.machines],
        }

    def table(self) -> str:
        head = (
            f"{'machine':8} {'firmware':8} {'boot file':>9} {'kernel':>7} {'transfer':>8} "
            f"{'repaired':>8} {'rejected':>8} {'resumed':>7} {'verified':8} {'total':>7}"
        )
        rows = [head]
        for m in self.machines:
            j = machine_json(m)

            def secs(value: Any) -> str:
                return "-" if value is None else f"{value:.1f}s"

            rows.append(
                f"{m.name:8} {m.firmware:8} {secs(j['boot_file_s']):>9} {secs(j['kernel_s']):>7} "
                f"{secs(j['transfer_s']):>8} {j['chunks_repaired']:>8} {j['chunks_rejected']:>8} "
                f"{j['chunks_resumed']:>7} {'yes' if m.verified_on_disk else 'NO':8} "
                f"{secs(j['total_s']):>7}" + (f"  ({m.note})" if m.note else "")
            )
        verdict = "every disk holds the verified image" if self.ok else "NOT every disk verified"
        rows.append(f"{verdict}; {self.seconds:.1f} s in all under {self.accel.upper()}")
        rows += [f"note: {note}" for note in self.notes]
        return "\n".join(rows)


def machine_json(m: Machine) -> dict[str, Any]:
    result = m.last_result()
    return {
        "name": m.name,
        "firmware": m.firmware,
        "mac": m.mac,
        "loss_percent": m.loss,
        "late": m.late,
        "resets": m.resets,
        "boot_file_s": m.boot_file_s,
        "kernel_s": m.kernel_s,
        "transfer_s": result.get("seconds"),
        "chunks": result.get("chunks"),
        "chunks_repaired": result.get("chunks_repaired", "-"),
        "chunks_rejected": result.get("chunks_rejected", "-"),
        "chunks_resumed": result.get("chunks_resumed", "-"),
        "bytes_received": result.get("bytes_received"),
        "receiver_verified": bool(result.get("verified")),
        "verified": m.verified_on_disk,
        "total_s": m.finished_s,
        "console": str(m.console),
        "results": m.results,
        "note": m.note,
    }


def _start(machine: Machine, bridge_ns: str, accel: str, timeout: float) -> None:
    machine.prepare()
    with (machine.workdir / "qemu.log").open("wb") as log:
        log.write(("$ " + " ".join(machine.qemu_argv(accel)) + "\n").encode())
    console = machine.console.open("wb")
    machine.process = subprocess.Popen(
        net.netns_exec(
            bridge_ns,
            ["timeout", "-s", "KILL", str(int(timeout)), *machine.qemu_argv(accel)],
        ),
        stdout=console,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    console.close()
    machine.started = time.monotonic()


def _stop(machine: Machine) -> None:
    proc = machine.process
    if proc is not None and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)


def _host_accel(kernel: Path) -> str:
    """KVM or TCG for this host: probed once (up to 10 s), remembered beside the kernel."""
    forced = os.environ.get("WDS_LAB_ACCEL", "")
    if forced in ("kvm", "tcg"):
        return forced
    remembered = kernel.with_name("accel")
    with contextlib.suppress(OSError):
        known = remembered.read_text().strip()
        if known in ("kvm", "tcg"):
            return known
    accel = probe_accel(kernel)
    with contextlib.suppress(OSError):
        remembered.write_text(accel + "\n")
    return accel


def run_machines(
    bridge_ns: str,
    directory: Path,
    state: dict[str, Any],
    args: Any,
    macs: list[str],
    image: Path,
    save_pids: Callable[[Path, dict[str, Any], list[int]], None],
) -> LabRun:
    started = time.monotonic()
    accel = state.get("accel") or _host_accel(Path(state["kernel"]))
    state["accel"] = accel
    number = state["runs"]
    machines = []
    for index, mac in enumerate(macs):
        tap = f"t{number % 100}m{index}"
        net.add_tap(bridge_ns, tap)
        machine = Machine(
            name=f"m{index + 1}",
            firmware=args.firmware[index % len(args.firmware)],
            mac=mac,
            tap=tap,
            workdir=directory / f"run{number}" / f"m{index + 1}",
            loss=args.loss if index == 0 else 0,
            late=index >= len(macs) - args.late,
            reset=index < args.reset,
        )
        if machine.loss:
            net.set_tap_loss(bridge_ns, tap, machine.loss)
        machines.append(machine)
    late_after = args.late_after or LATE_AFTER
    deadline = started + args.timeout
    try:
        for machine in machines:
            if not machine.late:
                _start(machine, bridge_ns, accel, args.timeout)
        save_pids(directory, state, [m.process.pid for m in machines if m.process])
        while time.monotonic() < deadline:
            now = time.monotonic()
            for machine in machines:
                if machine.process is None:
                    first = min(
                        (
                            m.started + m.transfer_started_s
                            for m in machines
                            if m.transfer_started_s is not None
                        ),
                        default=None,
                    )
                    if first is not None and now - first >= late_after:
                        _start(machine, bridge_ns, accel, deadline - now)
                        save_pids(directory, state, [m.process.pid for m in machines if m.process])
                    continue
                machine.watch(now)
                if (
                    machine.reset
                    and machine.resets == 0
                    and not machine.results
                    and machine.chunk_slots
                    and machine.verified_chunks * RESET_AT_FRACTION >= machine.chunk_slots
                ):
                    machine.system_reset()
                    machine.note = (
                        f"reset at {machine.verified_chunks}/{machine.chunk_slots} chunks, "
                        f"{now - machine.started:.0f}s after start"
                    )
                if machine.finished_s is None and machine.process.poll() is not None:
                    machine.finished_s = round(now - machine.started, 1)
            if all(m.process is not None and m.finished_s is not None for m in machines):
                break
            time.sleep(0.5)
    finally:
        for machine in machines:
            _stop(machine)
    run = LabRun(machines, accel, time.monotonic() - started, image.stat().st_size)
    for machine in machines:
        if machine.process is None:
            machine.note = "never started (no transfer began before the timeout)"
            continue
        if machine.finished_s is None:
            machine.note = (machine.note + "; " if machine.note else "") + "timed out"
        machine.watch(time.monotonic())
        copy = machine.workdir / "deployed.img"
        machine.verified_on_disk = image_on_disk(machine.disk, copy) and same_bytes(copy, image)
        with contextlib.suppress(FileNotFoundError):
            copy.unlink()
        if machine.loss:
            dropped = net.tap_loss_dropped(bridge_ns, machine.tap)
            run.notes.append(f"{machine.name}: {machine.loss}% loss dropped {dropped} datagrams")
    return run
