"""Codec tier: round-trips (hypothesis), the struct fast path against construct, fuzzing."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from multicast import codec
from multicast.codec import (
    Announce,
    BlockRange,
    ChunkManifest,
    DataBlock,
    MalformedDatagram,
    MalformedManifest,
    ReceiverReport,
    Redirect,
    RedirectReason,
    RepairAdvertisement,
    RepairRequest,
    ReportFlags,
    SenderState,
    build_data_fast,
    build_datagram,
    build_manifest,
    parse_data_fast,
    parse_datagram,
    parse_manifest,
)
from wds.errors import LocalProtocolError, RemoteProtocolError

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, 2**64 - 1)


@st.composite
def block_ranges(draw: st.DrawFn) -> tuple[BlockRange, ...]:
    n = draw(st.integers(1, codec.MAX_RANGES))
    out = []
    for _ in range(n):
        first = draw(st.integers(0, 65534))
        count = draw(st.integers(1, 65535 - first))
        out.append(BlockRange(draw(u32), first, count))
    return tuple(out)


@st.composite
def reports(draw: st.DrawFn) -> ReceiverReport:
    bits = draw(st.integers(0, codec.MAX_BITMAP_BITS))
    bitmap = bytearray(draw(st.binary(min_size=(bits + 7) // 8, max_size=(bits + 7) // 8)))
    if bits % 8:
        bitmap[-1] &= 0xFF ^ ((1 << (8 - bits % 8)) - 1)
    return ReceiverReport(
        draw(u64),
        draw(u64),
        ReportFlags(draw(st.integers(0, 7))),
        draw(st.integers(0, 1000)),
        draw(u32),
        draw(u32),
        draw(u32),
        bits,
        bytes(bitmap),
        draw(u32),
    )


data_blocks = st.builds(
    DataBlock,
    u64,
    u32,
    u32,
    u16,
    st.binary(min_size=1, max_size=codec.MAX_BLOCK_SIZE),
    st.booleans(),
)
datagrams = st.one_of(
    data_blocks,
    st.builds(
        Announce,
        u64,
        st.sampled_from(SenderState),
        u16,
        u32,
        u32,
        st.binary(min_size=16, max_size=16),
        u32,
    ),
    st.builds(RepairAdvertisement, u64, block_ranges()),
    reports(),
    st.builds(RepairRequest, u64, u64, block_ranges(), u32),
    st.builds(Redirect, u64, u64, st.sampled_from(RedirectReason)),
)


@given(datagrams)
@settings(max_examples=300)
def test_datagram_round_trip(d: codec.Datagram) -> None:
    wire = build_datagram(d)
    assert parse_datagram(wire) == d
    assert len(wire) <= 1472 or isinstance(d, DataBlock)  # control never fragments at 1500


@given(data_blocks)
def test_data_fast_path_matches_construct(d: DataBlock) -> None:
    wire = build_datagram(d)
    assert build_data_fast(d) == wire
    assert parse_data_fast(wire) == d == codec.parse_any(wire)


def test_data_header_is_28_bytes_and_block_size_fills_mtu() -> None:
    assert codec.block_size_for_mtu(1500) == 1444
    assert codec.block_size_for_mtu(9000) == 8944
    d = DataBlock(1, 2, 3, 4, b"x" * 1444)
    assert len(build_datagram(d)) + codec.IP_UDP_OVERHEAD == 1500


def test_golden_data_bytes() -> None:
    wire = build_datagram(DataBlock(0x0102030405060708, 9, 10, 11, b"AB", repair=True))
    assert wire.hex() == ("574d01010102030405060708000000090000000a000b0002010000004142")


@pytest.mark.parametrize(
    "wire, reason",
    [
        (b"WM\x01", "shorter"),
        (b"XX\x01\x01" + bytes(8), "magic"),
        (b"WM\x02\x01" + bytes(8), "version"),
        (b"WM\x01\x09" + bytes(8), "unknown datagram type"),
    ],
)
def test_header_refusals(wire: bytes, reason: str) -> None:
    with pytest.raises(MalformedDatagram, match=reason):
        parse_datagram(wire)


def test_truncated_and_trailing_bytes_are_refused() -> None:
    wire = build_datagram(DataBlock(1, 2, 3, 4, b"payload"))
    for bad in (wire[:-1], wire + b"\x00"):
        with pytest.raises(MalformedDatagram):
            parse_datagram(bad)
        with pytest.raises(MalformedDatagram):
            parse_data_fast(bad)
    report = build_datagram(ReceiverReport(1, 2, ReportFlags.JOIN, 0, 0, 0, 0, 9, b"\xff\x80"))
    with pytest.raises(MalformedDatagram, match="unused bits"):
        parse_datagram(report[:-1] + b"\xc0")


def test_bounds_refused_on_build() -> None:
    with pytest.raises(LocalProtocolError):
        build_datagram(RepairRequest(1, 2, ()))
    with pytest.raises(LocalProtocolError):
        build_datagram(RepairRequest(1, 2, (BlockRange(0, 0, 1),) * 129))
    with pytest.raises(LocalProtocolError):
        build_datagram(ReceiverReport(1, 2, ReportFlags(0), 1001, 0, 0, 0, 0, b""))


@given(st.binary(max_size=200))
@settings(max_examples=500)
def test_fuzz_parse_succeeds_or_raises_remote_protocol_error(blob: bytes) -> None:
    for parse in (parse_datagram, codec.parse_any, parse_manifest):
        with contextlib.suppress(RemoteProtocolError):
            parse(blob)


@given(datagrams, st.data())
@settings(max_examples=300)
def test_fuzz_mutated_datagrams(d: codec.Datagram, data: st.DataObject) -> None:
    wire = bytearray(build_datagram(d))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(wire) - 1))
        wire[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(wire)))
    for blob in (bytes(wire), bytes(wire[:cut])):
        with contextlib.suppress(RemoteProtocolError):
            parse_datagram(blob)
        with contextlib.suppress(RemoteProtocolError):
            codec.parse_any(blob)


def _manifest(size: int = 3 * 65536 + 5) -> ChunkManifest:
    count = -(-size // 65536)
    return ChunkManifest(
        session_id=42,
        name="win11-pro",
        image_size=size,
        chunk_size=65536,
        block_size=1444,
        group="239.255.42.1",
        port=9000,
        rate_kbps=500_000,
        image_sha256=b"\x01" * 32,
        chunk_sha256=tuple(bytes([i]) * 32 for i in range(count)),
        public_key=b"\x02" * 32,
        signature=b"\x03" * 64,
    )


def test_manifest_round_trip_and_size() -> None:
    m = _manifest()
    wire = build_manifest(m)
    assert len(wire) == 177 + len(m.name) + 32 * m.chunk_count
    assert parse_manifest(wire) == m
    assert m.chunk_length(3) == 5 and m.blocks_in_chunk(0) == 46 and m.block_length(0, 45) == 556


@given(st.binary(max_size=64), st.data())
@settings(max_examples=200)
def test_fuzz_manifest(junk: bytes, data: st.DataObject) -> None:
    wire = bytearray(build_manifest(_manifest()))
    i = data.draw(st.integers(0, len(wire) - 1))
    wire[i] ^= data.draw(st.integers(1, 255))
    for blob in (bytes(wire), bytes(wire[:i]), bytes(wire) + junk):
        with contextlib.suppress(RemoteProtocolError):
            parse_manifest(blob)


@pytest.mark.parametrize(
    "change",
    [
        {"chunk_sha256": (b"\x00" * 32,) * 3},  # count disagrees with size
        {"chunk_size": 65537},
        {"block_size": 100},
        {"group": "10.0.0.1"},
        {"port": 0},
    ],
)
def test_inconsistent_manifest_refused(change: dict[str, object]) -> None:
    bad = dataclasses.replace(_manifest(), **change)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        build_manifest(bad)


def test_manifest_with_wrong_count_on_the_wire_refused() -> None:
    wire = bytearray(build_manifest(_manifest()))
    wire[76:80] = (5).to_bytes(4, "big")
    with pytest.raises(MalformedManifest):
        parse_manifest(bytes(wire))
    wire[76:80] = (2**31).to_bytes(4, "big")
    with pytest.raises(MalformedManifest, match="above"):
        parse_manifest(bytes(wire))


def test_every_configurable_mtu_gives_a_valid_block_size() -> None:
    # [multicast] mtu is 576..9216 (wds/config.py)
    assert codec.block_size_for_mtu(576) == 520
    assert codec.block_size_for_mtu(9216) == codec.MAX_BLOCK_SIZE == 9160
    with pytest.raises(LocalProtocolError):
        codec.block_size_for_mtu(9217)


def test_golden_report_and_nak_carry_seen_seq() -> None:
    report = ReceiverReport(1, 2, ReportFlags.JOIN, 3, 4, 5, 8, 9, b"\xff\x80", seen_seq=0x0A0B0C0D)
    wire = build_datagram(report)
    assert wire[40:44] == b"\x0a\x0b\x0c\x0d" and wire[44:] == b"\xff\x80" and len(wire) == 46
    nak = RepairRequest(1, 2, (BlockRange(7, 1, 2),), seen_seq=0x01020304)
    wire = build_datagram(nak)
    assert wire[20:28] == b"\x00\x01\x00\x00\x01\x02\x03\x04"
    assert wire[28:] == bytes.fromhex("0000000700010002")
    assert parse_datagram(wire) == nak


@given(data_blocks)
def test_data_words_and_header_packer_agree_with_the_codec(d: DataBlock) -> None:
    wire = build_data_fast(d)
    head = codec.pack_data_head(d.session_id, d.seq, d.chunk, d.block, len(d.payload), d.repair)
    assert head + d.payload == wire
    lead, sid, seq, chunk, block, length, flags = codec.DATA_WORDS.unpack_from(wire)
    assert lead == codec.DATA_LEAD and (sid, seq, chunk, block) == (
        d.session_id,
        d.seq,
        d.chunk,
        d.block,
    )
    assert length == len(d.payload) and flags == (codec.DATA_REPAIR_WORD if d.repair else 0)


@given(
    st.one_of(
        st.builds(RepairAdvertisement, u64, block_ranges()),
        st.builds(RepairRequest, u64, u64, block_ranges(), u32),
    )
)
def test_range_fast_paths_match_construct(d: RepairAdvertisement | RepairRequest) -> None:
    wire = build_datagram(d)
    assert codec.build_ranges_fast(d) == wire
    assert codec.parse_ranges_fast(wire) == d == codec.parse_any(wire)


@pytest.mark.parametrize("kind", [RepairAdvertisement, RepairRequest])
def test_range_fast_paths_refuse_what_construct_refuses(kind: type) -> None:
    d = (
        kind(1, (BlockRange(2, 3, 4),))
        if kind is RepairAdvertisement
        else kind(1, 5, (BlockRange(2, 3, 4),))
    )
    wire = build_datagram(d)
    count_at = 12 if kind is RepairAdvertisement else 20
    bad_count = bytearray(wire)
    bad_count[count_at + 1] = 0  # 0 ranges
    reserved = bytearray(wire)
    reserved[count_at + 3] = 1
    overlong = bytearray(wire)
    overlong[-1] = 0  # block_count 0
    for bad in (
        wire[:-1],
        wire + b"\x00",
        bytes(bad_count),
        bytes(reserved),
        bytes(overlong),
        wire[:13],
    ):
        with pytest.raises(MalformedDatagram):
            parse_datagram(bad)
        with pytest.raises(MalformedDatagram):
            codec.parse_any(bad)
    with pytest.raises(LocalProtocolError):
        codec.build_ranges_fast(kind(1, ()) if kind is RepairAdvertisement else kind(1, 5, ()))
