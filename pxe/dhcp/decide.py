"""The ProxyDHCP decision: one request in, one reply or a reason to stay silent out.

:func:`decide` is pure: no sockets, no clock, no logging. The server feeds it every datagram from
port 67 (``port_kind="dhcp"``) and port 4011 (``port_kind="pxe"``) and sends what it returns.

What wds answers (PXE 2.1 spec chapter 2; RFC 4578; UEFI 2.x "HTTP Boot"):

* port 67, DHCPDISCOVER from a PXE or HTTP Boot client -> a **ProxyOffer**: yiaddr 0 (the site's
  DHCP server hands out addresses, we only say what to boot), option 54 our address, option 60
  "PXEClient" (or "HTTPClient"), option 97 echoed, siaddr the TFTP server and ``file`` the boot
  file. How the boot file reaches a PXE client is the policy's :attr:`BootDecision.delivery`:

  - ``"offer"``: the file is in the offer, with option 43 PXE_DISCOVERY_CONTROL = 8 ("use the boot
    file in the offer, skip boot server discovery"). BIOS PXE ROMs and iPXE are happy with this.
  - ``"port4011"``: the offer has no option 43 and no file; the client then asks on port 4011
    (DHCPREQUEST) and gets the file in the **PxeAck**. Many UEFI firmwares (EDK2 among them)
    ignore a proxy offer that tries to bypass discovery, but all follow this variant, which is
    what Windows Deployment Services sends.

* port 4011, DHCPREQUEST from a PXE client (to us, or to nobody in particular) -> a **PxeAck** with
  the boot file, echoing option 97 and the PXE_BOOT_ITEM of option 43.

Everything else is an :class:`Ignore` with a reason the server logs at DEBUG. Relayed requests
(giaddr set) are answered through the relay with option 82 echoed (RFC 3046 2.2); where a reply
goes otherwise follows RFC 2131 4.1 and is returned in :attr:`Reply.destination`.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Literal, Protocol

from pxe.dhcp.arch import ArchInfo, describe_arch
from pxe.dhcp.codec import (
    MAX_PACKET_SIZE,
    ZERO_ADDRESS,
    BootpOp,
    DhcpOption,
    DhcpPacket,
    build_packet,
)
from pxe.dhcp.options import (
    DhcpMessageType,
    DiscoveryControl,
    OptionCode,
    PxeVendorOptions,
    build_pxe_vendor_options,
    client_arches_of,
    client_uuid_of,
    max_message_size_of,
    message_type_of,
    parameter_request_list_of,
    parse_pxe_vendor_options,
    requested_address_of,
    server_id_of,
    user_classes_of,
    vendor_class_of,
)
from wds.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "BootDecision",
    "BootPolicy",
    "ClientIdentity",
    "Destination",
    "Ignore",
    "PortKind",
    "Reply",
    "ReplyKind",
    "Sighting",
    "decide",
    "identify",
    "observe",
]

PortKind = Literal["dhcp", "pxe"]

DHCP_SERVER_PORT = 67
DHCP_CLIENT_PORT = 68
LIMITED_BROADCAST = IPv4Address("255.255.255.255")
PXE_CLIENT = b"PXEClient"
HTTP_CLIENT = b"HTTPClient"
# UUIDs firmware sends when it has none: they identify nobody (QEMU without -uuid sends zeros).
_NO_UUID = frozenset({uuid.UUID(int=0), uuid.UUID(int=(1 << 128) - 1)})


@dataclass(frozen=True)
class Ignore:
    """Stay silent; ``reason`` says why (logged at DEBUG by the server)."""

    reason: str


@dataclass(frozen=True)
class ClientIdentity:
    """What the policy may base its answer on."""

    mac: str  # "52:54:00:18:00:01"
    uuid: uuid.UUID | None  # option 97; None when absent or a placeholder (all 0 / all 1)
    arch: ArchInfo  # option 93, most preferred first
    vendor_class: str  # option 60 as sent
    ipxe: bool  # user class "iPXE" or option 175: iPXE is already running
    http: bool  # UEFI HTTP Boot client: wants a URL
    relayed: bool  # came through a relay agent (giaddr set)
    server_ip: IPv4Address = ZERO_ADDRESS  # our address the client reached (for URLs)


@dataclass(frozen=True)
class BootDecision:
    """The policy's answer for one client."""

    boot_file: str  # TFTP path, or a URL for iPXE and HTTP Boot clients
    next_server: IPv4Address | None = None  # siaddr, the TFTP server; None = this server
    delivery: Literal["offer", "port4011"] = "offer"


class BootPolicy(Protocol):
    """Which boot file a client gets, if any (implemented by ConfigBootPolicy, the device store)."""

    def boot_for(self, client: ClientIdentity) -> BootDecision | Ignore: ...


class ReplyKind(enum.Enum):
    PROXY_OFFER = "ProxyOffer"
    PXE_ACK = "PxeAck"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Destination:
    """Where the reply goes (RFC 2131 4.1)."""

    address: IPv4Address
    port: int
    broadcast: bool  # send with SO_BROADCAST on the interface the request came in on
    relay: bool  # to a relay agent's giaddr


@dataclass(frozen=True)
class Reply:
    kind: ReplyKind
    packet: DhcpPacket
    payload: bytes  # the built datagram, padded to at least 300 bytes
    destination: Destination
    client: ClientIdentity


def decide(
    request: DhcpPacket,
    policy: BootPolicy,
    *,
    server_ip: IPv4Address,
    port_kind: PortKind,
    source_port: int = DHCP_CLIENT_PORT,
) -> Reply | Ignore:
    """Answer one request, or say why not. ``source_port`` is the request's UDP source port
    (port 4011 replies go back to it). Never raises for anything a peer can send."""
    try:
        return _decide(request, policy, server_ip, port_kind, source_port)
    except RemoteProtocolError as exc:
        return Ignore(f"malformed request: {exc}")


def _decide(
    request: DhcpPacket,
    policy: BootPolicy,
    server_ip: IPv4Address,
    port_kind: PortKind,
    source_port: int,
) -> Reply | Ignore:
    if request.op != BootpOp.BOOTREQUEST:
        return Ignore(f"{request.op} is not a request")
    vendor = vendor_class_of(request) or b""
    if not vendor.startswith((PXE_CLIENT, HTTP_CLIENT)):
        return Ignore("not a PXE client: no option 60 PXEClient")
    if not 1 <= request.hlen <= 16:
        return Ignore(f"hardware address length {request.hlen} is not 1..16")
    mtype = message_type_of(request)
    expected = DhcpMessageType.DHCPDISCOVER if port_kind == "dhcp" else DhcpMessageType.DHCPREQUEST
    if mtype != expected:
        return Ignore(
            f"{mtype or 'no option 53'} on the {port_kind} port: only {expected} is answered"
        )
    server_id = server_id_of(request)
    if port_kind == "pxe" and server_id is not None and server_id != server_ip:
        return Ignore(f"addressed to boot server {server_id}, not {server_ip}")
    client = identify(request, server_ip=server_ip)
    if port_kind == "pxe" and client.http:
        return Ignore("HTTP Boot clients are answered on port 67 only")
    decision = policy.boot_for(client)
    if isinstance(decision, Ignore):
        return decision
    kind = ReplyKind.PROXY_OFFER if port_kind == "dhcp" else ReplyKind.PXE_ACK
    packet = _reply_packet(request, client, decision, kind, server_ip)
    size = min(max_message_size_of(request) or 576, MAX_PACKET_SIZE)
    try:
        payload = build_packet(packet, max_size=size - 28)  # RFC 2131: minus IP and UDP headers
    except LocalProtocolError as exc:
        # the peer controls the echoed options (97, 82): a reply that cannot fit is not sent
        return Ignore(f"reply does not fit in {size} bytes: {exc}")
    return Reply(kind, packet, payload, _destination(request, port_kind, source_port), client)


def identify(request: DhcpPacket, *, server_ip: IPv4Address = ZERO_ADDRESS) -> ClientIdentity:
    """The client's identity from its request; raises RemoteProtocolError if options are bad."""
    vendor = vendor_class_of(request) or b""
    arches = client_arches_of(request)
    arch = describe_arch(arches[0] if arches else _arch_from_vendor_class(vendor))
    client_uuid = client_uuid_of(request)
    user_classes = user_classes_of(request) or ()
    return ClientIdentity(
        mac=request.hardware_address.hex(":"),
        uuid=None if client_uuid in _NO_UUID else client_uuid,
        arch=arch,
        vendor_class=vendor.decode("ascii", "replace"),
        ipxe=b"iPXE" in user_classes or request.option(OptionCode.IPXE_ENCAPSULATED) is not None,
        http=vendor.startswith(HTTP_CLIENT) or arch.http,
        relayed=request.giaddr != ZERO_ADDRESS,
        server_ip=server_ip,
    )


@dataclass(frozen=True)
class Sighting:
    """What a request tells the server besides whether to answer it (for events and metrics)."""

    mac: str
    #: a DHCPREQUEST's address (option 50, else ciaddr): the client uses it from now on
    address: IPv4Address | None = None
    #: a PXE or HTTP Boot client's DISCOVER on port 67: one boot request of this architecture
    arch: ArchInfo | None = None


def observe(request: DhcpPacket, *, port_kind: PortKind) -> Sighting | None:
    """What to learn from ``request`` (any client's, PXE or not); None: nothing. Never raises.

    A DHCPREQUEST to the site's DHCP server is broadcast (RFC 2131 4.3.2, SELECTING) and names the
    address the client is about to use, and a PXE client's REQUEST on port 4011 carries its
    address in ciaddr: that is how services which only see an IP address (TFTP, HTTP) learn which
    device is asking.
    """
    if request.op != BootpOp.BOOTREQUEST or not 1 <= request.hlen <= 16:
        return None
    mac = request.hardware_address.hex(":")
    try:
        mtype = message_type_of(request)
        if mtype == DhcpMessageType.DHCPREQUEST:
            # port 4011: the PXE client already has its address, in ciaddr (PXE 2.1 2.2.5)
            address = requested_address_of(request) if port_kind == "dhcp" else None
            if address is None and request.ciaddr != ZERO_ADDRESS:
                address = request.ciaddr  # RENEWING/REBINDING (RFC 2131 4.3.2), or port 4011
            if address is None or address == ZERO_ADDRESS or address.is_multicast:
                return None
            return Sighting(mac, address=address)
        if mtype == DhcpMessageType.DHCPDISCOVER and port_kind == "dhcp":
            vendor = vendor_class_of(request) or b""
            if not vendor.startswith((PXE_CLIENT, HTTP_CLIENT)):
                return None
            return Sighting(mac, arch=identify(request).arch)
    except RemoteProtocolError:
        return None
    return None


def _arch_from_vendor_class(vendor: bytes) -> int:
    # PXE 2.1 spec: "PXEClient:Arch:xxxxx:UNDI:yyyzzz"; clients without option 93 are old BIOS ROMs.
    fields = vendor.split(b":")
    if len(fields) >= 3 and fields[1] == b"Arch" and fields[2].isdigit() and len(fields[2]) <= 5:
        return int(fields[2]) & 0xFFFF
    return 0


def _reply_packet(
    request: DhcpPacket,
    client: ClientIdentity,
    decision: BootDecision,
    kind: ReplyKind,
    server_ip: IPv4Address,
) -> DhcpPacket:
    next_server = decision.next_server or server_ip
    boot_file = decision.boot_file.encode("utf-8")
    give_file = kind == ReplyKind.PXE_ACK or client.http or decision.delivery == "offer"
    mtype = DhcpMessageType.DHCPOFFER if kind == ReplyKind.PROXY_OFFER else DhcpMessageType.DHCPACK
    options = [
        DhcpOption(OptionCode.DHCP_MESSAGE_TYPE, bytes((mtype,))),
        DhcpOption(OptionCode.SERVER_IDENTIFIER, server_ip.packed),
        DhcpOption(OptionCode.VENDOR_CLASS_IDENTIFIER, HTTP_CLIENT if client.http else PXE_CLIENT),
    ]
    uuid_option = request.option(OptionCode.CLIENT_MACHINE_IDENTIFIER)
    if uuid_option is not None:  # PXE 2.1: echo 97 as received
        options.append(DhcpOption(OptionCode.CLIENT_MACHINE_IDENTIFIER, uuid_option))
    vendor_options = _pxe_vendor_options(request, client, decision, kind)
    if vendor_options is not None:
        options.append(DhcpOption(OptionCode.VENDOR_SPECIFIC, vendor_options))
    # The file field holds 127 bytes and a NUL; a longer name (a long URL) goes in option 67 only.
    in_file = give_file and len(boot_file) <= 127
    requested = parameter_request_list_of(request) or ()
    if give_file and (not in_file or OptionCode.BOOTFILE_NAME in requested):
        options.append(DhcpOption(OptionCode.BOOTFILE_NAME, boot_file))
    is_url = boot_file.startswith((b"http://", b"https://"))
    if give_file and OptionCode.TFTP_SERVER_NAME in requested and not is_url:
        options.append(DhcpOption(OptionCode.TFTP_SERVER_NAME, str(next_server).encode()))
    relay_info = request.option(OptionCode.RELAY_AGENT_INFORMATION)
    if relay_info is not None:  # RFC 3046 2.2: echoed unchanged, last
        options.append(DhcpOption(OptionCode.RELAY_AGENT_INFORMATION, relay_info))
    return DhcpPacket(
        op=BootpOp.BOOTREPLY,
        htype=request.htype,
        hlen=request.hlen,
        xid=request.xid,
        flags=request.flags,
        ciaddr=request.ciaddr if kind == ReplyKind.PXE_ACK else ZERO_ADDRESS,
        # Always set, URLs too: iPXE only takes boot information from a ProxyDHCP packet that has
        # both siaddr and a file name (seen in the namespace lab with iPXE 1.0.0+git-20190125).
        siaddr=next_server,
        giaddr=request.giaddr,
        chaddr=request.chaddr,
        file=boot_file if in_file else b"",
        options=tuple(options),
    )


def _pxe_vendor_options(
    request: DhcpPacket, client: ClientIdentity, decision: BootDecision, kind: ReplyKind
) -> bytes | None:
    if client.http:
        return None  # UEFI HTTP Boot has no PXE sub-options
    if kind == ReplyKind.PROXY_OFFER:
        if decision.delivery == "port4011":
            return None  # the WDS/BINL variant: no option 43 makes the client ask on 4011
        return build_pxe_vendor_options(
            PxeVendorOptions(discovery_control=DiscoveryControl.USE_BOOT_FILE)
        )
    raw = request.option(OptionCode.VENDOR_SPECIFIC)
    item = parse_pxe_vendor_options(raw).boot_item if raw is not None else None
    if item is None:
        return None
    # PXE 2.1 spec 2.2.7: the ACK names the boot item (type, layer) it answers.
    return build_pxe_vendor_options(PxeVendorOptions(boot_item=item))


def _destination(request: DhcpPacket, port_kind: PortKind, source_port: int) -> Destination:
    # RFC 2131 4.1, in its order: relay, then a client that has an address, then broadcast.
    if request.giaddr != ZERO_ADDRESS:
        return Destination(request.giaddr, DHCP_SERVER_PORT, broadcast=False, relay=True)
    if request.ciaddr != ZERO_ADDRESS:
        port = source_port if port_kind == "pxe" else DHCP_CLIENT_PORT
        return Destination(request.ciaddr, port, broadcast=False, relay=False)
    # With the broadcast bit clear RFC 2131 unicasts to yiaddr/chaddr; a proxy offer has no
    # yiaddr to send to, so it is broadcast either way.
    return Destination(LIMITED_BROADCAST, DHCP_CLIENT_PORT, broadcast=True, relay=False)
