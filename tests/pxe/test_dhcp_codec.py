"""Tier 1: the DHCP codec -- round trips, golden packets from real firmware, every error path."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address

import pytest
from dhcp_strategies import MAC, discover, golden, golden_names, packets
from hypothesis import given, settings
from hypothesis import strategies as st

from pxe.dhcp.codec import (
    BOOTP_MIN_SIZE,
    MAGIC_COOKIE,
    MAX_OPTIONS,
    BootpOp,
    DhcpOption,
    DhcpPacket,
    build_packet,
    parse_option_area,
    parse_packet,
)
from wds.errors import LocalProtocolError, RemoteProtocolError

HEADER = 236


def raw_message(options: bytes, *, sname: bytes = b"", file: bytes = b"") -> bytes:
    """A BOOTREQUEST with hand-written option bytes (no End added)."""
    head = bytes((1, 1, 6, 0)) + (0x01020304).to_bytes(4, "big") + bytes(4 + 16)
    head += MAC + bytes(10) + sname.ljust(64, b"\0") + file.ljust(128, b"\0")
    assert len(head) == HEADER
    return head + MAGIC_COOKIE + options


# --- round trips ------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(packets())
def test_round_trip(packet: DhcpPacket) -> None:
    data = build_packet(packet, max_size=1500)
    assert len(data) >= BOOTP_MIN_SIZE
    assert parse_packet(data) == packet


@settings(max_examples=200, deadline=None)
@given(packets(max_total=500), st.integers(300, 576))
def test_round_trip_with_overload(packet: DhcpPacket, max_size: int) -> None:
    """Options that do not fit the options field spill into file and sname (option 52)."""
    packet = replace(packet, sname=b"", file=b"")
    try:
        data = build_packet(packet, max_size=max_size)
    except LocalProtocolError:
        return  # does not fit even overloaded: refused, never truncated
    assert len(data) <= max(max_size, BOOTP_MIN_SIZE)
    assert parse_packet(data) == packet


def test_overload_is_used_only_when_needed_and_marks_the_fields() -> None:
    big = DhcpOption(200, bytes(range(200)))
    packet = discover(extra=(big, DhcpOption(201, b"x" * 150)))
    small = build_packet(packet, max_size=1500)
    assert 52 not in [o.code for o in parse_packet(small).options]
    assert small[HEADER + 4 : HEADER + 6] != bytes((52, 1))
    data = build_packet(packet, max_size=548)
    assert len(data) <= 548
    assert data[HEADER + 4 : HEADER + 7] == bytes((52, 1, 1))  # file carries options
    assert data[108] == 201  # the file field starts with the option that did not fit
    assert parse_packet(data) == packet


def test_long_option_is_split_and_concatenated_rfc3396() -> None:
    value = bytes(i % 251 for i in range(600))
    data = build_packet(discover(extra=(DhcpOption(210, value),)), max_size=1500)
    area = parse_option_area(data[HEADER + 4 :], "test")
    pieces = [d for code, d in area if code == 210]
    assert [len(p) for p in pieces] == [255, 255, 90]
    assert parse_packet(data).option(210) == value


def test_repeated_option_concatenated_in_field_order() -> None:
    # options field: 210="ab", overload=3 (file and sname); file: 210="cd"; sname: 210="ef"
    options = bytes((210, 2)) + b"ab" + bytes((52, 1, 3, 255))
    file = bytes((210, 2)) + b"cd" + bytes((255,))
    sname = bytes((210, 2)) + b"ef" + bytes((255,))
    packet = parse_packet(raw_message(options, sname=sname, file=file))
    assert packet.option(210) == b"abcdef"  # RFC 3396 6: options, then file, then sname
    assert packet.file == b"" and packet.sname == b""
    assert packet.option(52) is None


def test_pad_options_are_skipped_and_trailing_bytes_after_end_ignored() -> None:
    options = bytes((0, 0, 53, 1, 1, 0, 60, 3)) + b"PXE" + bytes((255, 0, 0, 7, 7))
    packet = parse_packet(raw_message(options))
    assert [(o.code, o.data) for o in packet.options] == [(53, b"\x01"), (60, b"PXE")]


def test_sname_and_file_stop_at_nul() -> None:
    packet = parse_packet(raw_message(bytes((255,)), sname=b"srv\0junk", file=b"boot.0\0x"))
    assert packet.sname == b"srv" and packet.file == b"boot.0"


def test_reply_is_padded_to_300_bytes() -> None:
    data = build_packet(DhcpPacket(op=BootpOp.BOOTREPLY, xid=1, chaddr=bytes(16)))
    assert len(data) == 300
    assert data[HEADER + 4] == 255 and set(data[HEADER + 5 :]) == {0}


# --- golden packets from real firmware ---------------------------------------------------------


@pytest.mark.parametrize("name", golden_names())
def test_golden_discover_parses_and_rebuilds_byte_for_byte(name: str) -> None:
    data = golden(name)
    packet = parse_packet(data)
    assert packet.op == BootpOp.BOOTREQUEST
    assert packet.option(53) == (b"\x03" if "request4011" in name else b"\x01")
    assert (packet.option(60) or b"").startswith((b"PXEClient", b"HTTPClient"))
    # the firmware's own option order and padding come back unchanged
    assert build_packet(packet, min_size=len(data), max_size=1500) == data


def test_golden_set_covers_bios_ipxe_and_uefi() -> None:
    names = golden_names()
    assert any("arch0" in n for n in names), "a BIOS (arch 0) DISCOVER"
    assert any("arch7" in n and "edk2" in n for n in names), "EDK2's own PXE (arch 7)"
    assert any("httpclient_arch16" in n for n in names), "EDK2's UEFI HTTP Boot (arch 16)"
    assert len(names) >= 3


# --- malformed input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        (bytes((53, 1, 1)), "without the End option"),
        (bytes((53, 1, 1, 60, 9)) + b"PXE", "option 60 at byte 3 is truncated: length 9"),
        (bytes((53, 1, 1, 60)), "option 60 at byte 3 is cut off before its length byte"),
        (b"", "without the End option"),
        (bytes((52, 1, 9, 255)), "option 52 (overload) must be one byte 1, 2 or 3"),
    ],
)
def test_malformed_options_raise_with_reason(options: bytes, reason: str) -> None:
    with pytest.raises(RemoteProtocolError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        parse_packet(raw_message(options))


def test_overloaded_file_without_end_is_refused() -> None:
    options = bytes((52, 1, 1, 255))
    with pytest.raises(RemoteProtocolError, match="file field"):
        parse_packet(raw_message(options, file=bytes((210, 2)) + b"cd" + b"\x01" * 124))


def test_short_packet_bad_cookie_bad_op_and_oversize() -> None:
    good = raw_message(bytes((255,)))
    with pytest.raises(RemoteProtocolError, match="shorter than the BOOTP header"):
        parse_packet(good[:239])
    with pytest.raises(RemoteProtocolError, match="magic cookie"):
        parse_packet(good[:236] + b"\0\0\0\0" + good[240:])
    with pytest.raises(RemoteProtocolError, match="neither BOOTREQUEST"):
        parse_packet(b"\x07" + good[1:])
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        parse_packet(good + bytes(2000))


def test_option_count_is_bounded() -> None:
    codes = [c for c in range(1, MAX_OPTIONS + 3) if c != 52]
    options = b"".join(bytes((code, 0)) for code in codes) + bytes((255,))
    with pytest.raises(RemoteProtocolError, match="distinct options"):
        parse_packet(raw_message(options))


def test_build_refuses_what_it_cannot_represent() -> None:
    base = discover()
    with pytest.raises(LocalProtocolError):
        build_packet(replace(base, chaddr=b"short"))
    with pytest.raises(LocalProtocolError):
        build_packet(replace(base, file=b"x" * 128))
    with pytest.raises(LocalProtocolError):
        build_packet(replace(base, options=(DhcpOption(52, b"\x01"),)))
    with pytest.raises(LocalProtocolError):
        build_packet(replace(base, options=(DhcpOption(60, b"a"), DhcpOption(60, b"b"))))
    with pytest.raises(LocalProtocolError, match="do not fit"):
        build_packet(replace(base, file=b"f", sname=b"s", options=(DhcpOption(9, bytes(900)),)))
    with pytest.raises(LocalProtocolError):
        DhcpOption(255, b"")


def test_packet_helpers() -> None:
    packet = discover(giaddr=IPv4Address("198.18.1.1"), hlen=6)
    assert packet.hardware_address == MAC
    assert packet.broadcast
    assert packet.option(99) is None


def test_option_too_big_for_any_one_field_is_split_across_fields() -> None:
    packet = DhcpPacket(
        op=BootpOp.BOOTREPLY,
        xid=7,
        chaddr=bytes(16),
        options=(DhcpOption(209, bytes(range(255)) + bytes(45)), DhcpOption(208, b"z" * 45)),
    )
    data = build_packet(packet, max_size=420)
    assert len(data) == 420
    assert data[HEADER + 4 : HEADER + 7] == bytes((52, 1, 3))
    assert parse_packet(data) == packet
