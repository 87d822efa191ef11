"""The pure ProxyDHCP decision: who is answered, with what, and where the reply goes."""

from __future__ import annotations

import uuid
from dataclasses import replace
from ipaddress import IPv4Address
from typing import Any

import pytest
from dhcp_strategies import MAC, SERVER, discover, golden, golden_names, option_lists, packets
from hypothesis import given, settings
from hypothesis import strategies as st

from pxe.dhcp.arch import Firmware, ProcessorArch, describe_arch
from pxe.dhcp.codec import BootpOp, DhcpOption, DhcpPacket, parse_packet
from pxe.dhcp.decide import (
    BootDecision,
    ClientIdentity,
    Destination,
    Ignore,
    PortKind,
    Reply,
    ReplyKind,
    decide,
)
from pxe.dhcp.options import (
    DhcpMessageType,
    DiscoveryControl,
    PxeBootItem,
    PxeVendorOptions,
    build_pxe_vendor_options,
    parse_pxe_vendor_options,
)
from pxe.dhcp.policy import (
    ConfigBootPolicy,
    InMemoryDeviceTable,
    PrestagedDevice,
    default_http_url,
)
from wds.config import PxeBootConfig, PxeConfig

HTTP = "http://198.18.0.1:8080/"
CLIENT_IP = IPv4Address("198.18.0.50")
RELAY = IPv4Address("198.18.1.1")
BROADCAST = Destination(IPv4Address("255.255.255.255"), 68, broadcast=True, relay=False)
UUID_BYTES = bytes(range(1, 17))


def policy(**pxe: object) -> ConfigBootPolicy:
    boot = pxe.pop("boot", PxeBootConfig())
    devices = pxe.pop("devices", None)
    config = replace(PxeConfig(), boot=boot, **pxe)  # type: ignore[arg-type]
    return ConfigBootPolicy(config, http_url=HTTP, devices=devices)  # type: ignore[arg-type]


def answer(
    request: DhcpPacket,
    pol: object | None = None,
    port_kind: PortKind = "dhcp",
    source_port: int = 68,
) -> Reply | Ignore:
    return decide(
        request,
        pol or policy(),  # type: ignore[arg-type]
        server_ip=SERVER,
        port_kind=port_kind,
        source_port=source_port,
    )


def reply(request: DhcpPacket, pol: object | None = None, **kw: object) -> Reply:
    result = answer(request, pol, **kw)  # type: ignore[arg-type]
    assert isinstance(result, Reply), result
    # the datagram is exactly the packet, padded, and parses back to it
    assert len(result.payload) >= 300
    assert parse_packet(result.payload) == result.packet
    return result


def uefi(arch: int = 7, **kw: Any) -> DhcpPacket:
    return discover(vendor_class=f"PXEClient:Arch:{arch:05d}:UNDI:003000".encode(), arch=arch, **kw)


def pxe_request(arch: int = 7, **kw: object) -> DhcpPacket:
    """What a UEFI client sends to port 4011 after a port4011-style offer."""
    item = build_pxe_vendor_options(PxeVendorOptions(boot_item=PxeBootItem(0, 0)))
    extra = (DhcpOption(54, SERVER.packed), DhcpOption(43, item))
    fields: dict[str, object] = {"ciaddr": CLIENT_IP, "flags": 0}
    fields.update(kw)
    return uefi(arch, extra=extra, message_type=3, **fields)


# --- who gets what -----------------------------------------------------------------------------


def test_bios_client_gets_proxy_offer_with_boot_file() -> None:
    r = reply(discover())
    p = r.packet
    assert r.kind is ReplyKind.PROXY_OFFER
    assert p.op is BootpOp.BOOTREPLY and p.xid == 0x1234ABCD and p.chaddr == MAC + bytes(10)
    assert p.yiaddr == IPv4Address(0) and p.ciaddr == IPv4Address(0)
    assert p.option(53) == bytes((DhcpMessageType.DHCPOFFER,))
    assert p.option(54) == SERVER.packed
    assert p.option(60) == b"PXEClient"
    assert p.option(97) == b"\0" + UUID_BYTES  # echoed
    assert p.file == b"undionly.kpxe" and p.siaddr == SERVER
    vendor = parse_pxe_vendor_options(p.option(43) or b"")
    assert vendor.discovery_control == DiscoveryControl.USE_BOOT_FILE
    assert r.client.arch.code == 0 and r.client.uuid == uuid.UUID(bytes=UUID_BYTES)


@pytest.mark.parametrize("arch", [7, 9])
def test_uefi_x64_offer_without_option_43_then_file_on_port_4011(arch: int) -> None:
    offer = reply(uefi(arch)).packet
    assert offer.option(43) is None and offer.file == b""  # the port 4011 variant (auto)
    assert offer.option(60) == b"PXEClient" and offer.siaddr == SERVER
    ack = reply(pxe_request(arch), port_kind="pxe", source_port=4011)
    assert ack.kind is ReplyKind.PXE_ACK
    assert ack.packet.option(53) == bytes((DhcpMessageType.DHCPACK,))
    assert ack.packet.file == b"ipxe.efi" and ack.packet.siaddr == SERVER
    assert ack.packet.ciaddr == CLIENT_IP and ack.packet.option(97) == b"\0" + UUID_BYTES
    assert parse_pxe_vendor_options(ack.packet.option(43) or b"").boot_item == PxeBootItem(0, 0)
    assert ack.destination == Destination(CLIENT_IP, 4011, broadcast=False, relay=False)


def test_proxy_mode_offer_puts_the_file_in_every_offer() -> None:
    offer = reply(uefi(7), policy(proxy_mode="offer")).packet
    assert offer.file == b"ipxe.efi" and offer.option(43) == bytes((6, 1, 8, 255))


def test_proxy_mode_port4011_applies_to_bios_too() -> None:
    offer = reply(discover(), policy(proxy_mode="port4011")).packet
    assert offer.option(43) is None and offer.file == b""


def test_arm64_needs_its_boot_file_configured() -> None:
    assert answer(uefi(11)) == Ignore(
        "no boot file for ARM 64-bit UEFI (11): [pxe.boot] efi_arm64 is empty"
    )
    pol = policy(boot=PxeBootConfig(efi_arm64="grubaa64.efi"), proxy_mode="offer")
    assert reply(uefi(11), pol).packet.file == b"grubaa64.efi"


def test_unknown_architecture_is_ignored() -> None:
    result = answer(uefi(27))
    assert result == Ignore("no boot files for architecture RISC-V 64-bit UEFI (27)")


def test_http_boot_client_gets_a_url() -> None:
    request = discover(vendor_class=b"HTTPClient:Arch:00016:UNDI:003000", arch=16)
    r = reply(request)
    assert r.packet.option(60) == b"HTTPClient"
    assert r.packet.file == b"http://198.18.0.1:8080/boot/ipxe.efi"
    assert r.packet.option(43) is None and r.packet.siaddr == SERVER
    assert r.client.http
    on_4011 = discover(vendor_class=b"HTTPClient:Arch:00016", arch=16, message_type=3)
    assert answer(on_4011, port_kind="pxe") == Ignore(
        "HTTP Boot clients are answered on port 67 only"
    )


def test_real_edk2_http_boot_discover_gets_a_url() -> None:
    request = parse_packet(golden("ovmf_edk2_virtio_httpclient_arch16_undi003000_discover.hex"))
    r = reply(request)
    assert r.packet.option(60) == b"HTTPClient" and r.client.arch.code == 16
    assert r.packet.file == b"http://198.18.0.1:8080/boot/ipxe.efi"
    assert r.destination == BROADCAST


def test_http_boot_arm64_url_and_absolute_urls_are_kept() -> None:
    pol = policy(boot=PxeBootConfig(efi_arm64="https://198.18.0.9/arm/grub.efi"))
    request = discover(vendor_class=b"HTTPClient:Arch:00019:UNDI:003000", arch=19)
    assert reply(request, pol).packet.file == b"https://198.18.0.9/arm/grub.efi"


@pytest.mark.parametrize(
    "extra",
    [
        (DhcpOption(77, b"iPXE"),),
        (DhcpOption(77, b"\x04iPXE"),),
        (DhcpOption(175, b"\x13\x01\x01"),),
    ],
)
def test_ipxe_gets_the_script_url_not_ipxe_again(extra: tuple[DhcpOption, ...]) -> None:
    r = reply(uefi(7, extra=extra))
    assert r.client.ipxe
    assert r.packet.file == b"http://198.18.0.1:8080/boot.ipxe"
    assert r.packet.option(43) == bytes((6, 1, 8, 255))  # iPXE takes the file from the offer
    assert r.packet.siaddr == SERVER  # without siaddr iPXE ignores the file name


def test_non_pxe_client_is_ignored_with_reason() -> None:
    reason = "not a PXE client: no option 60 PXEClient"
    assert answer(discover(vendor_class=None)) == Ignore(reason)
    assert answer(discover(vendor_class=b"MSFT 5.0")) == Ignore(reason)
    assert answer(discover(vendor_class=b"pxeclient")) == Ignore(reason)


def test_relayed_request_answered_through_relay_with_option_82() -> None:
    agent = bytes((1, 4)) + b"eth0" + bytes((2, 2)) + b"\xab\xcd"
    r = reply(discover(giaddr=RELAY, hops=1, extra=(DhcpOption(82, agent),)))
    assert r.destination == Destination(RELAY, 67, broadcast=False, relay=True)
    assert r.packet.giaddr == RELAY
    assert r.packet.options[-1] == DhcpOption(82, agent)  # echoed as-is, last (RFC 3046)
    assert r.client.relayed


def test_answer_none_and_known() -> None:
    assert answer(discover(), policy(answer="none")) == Ignore(
        "[pxe] answer = 'none': no PXE client is answered"
    )
    result = answer(discover(), policy(answer="known"))
    assert isinstance(result, Ignore) and "unknown client 52:54:00:18:00:01" in result.reason


def test_prestaged_device_by_mac_and_by_uuid() -> None:
    devices = InMemoryDeviceTable(
        [
            PrestagedDevice("lab-1", mac="52-54-00-18-00-01", boot_file="special.kpxe"),
            PrestagedDevice("lab-2", uuid=uuid.UUID(bytes=UUID_BYTES)),
        ]
    )
    known = policy(answer="known", devices=devices)
    assert reply(discover(), known).packet.file == b"special.kpxe"
    other_mac = discover(chaddr=bytes.fromhex("525400180099") + bytes(10))
    assert reply(other_mac, known).packet.file == b"undionly.kpxe"  # matched by UUID
    stranger = replace(other_mac, options=other_mac.options[:3])  # no option 97
    assert isinstance(answer(stranger, known), Ignore)


def test_placeholder_uuid_identifies_nobody() -> None:
    # QEMU without -uuid sends all zeros (see the golden packets): it must not match a device
    devices = InMemoryDeviceTable([PrestagedDevice("zero", uuid=uuid.UUID(int=0))])
    request = parse_packet(golden("ovmf_edk2_virtio_pxeclient_arch7_undi003000_discover.hex"))
    assert isinstance(answer(request, policy(answer="known", devices=devices)), Ignore)


# --- destinations and sizes --------------------------------------------------------------------


def test_destination_follows_rfc2131_table() -> None:
    assert reply(discover(flags=0x8000)).destination == BROADCAST
    # no broadcast bit: RFC 2131 would unicast to yiaddr, which a proxy offer does not have
    assert reply(discover(flags=0)).destination == BROADCAST
    with_address = reply(discover(ciaddr=CLIENT_IP, flags=0x8000)).destination
    assert with_address == Destination(CLIENT_IP, 68, broadcast=False, relay=False)
    ack = reply(pxe_request(), port_kind="pxe", source_port=68)
    assert ack.destination == Destination(CLIENT_IP, 68, broadcast=False, relay=False)
    relayed = reply(pxe_request(giaddr=RELAY), port_kind="pxe", source_port=4011)
    assert relayed.destination == Destination(RELAY, 67, broadcast=False, relay=True)


def test_replies_are_padded_and_respect_the_clients_max_size() -> None:
    assert len(reply(discover()).payload) == 300
    long_url = "http://198.18.0.1:8080/" + "d" * 200 + "/boot.ipxe"
    pol = policy(boot=PxeBootConfig(ipxe_script=long_url))
    r = reply(uefi(7, extra=(DhcpOption(77, b"iPXE"),)), pol)
    assert r.packet.file == b"" and r.packet.option(67) == long_url.encode()
    assert 300 < len(r.payload) <= 548


# --- what is not answered ----------------------------------------------------------------------


def test_echoed_options_too_big_for_a_reply_are_an_ignore_not_a_crash() -> None:
    huge_agent_info = bytes(1200)  # RFC 3396 lets a peer send it; the reply cannot carry it
    result = answer(discover(giaddr=RELAY, extra=(DhcpOption(82, huge_agent_info),)))
    assert isinstance(result, Ignore) and result.reason.startswith("reply does not fit in 576")


def test_wrong_message_type_for_the_port() -> None:
    assert answer(discover(message_type=3)) == Ignore(
        "DHCPREQUEST on the dhcp port: only DHCPDISCOVER is answered"
    )
    assert answer(discover(), port_kind="pxe") == Ignore(
        "DHCPDISCOVER on the pxe port: only DHCPREQUEST is answered"
    )
    no_type = replace(discover(), options=discover().options[1:])
    assert answer(no_type) == Ignore("no option 53 on the dhcp port: only DHCPDISCOVER is answered")


def test_port_4011_request_for_another_server_is_ignored() -> None:
    other = pxe_request()
    other = replace(other, options=(*other.options, DhcpOption(54, bytes((198, 18, 0, 2)))))
    # the first 54 in the tuple wins; build one that names the other server only
    only_other = replace(other, options=tuple(o for o in other.options if o.data != SERVER.packed))
    assert answer(only_other, port_kind="pxe") == Ignore(
        "addressed to boot server 198.18.0.2, not 198.18.0.1"
    )


def test_replies_and_bad_hardware_length_are_ignored() -> None:
    assert answer(discover(op=BootpOp.BOOTREPLY)) == Ignore("BOOTREPLY is not a request")
    assert answer(discover(hlen=0)) == Ignore("hardware address length 0 is not 1..16")


def test_malformed_option_becomes_an_ignore_with_reason() -> None:
    result = answer(discover(arch=None, extra=(DhcpOption(93, b"\x00"),)))
    assert isinstance(result, Ignore)
    assert result.reason.startswith("malformed request: option CLIENT_SYSTEM_ARCHITECTURE (93)")


def test_arch_from_vendor_class_when_option_93_is_missing() -> None:
    request = discover(vendor_class=b"PXEClient:Arch:00007:UNDI:003000", arch=None)
    assert reply(request).client.arch.code == 7


def test_real_edk2_port_4011_request_gets_the_file_back_on_port_4011() -> None:
    # captured in the namespace lab after wds's port4011-style offer (tests/pxe/boot_lab.py)
    request = parse_packet(golden("ovmf_edk2_virtio_pxeclient_arch7_undi003000_request4011.hex"))
    lab_server = IPv4Address("198.18.77.2")
    result = decide(request, policy(), server_ip=lab_server, port_kind="pxe", source_port=4011)
    assert isinstance(result, Reply) and result.kind is ReplyKind.PXE_ACK
    assert result.packet.file == b"ipxe.efi" and result.packet.siaddr == lab_server
    assert result.destination == Destination(request.ciaddr, 4011, broadcast=False, relay=False)
    assert result.packet.option(43) is None  # EDK2 sent no PXE_BOOT_ITEM to echo


@pytest.mark.parametrize("name", [n for n in golden_names() if n.endswith("_discover.hex")])
def test_every_golden_discover_gets_a_proxy_offer(name: str) -> None:
    r = reply(parse_packet(golden(name)))
    assert r.kind is ReplyKind.PROXY_OFFER
    assert r.client.mac.startswith("52:54:00:18:00:")


def test_policy_sees_a_client_identity() -> None:
    seen: list[ClientIdentity] = []

    class Recorder:
        def boot_for(self, client: ClientIdentity) -> BootDecision | Ignore:
            seen.append(client)
            return BootDecision("x.efi", next_server=IPv4Address("198.18.0.7"), delivery="offer")

    r = reply(
        parse_packet(golden("seabios_ipxe_e1000_pxeclient_arch0_undi002001_discover.hex")),
        Recorder(),
    )
    assert r.packet.siaddr == IPv4Address("198.18.0.7")
    (client,) = seen
    assert client.ipxe and client.arch.code == 0 and client.uuid is None
    assert client.vendor_class == "PXEClient:Arch:00000:UNDI:002001"


def test_urls_default_to_the_address_the_client_reached() -> None:
    pol = ConfigBootPolicy(PxeConfig(), http_port=8081)
    r = reply(uefi(7, extra=(DhcpOption(77, b"iPXE"),)), pol)
    assert r.packet.file == b"http://198.18.0.1:8081/boot.ipxe"
    configured = ConfigBootPolicy(replace(PxeConfig(), http_url="http://198.18.0.9/wds"))
    assert reply(uefi(7, extra=(DhcpOption(77, b"iPXE"),)), configured).packet.file == (
        b"http://198.18.0.9/wds/boot.ipxe"
    )


def test_default_http_url() -> None:
    assert default_http_url(SERVER, 8080) == "http://198.18.0.1:8080/"
    assert default_http_url(SERVER, 80) == "http://198.18.0.1/"


@settings(max_examples=300, deadline=None)
@given(
    packets(max_total=400),
    option_lists(max_total=300),
    st.sampled_from([0, 7, 11, 16]),
    st.none() | st.binary(max_size=1200),
    st.none() | st.binary(max_size=40),
)
def test_decide_never_raises(
    packet: DhcpPacket,
    extra: tuple[DhcpOption, ...],
    arch: int,
    agent_info: bytes | None,
    boot_item: bytes | None,
) -> None:
    """Random headers and options on top of a PXE client's DISCOVER/REQUEST: Reply or Ignore.

    Option 82 (echoed, any size) and option 43 (read on port 4011) are drawn on purpose."""
    extra = tuple(o for o in extra if o.code not in (43, 53, 60, 82, 93, 97))
    if agent_info is not None:
        extra += (DhcpOption(82, agent_info),)
    if boot_item is not None:
        extra += (DhcpOption(43, boot_item),)
    for message_type, port_kind in ((1, "dhcp"), (3, "pxe")):
        base = uefi(arch, message_type=message_type, extra=extra)
        for request in (base, replace(packet, options=base.options)):
            result = answer(request, port_kind=port_kind)  # type: ignore[arg-type]
            assert isinstance(result, Reply | Ignore)
            if isinstance(result, Reply):
                assert parse_packet(result.payload) == result.packet
                assert len(result.payload) <= 576


# --- the whole architecture table ---------------------------------------------------------------

EVERY_BOOT_FILE = PxeBootConfig(
    bios="bios.0",
    efi_ia32="ia32.efi",
    efi_x64="x64.efi",
    efi_arm32="arm32.efi",
    efi_arm64="arm64.efi",
)


@pytest.mark.parametrize("code", [int(a) for a in ProcessorArch], ids=lambda c: f"arch{c}")
def test_decision_table_for_every_iana_architecture(code: int) -> None:
    """Every registered option 93 value: the boot file of its family (a URL for HTTP Boot
    clients), or an Ignore naming the architecture when wds has no boot file family for it."""
    info = describe_arch(code)
    kind = b"HTTPClient" if info.http else b"PXEClient"
    request = discover(vendor_class=kind + f":Arch:{code:05d}:UNDI:003000".encode(), arch=code)
    result = answer(request, policy(boot=EVERY_BOOT_FILE, proxy_mode="offer"))
    if info.firmware is Firmware.OTHER:
        assert isinstance(result, Ignore)
        assert str(code) in result.reason and info.name in result.reason
        return
    assert isinstance(result, Reply), result
    expected = getattr(EVERY_BOOT_FILE, info.firmware.value)
    if info.http:
        assert result.packet.file == f"{HTTP}boot/{expected}".encode()  # wds.web.boot's /boot/
        assert result.packet.option(60) == b"HTTPClient"
    else:
        assert result.packet.file == expected.encode()
        assert result.packet.option(60) == b"PXEClient"
    assert result.client.arch.code == code


def test_seven_and_nine_are_both_x64_uefi() -> None:
    assert describe_arch(7).firmware is describe_arch(9).firmware is Firmware.EFI_X64
