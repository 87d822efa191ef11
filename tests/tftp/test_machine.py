"""Tier 2: the pure read-transfer machine against a simulated client, with a float clock."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable

import pytest
from tftp_sim import PEER, SimClient, run

from pxe.tftp.codec import TftpAck, TftpData, TftpError, TftpOptionAck, build_packet, parse_packet
from pxe.tftp.machine import Outcome, ReadTransfer, TransferSettings, TransferState
from pxe.tftp.options import Negotiated, OptionLimits, negotiate

FAST = TransferSettings(timeout=0.2, min_timeout=0.01, max_retries=5)


def content(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def make(
    data: bytes,
    *,
    blksize: int = 512,
    windowsize: int = 1,
    settings: TransferSettings = FAST,
    options: tuple[tuple[str, str], ...] | None = None,
) -> ReadTransfer:
    if options is None:
        options = (("blksize", str(blksize)), ("windowsize", str(windowsize)))
    limits = OptionLimits(max_blksize=65464, max_windowsize=64)
    negotiated = negotiate(options, file_size=len(data), limits=limits)
    return ReadTransfer(data, negotiated, settings, PEER)


def blocks_of(datagrams: Iterable[bytes]) -> list[int]:
    out = []
    for d in datagrams:
        p = parse_packet(d)
        assert isinstance(p, TftpData)
        out.append(p.block)
    return out


def ack(block: int) -> bytes:
    return build_packet(TftpAck(block))


def started(data: bytes, **kw: object) -> ReadTransfer:
    """A transfer past its OACK: ACK 0 given, first window queued."""
    t = make(data, **kw)  # type: ignore[arg-type]
    t.start(0.0)
    assert parse_packet(next(iter(t.datagrams_to_send()))) == TftpOptionAck(t.negotiated.oack)
    assert t.receive(ack(0), PEER, 0.001) is None
    return t


# ---------------------------------------------------------------------------------------------
# Lossless baseline


@pytest.mark.parametrize("size", [0, 1, 511, 512, 513, 5 * 512, 100_000])
@pytest.mark.parametrize("windowsize", [1, 4, 16])
def test_lossless_transfer_is_exact(size: int, windowsize: int) -> None:
    data = content(size)
    t = make(data, windowsize=windowsize)
    client = SimClient()
    r = run(t, client)
    assert t.outcome is Outcome.COMPLETED
    assert bytes(client.received) == data
    assert t.stats.datagrams_sent == size // 512 + 1 + 1  # blocks + OACK
    assert t.stats.retransmitted == 0 and t.stats.timeouts == 0
    assert r.s2c_sent == t.stats.datagrams_sent


def test_no_options_means_no_oack_and_lockstep() -> None:
    data = content(2000)
    t = make(data, options=())
    t.start(0.0)
    assert blocks_of(t.datagrams_to_send()) == [1]
    assert t.receive(ack(1), PEER, 0.01) is None
    assert blocks_of(t.datagrams_to_send()) == [2]


def test_window_is_sent_at_once_and_slides_on_ack() -> None:
    t = started(content(512 * 40), windowsize=8)
    assert blocks_of(t.datagrams_to_send()) == list(range(1, 9))
    assert t.receive(ack(8), PEER, 0.01) is None
    assert blocks_of(t.datagrams_to_send()) == list(range(9, 17))


# ---------------------------------------------------------------------------------------------
# Loss, duplicates, reordering


@pytest.mark.parametrize("gap_ack", [True, False])
@pytest.mark.parametrize("position", range(8))
def test_data_loss_at_every_window_position(position: int, gap_ack: bool) -> None:
    data = content(512 * 40 + 7)
    t = make(data, windowsize=8, settings=TransferSettings(timeout=0.2, adaptive=False))
    lost = 9 + position  # second window, each position once
    dropped: set[int] = set()

    def drop(_i: int, d: bytes) -> bool:
        p = parse_packet(d)
        if isinstance(p, TftpData) and p.block == lost and lost not in dropped:
            dropped.add(lost)
            return True
        return False

    client = SimClient(gap_ack=gap_ack, timeout=0.5)
    run(t, client, drop_s2c=drop)
    assert t.outcome is Outcome.COMPLETED
    assert bytes(client.received) == data
    if gap_ack and 0 < position < 7:
        # the gap ACK makes us go back at once: the rest of one window is resent, no timeout
        assert t.stats.timeouts == 0 and t.stats.go_backs == 1
        assert 1 <= t.stats.retransmitted <= 8
    else:
        # recovery by timeout; the client's re-ACKs of resent blocks can shift its window
        # against ours for a few windows (each shift is one go-back), bounded
        assert t.stats.timeouts == 1
        assert t.stats.retransmitted <= 8 * 6
        # the gap ACK for the first block of a window repeats the last ACK: a duplicate, never
        # acted on (Sorcerer's Apprentice), so the timeout recovers; likewise the last block
        assert t.stats.timeouts + t.stats.go_backs >= 1


@pytest.mark.parametrize("which_ack", [1, 2, 3, 5])
def test_ack_loss_causes_one_timeout_and_one_window(which_ack: int) -> None:
    data = content(512 * 48)
    t = make(data, windowsize=8, settings=TransferSettings(timeout=0.2, adaptive=False))
    client = SimClient(timeout=5.0)
    run(t, client, drop_c2s=lambda i, _d: i == which_ack + 1)  # +1: ACK 0 of the OACK
    assert t.outcome is Outcome.COMPLETED
    assert bytes(client.received) == data
    assert t.stats.timeouts == 1
    assert t.stats.retransmitted == 8


def test_duplicated_acks_never_cause_sends() -> None:
    data = content(512 * 64 + 3)
    base = make(data, windowsize=4)
    run(base, SimClient())
    t = make(data, windowsize=4)
    client = SimClient()
    run(t, client, dup_c2s=lambda _i, _d: True)
    assert bytes(client.received) == data
    assert t.stats.datagrams_sent == base.stats.datagrams_sent
    assert t.stats.duplicate_acks > 10
    assert t.stats.retransmitted == 0


def test_sorcerers_apprentice_delayed_ack_does_not_double_the_stream() -> None:
    """RFC 1350 lockstep: one ACK delayed past the timeout must not make every block go twice."""
    data = content(512 * 200)
    t = make(data, options=(), settings=TransferSettings(timeout=0.05, adaptive=False))
    client = SimClient(ack_duplicates=True, timeout=5.0)
    run(t, client, ack_delay=lambda i: 0.2 if i == 10 else 0.0)
    assert bytes(client.received) == data
    assert t.stats.datagrams_sent <= 200 + 1 + 5


def test_reordered_and_stale_acks_are_ignored() -> None:
    t = started(content(512 * 40), windowsize=8)
    t.datagrams_to_send()
    assert t.receive(ack(8), PEER, 0.01) is None
    assert blocks_of(t.datagrams_to_send()) == list(range(9, 17))
    reason = t.receive(ack(5), PEER, 0.011)  # an old ACK arriving late
    assert reason is not None and "older" in reason
    assert list(t.datagrams_to_send()) == []
    assert t.receive(ack(8), PEER, 0.012) is not None  # duplicate
    assert list(t.datagrams_to_send()) == []
    assert t.receive(ack(30), PEER, 0.013) is not None  # ahead of anything sent
    assert list(t.datagrams_to_send()) == []


def test_ack_inside_the_window_goes_back_to_first_unacknowledged() -> None:
    t = started(content(512 * 40), windowsize=8)
    assert blocks_of(t.datagrams_to_send()) == list(range(1, 9))
    assert t.receive(ack(3), PEER, 0.01) is None
    assert blocks_of(t.datagrams_to_send())[0] == 4
    assert t.stats.go_backs == 1


# ---------------------------------------------------------------------------------------------
# Timeouts


def test_timeouts_back_off_exponentially_then_give_up() -> None:
    data = content(512 * 10)
    settings = TransferSettings(timeout=0.1, max_retries=4, adaptive=False)
    t = make(data, windowsize=2, settings=settings)
    t.start(0.0)
    t.datagrams_to_send()
    t.receive(ack(0), PEER, 0.0)
    t.datagrams_to_send()
    times = []
    now = 0.0
    for _ in range(50):
        deadline = t.next_timer()
        if deadline is None:
            break
        now = deadline
        t.handle_timer(now)
        if list(t.datagrams_to_send()):
            times.append(now)
    assert t.finished and t.outcome is Outcome.TIMED_OUT
    assert len(times) == 4  # bounded: max_retries retransmissions
    gaps = [b - a for a, b in zip([0.0, *times], times, strict=False)]
    for a, b in itertools.pairwise(gaps):
        assert b == pytest.approx(2 * a)  # exponential backoff
    assert "no answer" in t.message


def test_client_timeout_option_sets_first_rto() -> None:
    t = make(content(100), options=(("timeout", "3"),), settings=FAST)
    t.start(10.0)
    assert t.next_timer() == pytest.approx(13.0)


def test_unanswered_oack_is_retransmitted_then_given_up() -> None:
    t = make(content(100), options=(("tsize", "0"),), settings=TransferSettings(timeout=0.1))
    t.start(0.0)
    sent = 0
    for _ in range(100):
        sent += len(list(t.datagrams_to_send()))
        deadline = t.next_timer()
        if deadline is None:
            break
        t.handle_timer(deadline)
    assert t.outcome is Outcome.TIMED_OUT
    assert sent == 1 + 6  # OACK + max_retries


# ---------------------------------------------------------------------------------------------
# Block numbers, options


@pytest.mark.parametrize("blksize", [8, 512])
def test_block_number_rolls_over_to_zero(blksize: int) -> None:
    nblocks = 65536 + 20
    data = content(blksize * (nblocks - 1) + 3)
    t = make(data, blksize=blksize, windowsize=64)
    client = SimClient()
    run(t, client)
    assert t.outcome is Outcome.COMPLETED
    assert bytes(client.received) == data
    assert client.wire_blocks[65534] == 65535
    assert client.wire_blocks[65535] == 0  # block 65536 goes out as 0 (tftp-hpa, curl, atftp)
    assert client.wire_blocks[65536] == 1


def test_rollover_with_loss_around_the_wrap() -> None:
    data = content(8 * 65600)
    t = make(data, blksize=8, windowsize=16, settings=TransferSettings(timeout=0.05))
    hits: set[int] = set()

    def drop(i: int, _d: bytes) -> bool:
        if 65530 <= i <= 65545 and i % 3 == 0 and i not in hits:
            hits.add(i)
            return True
        return False

    client = SimClient(timeout=0.3)
    run(t, client, drop_s2c=drop)
    assert bytes(client.received) == data


def test_oack_refused_with_error_ends_quietly() -> None:
    t = make(content(1000), options=(("tsize", "0"), ("blksize", "1456")))
    client = SimClient(refuse_oack=True)
    run(t, client)
    assert t.outcome is Outcome.DECLINED
    assert client.oack == {"tsize": "1000", "blksize": "1456"}
    # ... and the client's second request, without tsize, is an ordinary transfer
    again = make(content(1000), options=(("blksize", "1456"),))
    client2 = SimClient()
    run(again, client2)
    assert again.outcome is Outcome.COMPLETED and bytes(client2.received) == content(1000)


def test_client_error_during_transfer_aborts() -> None:
    t = started(content(5000), windowsize=2)
    t.datagrams_to_send()
    assert t.receive(build_packet(TftpError(0, "disk full")), PEER, 0.1) is None
    assert t.outcome is Outcome.ABORTED and "disk full" in t.message
    assert t.next_timer() is None


def test_wrong_tid_gets_error_5_and_transfer_continues() -> None:
    t = started(content(5000), windowsize=2)
    t.datagrams_to_send()
    stranger = ("192.0.2.99", 1234)
    assert t.receive(ack(2), stranger, 0.1) is not None
    replies = t.stranger_replies()
    assert len(replies) == 1 and replies[0][1] == stranger
    error = parse_packet(replies[0][0])
    assert isinstance(error, TftpError) and error.code == 5
    assert list(t.datagrams_to_send()) == [] and t.acked == 0
    assert t.receive(ack(2), PEER, 0.1) is None
    assert blocks_of(t.datagrams_to_send()) == [3, 4]


def test_garbage_from_client_is_ignored() -> None:
    t = started(content(5000), windowsize=2)
    for junk in (b"", b"\x00", b"\x00\x03\x00\x01xx", b"\xff" * 10, build_packet(TftpAck(70))):
        assert t.receive(junk, PEER, 0.1) is not None
    assert t.state is TransferState.SENDING


# ---------------------------------------------------------------------------------------------
# Round trips and the adaptive window


def test_rto_follows_measured_round_trips() -> None:
    data = content(512 * 400)
    t = make(data, windowsize=4, settings=TransferSettings(timeout=1.0, min_timeout=0.001))
    run(t, SimClient(), delay=0.002)
    assert t.stats.rtt_samples > 50
    assert t.srtt == pytest.approx(0.004, rel=0.05)
    assert t.rto < 0.02  # far below the configured 1 s


def test_window_shrinks_under_bursty_loss_and_regrows() -> None:
    """A client that loses everything past the 4th block of a burst: cwnd must drop to <= 4."""
    data = content(512 * 3000)
    t = make(data, windowsize=16, settings=TransferSettings(timeout=0.05, min_timeout=0.01))
    client = SimClient(timeout=0.2)

    def drop(position: int, d: bytes) -> bool:
        lossy = client.next_block <= 1500  # then the link is clean
        return lossy and position > 4 and isinstance(parse_packet(d), TftpData)

    run(t, client, drop_in_burst=drop)
    assert t.outcome is Outcome.COMPLETED
    assert bytes(client.received) == data
    assert t.stats.min_window <= 4
    assert t.cwnd == 16  # grew back once the loss stopped


def test_learned_window_starts_smaller() -> None:
    t = make(content(512 * 100), windowsize=16, settings=TransferSettings(initial_window=3.0))
    t.start(0.0)
    t.datagrams_to_send()
    t.receive(ack(0), PEER, 0.0)
    assert blocks_of(t.datagrams_to_send()) == [1, 2, 3]  # a burst of cwnd blocks, then paced
    assert t.next_timer() is not None


@pytest.mark.parametrize("seed", range(5))
def test_one_percent_loss_costs_at_most_twenty_percent_more_datagrams(seed: int) -> None:
    data = content(1468 * 4000)
    lossless = make(data, blksize=1468, windowsize=16)
    run(lossless, SimClient())
    rng = random.Random(seed)
    t = make(data, blksize=1468, windowsize=16, settings=TransferSettings(timeout=1.0))
    client = SimClient(timeout=1.0)
    r = run(
        t, client, drop_s2c=lambda *_: rng.random() < 0.01, drop_c2s=lambda *_: rng.random() < 0.01
    )
    assert bytes(client.received) == data
    ratio = t.stats.datagrams_sent / lossless.stats.datagrams_sent
    assert ratio <= 1.2, ratio
    # and fast: a lockstep server with a fixed 1 s timeout needs ~40 s here (40 losses x 1 s)
    assert r.now < 4.0, r.now


def test_negotiation_never_refuses() -> None:
    n = negotiate(
        (("BLKSIZE", "99999"), ("windowsize", "0"), ("timeout", "x"), ("foo", "1"), ("tsize", "0")),
        file_size=77,
        limits=OptionLimits(max_blksize=1468, max_windowsize=8, mtu=1500),
    )
    assert n == Negotiated(
        blksize=1468,
        windowsize=1,
        timeout=None,
        tsize=77,
        oack=(("BLKSIZE", "1468"), ("tsize", "77")),
        ignored=n.ignored,
    )
    assert len(n.ignored) == 3


@pytest.mark.parametrize(
    ("value", "mtu", "granted"),
    [("1456", 1500, "1456"), ("65464", 1500, "1468"), ("65464", 9000, "8968"), ("8", None, "8")],
)
def test_blksize_clamped_to_mtu(value: str, mtu: int | None, granted: str) -> None:
    n = negotiate((("blksize", value),), file_size=1, limits=OptionLimits(mtu=mtu))
    assert dict(n.oack)["blksize"] == granted


@pytest.mark.parametrize("value", ["7", "0", "-1", "abc", "", "1e3", "１２"])
def test_malformed_blksize_is_ignored(value: str) -> None:
    n = negotiate((("blksize", value),), file_size=1, limits=OptionLimits())
    assert n.blksize == 512 and n.oack == ()


@pytest.mark.parametrize("value", ["0", "256", "x"])
def test_malformed_timeout_is_ignored(value: str) -> None:
    n = negotiate((("timeout", value),), file_size=1, limits=OptionLimits())
    assert n.timeout is None and n.oack == ()


@pytest.mark.parametrize(("blksize", "windowsize"), [(512, 64), (1468, 16), (8192, 16), (65464, 4)])
def test_datagram_groups_are_the_datagrams_laid_end_to_end(blksize: int, windowsize: int) -> None:
    data = content(blksize * windowsize - 3)  # the last block of the window is short
    plain = make(data, blksize=blksize, windowsize=windowsize)
    grouped = make(data, blksize=blksize, windowsize=windowsize)
    for t in (plain, grouped):
        t.start(0.0)
        list(t.datagrams_to_send())
        t.receive(ack(0), PEER, 0.0)
    expected = list(plain.datagrams_to_send())
    groups = list(grouped.datagram_groups(64))
    flat: list[bytes] = []
    for iov, size, count in groups:
        buffer = b"".join(iov)
        assert len(buffer) <= 65507 and count <= 64
        assert [len(buffer[i : i + size]) for i in range(0, len(buffer), size)][:-1] == [size] * (
            count - 1
        )
        flat += [buffer[i : i + size] for i in range(0, len(buffer), size)]
    assert flat == expected


@pytest.mark.parametrize(("blksize", "windowsize"), [(512, 64), (1468, 16), (1468, 1), (65464, 4)])
def test_lead_group_holds_the_first_block_of_each_burst(blksize: int, windowsize: int) -> None:
    data = content(blksize * windowsize * 2 - 3)
    plain = make(data, blksize=blksize, windowsize=windowsize)
    led = make(data, blksize=blksize, windowsize=windowsize)
    for t in (plain, led):
        t.start(0.0)
        list(t.datagrams_to_send())
    for acked in (0, windowsize):
        for t in (plain, led):
            t.receive(ack(acked), PEER, 0.0)
        expected = list(plain.datagrams_to_send())
        groups = list(led.datagram_groups(64, lead=1))
        assert groups[0][2] == 1
        assert b"".join(groups[0][0]) == expected[0]
        flat: list[bytes] = []
        for iov, size, _count in groups:
            buffer = b"".join(iov)
            flat += [buffer[i : i + size] for i in range(0, len(buffer), size)]
        assert flat == expected


def test_waiting_for_ack_only_when_the_window_is_out() -> None:
    t = started(content(4 * 512), windowsize=4)  # blocks 1-4, then the empty block 5
    assert t.waiting_for_ack
    assert t.receive(ack(4), PEER, 0.01) is None and t.waiting_for_ack
    assert t.receive(ack(5), PEER, 0.02) is None
    assert t.finished and not t.waiting_for_ack
    slow = TransferSettings(timeout=0.2, min_timeout=0.01, max_retries=5, initial_window=2.0)
    paced = started(content(10_000), windowsize=4, settings=slow)
    assert not paced.waiting_for_ack  # two blocks now, two more after a pause
    deadline = paced.next_timer()
    assert deadline is not None
    paced.handle_timer(deadline)
    assert paced.waiting_for_ack
