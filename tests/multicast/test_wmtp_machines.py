"""Machine tier: one pure sender, several pure receivers, a float clock, loss injected."""

from __future__ import annotations

import random

from wmtp_harness import BLOCK, CHUNK, SENDER, Lan

from multicast.codec import (
    Announce,
    DatagramType,
    SenderState,
    build_datagram,
    parse_data_fast,
)
from multicast.events import MoveToUnicast, ReceiverDone, ReceiverJoined, SessionFinished
from multicast.receiver import ReceiverSettings, ReceiverState
from multicast.sender import SenderSettings

IMAGE = random.Random(7).randbytes(5 * CHUNK + 3000)  # 6 chunks, the last one short


def test_lossless_delivery_to_three_receivers() -> None:
    lan = Lan(IMAGE)
    for _ in range(3):
        lan.add_client()
    lan.run(until=30.0, stop=lan.all_done)
    lan.assert_byte_exact()
    assert all(sorted(c.writes) == list(range(6)) for c in lan.clients)
    assert all(c.naks == 0 and c.machine.rejected_chunks == 0 for c in lan.clients)
    blocks = sum(lan.manifest.blocks_in_chunk(i) for i in range(6))
    assert lan.sender.data_sent == blocks  # one pass, nothing resent
    lan.run(until=60.0)
    assert any(isinstance(e, SessionFinished) for e in lan.sender_events)
    assert lan.sender.state is SenderState.FINISHED and lan.sender.completed == 3
    assert lan.sender.next_timer() is None


def test_independent_random_loss_all_finish_byte_exact() -> None:
    loss_rng = random.Random(42)

    def loss(i: int, data: bytes, now: float) -> bool:
        return data[3] != DatagramType.ANNOUNCE and loss_rng.random() < 0.01 * (i + 1) * 3

    lan = Lan(IMAGE, loss=loss, feedback_loss=0.05)
    for _ in range(5):  # 3% .. 15% loss each, independently
        lan.add_client()
    lan.run(until=60.0, stop=lan.all_done)
    lan.assert_byte_exact()
    assert lan.sender.repairs_sent > 0
    assert all(c.machine.rejected_chunks == 0 for c in lan.clients)


def test_corrupted_datagram_rejects_chunk_then_repair_ends_byte_exact() -> None:
    lan = Lan(IMAGE)
    victim = lan.add_client()
    lan.add_client()
    forged: list[int] = []

    def corrupt(c: object, data: bytes) -> list[bytes]:
        # a damaged copy of chunk 2 block 3 with a valid UDP checksum arrives first, once
        if c is victim and not forged and data[3] == DatagramType.DATA:
            d = parse_data_fast(data)
            if (d.chunk, d.block) == (2, 3):
                forged.append(1)
                bad = bytearray(data)
                bad[40] ^= 0xFF
                return [bytes(bad), data]
        return [data]

    lan.hooks.append(corrupt)
    lan.run(until=30.0, stop=lan.all_done)
    lan.assert_byte_exact()
    assert forged and victim.machine.rejected_chunks == 1
    assert victim.naks >= 1 and lan.sender.repairs_sent >= lan.manifest.blocks_in_chunk(2)
    assert lan.clients[1].machine.rejected_chunks == 0


def test_late_joiner_completes_with_the_part_it_missed() -> None:
    lan = Lan(IMAGE * 2, settings=SenderSettings(max_rate=2e6, linger=5.0))
    first = lan.add_client()
    lan.run(until=0.3)
    assert first.complete_at is None and len(first.writes) >= 2
    late = lan.add_client()
    lan.run(until=60.0, stop=lan.all_done)
    lan.assert_byte_exact()
    assert late.writes[0] != 0  # it started mid-image and wrapped around
    assert late.complete_at > first.complete_at  # type: ignore[operator]


def test_nak_suppression_keeps_naks_far_below_receivers_times_losses() -> None:
    lost = {(c, b) for c in range(6) for b in (5, 17, 30)}  # a switch drops these for everyone

    def loss(i: int, data: bytes, now: float) -> bool:
        if data[3] != DatagramType.DATA or data[24] & 1:  # repairs get through
            return False
        return (int.from_bytes(data[16:20]), int.from_bytes(data[20:22])) in lost

    lan = Lan(IMAGE, loss=loss)
    receivers = 20
    for _ in range(receivers):
        lan.add_client()
    lan.run(until=60.0, stop=lan.all_done)
    lan.assert_byte_exact()
    real = {(c, b) for c, b in lost if b < lan.manifest.blocks_in_chunk(c)}
    chunks_with_loss = len({c for c, _ in real})
    naks = sum(c.naks for c in lan.clients)
    # without suppression every receiver would NAK every damaged chunk (one NAK covers a chunk)
    assert naks <= receivers * chunks_with_loss // 5, naks
    assert naks < receivers * len(real) // 10
    assert lan.sender.repairs_sent == len(real)  # each lost block multicast once, for everyone


def test_rate_token_bucket_is_respected() -> None:
    rate = 1e6  # bytes per second on the wire: IP+UDP headers and Ethernet framing counted
    lan = Lan(IMAGE * 3, settings=SenderSettings(max_rate=rate, min_rate=rate))
    lan.add_client()
    lan.run(until=30.0, stop=lan.all_done)
    lan.assert_byte_exact()
    burst = max(4 * (BLOCK + 56), rate * 0.005) + 1500
    start = next(t for t, kind, _ in lan.sent if kind == DatagramType.DATA)
    total = 0
    for t, _, size in lan.sent:
        if t >= start:
            total += size + 28 + 38
            assert total <= rate * (t - start) + burst + 2 * (BLOCK + 56), (t, total)
    elapsed = lan.clients[0].complete_at - start  # type: ignore[operator]
    assert elapsed >= len(IMAGE) * 3 / rate * 0.95


def test_rate_lowered_on_loss_and_raised_when_clear() -> None:
    state = {"lossy": True}
    loss_rng = random.Random(3)

    def loss(i: int, data: bytes, now: float) -> bool:
        return state["lossy"] and data[3] == DatagramType.DATA and loss_rng.random() < 0.2

    settings = SenderSettings(max_rate=4e6, min_rate=0.5e6, min_goodput=0, slow_client="wait")
    lan = Lan(random.Random(5).randbytes(400 * CHUNK), settings=settings, loss=loss)
    lan.add_client()
    lan.run(until=4.0)
    lowered = lan.sender.rate
    assert lowered < 4e6 * 0.5
    state["lossy"] = False
    lan.run(until=8.0)
    assert lan.sender.rate > lowered


def test_slow_receiver_is_flagged_for_unicast_and_tops_up() -> None:
    loss_rng = random.Random(4)

    def loss(i: int, data: bytes, now: float) -> bool:
        return i == 1 and data[3] == DatagramType.DATA and loss_rng.random() < 0.9

    settings = SenderSettings(
        max_rate=2e6, min_rate=1e6, min_goodput=200e3, slow_window=1.0, linger=0.5
    )
    lan = Lan(random.Random(6).randbytes(64 * CHUNK), settings=settings, loss=loss)
    fast, slow = lan.add_client(), lan.add_client()
    lan.run(until=60.0, stop=lan.all_done)
    lan.assert_byte_exact()
    moved = [e for e in lan.sender_events if isinstance(e, MoveToUnicast)]
    assert [e.receiver_id for e in moved] == [slow.machine.receiver_id]
    assert slow.unicast and not fast.unicast
    assert slow.machine.state is ReceiverState.DONE


def test_scheduled_start_waits_for_min_clients() -> None:
    settings = SenderSettings(max_rate=10e6, mode="scheduled", min_clients=3, max_wait=100.0)
    lan = Lan(IMAGE, settings=settings)
    lan.add_client()
    lan.add_client()
    lan.run(until=5.0)
    assert lan.sender.state is SenderState.WAITING
    assert not any(kind == DatagramType.DATA for _, kind, _ in lan.sent)
    assert sum(isinstance(e, ReceiverJoined) for e in lan.sender_events) == 2
    lan.add_client()
    lan.run(until=30.0, stop=lan.all_done)
    lan.assert_byte_exact()
    first_data = next(t for t, kind, _ in lan.sent if kind == DatagramType.DATA)
    assert 5.0 <= first_data < 6.0


def test_scheduled_start_after_max_wait() -> None:
    settings = SenderSettings(max_rate=10e6, mode="scheduled", min_clients=10, max_wait=3.0)
    lan = Lan(IMAGE, settings=settings)
    lan.add_client()
    lan.run(until=30.0, stop=lan.all_done)
    lan.assert_byte_exact()
    first_data = next(t for t, kind, _ in lan.sent if kind == DatagramType.DATA)
    assert 3.0 <= first_data < 3.1


def test_scheduled_start_at_a_time_and_announce_counts_down() -> None:
    settings = SenderSettings(max_rate=10e6, mode="scheduled", start_at=2.0)
    lan = Lan(IMAGE, settings=settings)
    client = lan.add_client()
    lan.run(until=1.0)
    ann = lan.sender._announce(1.0)
    assert ann.state is SenderState.WAITING and ann.starts_in_ms == 1000
    assert client.machine.state is ReceiverState.JOINED
    lan.run(until=30.0, stop=lan.all_done)
    lan.assert_byte_exact()


def test_resume_only_receives_missing_chunks() -> None:
    lan = Lan(IMAGE)
    have = bytes([0b11010000])  # chunks 0, 1 and 3 already on disk
    client = lan.add_client(have=have)
    m = lan.manifest
    for i in (0, 1, 3):
        client.out[i * CHUNK : i * CHUNK + m.chunk_length(i)] = IMAGE[i * CHUNK : (i + 1) * CHUNK]
    lan.run(until=30.0, stop=lan.all_done)
    lan.assert_byte_exact()
    assert sorted(client.writes) == [2, 4, 5]
    # its JOIN carried its need bitmap: the carousel never sent the chunks it had
    assert lan.sender.data_sent == sum(m.blocks_in_chunk(i) for i in (2, 4, 5))
    lan.run(until=lan.now + 2.0)
    assert [type(e) for e in lan.sender_events if isinstance(e, ReceiverDone)] == [ReceiverDone]


def test_foreign_and_malformed_datagrams_are_ignored_with_a_reason() -> None:
    lan = Lan(IMAGE)
    client = lan.add_client()
    r = client.machine
    other_session = build_datagram(Announce(1, SenderState.RUNNING, 0, 0, 0, b"\0" * 16))
    for junk in (b"", b"hello", other_session, IMAGE[:100]):
        events = r.receive(junk, SENDER, 0.0)
        assert len(events) == 1 and type(events[0]).__name__ == "Ignored"
        events2 = lan.sender.receive(junk, client.addr, 0.0)
        assert len(events2) == 1 and type(events2[0]).__name__ == "Ignored"


def test_receiver_fails_when_the_sender_goes_silent() -> None:
    lan = Lan(IMAGE, receiver_settings=ReceiverSettings(sender_timeout=2.0))
    client = lan.add_client()
    lan.sender.state = SenderState.FINISHED  # a sender that died: nothing is ever sent
    lan.sender._finish_announcements_left = 0
    lan.run(until=10.0)
    assert client.failed is not None and "no datagram" in client.failed


def test_sender_settings_from_config() -> None:
    from multicast.sender import sender_settings
    from wds.config import MulticastConfig, SessionConfig

    s = sender_settings(
        MulticastConfig(max_rate_mbps=400.0),
        SessionConfig(name="s", mode="scheduled", min_clients=4, min_goodput_mbps=20.0),
        start_at=12.5,
    )
    assert s.max_rate == 50e6 and s.min_goodput == 2.5e6 and s.min_rate == 5e6
    assert (s.mode, s.min_clients, s.start_at) == ("scheduled", 4, 12.5)
    w = sender_settings(MulticastConfig(), SessionConfig(rate_mbps=8.0, slow_client="wait"))
    assert w.max_rate == 1e6 and w.min_rate == 125_000.0


def test_carousel_wraps_to_the_next_needed_chunk() -> None:
    lan = Lan(IMAGE)  # 6 chunks
    sender = lan.sender
    assert sender._needed_after(-1) is None  # nobody joined: nothing needed
    client = lan.add_client(have=bytes([0b10110100]))  # has 0, 2, 3 and 5
    lan.run(until=0.0001)
    needs = [i for i in range(6) if not client.machine.has_chunk(i)]
    assert needs == [1, 4]
    lan.sender._union = None
    peer = next(iter(sender._peers.values()))
    peer.need = bytearray([0b01001000])
    assert sender._needed_after(-1) == 1
    assert sender._needed_after(1) == 4
    assert sender._needed_after(4) == 1  # wraps
    assert sender._needed_after(5) == 1


def test_duplicated_and_reordered_datagrams_end_byte_exact() -> None:
    lan = Lan(IMAGE)
    held: dict[int, bytes] = {}
    swap_rng = random.Random(11)

    def dup_and_swap(c: object, data: bytes) -> list[bytes]:
        i = lan.clients.index(c)  # type: ignore[arg-type]
        if i == 0:
            return [data, data]  # every datagram twice
        if data[3] != DatagramType.DATA:
            return [data]
        if i in held:
            return [data, held.pop(i)]  # this one overtakes the one held back
        if swap_rng.random() < 0.3:
            held[i] = data
            return []
        return [data]

    lan.hooks.append(dup_and_swap)
    lan.add_client()
    lan.add_client()
    lan.run(until=30.0, stop=lan.all_done)
    lan.assert_byte_exact()
    assert all(c.machine.rejected_chunks == 0 for c in lan.clients)


def test_tail_loss_is_recovered_by_the_carousel() -> None:
    # the very last block of the image is lost once: no later DATA in this round reveals the gap;
    # the next carousel round (the need bitmap still has chunk 5) does, or brings the block itself
    last_block = Lan(IMAGE).manifest.blocks_in_chunk(5) - 1
    dropped: list[int] = []

    def loss(i: int, data: bytes, now: float) -> bool:
        where = (int.from_bytes(data[16:20]), int.from_bytes(data[20:22]))
        if data[3] == DatagramType.DATA and not dropped and where == (5, last_block):
            dropped.append(1)
            return True
        return False

    lan = Lan(IMAGE, loss=loss)
    lan.add_client()
    lan.run(until=30.0, stop=lan.all_done)
    lan.assert_byte_exact()
    assert dropped
    assert lan.sender.data_sent > sum(lan.manifest.blocks_in_chunk(i) for i in range(6))


def test_sender_settings_bounds() -> None:
    import pytest

    from wds.errors import LocalProtocolError

    with pytest.raises(LocalProtocolError):
        SenderSettings(max_rate=1e6, min_rate=2e6)
    with pytest.raises(LocalProtocolError):
        SenderSettings(max_rate=1e6, max_receivers=0)


def test_tail_loss_in_a_chunk_already_being_repaired_is_not_forgotten() -> None:
    # regression: block 0 lost (NAKed, repaired) and the image's last block lost too. The chunk
    # must stay "needed" in REPORTs: no later DATA reveals its tail, so no NAK asks for it
    last_block = Lan(IMAGE).manifest.blocks_in_chunk(5) - 1
    todo = {(5, 0), (5, last_block)}

    def loss(i: int, data: bytes, now: float) -> bool:
        where = (int.from_bytes(data[16:20]), int.from_bytes(data[20:22]))
        if data[3] == DatagramType.DATA and where in todo:
            todo.discard(where)
            return True
        return False

    lan = Lan(IMAGE, loss=loss)
    lan.add_client()
    lan.run(until=30.0, stop=lan.all_done)
    lan.assert_byte_exact()
    assert not todo


def test_liveness_sweep_every_receiver_completes() -> None:
    # random receiver counts, data loss up to 40 %, feedback loss up to 30 %: all must finish
    for seed in range(8):
        r = random.Random(seed)
        loss_p, feedback = r.choice([0.01, 0.05, 0.2, 0.4]), r.choice([0.0, 0.1, 0.3])
        loss_rng = random.Random(seed + 1000)

        def loss(
            i: int, data: bytes, now: float, p: float = loss_p, rng: random.Random = loss_rng
        ) -> bool:
            return data[3] != DatagramType.ANNOUNCE and rng.random() < p

        image = r.randbytes(r.randint(1, 12) * CHUNK - r.randint(0, CHUNK - 1))
        settings = SenderSettings(max_rate=20e6, min_rate=1e6, slow_client="wait")
        lan = Lan(image, loss=loss, feedback_loss=feedback, seed=seed, settings=settings)
        for _ in range(r.randint(1, 6)):
            lan.add_client()
        lan.run(until=300.0, stop=lan.all_done)
        lan.assert_byte_exact()


def test_lost_redirect_is_repeated_not_readmitted() -> None:
    loss_rng = random.Random(4)

    def loss(i: int, data: bytes, now: float) -> bool:
        return i == 1 and data[3] == DatagramType.DATA and loss_rng.random() < 0.9

    settings = SenderSettings(
        max_rate=2e6, min_rate=1e6, min_goodput=200e3, slow_window=1.0, linger=0.5
    )
    lan = Lan(random.Random(6).randbytes(64 * CHUNK), settings=settings, loss=loss)
    lan.add_client()
    slow = lan.add_client()
    lost: list[int] = []

    def drop_first_redirect(c: object, data: bytes) -> list[bytes]:
        if c is slow and data[3] == DatagramType.REDIRECT and not lost:
            lost.append(1)
            return []
        return [data]

    lan.hooks.append(drop_first_redirect)
    lan.run(until=60.0, stop=lan.all_done)
    lan.assert_byte_exact()
    assert lost and slow.unicast
    assert sum(isinstance(e, MoveToUnicast) for e in lan.sender_events) == 1
    assert sum(isinstance(e, ReceiverJoined) for e in lan.sender_events) == 2


def test_one_bad_receiver_neither_starves_nor_slows_the_others() -> None:
    loss_rng = random.Random(8)

    def loss(i: int, data: bytes, now: float) -> bool:
        return i == 1 and data[3] == DatagramType.DATA and loss_rng.random() < 0.9

    # a long slow_window: the bad receiver stays in the multicast session the whole time
    settings = SenderSettings(max_rate=2e6, min_rate=0.2e6, slow_window=1000.0, linger=0.5)
    lan = Lan(random.Random(9).randbytes(64 * CHUNK), settings=settings, loss=loss)
    healthy, bad = lan.add_client(), lan.add_client()
    lan.run(until=60.0, stop=lambda: healthy.complete_at is not None)
    assert healthy.complete_at is not None and bad.complete_at is None
    at_full_rate = 64 * CHUNK * (1500 / 1444) / 2e6
    # repairs for the bad one take at most their share (half), and its loss does not set the rate
    assert healthy.complete_at < 2.2 * at_full_rate, healthy.complete_at
    assert lan.sender.rate == 2e6
    assert lan.sender.repairs_sent > 1000


def test_join_policy_and_receiver_bound_are_enforced() -> None:
    class OnlyFirst:
        def __init__(self) -> None:
            self.asked: list[int] = []

        def admit(self, receiver_id: int, addr: tuple[str, int]) -> bool:
            self.asked.append(receiver_id)
            return addr[0].endswith(".10")

    lan = Lan(IMAGE)
    policy = OnlyFirst()
    lan.sender._policy = policy
    admitted, refused = lan.add_client(), lan.add_client()
    lan.run(until=30.0, stop=lambda: admitted.complete_at is not None)
    # the refused one may overhear the group (multicast is not confidential), but the sender
    # neither counts nor serves it
    assert admitted.complete_at is not None
    joined = [e for e in lan.sender_events if isinstance(e, ReceiverJoined)]
    assert [e.receiver_id for e in joined] == [admitted.machine.receiver_id]
    assert refused.machine.receiver_id in policy.asked

    bounded = Lan(IMAGE, settings=SenderSettings(max_rate=10e6, max_receivers=2))
    for _ in range(4):
        bounded.add_client()
    bounded.run(until=0.2)
    assert sum(isinstance(e, ReceiverJoined) for e in bounded.sender_events) == 2
    refusals = [e for e in bounded.sender_events if "receivers already" in getattr(e, "reason", "")]
    assert refusals


def test_a_receiver_that_leaves_is_no_longer_counted() -> None:
    from multicast.events import ReceiverLeft

    lan = Lan(IMAGE * 4, settings=SenderSettings(max_rate=1e6, linger=0.2))
    quitter = lan.add_client()
    lan.add_client()
    lan.run(until=0.3)
    assert lan.sender.active_receivers == 2
    lan._handle_client_events(quitter, quitter.machine.leave(lan.now))
    lan.pump()
    left = [e for e in lan.sender_events if isinstance(e, ReceiverLeft)]
    assert [e.reason for e in left] == ["left"] and lan.sender.active_receivers == 1
    assert quitter.failed == "left the session"


def test_start_at_is_put_on_the_machine_clock() -> None:
    import datetime

    from multicast.sender import start_at_on_clock

    wall = datetime.datetime(2026, 12, 1, 17, 0, tzinfo=datetime.UTC).timestamp()
    at = start_at_on_clock("2026-12-01T18:00:00+01:00", wall_now=wall, clock_now=100.0)
    assert at == 100.0  # 18:00+01:00 is 17:00 UTC: now
    at = start_at_on_clock("2026-12-01T17:30:00Z", wall_now=wall, clock_now=100.0)
    assert at == 1900.0
    assert start_at_on_clock("", wall_now=wall, clock_now=5.0) is None


def test_a_lost_last_repair_is_sent_again_without_waiting_out_the_grace() -> None:
    """At the end of a session nothing follows the last repair on the wire. When that repair
    is lost, the receiver's NAKs name a seen_seq from before it, which alone would read as
    "not yet read" until report_grace (2 s) passed. The sender answers such a NAK with an
    early ANNOUNCE, whose seq tells the receiver that everything before it was sent: its next
    NAK is taken as a lost repair and answered at once (PROTOCOL.md 4.4, 6)."""
    last_block = Lan(IMAGE).manifest.blocks_in_chunk(5) - 1
    drops = {"data": 1, "repair": 1}
    carousel_end: list[float] = []

    def loss(i: int, data: bytes, now: float) -> bool:
        if data[3] != DatagramType.DATA:
            return False
        d = parse_data_fast(data)
        if (d.chunk, d.block) != (5, last_block):
            return False
        kind = "repair" if d.repair else "data"
        if kind == "data":
            carousel_end.append(now)
        if drops[kind]:
            drops[kind] -= 1
            return True
        return False

    lan = Lan(IMAGE, loss=loss, settings=SenderSettings(max_rate=10e6, report_grace=2.0))
    client = lan.add_client()
    lan.run(until=30.0, stop=lan.all_done)
    lan.assert_byte_exact()
    assert drops == {"data": 0, "repair": 0}
    assert client.complete_at is not None
    assert client.complete_at - carousel_end[0] < 0.5, client.complete_at - carousel_end[0]
