"""Typed option views, the PXE option 43 and iPXE option 175 spaces, and the arch table."""

from __future__ import annotations

import uuid
from dataclasses import replace
from ipaddress import IPv4Address

import pytest
from dhcp_strategies import discover, golden
from hypothesis import given, settings
from hypothesis import strategies as st

from pxe.dhcp.arch import Firmware, ProcessorArch, describe_arch
from pxe.dhcp.codec import DhcpOption, DhcpPacket, parse_packet
from pxe.dhcp.options import (
    ClientNdi,
    DhcpMessageType,
    DiscoveryControl,
    PxeBootItem,
    PxeBootServer,
    PxeMenuItem,
    PxeVendorOptions,
    build_pxe_vendor_options,
    client_arches_of,
    client_id_of,
    client_ndi_of,
    client_uuid_of,
    max_message_size_of,
    message_type_of,
    parameter_request_list_of,
    parse_encapsulated,
    parse_pxe_vendor_options,
    server_id_of,
    user_classes_of,
    vendor_class_of,
)
from wds.errors import RemoteProtocolError

SEABIOS_IPXE = "seabios_ipxe_e1000_pxeclient_arch0_undi002001_discover.hex"
EDK2 = "ovmf_edk2_virtio_pxeclient_arch7_undi003000_discover.hex"


def with_option(code: int, data: bytes) -> DhcpPacket:
    return replace(discover(), options=(DhcpOption(code, data),))


def test_views_of_a_real_ipxe_discover() -> None:
    packet = parse_packet(golden(SEABIOS_IPXE))
    assert message_type_of(packet) is DhcpMessageType.DHCPDISCOVER
    assert vendor_class_of(packet) == b"PXEClient:Arch:00000:UNDI:002001"
    assert client_arches_of(packet) == (0,)
    assert client_ndi_of(packet) == ClientNdi(1, 2, 1)
    assert client_uuid_of(packet) == uuid.UUID(int=0)
    assert user_classes_of(packet) == (b"iPXE",)  # iPXE's bare form
    assert client_id_of(packet) == b"\x01" + bytes.fromhex("525400180001")
    assert max_message_size_of(packet) == 1472
    assert 175 in (parameter_request_list_of(packet) or ())
    ipxe = parse_encapsulated(packet.option(175) or b"", "175")
    features = {o.code: o.data for o in ipxe}
    assert features[19] == b"\x01"  # iPXE feature: HTTP
    assert 177 in features  # bus id


def test_views_of_a_real_edk2_discover() -> None:
    packet = parse_packet(golden(EDK2))
    assert client_arches_of(packet) == (7,)
    assert client_ndi_of(packet) == ClientNdi(1, 3, 0)
    assert user_classes_of(packet) is None
    assert packet.broadcast


def test_user_class_rfc3004_and_raw_forms() -> None:
    assert user_classes_of(with_option(77, b"\x04iPXE\x03abc")) == (b"iPXE", b"abc")
    assert user_classes_of(with_option(77, b"iPXE")) == (b"iPXE",)
    assert user_classes_of(with_option(77, b"\x05iPXE")) == (b"\x05iPXE",)  # overruns: raw
    assert user_classes_of(with_option(77, b"")) == (b"",)


@pytest.mark.parametrize(
    ("code", "data", "reason"),
    [
        (53, b"\x01\x02", "must be one byte"),
        (53, b"\x09", "must be one byte 1..8"),
        (54, b"\x01\x02", "must be 4 bytes"),
        (57, b"\x05", "must be 2 bytes"),
        (61, b"\x01", "at least 2 bytes"),
        (93, b"\x00", "not even"),
        (93, b"", "not even"),
        (94, b"\x01\x02", "must be 3 bytes"),
        (97, b"\x01" + bytes(16), "type 0 followed by 16 bytes"),
        (97, b"\x00" + bytes(15), "type 0 followed by 16 bytes"),
    ],
)
def test_malformed_typed_options(code: int, data: bytes, reason: str) -> None:
    packet = replace(discover(), options=(DhcpOption(code, data),))
    readers = {
        53: message_type_of,
        54: server_id_of,
        57: max_message_size_of,
        61: client_id_of,
        93: client_arches_of,
        94: client_ndi_of,
        97: client_uuid_of,
    }
    with pytest.raises(RemoteProtocolError, match=reason):
        readers[code](packet)


def test_simple_views() -> None:
    assert server_id_of(with_option(54, bytes((198, 18, 0, 1)))) == IPv4Address("198.18.0.1")
    assert max_message_size_of(with_option(57, (300).to_bytes(2, "big"))) == 576
    assert client_arches_of(with_option(93, b"\x00\x00\x00\x07\x00\x09")) == (0, 7, 9)
    assert server_id_of(discover()) is None


# --- option 43 ---------------------------------------------------------------------------------

pxe_vendor_options = st.builds(
    PxeVendorOptions,
    discovery_control=st.none() | st.builds(DiscoveryControl, st.integers(0, 15)),
    boot_servers=st.lists(
        st.builds(
            PxeBootServer,
            st.integers(0, 65535),
            st.lists(st.builds(IPv4Address, st.integers(0, 2**32 - 1)), max_size=3).map(tuple),
        ),
        max_size=3,
    ).map(tuple),
    boot_menu=st.lists(
        st.builds(PxeMenuItem, st.integers(0, 65535), st.binary(max_size=40)), max_size=3
    ).map(tuple),
    menu_prompt=st.none() | st.tuples(st.integers(0, 255), st.binary(max_size=40)),
    boot_item=st.none() | st.builds(PxeBootItem, st.integers(0, 65535), st.integers(0, 65535)),
    other=st.lists(
        st.builds(DhcpOption, st.sampled_from([1, 2, 3, 4, 5, 7, 11, 12]), st.binary(max_size=8)),
        max_size=3,
        unique_by=lambda o: o.code,
    ).map(tuple),
)


@settings(max_examples=200, deadline=None)
@given(pxe_vendor_options)
def test_pxe_vendor_options_round_trip(options: PxeVendorOptions) -> None:
    data = build_pxe_vendor_options(options)
    assert data.endswith(b"\xff")
    assert parse_pxe_vendor_options(data) == options


def test_pxe_vendor_options_wire_format() -> None:
    data = build_pxe_vendor_options(
        PxeVendorOptions(
            discovery_control=DiscoveryControl.USE_BOOT_FILE,
            boot_item=PxeBootItem(0x8000, 0),
        )
    )
    assert data == bytes((6, 1, 8, 71, 4, 0x80, 0, 0, 0, 255))


@pytest.mark.parametrize(
    "data",
    [
        bytes((6, 2, 8, 8)),
        bytes((71, 3, 0, 0, 0)),
        bytes((8, 4, 0, 1, 1, 198)),  # one server announced, 1 byte of its address
        bytes((9, 4, 0, 1, 5, 65)),  # a 5-byte description, 1 given
        bytes((10, 0)),
        bytes((6, 5, 8)),  # sub-option longer than the option
        bytes((6,)),
    ],
)
def test_malformed_pxe_vendor_options(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError, match="option 43"):
        parse_pxe_vendor_options(data)


def test_encapsulated_pad_end_and_concatenation() -> None:
    subs = parse_encapsulated(bytes((0, 1, 1, 65, 1, 1, 66, 255, 9, 9)), "x")
    assert subs == (DhcpOption(1, b"AB"),)


# --- architectures ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "firmware", "http"),
    [
        (0, Firmware.BIOS, False),
        (6, Firmware.EFI_IA32, False),
        (7, Firmware.EFI_X64, False),
        (9, Firmware.EFI_X64, False),  # EBC in the registry, x64 firmware in the field
        (10, Firmware.EFI_ARM32, False),
        (11, Firmware.EFI_ARM64, False),
        (15, Firmware.EFI_IA32, True),
        (16, Firmware.EFI_X64, True),
        (17, Firmware.OTHER, True),
        (18, Firmware.EFI_ARM32, True),
        (19, Firmware.EFI_ARM64, True),
        (20, Firmware.BIOS, True),
        (27, Firmware.OTHER, False),
        (28, Firmware.OTHER, True),
        (40, Firmware.OTHER, True),
        (1, Firmware.OTHER, False),
        (12, Firmware.OTHER, False),
        (999, Firmware.OTHER, False),
    ],
)
def test_arch_table(code: int, firmware: Firmware, http: bool) -> None:
    info = describe_arch(code)
    assert (info.firmware, info.http) == (firmware, http)


def test_arch_names_are_the_registry_names() -> None:
    assert len(ProcessorArch) == 42  # 0..41 as registered
    assert [a.value for a in ProcessorArch] == list(range(42))
    assert str(ProcessorArch.X64_UEFI) == "x64 UEFI (7)"
    assert str(describe_arch(16)) == "x64 uefi boot from http (16)"
    assert str(describe_arch(11)) == "ARM 64-bit UEFI (11)"
    assert describe_arch(4242).name == "unassigned"
