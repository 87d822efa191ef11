"""Fuzz targets. The invariant: parsing network input gives a packet or RemoteProtocolError --
nothing else -- and deciding on any parsed packet gives a Reply or an Ignore (with the default
policy on hypothesis-drawn option areas, and with every proxy mode, answer mode and device state
on mutated golden packets), never an exception."""

from __future__ import annotations

import contextlib
import random
from dataclasses import replace
from pathlib import Path

import pytest
from dhcp_strategies import SERVER, golden, golden_names
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pxe.dhcp.codec import MAGIC_COOKIE, DhcpOption, DhcpPacket, parse_packet
from pxe.dhcp.decide import BootPolicy, Ignore, Reply, decide, identify
from pxe.dhcp.options import (
    parse_encapsulated,
    parse_pxe_vendor_options,
    user_classes_of,
)
from pxe.dhcp.policy import ConfigBootPolicy, StoreBootPolicy
from wds.config import PxeConfig
from wds.devices import DeviceStore
from wds.errors import RemoteProtocolError

POLICY = ConfigBootPolicy(PxeConfig(), http_url="http://198.18.0.1:8080/")
GOLDEN = [golden(name) for name in golden_names()]


def parse_or_refuse(data: bytes) -> DhcpPacket | None:
    try:
        return parse_packet(data)
    except RemoteProtocolError as exc:
        assert str(exc)  # every refusal has a reason
        return None


def check_decide(packet: DhcpPacket) -> None:
    for port_kind in ("dhcp", "pxe"):
        result = decide(packet, POLICY, server_ip=SERVER, port_kind=port_kind)
        assert isinstance(result, Reply | Ignore)
    with contextlib.suppress(RemoteProtocolError):
        identify(packet)


def mutate(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        kind = rng.randrange(4)
        at = rng.randrange(len(buf)) if buf else 0
        if kind == 0 and buf:
            buf[at] = rng.randrange(256)
        elif kind == 1:
            buf[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
        elif kind == 2 and buf:
            del buf[at : at + rng.randint(1, 4)]
        else:
            del buf[rng.randint(236, max(236, len(buf))) :]
    return bytes(buf)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=1600))
def test_random_bytes(data: bytes) -> None:
    parse_or_refuse(data)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=236, max_size=236), st.binary(max_size=400))
def test_random_options_after_a_valid_header(header: bytes, options: bytes) -> None:
    packet = parse_or_refuse(b"\x01" + header[1:] + MAGIC_COOKIE + options)
    if packet is not None:
        check_decide(packet)


@pytest.mark.parametrize("seed", range(4))
def test_mutated_golden_packets(seed: int) -> None:
    rng = random.Random(seed)
    parsed = 0
    for _ in range(500):
        packet = parse_or_refuse(mutate(rng.choice(GOLDEN), rng))
        if packet is not None:
            parsed += 1
            check_decide(packet)
    assert parsed > 0  # the mutations do not only produce garbage


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_encapsulated_option_spaces(data: bytes) -> None:
    for parse in (lambda d: parse_encapsulated(d, "fuzz"), parse_pxe_vendor_options):
        with contextlib.suppress(RemoteProtocolError):
            parse(data)


def test_user_class_never_fails() -> None:
    rng = random.Random(7)
    base = parse_packet(GOLDEN[0])
    for _ in range(300):
        value = bytes(rng.randrange(256) for _ in range(rng.randint(0, 20)))
        packet = replace(base, options=(DhcpOption(77, value),))
        assert user_classes_of(packet)


def _policies(store: DeviceStore) -> list[BootPolicy]:
    """Every decision path: proxy modes, answer modes, the device store with each state."""
    for name in golden_names()[:2]:  # the golden clients' MACs: prestaged, then rejected
        mac = parse_packet(golden(name)).hardware_address.hex(":")
        store.prestage(mac=mac, boot_file="own.efi")
    store.set_state(parse_packet(GOLDEN[0]).hardware_address.hex(":"), "rejected")
    return [
        ConfigBootPolicy(PxeConfig(proxy_mode="offer"), http_url="http://198.18.0.1/"),
        ConfigBootPolicy(PxeConfig(proxy_mode="port4011", answer="known")),
        StoreBootPolicy(PxeConfig(record_pending=True), store),
        StoreBootPolicy(PxeConfig(answer="known"), store),
    ]


def test_decision_with_every_policy_on_mutated_packets(tmp_path: Path) -> None:
    """The decision under fuzz: whatever parses gives a Reply or an Ignore under every policy,
    and every Reply is a packet our own parser (and so a client) can read back."""
    with DeviceStore.open(tmp_path) as store:
        replies = _decide_mutated(_policies(store))
    assert replies > 0


def _decide_mutated(policies: list[BootPolicy]) -> int:
    rng = random.Random(11)
    replies = 0
    for _ in range(400):
        packet = parse_or_refuse(mutate(rng.choice(GOLDEN), rng))
        if packet is None:
            continue
        for policy in policies:
            for port_kind in ("dhcp", "pxe"):
                result = decide(packet, policy, server_ip=SERVER, port_kind=port_kind)
                assert isinstance(result, Reply | Ignore)
                if isinstance(result, Reply):
                    replies += 1
                    assert parse_packet(result.payload).xid == packet.xid
    return replies
