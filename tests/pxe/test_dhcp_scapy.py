"""Cross-checks with scapy's independent DHCP implementation, both ways.

scapy parses what we build (header field by field, options by code), and we parse what scapy
builds. scapy knows neither option overload nor RFC 3396, so the packets here stay within one
options field; repeated codes scapy shows separately are joined by the test, as RFC 3396 says.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

import pytest
from dhcp_strategies import SERVER, addresses, c_strings, discover, file_strings, golden_names
from dhcp_strategies import golden as golden_bytes
from hypothesis import given, settings
from hypothesis import strategies as st

from pxe.dhcp.codec import BootpOp, DhcpOption, DhcpPacket, build_packet, parse_packet
from pxe.dhcp.decide import Reply, decide
from pxe.dhcp.policy import ConfigBootPolicy
from wds.config import PxeConfig

scapy_dhcp = pytest.importorskip("scapy.layers.dhcp")
BOOTP, DHCP = scapy_dhcp.BOOTP, scapy_dhcp.DHCP

# Codes scapy keeps as raw bytes: named-but-untyped ones, StrField ones, and unknown ones.
RAW_CODES = sorted(
    {
        code
        for code in range(1, 255)
        if code not in scapy_dhcp.DHCPOptions
        or isinstance(scapy_dhcp.DHCPOptions[code], str)
        or type(scapy_dhcp.DHCPOptions[code]).__name__ == "StrField"
    }
    - {0, 52, 255}
)


def scapy_options(layer: Any) -> dict[int, bytes | Any]:
    """scapy's option list as {code: value}, raw values of one code joined (RFC 3396)."""
    out: dict[int, Any] = {}
    for item in layer.options:
        if item in ("end", "pad"):
            continue
        name, value = item[0], item[1] if len(item) == 2 else item[1:]
        code = name if isinstance(name, int) else scapy_dhcp.DHCPRevOptions[name][0]
        if isinstance(value, bytes) and isinstance(out.get(code), bytes):
            out[code] += value
        else:
            out[code] = value
    return out


def assert_header_matches(ours: DhcpPacket, theirs: Any) -> None:
    assert theirs.op == ours.op
    assert (theirs.htype, theirs.hlen, theirs.hops) == (ours.htype, ours.hlen, ours.hops)
    assert (theirs.xid, theirs.secs, int(theirs.flags)) == (ours.xid, ours.secs, ours.flags)
    for name in ("ciaddr", "yiaddr", "siaddr", "giaddr"):
        assert IPv4Address(getattr(theirs, name)) == getattr(ours, name), name
    assert theirs.chaddr == ours.chaddr
    assert theirs.sname == ours.sname.ljust(64, b"\0")
    assert theirs.file == ours.file.ljust(128, b"\0")


raw_options = st.lists(
    st.builds(DhcpOption, st.sampled_from(RAW_CODES), st.binary(max_size=255)),
    unique_by=lambda o: o.code,
    max_size=8,
)
headers = st.fixed_dictionaries(
    {
        "op": st.sampled_from(BootpOp),
        "htype": st.integers(0, 255),
        "hlen": st.integers(0, 255),
        "hops": st.integers(0, 255),
        "xid": st.integers(0, 2**32 - 1),
        "secs": st.integers(0, 2**16 - 1),
        "flags": st.integers(0, 2**16 - 1),
        "ciaddr": addresses,
        "yiaddr": addresses,
        "siaddr": addresses,
        "giaddr": addresses,
        "chaddr": st.binary(min_size=16, max_size=16),
        "sname": c_strings,
        "file": file_strings,
    }
)


@settings(max_examples=150, deadline=None)
@given(headers, raw_options)
def test_scapy_parses_what_we_build(header: dict[str, Any], options: list[DhcpOption]) -> None:
    ours = DhcpPacket(options=tuple(options), **header)
    theirs = BOOTP(build_packet(ours, max_size=1500))
    assert_header_matches(ours, theirs)
    assert theirs.options == b"c\x82Sc"  # the magic cookie
    assert scapy_options(theirs[DHCP]) == {o.code: o.data for o in options}


@settings(max_examples=150, deadline=None)
@given(headers, raw_options, st.integers(1, 8), addresses, st.lists(st.integers(1, 254)))
def test_we_parse_what_scapy_builds(
    header: dict[str, Any],
    options: list[DhcpOption],
    message_type: int,
    server_id: IPv4Address,
    requested: list[int],
) -> None:
    scapy_list: list[Any] = [
        ("message-type", message_type),
        ("server_id", str(server_id)),
        ("param_req_list", requested),
    ]
    scapy_list += [(o.code, o.data) for o in options]
    theirs = BOOTP(
        op=int(header["op"]),
        htype=header["htype"],
        hlen=header["hlen"],
        hops=header["hops"],
        xid=header["xid"],
        secs=header["secs"],
        flags=header["flags"],
        ciaddr=str(header["ciaddr"]),
        yiaddr=str(header["yiaddr"]),
        siaddr=str(header["siaddr"]),
        giaddr=str(header["giaddr"]),
        chaddr=header["chaddr"],
        sname=header["sname"],
        file=header["file"],
    ) / DHCP(options=[*scapy_list, "end"])
    data = bytes(theirs)
    ours = parse_packet(data)
    assert_header_matches(ours, BOOTP(data))
    expected = {53: bytes((message_type,)), 54: server_id.packed, 55: bytes(requested)}
    expected.update({o.code: o.data for o in options})
    assert {o.code: o.data for o in ours.options} == expected


def test_scapy_reads_our_proxy_offer_field_by_field() -> None:
    policy = ConfigBootPolicy(PxeConfig(), http_url="http://198.18.0.1:8080/")
    agent = bytes((1, 4)) + b"eth0"
    request = discover(giaddr=IPv4Address("198.18.1.1"), extra=(DhcpOption(82, agent),))
    result = decide(request, policy, server_ip=SERVER, port_kind="dhcp")
    assert isinstance(result, Reply)
    theirs = BOOTP(result.payload)
    assert theirs.op == 2 and theirs.xid == request.xid and theirs.yiaddr == "0.0.0.0"
    assert theirs.siaddr == str(SERVER) and theirs.giaddr == "198.18.1.1"
    assert theirs.file.rstrip(b"\0") == b"undionly.kpxe"
    opts = scapy_options(theirs[DHCP])
    assert opts[53] == 2  # DHCPOFFER
    assert opts[54] == str(SERVER)
    assert opts[60] == b"PXEClient"
    assert opts[43] == bytes((6, 1, 8, 255))
    assert opts[97] == request.option(97)
    assert opts[82] == agent
    assert len(result.payload) >= 300


@pytest.mark.parametrize("name", golden_names())
def test_scapy_and_we_agree_on_the_golden_packets(name: str) -> None:
    data = golden_bytes(name)
    ours = parse_packet(data)
    theirs = BOOTP(data)
    assert_header_matches(ours, theirs)
    raw_ours = {o.code: o.data for o in ours.options if o.code in RAW_CODES}
    raw_theirs = {k: v for k, v in scapy_options(theirs[DHCP]).items() if k in RAW_CODES}
    assert raw_ours == raw_theirs
