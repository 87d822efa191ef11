"""Fuzz targets. The invariant: parsing network input gives a packet or RemoteProtocolError --
nothing else -- and deciding on any parsed packet gives a Reply or an Ignore."""

from __future__ import annotations

import contextlib
import random
from dataclasses import replace

import pytest
from dhcp_strategies import SERVER, golden, golden_names
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pxe.dhcp.codec import MAGIC_COOKIE, DhcpOption, DhcpPacket, parse_packet
from pxe.dhcp.decide import Ignore, Reply, decide, identify
from pxe.dhcp.options import (
    parse_encapsulated,
    parse_pxe_vendor_options,
    user_classes_of,
)
from pxe.dhcp.policy import ConfigBootPolicy
from wds.config import PxeConfig
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
