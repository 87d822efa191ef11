"""Tier 1: TFTP codec round trips, golden packets from real clients, fuzz invariant."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pxe.tftp.codec import (
    DATA_HEADERS,
    ErrorCode,
    Opcode,
    TftpAck,
    TftpData,
    TftpError,
    TftpOptionAck,
    TftpReadRequest,
    TftpWriteRequest,
    build_error,
    build_packet,
    data_header,
    parse_ack_block,
    parse_packet,
)
from wds.errors import RemoteProtocolError

# latin-1 strings without NUL: every byte value a client may put in a name.
text = st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=255), max_size=40)
nonempty = st.text(
    alphabet=st.characters(min_codepoint=1, max_codepoint=255), min_size=1, max_size=20
)
option_lists = st.lists(st.tuples(nonempty, text), max_size=8).map(tuple)

packets = st.one_of(
    st.builds(TftpReadRequest, nonempty, nonempty, option_lists),
    st.builds(TftpWriteRequest, nonempty, nonempty, option_lists),
    st.builds(TftpData, st.integers(0, 65535), st.binary(max_size=600)),
    st.builds(TftpAck, st.integers(0, 65535)),
    st.builds(TftpError, st.integers(0, 65535), text),
    st.builds(
        TftpOptionAck, st.lists(st.tuples(nonempty, nonempty), min_size=1, max_size=8).map(tuple)
    ),
)


@given(packets)
def test_round_trip(packet: object) -> None:
    assert parse_packet(build_packet(packet)) == packet  # type: ignore[arg-type]


@given(st.integers(0, 65535), st.binary(max_size=1500))
def test_fast_data_path_matches_construct(block: int, payload: bytes) -> None:
    assert data_header(block) + payload == build_packet(TftpData(block, payload))
    assert len(DATA_HEADERS) == 65536


@given(st.integers(0, 65535))
def test_fast_ack_path_matches_construct(block: int) -> None:
    assert parse_ack_block(build_packet(TftpAck(block))) == block


def test_fast_ack_path_rejects_everything_else() -> None:
    assert parse_ack_block(b"\x00\x04\x00") == -1
    assert parse_ack_block(b"\x00\x04\x00\x01\x00") == -1
    assert parse_ack_block(b"\x00\x03\x00\x01") == -1


# Golden packets, as real clients send them (captured byte layouts).
GOLDEN = {
    # PXE ROM (Intel/iPXE style): tsize probe with blksize 1456
    "pxe_rom": (
        "0001"
        + b"pxelinux.0".hex()
        + "00"
        + b"octet".hex()
        + "00"
        + b"tsize".hex()
        + "00"
        + b"0".hex()
        + "00"
        + b"blksize".hex()
        + "00"
        + b"1456".hex()
        + "00",
        TftpReadRequest("pxelinux.0", "octet", (("tsize", "0"), ("blksize", "1456"))),
    ),
    # Windows Boot Manager: backslashes, mixed case, windowsize
    "bootmgr": (
        "0001"
        + b"\\Boot\\x64\\WdsNbp.com".hex()
        + "00"
        + b"octet".hex()
        + "00"
        + b"blksize".hex()
        + "00"
        + b"1456".hex()
        + "00"
        + b"windowsize".hex()
        + "00"
        + b"4".hex()
        + "00",
        TftpReadRequest(
            "\\Boot\\x64\\WdsNbp.com", "octet", (("blksize", "1456"), ("windowsize", "4"))
        ),
    ),
    # tftp-hpa in netascii mode, no options
    "tftp_hpa_ascii": (
        "0001" + b"readme.txt".hex() + "00" + b"netascii".hex() + "00",
        TftpReadRequest("readme.txt", "netascii"),
    ),
    # a ROM that pads its request with NUL bytes
    "padded": (
        "0001" + b"a".hex() + "00" + b"octet".hex() + "00" + "0000",
        TftpReadRequest("a", "octet"),
    ),
    # ERROR 8 answering an OACK, as PXE ROMs do after the tsize probe
    "oack_refused": ("0005" + "0008" + b"tsize".hex() + "00", TftpError(8, "tsize")),
    # ERROR without the final NUL (tolerated)
    "error_no_nul": ("0005" + "0000" + b"abort".hex(), TftpError(0, "abort")),
    "ack_wrapped": ("0004" + "0000", TftpAck(0)),
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden(name: str) -> None:
    hexdata, expected = GOLDEN[name]
    assert parse_packet(bytes.fromhex(hexdata)) == expected


def test_golden_oack_bytes() -> None:
    oack = build_packet(TftpOptionAck((("blksize", "1456"), ("tsize", "1234"))))
    assert oack == b"\x00\x06blksize\x001456\x00tsize\x001234\x00"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00",
        b"\x00\x01",
        b"\x00\x01abc",  # name not terminated
        b"\x00\x01abc\x00",  # no mode
        b"\x00\x01abc\x00octet\x00blksize\x00512",  # truncated option value
        b"\x00\x01abc\x00octet\x00blksize\x00",  # option without a value
        b"\x00\x04\x00\x01\x00",  # ACK with a trailing byte
        b"\x00\x05\x00\x01msg\x00junk\x00",  # ERROR with bytes after the message
        b"\x00\x09\x00\x00",  # unknown opcode
        b"\x00\x01" + b"a" * 2000 + b"\x00octet\x00",  # overlong request
        b"\x00\x01a\x00octet\x00" + b"x\x001\x00" * 40,  # too many options
    ],
)
def test_malformed_raises_remote_protocol_error(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        parse_packet(data)


def test_error_message_is_bounded() -> None:
    packet = build_error(ErrorCode.ACCESS_VIOLATION, "x" * 5000)
    assert len(packet) <= 512
    assert parse_packet(packet) == TftpError(2, "x" * 500)


def test_enums_print_rfc_names() -> None:
    assert str(Opcode.OACK) == "OACK"
    assert str(ErrorCode.UNKNOWN_TRANSFER_ID) == "UNKNOWN_TRANSFER_ID"


@settings(max_examples=500)
@given(st.binary(max_size=1200))
def test_fuzz_parse_only_raises_remote_protocol_error(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        parse_packet(data)


@settings(max_examples=300)
@given(st.sampled_from([1, 2, 5, 6]), st.lists(st.binary(max_size=12), max_size=10))
def test_fuzz_structured_strings(opcode: int, parts: list[bytes]) -> None:
    data = opcode.to_bytes(2, "big") + b"\0".join(parts)
    with contextlib.suppress(RemoteProtocolError):
        parse_packet(data)
