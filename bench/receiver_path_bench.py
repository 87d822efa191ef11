"""The receiver machine's DATA path alone: microseconds per datagram, no sockets.

    python bench/receiver_path_bench.py            # 32 MiB in 1 MiB chunks, 1444-byte blocks

Feeds a ``multicast.receiver.Receiver`` a whole image of DATA datagrams from one reused buffer,
as the asyncio adapter does, two ways: ``receive`` per datagram, and ``receive_batch`` per GRO
read of up to 44 datagrams (what ``wds receive`` does since the batch path exists). Every run
ends with every chunk verified (SHA-256, so hashing is included: about 0.75 us of each figure on
a host with SHA extensions). Prints the best of ``--repeat`` runs for each way and the ratio.
The figures in docs/PROTOCOL.md section 11 come from this script.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "multicast"))  # the machine tests' manifest helper

from wmtp_harness import make_manifest  # noqa: E402

from multicast.codec import ChunkManifest, build_manifest, pack_data_head  # noqa: E402
from multicast.manifest import manifest_digest  # noqa: E402
from multicast.receiver import Receiver, ReceiverSettings  # noqa: E402

SENDER = ("198.18.0.1", 9000)
GRO_SEGMENTS = 44  # 64 KiB / 1472


def image_datagrams(size: int, chunk: int, block: int) -> tuple[ChunkManifest, list[bytes]]:
    data = random.Random(1).randbytes(size)
    m, _ = make_manifest(data, session_id=7, chunk=chunk, block=block)
    out, seq = [], 0
    for c in range(m.chunk_count):
        for b in range(m.blocks_in_chunk(c)):
            start = c * chunk + b * block
            payload = data[start : start + m.block_length(c, b)]
            out.append(pack_data_head(7, seq, c, b, len(payload), 0) + payload)
            seq += 1
    return m, out


def gro_reads(datagrams: list[bytes]) -> list[tuple[bytes, int]]:
    reads, i = [], 0
    while i < len(datagrams):
        j = i + 1
        while (
            j < len(datagrams) and j - i < GRO_SEGMENTS and len(datagrams[j]) == len(datagrams[i])
        ):
            j += 1
        reads.append((b"".join(datagrams[i:j]), len(datagrams[i])))
        i = j
    return reads


def run(m: ChunkManifest, reads: list[tuple[bytes, int]], batch: bool) -> float:
    r = Receiver(
        m,
        manifest_digest=manifest_digest(build_manifest(m)),
        rng=random.Random(2),
        now=0.0,
        settings=ReceiverSettings(max_open_bytes=128 << 20),
    )
    buf = bytearray(65536)
    view = memoryview(buf)
    started = time.perf_counter()
    for blob, seg in reads:
        n = len(blob)
        buf[:n] = blob
        if batch:
            r.receive_batch(view, n, seg, SENDER, 1.0)
        else:
            for off in range(0, n, seg):
                r.receive(view[off : min(off + seg, n)], SENDER, 1.0)
    elapsed = time.perf_counter() - started
    if r.verified_chunks != m.chunk_count:
        raise SystemExit(f"only {r.verified_chunks} of {m.chunk_count} chunks verified")
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=32)
    ap.add_argument("--chunk", type=int, default=1 << 20)
    ap.add_argument("--block", type=int, default=1444)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    m, datagrams = image_datagrams(args.size_mib << 20, args.chunk, args.block)
    reads = gro_reads(datagrams)
    best = {
        way: min(run(m, reads, way == "receive_batch") for _ in range(args.repeat))
        for way in ("receive", "receive_batch")
    }
    n = len(datagrams)
    print(
        f"{n} DATA datagrams in {len(reads)} GRO reads, {args.size_mib} MiB, best of {args.repeat}"
    )
    for way, seconds in best.items():
        print(f"  {way:14s} {seconds / n * 1e6:5.2f} us per datagram (hashing included)")
    print(f"  ratio          {best['receive'] / best['receive_batch']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
