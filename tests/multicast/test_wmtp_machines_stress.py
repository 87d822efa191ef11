"""Machine tier, the hard cases: loss up to 20 % per receiver, a receiver that freezes, a sender
that is restarted mid-transfer. Every receiver must end with the exact bytes."""

from __future__ import annotations

import random

from wmtp_harness import CHUNK, Lan

from multicast.codec import DatagramType
from multicast.events import ReceiverLeft
from multicast.sender import SenderSettings

IMAGE = random.Random(11).randbytes(24 * CHUNK + 777)  # 25 chunks, the last one short


def _loss(rates: list[float], seed: int):  # type: ignore[no-untyped-def]
    rng = random.Random(seed)

    def loss(i: int, data: bytes, now: float) -> bool:
        return data[3] != DatagramType.ANNOUNCE and rng.random() < rates[i]

    return loss


def test_independent_loss_up_to_20_percent_every_receiver_byte_exact() -> None:
    rates = [0.0, 0.01, 0.05, 0.1, 0.15, 0.2, 0.2, 0.2]
    lan = Lan(IMAGE, loss=_loss(rates, 1), feedback_loss=0.05)
    for _ in rates:
        lan.add_client()
    lan.run(until=120.0, stop=lan.all_done)
    lan.assert_byte_exact()
    assert all(c.machine.rejected_chunks == 0 for c in lan.clients)
    assert lan.clients[5].naks > 0  # the 20 % ones repaired through NAKs


def test_a_receiver_frozen_past_the_receiver_timeout_rejoins_and_completes() -> None:
    settings = SenderSettings(max_rate=0.4e6, min_rate=0.4e6, receiver_timeout=2.0, linger=0.5)
    # receiver 1 freezes (no datagram in or out, no timer) from t=0.3 s to t=3.3 s, while the
    # others are still receiving (about 4 s at this rate)
    lan = Lan(
        IMAGE,
        settings=settings,
        loss=_loss([0.05, 0.05, 0.2], 2),
        stall=lambda i, now: i == 1 and 0.3 <= now < 3.3,
    )
    for _ in range(3):
        lan.add_client()
    lan.run(until=120.0, stop=lan.all_done)
    lan.assert_byte_exact()
    left = [e for e in lan.sender_events if isinstance(e, ReceiverLeft)]
    assert [e.addr for e in left] == [lan.clients[1].addr]  # timed out while frozen
    assert lan.clients[0].complete_at is not None
    assert lan.clients[0].complete_at < lan.clients[1].complete_at  # type: ignore[operator]


def test_sender_restart_receivers_resume_with_only_the_missing_chunks() -> None:
    settings = SenderSettings(max_rate=2e6, linger=0.5)
    first = Lan(IMAGE, settings=settings, loss=_loss([0.02, 0.1, 0.2], 3))
    for _ in range(3):
        first.add_client()
    first.run(until=0.4)  # the sender process dies here
    half = [c.machine.have_bitmap for c in first.clients]
    counts = [c.machine.verified_chunks for c in first.clients]
    assert all(0 < n < first.manifest.chunk_count for n in counts), counts
    # a new `wds send`: a new session id, the same image; receivers rerun with their bitmap
    second = Lan(IMAGE, settings=settings, loss=_loss([0.02, 0.1, 0.2], 4), session_id=0xBEEF)
    for old, have in zip(first.clients, half, strict=True):
        new = second.add_client(have=have)
        new.out[:] = old.out
    second.run(until=120.0, stop=second.all_done)
    second.assert_byte_exact()
    for old, new in zip(first.clients, second.clients, strict=True):
        assert not set(old.writes) & set(new.writes)  # nothing fetched twice
        assert len(old.writes) + len(new.writes) == first.manifest.chunk_count


def test_a_receiver_frozen_until_the_session_ended_tops_up_over_http() -> None:
    settings = SenderSettings(max_rate=2e6, receiver_timeout=1.0, linger=0.3)
    lan = Lan(IMAGE, settings=settings, stall=lambda i, now: i == 1 and 0.2 <= now < 6.0)
    for _ in range(2):
        lan.add_client()
    lan.run(until=30.0)
    frozen = lan.clients[1]
    assert lan.clients[0].complete_at is not None and frozen.complete_at is None
    assert frozen.failed is not None  # ANNOUNCE(FINISHED) or silence: multicast is over
    frozen.failed = None  # what `wds receive` does next: the missing chunks over HTTP
    before = list(frozen.writes)
    lan.unicast_top_up(frozen)
    lan.assert_byte_exact()
    assert not set(before) & set(frozen.writes[len(before) :])


def test_a_lost_tail_is_naked_when_the_carousel_goes_quiet() -> None:
    # the image's last block is lost once: no later DATA reveals it, the quiet does (tail_timeout)
    lan = Lan(IMAGE[:-777] + bytes(5000))  # the last chunk has 4 blocks; lose its last one
    last = (24, lan.manifest.blocks_in_chunk(24) - 1)
    dropped: list[int] = []

    def loss(i: int, data: bytes, now: float) -> bool:
        where = (int.from_bytes(data[16:20]), int.from_bytes(data[20:22]))
        if data[3] == DatagramType.DATA and not dropped and where == last:
            dropped.append(1)
            return True
        return False

    lan.loss = loss
    client = lan.add_client()
    lan.run(until=30.0, stop=lan.all_done)
    lan.assert_byte_exact()
    blocks = sum(lan.manifest.blocks_in_chunk(i) for i in range(lan.manifest.chunk_count))
    assert dropped and client.naks == 1
    assert lan.sender.repairs_sent == 1 and lan.sender.data_sent == blocks + 1  # not the chunk
    assert client.complete_at is not None and client.complete_at < 1.0
