"""Network input never crashes a machine: any bytes give events (``Ignored`` for junk), no raise."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st
from wmtp_harness import BLOCK, CHUNK, SENDER, Lan

from multicast.codec import (
    Announce,
    BlockRange,
    DataBlock,
    ReceiverReport,
    Redirect,
    RedirectReason,
    RepairAdvertisement,
    RepairRequest,
    ReportFlags,
    SenderState,
    build_datagram,
)

IMAGE = random.Random(3).randbytes(3 * CHUNK + 10)
SID = 0x5EED


def _lan() -> Lan:
    lan = Lan(IMAGE)
    lan.add_client()
    lan.run(until=0.01)  # joined and running, mid-transfer
    return lan


small = st.integers(0, 70)
# well-formed datagrams of this session with hostile numbers: the machine's own bounds matter
hostile = st.one_of(
    st.builds(
        DataBlock,
        st.just(SID),
        st.integers(0, 2**32 - 1),
        small,
        small,
        st.one_of(st.binary(min_size=BLOCK, max_size=BLOCK), st.binary(min_size=1, max_size=20)),
        st.booleans(),
    ),
    st.builds(
        RepairAdvertisement,
        st.just(SID),
        st.lists(
            st.builds(BlockRange, small, st.integers(0, 60000), st.integers(1, 5000)),
            min_size=1,
            max_size=128,
        ).map(tuple),
    ),
    st.builds(
        RepairRequest,
        st.just(SID),
        st.integers(0, 2**64 - 1),
        st.lists(
            st.builds(BlockRange, small, st.integers(0, 60), st.integers(1, 60)),
            min_size=1,
            max_size=8,
        ).map(tuple),
    ),
    st.builds(
        ReceiverReport,
        st.just(SID),
        st.integers(0, 2**64 - 1),
        st.sampled_from([ReportFlags(0), ReportFlags.JOIN, ReportFlags.DONE, ReportFlags.LEAVE]),
        st.integers(0, 1000),
        st.integers(0, 2**32 - 1),
        st.integers(0, 2**32 - 1),
        st.sampled_from([0, 8, 2**32 - 8]),
        st.just(8),
        st.binary(min_size=1, max_size=1),
    ),
    st.builds(Redirect, st.just(SID), st.integers(0, 3), st.sampled_from(RedirectReason)),
    st.builds(
        Announce,
        st.just(SID),
        st.sampled_from(SenderState),
        st.integers(0, 0xFFFF),
        st.integers(0, 2**32 - 1),
        st.integers(0, 2**32 - 1),
        st.binary(min_size=16, max_size=16),
    ),
)


@given(st.lists(st.one_of(hostile.map(build_datagram), st.binary(max_size=80)), max_size=20))
@settings(max_examples=200, deadline=None)
def test_machines_survive_hostile_input(blobs: list[bytes]) -> None:
    lan = _lan()
    client = lan.clients[0]
    for i, blob in enumerate(blobs):
        now = lan.now + i * 0.001
        client.machine.receive(blob, SENDER, now)
        lan.sender.receive(blob, client.addr, now)
        lan.sender.receive(blob, ("198.18.9.9", 1), now)
        client.machine.handle_timer(now)
        lan.sender.handle_timer(now)
        lan.sender.datagrams_to_send(now)
        client.machine.datagrams_to_send(now)
    # and the real transfer can still finish or fail cleanly afterwards
    lan.run(until=lan.now + 30.0, stop=lan.all_done)
    assert client.machine.state.value in ("done", "failed", "unicast", "joined", "listening")
    if client.complete_at is not None:
        assert bytes(client.out) == IMAGE  # whatever was injected, nothing unverified written
