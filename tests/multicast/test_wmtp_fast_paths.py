"""Machine tier: the per-datagram paths (DATA without objects) and the seen_seq echo that tells
the sender a lost repair or chunk from one a receiver has not read yet (PROTOCOL.md 4.4, 6, 11)."""

from __future__ import annotations

import random
import struct

from wmtp_harness import BLOCK, CHUNK, SENDER, BytesSource, make_manifest

from multicast.codec import (
    UNKNOWN_START,
    Announce,
    BlockRange,
    DataBlock,
    DatagramType,
    ReceiverReport,
    RepairRequest,
    ReportFlags,
    SenderState,
    build_data_fast,
    build_datagram,
    parse_any,
    parse_datagram,
)
from multicast.events import Ignored, WriteChunk
from multicast.receiver import Receiver
from multicast.sender import Sender, SenderSettings

IMAGE = random.Random(11).randbytes(3 * CHUNK + 1000)  # 4 chunks, the last one short
PEER = ("198.18.1.10", 40000)


def _receiver(image: bytes = IMAGE) -> tuple[Receiver, list[bytes]]:
    m, digest = make_manifest(image)
    r = Receiver(m, manifest_digest=digest, rng=random.Random(3), now=0.0)
    r.receive(
        build_datagram(Announce(m.session_id, SenderState.RUNNING, 1, 1, 0, digest)), SENDER, 0.0
    )
    wires = []
    seq = 0
    for c in range(m.chunk_count):
        for b in range(m.blocks_in_chunk(c)):
            off = c * CHUNK + b * BLOCK
            payload = image[off : off + m.block_length(c, b)]
            wires.append(build_data_fast(DataBlock(m.session_id, seq, c, b, payload)))
            seq += 1
    return r, wires


def test_data_from_one_reused_buffer_ends_byte_exact() -> None:
    """The adapter passes memoryviews of one receive buffer it overwrites at once."""
    r, wires = _receiver()
    buf = bytearray(65536)
    view = memoryview(buf)
    out = bytearray(len(IMAGE))
    for i, wire in enumerate(wires):
        buf[: len(wire)] = wire
        for e in r.receive(view[: len(wire)], SENDER, 0.001 * i):
            if isinstance(e, WriteChunk):
                out[e.index * CHUNK : e.index * CHUNK + len(e.data)] = e.data
                assert isinstance(e.data, bytes)
        buf[: len(wire)] = bytes(len(wire))  # the next read overwrites it
    assert bytes(out) == IMAGE and r.verified_chunks == 4


def _ignored(r: Receiver, wire: bytes | memoryview) -> list[str]:
    return [e.reason for e in r.receive(wire, SENDER, 0.0) if isinstance(e, Ignored)]


def test_bad_data_is_refused_with_the_same_reasons_as_the_codec() -> None:
    r, wires = _receiver()
    good = wires[5]
    reserved = bytearray(good)
    reserved[26] = 1
    flags = bytearray(good)
    flags[24] = 2
    other_session = bytearray(good)
    other_session[4] ^= 1
    for bad in (good[:-1], good + b"x", bytes(reserved), bytes(flags)):
        try:
            parse_any(bad)
        except Exception as exc:  # the codec's own words
            assert _ignored(r, memoryview(bad)) == [str(exc)]
        else:
            raise AssertionError("the codec accepted a bad DATA")
    assert _ignored(r, bytes(other_session)) == ["another session"]
    d = parse_any(good)
    assert isinstance(d, DataBlock)
    m = r.manifest
    too_far = build_data_fast(DataBlock(m.session_id, 1, m.chunk_count, 0, b"x"))
    assert "out of range" in _ignored(r, too_far)[0]
    short = build_data_fast(DataBlock(m.session_id, 1, 0, 0, b"x"))
    assert _ignored(r, short) == ["DATA length disagrees with the manifest"]
    assert r.receive(good, ("198.18.9.9", 1), 0.0)[0] == Ignored(
        f"DataBlock not from the session's sender {SENDER}"
    )
    assert r.verified_chunks == 0


def _sender(rate: float = 1e6) -> Sender:
    m, digest = make_manifest(IMAGE)
    s = Sender(
        m,
        manifest_digest=digest,
        source=BytesSource(IMAGE),
        settings=SenderSettings(max_rate=rate),
        now=0.0,
    )
    bitmap = bytes([0xF0])
    s.receive(
        build_datagram(ReceiverReport(m.session_id, 1, ReportFlags.JOIN, 0, 0, 0, 0, 4, bitmap)),
        PEER,
        0.0,
    )
    return s


def _data(s: Sender, now: float) -> list[DataBlock]:
    return [
        d
        for o in s.datagrams_to_send(now, budget=1000)
        if o.data[3] == DatagramType.DATA and isinstance(d := parse_datagram(o.data), DataBlock)
    ]


def test_next_datagrams_is_datagrams_to_send_without_objects() -> None:
    a, b = _sender(), _sender()
    for now in (0.5, 1.0, 1.5):
        control, data = a.next_datagrams(now, 300)
        outs = b.datagrams_to_send(now, 300)
        assert [o.data for o in control] + data == [o.data for o in outs]
        assert all(o.to is None for o in outs[len(control) :])
    assert a.data_sent == b.data_sent > 0


def test_nak_after_the_repair_was_read_is_repaired_again_one_before_is_not() -> None:
    s = _sender(rate=1e9)
    sid = s.manifest.session_id
    first = _data(s, 1.0)
    assert len(first) == sum(s.manifest.blocks_in_chunk(i) for i in range(4))
    nak = RepairRequest(sid, 1, (BlockRange(1, 3, 1),), seen_seq=first[-1].seq)
    s.receive(build_datagram(nak), PEER, 1.01)
    repair = [d for d in _data(s, 1.02) if d.repair]
    assert [(d.chunk, d.block) for d in repair] == [(1, 3)]
    # asked again by a receiver that had not yet read the repair: it is on its way
    s.receive(
        build_datagram(RepairRequest(sid, 1, (BlockRange(1, 3, 1),), seen_seq=repair[0].seq - 1)),
        PEER,
        1.03,
    )
    assert _data(s, 1.04) == []
    # asked again by one that read past it: that copy was lost, send another at once
    s.receive(
        build_datagram(RepairRequest(sid, 1, (BlockRange(1, 3, 1),), seen_seq=repair[0].seq)),
        PEER,
        1.05,
    )
    assert [(d.chunk, d.block, d.repair) for d in _data(s, 1.06)] == [(1, 3, True)]


def test_report_resends_only_chunks_the_receiver_had_the_chance_to_read() -> None:
    s = _sender(rate=1e9)
    sid = s.manifest.session_id
    sent = _data(s, 1.0)
    last_of = {d.chunk: d.seq for d in sent}
    # the receiver read up to the end of chunk 1 and lacks chunks 1, 2 and 3: chunk 1 was lost,
    # chunks 2 and 3 are still on their way
    report = ReceiverReport(sid, 1, ReportFlags(0), 0, 1, 0, 0, 4, bytes([0x70]), last_of[1])
    s.receive(build_datagram(report), PEER, 1.01)
    assert {d.chunk for d in _data(s, 1.02)} == {1}


def test_receivers_echo_the_newest_seq_they_read() -> None:
    r, wires = _receiver()
    m = r.manifest
    r2 = Receiver(m, manifest_digest=r._digest, rng=random.Random(4), now=0.0)

    def announce(seq: int) -> bytes:
        a = Announce(m.session_id, SenderState.RUNNING, 1, 1, seq, r._digest, UNKNOWN_START)
        return build_datagram(a)

    r2.receive(announce(0), SENDER, 0.0)  # the next DATA will be seq 0
    r2.handle_timer(0.0)  # the JOIN
    reports = [parse_datagram(d) for d, _ in r2.datagrams_to_send(0.0)]
    assert reports and all(
        isinstance(p, ReceiverReport) and p.seen_seq == 0xFFFFFFFF for p in reports
    )
    for wire in wires[:10]:
        r2.receive(wire, SENDER, 0.1)
    r2.handle_timer(10.0)  # a REPORT, and NAKs if any
    seen = struct.unpack_from("!I", wires[9], 12)[0]
    out = [parse_datagram(d) for d, _ in r2.datagrams_to_send(10.0)]
    assert out and all(getattr(p, "seen_seq", None) == seen for p in out)
    # an ANNOUNCE read later says DATA up to its seq was sent before it: what was not read of
    # it is lost, not queued, so the echo moves past it (the end game, where no DATA follows)
    r2.receive(announce(seen + 40), SENDER, 10.1)
    r2.handle_timer(20.0)
    out = [parse_datagram(d) for d, _ in r2.datagrams_to_send(20.0)]
    assert out and all(getattr(p, "seen_seq", None) == seen + 39 for p in out)


def test_lost_tail_of_the_last_chunk_is_naked_while_repairs_flow_to_others() -> None:
    """In the end game only repairs are sent: they must not hide a lost tail from the tail
    timer (else only a REPORT finds it, and the carousel resends the whole chunk to all)."""
    image = random.Random(12).randbytes(2 * CHUNK + 20_000)  # the last chunk has 14 blocks
    r, wires = _receiver(image)
    m = r.manifest
    last = m.chunk_count - 1
    for wire in wires[:-1]:  # the very last block of the pass is lost
        r.receive(wire, SENDER, 0.0)
        r.datagrams_to_send(0.0)
    assert r.verified_chunks == last
    naks: list[RepairRequest] = []
    now = 0.0
    for i in range(100):  # repairs for somebody else, every 5 ms, for half a second
        now = 0.005 * (i + 1)
        repair = DataBlock(
            m.session_id, 10_000 + i, 0, i % 40, image[(i % 40) * BLOCK :][:BLOCK], True
        )
        r.receive(build_data_fast(repair), SENDER, now)
        timer = r.next_timer()
        if timer is not None and timer <= now:
            r.handle_timer(now)
        out = [parse_datagram(d) for d, _ in r.datagrams_to_send(now)]
        naks += [p for p in out if isinstance(p, RepairRequest)]
        if naks:
            break
    tail = m.blocks_in_chunk(last) - 1
    assert naks and naks[0].ranges == (BlockRange(last, tail, 1),)
    assert now <= 0.2  # tail_timeout (50 ms) plus the NAK back-off, not a REPORT round


def test_gaps_of_several_chunks_go_out_in_one_nak() -> None:
    """A lagging receiver has many open chunks due at once: one NAK per chunk flooded the
    sender's socket; they are packed within the sender's bounds (128 ranges, one chunk's worth
    of blocks)."""
    r, wires = _receiver()
    m = r.manifest
    lost = {(c, 5) for c in range(3)} | {(c, 9) for c in range(3)}
    for wire in wires:
        d = parse_datagram(wire)
        assert isinstance(d, DataBlock)
        if (d.chunk, d.block) not in lost:
            r.receive(wire, SENDER, 0.0)
    r.datagrams_to_send(0.0)
    r.handle_timer(1.0)
    naks = [
        p for d, _ in r.datagrams_to_send(1.0) if isinstance(p := parse_datagram(d), RepairRequest)
    ]
    assert len(naks) == 1 and r.naks_sent == 1
    assert sorted((x.chunk, x.first_block) for x in naks[0].ranges) == sorted(lost)
    assert sum(x.block_count for x in naks[0].ranges) <= m.blocks_in_chunk(0)


def _gro_reads(segments: list[bytes], per: int) -> list[list[bytes]]:
    """What the kernel coalesces into one GRO read: runs of up to ``per`` equal-sized
    datagrams, the last of a run may be shorter."""
    reads: list[list[bytes]] = []
    i = 0
    while i < len(segments):
        seg = len(segments[i])
        j = i + 1
        while j < len(segments) and j - i < per and len(segments[j]) == seg:
            j += 1
        if j < len(segments) and j - i < per and len(segments[j]) < seg:
            j += 1  # a shorter datagram may end a GRO batch
        reads.append(segments[i:j])
        i = j
    return reads


def _events_one_by_one(
    r: Receiver, reads: list[list[bytes]], addr: tuple[str, int]
) -> list[object]:
    return [e for k, read in enumerate(reads) for s in read for e in r.receive(s, addr, 0.01 * k)]


def _events_as_batches(
    r: Receiver, reads: list[list[bytes]], addr: tuple[str, int]
) -> list[object]:
    """Each read in one reused buffer, overwritten after it was handed over."""
    buf = bytearray(65536)
    view = memoryview(buf)
    out: list[object] = []
    for k, read in enumerate(reads):
        blob = b"".join(read)
        buf[: len(blob)] = blob
        out.extend(r.receive_batch(view, len(blob), len(read[0]), addr, 0.01 * k))
        buf[: len(blob)] = bytes(len(blob))
    return out


def _state(r: Receiver) -> tuple[object, ...]:
    """Everything a DATA datagram can change in a receiver."""
    chunks = sorted(
        (c.index, bytes(c.buf), bytes(c.got), c.received, c.gap_end, c.nak_due, c.last_activity)
        for c in r._open.values()
    )
    return (
        r.have_bitmap,
        r.rejected_chunks,
        r.state,
        r.next_timer(),
        r._seq_start,
        r._seq_high,
        r._seq_received,
        r._carousel_chunk,
        r._last_data,
        r._last_heard,
        chunks,
    )


def test_a_gro_batch_is_the_same_as_its_datagrams_one_by_one() -> None:
    """receive_batch (one GRO read) gives the same events, in the same order, and the same end
    state as receive() per datagram: clean DATA, duplicates, a corrupted block (rejected chunk,
    re-requested), another session, a malformed header, a non-DATA datagram of the same size,
    a shorter last datagram, and everything from a host that is not the sender."""
    rng = random.Random(5)
    _, wires = _receiver()
    m, digest = make_manifest(IMAGE)
    segments: list[bytes] = []
    for k, wire in enumerate(wires):
        segments.append(wire)
        if k % 17 == 3:
            segments.append(wire)  # duplicate
        if k % 29 == 7:
            bad = bytearray(wire)
            bad[-1] ^= 0xFF  # a damaged copy arriving first: the chunk fails its hash
            segments[-1] = bytes(bad)
            segments.append(wire)
        if k % 41 == 11:
            other = bytearray(wire)
            other[4] ^= 1  # another session
            segments.append(bytes(other))
        if k % 53 == 13:
            segments.append(wire[:3] + b"\x07" + wire[4:])  # unknown type, DATA-sized
        if k % 59 == 17:
            segments.append(bytes(len(wire)))  # zeros
    segments.append(build_datagram(Announce(m.session_id, SenderState.RUNNING, 1, 1, 0, digest)))
    middle = segments[40:120]
    rng.shuffle(middle)  # some reordering
    segments[40:120] = middle
    lossy = [w for w in segments if rng.random() > 0.05]  # gaps: NAK timers drawn from the rng
    for segs in (segments, lossy):
        for addr in (SENDER, ("198.18.9.9", 1)):
            for per in (1, 7, 44):
                one, _ = _receiver()
                batch, _ = _receiver()
                reads = _gro_reads(segs, per)
                expected = _events_one_by_one(one, reads, addr)
                got = _events_as_batches(batch, reads, addr)
                assert got == expected
                assert _state(one) == _state(batch)
                assert [d for d, _ in one.datagrams_to_send(9.0)] == [
                    d for d, _ in batch.datagrams_to_send(9.0)
                ]
    empty, _ = _receiver()  # a zero-length read is one (malformed) datagram, as receive() says
    assert empty.receive_batch(memoryview(bytearray(8)), 0, 0, SENDER, 0.5) == empty.receive(
        b"", SENDER, 0.5
    )
    done, _ = _receiver()
    _events_as_batches(done, _gro_reads(wires, 44), SENDER)
    assert done.verified_chunks == m.chunk_count
