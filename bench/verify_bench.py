"""Benchmark: ``wds image verify`` against ``sha1sum`` over the same WIM, hot page cache.

Usage::

    python bench/verify_bench.py                 # builds a 1 GiB+ WIM in a temp dir, then times
    python bench/verify_bench.py --wim BIG.wim   # times an existing WIM (needs an integrity table)

The WIM is built with ``wimcapture --compress=none --check`` from incompressible random data, so it
is as large as its content and its integrity table covers all of it. Both commands run whole (the
``wds`` console script, interpreter start-up included) ``--repeat`` times, interleaved, after one
warm-up run of each; the medians and their ratio are printed with the conditions.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GIB = 1 << 30


def build_wim(workdir: Path, size: int, *, integrity: bool = True) -> Path:
    src = workdir / "src"
    src.mkdir()
    block = 64 << 20
    with open(src / "random.bin", "wb") as f:
        left = size
        while left > 0:
            f.write(os.urandom(min(block, left)))
            left -= block
    wim = workdir / "bench.wim"
    subprocess.run(
        ["wimcapture", str(src), str(wim), "bench", "--compress=none"]
        + (["--check"] if integrity else []),
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    (src / "random.bin").unlink()  # keep only the WIM in the page cache
    return wim


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.decode()[:300]}")
    return elapsed


def tool_version(cmd: str) -> str:
    try:
        out = subprocess.run([cmd, "--version"], capture_output=True, text=True, check=False)
    except OSError:
        return "missing"
    return out.stdout.splitlines()[0] if out.stdout else "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wim", type=Path, help="time this WIM instead of building one")
    parser.add_argument("--size-mib", type=int, default=1100, help="size of the built WIM's data")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of each command")
    parser.add_argument("--workdir", type=Path, help="where to build (default: a temp dir)")
    parser.add_argument(
        "--no-integrity",
        action="store_true",
        help="build the WIM without an integrity table (verify then hashes every blob)",
    )
    args = parser.parse_args()
    wds = shutil.which("wds")
    if wds is None or shutil.which("sha1sum") is None:
        sys.exit("needs the wds console script and sha1sum on PATH")
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        if args.wim is not None:
            wim = args.wim
        else:
            kind = "without" if args.no_integrity else "with"
            print(f"building a {args.size_mib} MiB uncompressed WIM {kind} an integrity table ...")
            wim = build_wim(Path(tmp), args.size_mib << 20, integrity=not args.no_integrity)
        size = wim.stat().st_size
        if size < GIB:
            print(f"warning: {wim} is {size} bytes, less than 1 GiB", file=sys.stderr)
        ours = [wds, "image", "verify", "-q", str(wim)]
        theirs = ["sha1sum", str(wim)]
        timed(theirs)  # warm the page cache, and each program's own caches
        timed(ours)
        t_ours: list[float] = []
        t_theirs: list[float] = []
        for _ in range(args.repeat):
            t_theirs.append(timed(theirs))
            t_ours.append(timed(ours))
        m_ours, m_theirs = statistics.median(t_ours), statistics.median(t_theirs)
        print(f"file: {wim} ({size / GIB:.3f} GiB, {size} bytes), hot page cache")
        print(
            f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}, {tool_version('sha1sum')}"
        )
        print(f"runs: {args.repeat} each, interleaved, after one warm-up run each")
        print(f"sha1sum:          median {m_theirs:.3f} s  ({size / m_theirs / 2**20:.0f} MiB/s)")
        print(f"wds image verify: median {m_ours:.3f} s  ({size / m_ours / 2**20:.0f} MiB/s)")
        print(f"ratio wds/sha1sum: {m_ours / m_theirs:.3f} (target <= 1.2)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
