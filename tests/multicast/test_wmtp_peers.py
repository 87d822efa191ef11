"""The sender's per-receiver bookkeeping and the decisions taken from it (multicast.peers)."""

from __future__ import annotations

from multicast.peers import Peer, after, next_rate

STEP = {"threshold": 100, "min_rate": 1.0, "max_rate": 100.0, "decrease": 0.75, "increase": 0.05}


def test_random_loss_below_the_threshold_is_not_congestion() -> None:
    # 8 receivers at 5 % independent loss: the rate is not cut, it climbs back to the maximum
    assert next_rate(80.0, [50] * 8, slowest_sets_pace=False, **STEP) == 85.0
    assert next_rate(100.0, [50] * 8, slowest_sets_pace=False, **STEP) == 100.0
    # congestion shows at most receivers: the (lower) median decides
    assert next_rate(100.0, [0, 0, 0, 0, 0, 0, 0, 900], slowest_sets_pace=False, **STEP) == 100.0
    assert (
        next_rate(100.0, [0, 0, 0, 200, 200, 200, 200, 900], slowest_sets_pace=False, **STEP)
        == 75.0
    )
    # slow_client "wait": the worst one sets the pace; no receivers: no change
    assert next_rate(100.0, [0, 0, 900], slowest_sets_pace=True, **STEP) == 75.0
    assert next_rate(42.0, [], slowest_sets_pace=False, **STEP) == 42.0


def test_need_bitmap_pages_and_presumption() -> None:
    p = Peer(1, ("198.18.0.2", 1), 12, 0.0)
    assert bytes(p.need) == b"\xff\xf0" and p.needs(11)
    assert not p.apply_page(4, 8, b"\x00", 12)  # not byte-aligned: ignored
    assert p.apply_page(0, 12, b"\x0f\x30", 12)
    assert [i for i in range(12) if p.needs(i)] == [4, 5, 6, 7, 10, 11]
    p.presume_received(10)
    assert not p.needs(10) and p.needs(11)


def test_serial_seq_comparison_wraps() -> None:
    assert after(5, 4) and not after(4, 5) and not after(7, 7)
    assert after(2, 0xFFFFFFFE) and not after(0xFFFFFFFE, 2)


def test_slow_receiver_needs_enough_offered_and_too_little_verified() -> None:
    p = Peer(1, ("198.18.0.2", 1), 100, 0.0)
    for t in range(1, 11):
        p.offered.append((float(t), 1_000_000))  # 1 MB/s offered
        p.progress.append((float(t), t // 5))  # 1 chunk of 64 KiB per 5 s verified
    assert p.is_slow(10.0, 5.0, 500_000.0, 65536)
    assert not p.is_slow(10.0, 5.0, 10_000.0, 65536)  # that goodput is enough
    assert not p.is_slow(10.0, 5.0, 1_000_000.0, 65536)  # not offered 1.25x min_goodput
    assert len(p.offered) <= 6 and len(p.progress) <= 7  # pruned to the window
