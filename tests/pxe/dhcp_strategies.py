"""Hypothesis strategies and small builders shared by the DHCP tests."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

from hypothesis import strategies as st

from pxe.dhcp.codec import BootpOp, DhcpOption, DhcpPacket

GOLDEN = Path(__file__).parent / "golden"
SERVER = IPv4Address("198.18.0.1")
MAC = bytes.fromhex("525400180001")


def golden(name: str) -> bytes:
    return bytes.fromhex((GOLDEN / name).read_text().strip())


def golden_names() -> list[str]:
    return sorted(p.name for p in GOLDEN.glob("*.hex"))


addresses = st.builds(IPv4Address, st.integers(0, 2**32 - 1))
# sname/file as parse_packet returns them: no NUL (what follows one is padding)
c_strings = st.binary(max_size=63).map(lambda b: b.replace(b"\0", b"x"))
file_strings = st.binary(max_size=127).map(lambda b: b.replace(b"\0", b"x"))


@st.composite
def option_lists(draw: st.DrawFn, max_total: int = 900) -> tuple[DhcpOption, ...]:
    codes = draw(st.lists(st.integers(1, 254).filter(lambda c: c != 52), unique=True, max_size=12))
    out = []
    budget = max_total
    for code in codes:
        data = draw(st.binary(max_size=min(budget, 600)))
        budget -= len(data) + 2 * (len(data) // 255 + 1)
        if budget < 0:
            break
        out.append(DhcpOption(code, data))
    return tuple(out)


@st.composite
def packets(draw: st.DrawFn, max_total: int = 900) -> DhcpPacket:
    return DhcpPacket(
        op=draw(st.sampled_from(BootpOp)),
        htype=draw(st.integers(0, 255)),
        hlen=draw(st.integers(0, 255)),
        hops=draw(st.integers(0, 255)),
        xid=draw(st.integers(0, 2**32 - 1)),
        secs=draw(st.integers(0, 2**16 - 1)),
        flags=draw(st.integers(0, 2**16 - 1)),
        ciaddr=draw(addresses),
        yiaddr=draw(addresses),
        siaddr=draw(addresses),
        giaddr=draw(addresses),
        chaddr=draw(st.binary(min_size=16, max_size=16)),
        sname=draw(c_strings),
        file=draw(file_strings),
        options=draw(option_lists(max_total)),
    )


def discover(
    *,
    vendor_class: bytes | None = b"PXEClient:Arch:00000:UNDI:002001",
    arch: int | None = 0,
    extra: tuple[DhcpOption, ...] = (),
    message_type: int = 1,
    **fields: object,
) -> DhcpPacket:
    """A PXE client's DHCPDISCOVER (or other message type) with the usual options."""
    options = [DhcpOption(53, bytes((message_type,)))]
    if vendor_class is not None:
        options.append(DhcpOption(60, vendor_class))
    if arch is not None:
        options.append(DhcpOption(93, arch.to_bytes(2, "big")))
    options.append(DhcpOption(97, b"\0" + bytes(range(1, 17))))
    options.extend(extra)
    values: dict[str, object] = {
        "op": BootpOp.BOOTREQUEST,
        "xid": 0x1234ABCD,
        "chaddr": MAC + bytes(10),
        "flags": 0x8000,
        "options": tuple(options),
    }
    values.update(fields)
    return DhcpPacket(**values)  # type: ignore[arg-type]
