"""The construct declaration of the DHCP layout is the reference; the struct/loop fast path that
runs for every datagram must read and write exactly the same bytes."""

from __future__ import annotations

from pathlib import Path

import construct as c
from hypothesis import given, settings
from hypothesis import strategies as st

from pxe.dhcp.codec import (
    _HEADER as FAST_HEADER,
)
from pxe.dhcp.codec import (
    BOOTP_HEADER,
    END,
    MAGIC_COOKIE,
    OPTION_AREA,
    PAD,
    DhcpOption,
    build_option_area,
    parse_option_area,
)

GOLDEN = Path(__file__).parent / "golden"
HEADER_FIELDS = (
    "op",
    "htype",
    "hlen",
    "hops",
    "xid",
    "secs",
    "flags",
    "ciaddr",
    "yiaddr",
    "siaddr",
    "giaddr",
    "chaddr",
    "sname",
    "file",
    "cookie",
)


def _golden_packets() -> list[bytes]:
    packets = [bytes.fromhex("".join(p.read_text().split())) for p in sorted(GOLDEN.glob("*.hex"))]
    assert packets, "golden DHCP packets are checked in under tests/pxe/golden"
    return packets


def _reference_items(area: bytes) -> list[tuple[int, bytes]]:
    parsed = OPTION_AREA.parse(area)
    return [(item.code, item.data) for item in parsed if item.code not in (PAD, END)]


def test_golden_headers_read_the_same_both_ways() -> None:
    for data in _golden_packets():
        reference = BOOTP_HEADER.parse(data)
        fast = dict(zip(HEADER_FIELDS, FAST_HEADER.unpack_from(data), strict=True))
        assert {k: reference[k] for k in HEADER_FIELDS} == fast


def test_golden_option_areas_read_the_same_both_ways() -> None:
    for data in _golden_packets():
        area = data[FAST_HEADER.size :]
        assert parse_option_area(area, "options field") == _reference_items(area)


header_values = st.fixed_dictionaries(
    {
        "op": st.integers(0, 255),
        "htype": st.integers(0, 255),
        "hlen": st.integers(0, 255),
        "hops": st.integers(0, 255),
        "xid": st.integers(0, 2**32 - 1),
        "secs": st.integers(0, 2**16 - 1),
        "flags": st.integers(0, 2**16 - 1),
        "ciaddr": st.binary(min_size=4, max_size=4),
        "yiaddr": st.binary(min_size=4, max_size=4),
        "siaddr": st.binary(min_size=4, max_size=4),
        "giaddr": st.binary(min_size=4, max_size=4),
        "chaddr": st.binary(min_size=16, max_size=16),
        "sname": st.binary(min_size=64, max_size=64),
        "file": st.binary(min_size=128, max_size=128),
    }
)


@given(header_values)
@settings(max_examples=200)
def test_header_builds_the_same_both_ways(values: dict[str, object]) -> None:
    fast = FAST_HEADER.pack(*(values[k] for k in HEADER_FIELDS[:-1]), MAGIC_COOKIE)
    assert BOOTP_HEADER.build(values) == fast
    assert {k: BOOTP_HEADER.parse(fast)[k] for k in HEADER_FIELDS[:-1]} == values


options = st.lists(
    st.builds(DhcpOption, code=st.integers(1, 254), data=st.binary(max_size=255)), max_size=20
)


@given(options)
@settings(max_examples=200)
def test_option_areas_build_and_read_the_same_both_ways(items: list[DhcpOption]) -> None:
    area = build_option_area(items, True)
    reference = _reference_items(area)
    assert parse_option_area(area, "options field") == reference
    built = OPTION_AREA.build(
        [{"code": o.code, "data": o.data} for o in items] + [{"code": END, "data": None}]
    )
    assert built == area


@given(st.binary(max_size=300))
@settings(max_examples=300)
def test_both_readers_refuse_the_same_areas(area: bytes) -> None:
    try:
        reference: list[tuple[int, bytes]] | None = _reference_items(area)
    except c.ConstructError:
        reference = None
    try:
        fast: list[tuple[int, bytes]] | None = parse_option_area(area, "area")
    except Exception as exc:
        assert type(exc).__name__ == "RemoteProtocolError"
        fast = None
    # The fast reader may refuse more (it bounds the item count); it never accepts what the
    # declared layout refuses, and where both accept they agree.
    if fast is not None:
        assert fast == reference
