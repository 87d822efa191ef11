"""Typed views of the DHCP options a PXE server reads and writes.

The codec keeps every option as bytes; this module gives meaning to the ones wds uses. Each
``*_of`` reader takes a :class:`DhcpPacket` and returns None when the option is absent, or raises
:class:`RemoteProtocolError` when it is present but malformed. Each ``*_option`` builder returns a
:class:`DhcpOption` ready for a reply.

Encapsulated spaces -- option 43 with the PXE sub-options (PXE 2.1 spec, table 2-1) and option 175
with iPXE's -- use the same TLV encoding as the top level; their codecs are here too.
"""

from __future__ import annotations

import enum
import io
import uuid
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

from construct import (
    Bytes,
    ConstructError,
    GreedyBytes,
    Int8ub,
    Int16ub,
    Prefixed,
    PrefixedArray,
    Struct,
)

from pxe.dhcp.codec import END, PAD, DhcpOption, DhcpPacket, build_option_area
from wds.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "ClientNdi",
    "DhcpMessageType",
    "OptionCode",
    "PxeBootItem",
    "PxeBootServer",
    "PxeMenuItem",
    "PxeOption",
    "PxeVendorOptions",
    "build_encapsulated",
    "build_pxe_vendor_options",
    "client_arches_of",
    "client_id_of",
    "client_ndi_of",
    "client_uuid_of",
    "max_message_size_of",
    "message_type_of",
    "parameter_request_list_of",
    "parse_encapsulated",
    "parse_pxe_vendor_options",
    "server_id_of",
    "user_classes_of",
    "vendor_class_of",
]


class OptionCode(enum.IntEnum):
    """The option codes wds reads or writes (RFC 2132 and the RFCs named per line)."""

    VENDOR_SPECIFIC = 43  # RFC 2132 8.4; PXE sub-options when option 60 is PXEClient
    REQUESTED_ADDRESS = 50  # RFC 2132 9.1
    OPTION_OVERLOAD = 52  # RFC 2132 9.3
    DHCP_MESSAGE_TYPE = 53  # RFC 2132 9.6
    SERVER_IDENTIFIER = 54  # RFC 2132 9.7
    PARAMETER_REQUEST_LIST = 55  # RFC 2132 9.8
    MAX_MESSAGE_SIZE = 57  # RFC 2132 9.10
    VENDOR_CLASS_IDENTIFIER = 60  # RFC 2132 9.13
    CLIENT_IDENTIFIER = 61  # RFC 2132 9.14
    TFTP_SERVER_NAME = 66  # RFC 2132 9.4
    BOOTFILE_NAME = 67  # RFC 2132 9.5
    USER_CLASS = 77  # RFC 3004
    RELAY_AGENT_INFORMATION = 82  # RFC 3046
    CLIENT_SYSTEM_ARCHITECTURE = 93  # RFC 4578 2.1
    CLIENT_NETWORK_INTERFACE_ID = 94  # RFC 4578 2.2
    CLIENT_MACHINE_IDENTIFIER = 97  # RFC 4578 2.3 (UUID/GUID)
    IPXE_ENCAPSULATED = 175  # iPXE's own option space

    def __str__(self) -> str:
        return f"{self.name} ({self.value})"


class DhcpMessageType(enum.IntEnum):
    """RFC 2132 9.6, option 53."""

    DHCPDISCOVER = 1
    DHCPOFFER = 2
    DHCPREQUEST = 3
    DHCPDECLINE = 4
    DHCPACK = 5
    DHCPNAK = 6
    DHCPRELEASE = 7
    DHCPINFORM = 8

    def __str__(self) -> str:
        return self.name


class PxeOption(enum.IntEnum):
    """PXE 2.1 spec table 2-1: sub-options of option 43 for PXE clients."""

    PXE_DISCOVERY_CONTROL = 6
    PXE_BOOT_SERVERS = 8
    PXE_BOOT_MENU = 9
    PXE_MENU_PROMPT = 10
    PXE_BOOT_ITEM = 71

    def __str__(self) -> str:
        return self.name


class DiscoveryControl(enum.IntFlag):
    """PXE 2.1 spec, PXE_DISCOVERY_CONTROL bits."""

    DISABLE_BROADCAST = 1
    DISABLE_MULTICAST = 2
    ONLY_LISTED_SERVERS = 4
    #: "if set, and a boot file name is present in the initial DHCP or ProxyDHCP offer packet,
    #: download the boot file (do not prompt/menu/discover)"
    USE_BOOT_FILE = 8


def _malformed(code: OptionCode, why: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"option {code}: {why}")


# --------------------------------------------------------------------------------------------
# Simple options


def message_type_of(packet: DhcpPacket) -> DhcpMessageType | None:
    data = packet.option(OptionCode.DHCP_MESSAGE_TYPE)
    if data is None:
        return None
    if len(data) != 1 or not 1 <= data[0] <= 8:
        raise _malformed(OptionCode.DHCP_MESSAGE_TYPE, f"must be one byte 1..8, got {data!r}")
    return DhcpMessageType(data[0])


def server_id_of(packet: DhcpPacket) -> IPv4Address | None:
    data = packet.option(OptionCode.SERVER_IDENTIFIER)
    if data is None:
        return None
    if len(data) != 4:
        raise _malformed(OptionCode.SERVER_IDENTIFIER, f"must be 4 bytes, got {len(data)}")
    return IPv4Address(data)


def requested_address_of(packet: DhcpPacket) -> IPv4Address | None:
    data = packet.option(OptionCode.REQUESTED_ADDRESS)
    if data is None:
        return None
    if len(data) != 4:
        raise _malformed(OptionCode.REQUESTED_ADDRESS, f"must be 4 bytes, got {len(data)}")
    return IPv4Address(data)


def parameter_request_list_of(packet: DhcpPacket) -> tuple[int, ...] | None:
    data = packet.option(OptionCode.PARAMETER_REQUEST_LIST)
    return None if data is None else tuple(data)


def max_message_size_of(packet: DhcpPacket) -> int | None:
    data = packet.option(OptionCode.MAX_MESSAGE_SIZE)
    if data is None:
        return None
    if len(data) != 2:
        raise _malformed(OptionCode.MAX_MESSAGE_SIZE, f"must be 2 bytes, got {len(data)}")
    # RFC 2132 9.10: the minimum legal value is 576
    return max(576, int.from_bytes(data, "big"))


def vendor_class_of(packet: DhcpPacket) -> bytes | None:
    return packet.option(OptionCode.VENDOR_CLASS_IDENTIFIER)


def client_id_of(packet: DhcpPacket) -> bytes | None:
    data = packet.option(OptionCode.CLIENT_IDENTIFIER)
    if data is not None and len(data) < 2:
        # RFC 2132 9.14: type octet plus at least one octet of identifier
        raise _malformed(OptionCode.CLIENT_IDENTIFIER, "must be at least 2 bytes")
    return data


def client_arches_of(packet: DhcpPacket) -> tuple[int, ...] | None:
    """RFC 4578 2.1: a non-empty list of 16-bit architecture types, most preferred first."""
    data = packet.option(OptionCode.CLIENT_SYSTEM_ARCHITECTURE)
    if data is None:
        return None
    if not data or len(data) % 2:
        raise _malformed(
            OptionCode.CLIENT_SYSTEM_ARCHITECTURE, f"length {len(data)} is not even and > 0"
        )
    return tuple(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))


@dataclass(frozen=True)
class ClientNdi:
    """RFC 4578 2.2: UNDI interface type (1) and version."""

    type: int
    major: int
    minor: int


def client_ndi_of(packet: DhcpPacket) -> ClientNdi | None:
    data = packet.option(OptionCode.CLIENT_NETWORK_INTERFACE_ID)
    if data is None:
        return None
    if len(data) != 3:
        raise _malformed(
            OptionCode.CLIENT_NETWORK_INTERFACE_ID, f"must be 3 bytes, got {len(data)}"
        )
    return ClientNdi(data[0], data[1], data[2])


def client_uuid_of(packet: DhcpPacket) -> uuid.UUID | None:
    """RFC 4578 2.3: type 0 followed by a 16-byte GUID.

    The bytes are kept in wire order (``uuid.UUID(bytes=...)``); SMBIOS mixed-endian display is a
    presentation matter for the device store.
    """
    data = packet.option(OptionCode.CLIENT_MACHINE_IDENTIFIER)
    if data is None:
        return None
    if len(data) != 17 or data[0] != 0:
        raise _malformed(
            OptionCode.CLIENT_MACHINE_IDENTIFIER, "must be type 0 followed by 16 bytes"
        )
    return uuid.UUID(bytes=data[1:])


def user_classes_of(packet: DhcpPacket) -> tuple[bytes, ...] | None:
    """Option 77 user classes.

    RFC 3004 frames each class with a length byte ("\\x04iPXE"); iPXE and some older clients send
    one bare string ("iPXE"). A value that is not an exact sequence of RFC 3004 items, each at least
    one byte long, is taken as one bare class.
    """
    data = packet.option(OptionCode.USER_CLASS)
    if data is None:
        return None
    classes: list[bytes] = []
    i = 0
    while i < len(data):
        length = data[i]
        if length == 0 or i + 1 + length > len(data):
            return (data,)
        classes.append(data[i + 1 : i + 1 + length])
        i += 1 + length
    return tuple(classes) if classes else (data,)


# --------------------------------------------------------------------------------------------
# Encapsulated option spaces (43, 175)


def parse_encapsulated(data: bytes, where: str) -> tuple[DhcpOption, ...]:
    """Sub-options of an encapsulating option; Pad skipped, End optional (RFC 2132 8.4).

    Repeated sub-option codes are concatenated as RFC 3396 asks for the top level.
    """
    items: dict[int, bytearray] = {}
    i = 0
    while i < len(data):
        code = data[i]
        if code == PAD:
            i += 1
            continue
        if code == END:
            break
        if i + 1 >= len(data):
            raise RemoteProtocolError(f"{where}: sub-option {code} at byte {i} has no length")
        length = data[i + 1]
        if i + 2 + length > len(data):
            raise RemoteProtocolError(
                f"{where}: sub-option {code} at byte {i} is truncated: length {length} but only "
                f"{len(data) - i - 2} bytes left"
            )
        items.setdefault(code, bytearray()).extend(data[i + 2 : i + 2 + length])
        i += 2 + length
    return tuple(DhcpOption(code, bytes(value)) for code, value in items.items())


def build_encapsulated(options: tuple[DhcpOption, ...], *, end: bool = True) -> bytes:
    return build_option_area(options, end=end)


@dataclass(frozen=True)
class PxeBootServer:
    """PXE_BOOT_SERVERS entry: a boot server type and its addresses."""

    type: int
    addresses: tuple[IPv4Address, ...]


@dataclass(frozen=True)
class PxeMenuItem:
    """PXE_BOOT_MENU entry: a boot server type and its description."""

    type: int
    description: bytes


@dataclass(frozen=True)
class PxeBootItem:
    """PXE_BOOT_ITEM: the boot server type and layer a client asks for on port 4011."""

    type: int
    layer: int


@dataclass(frozen=True)
class PxeVendorOptions:
    """Option 43 of a PXE client or server. Unknown sub-options are kept in ``other``."""

    discovery_control: DiscoveryControl | None = None
    boot_servers: tuple[PxeBootServer, ...] = ()
    boot_menu: tuple[PxeMenuItem, ...] = ()
    menu_prompt: tuple[int, bytes] | None = None  # (timeout seconds, prompt)
    boot_item: PxeBootItem | None = None
    other: tuple[DhcpOption, ...] = ()


# PXE 2.1 spec table 2-1 layouts of the list-valued sub-options.
_BOOT_SERVER = Struct("type" / Int16ub, "addresses" / PrefixedArray(Int8ub, Bytes(4)))
_MENU_ITEM = Struct("type" / Int16ub, "description" / Prefixed(Int8ub, GreedyBytes))


def _parse_list(item: Struct, value: bytes, what: str) -> list[Any]:
    """Items of ``item`` layout filling ``value`` exactly; a short last item is an error."""
    stream = io.BytesIO(value)
    out: list[Any] = []
    while stream.tell() < len(value):
        at = stream.tell()
        try:
            out.append(item.parse_stream(stream))
        except ConstructError:
            raise RemoteProtocolError(
                f"option 43 (PXE): {what} entry at byte {at} is truncated"
            ) from None
    return out


def parse_pxe_vendor_options(data: bytes) -> PxeVendorOptions:
    where = "option 43 (PXE)"
    subs = parse_encapsulated(data, where)
    result: dict[str, object] = {}
    other: list[DhcpOption] = []
    for sub in subs:
        value = sub.data
        try:
            if sub.code == PxeOption.PXE_DISCOVERY_CONTROL:
                if len(value) != 1:
                    raise RemoteProtocolError(f"{where}: PXE_DISCOVERY_CONTROL is not 1 byte")
                result["discovery_control"] = DiscoveryControl(value[0] & 0x0F)
            elif sub.code == PxeOption.PXE_BOOT_SERVERS:
                result["boot_servers"] = _parse_boot_servers(value)
            elif sub.code == PxeOption.PXE_BOOT_MENU:
                result["boot_menu"] = _parse_boot_menu(value)
            elif sub.code == PxeOption.PXE_MENU_PROMPT:
                if not value:
                    raise RemoteProtocolError(f"{where}: PXE_MENU_PROMPT is empty")
                result["menu_prompt"] = (value[0], value[1:])
            elif sub.code == PxeOption.PXE_BOOT_ITEM:
                if len(value) != 4:
                    raise RemoteProtocolError(f"{where}: PXE_BOOT_ITEM is not 4 bytes")
                result["boot_item"] = PxeBootItem(
                    int.from_bytes(value[:2], "big"), int.from_bytes(value[2:], "big")
                )
            else:
                other.append(sub)
        except ValueError:  # an IntFlag/bytes conversion of a peer's value
            raise RemoteProtocolError(f"{where}: sub-option {sub.code} is malformed") from None
    return PxeVendorOptions(other=tuple(other), **result)  # type: ignore[arg-type]


def _parse_boot_servers(value: bytes) -> tuple[PxeBootServer, ...]:
    return tuple(
        PxeBootServer(c.type, tuple(IPv4Address(a) for a in c.addresses))
        for c in _parse_list(_BOOT_SERVER, value, "PXE_BOOT_SERVERS")
    )


def _parse_boot_menu(value: bytes) -> tuple[PxeMenuItem, ...]:
    return tuple(
        PxeMenuItem(c.type, c.description) for c in _parse_list(_MENU_ITEM, value, "PXE_BOOT_MENU")
    )


def build_pxe_vendor_options(options: PxeVendorOptions) -> bytes:
    """Encode option 43 for a PXE client, ending with End (PXE 2.1 spec)."""
    subs: list[DhcpOption] = []
    if options.discovery_control is not None:
        subs.append(
            DhcpOption(PxeOption.PXE_DISCOVERY_CONTROL, bytes((options.discovery_control,)))
        )
    if options.boot_servers:
        subs.append(
            DhcpOption(
                PxeOption.PXE_BOOT_SERVERS,
                b"".join(
                    s.type.to_bytes(2, "big")
                    + bytes((len(s.addresses),))
                    + b"".join(a.packed for a in s.addresses)
                    for s in options.boot_servers
                ),
            )
        )
    if options.boot_menu:
        for item in options.boot_menu:
            if len(item.description) > 255:
                raise LocalProtocolError("PXE menu description longer than 255 bytes")
        subs.append(
            DhcpOption(
                PxeOption.PXE_BOOT_MENU,
                b"".join(
                    m.type.to_bytes(2, "big") + bytes((len(m.description),)) + m.description
                    for m in options.boot_menu
                ),
            )
        )
    if options.menu_prompt is not None:
        timeout, prompt = options.menu_prompt
        subs.append(DhcpOption(PxeOption.PXE_MENU_PROMPT, bytes((timeout,)) + prompt))
    if options.boot_item is not None:
        item_ = options.boot_item
        subs.append(
            DhcpOption(
                PxeOption.PXE_BOOT_ITEM,
                item_.type.to_bytes(2, "big") + item_.layer.to_bytes(2, "big"),
            )
        )
    subs.extend(options.other)
    return build_encapsulated(tuple(subs), end=True)
