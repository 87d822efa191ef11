"""Admission control (pure): caps, FIFO per client, round-robin across clients, bounded queue."""

from __future__ import annotations

from pxe.tftp.admission import AdmissionControl, Admitted, AlreadyWaiting, Queued, Refused


def control(**kw: float) -> AdmissionControl[str]:
    args = {"max_total": 1, "max_per_client": 3, "max_queued": 10, "max_wait": 5.0, **kw}
    return AdmissionControl(**args)  # type: ignore[arg-type]


def test_fifo_per_client_round_robin_across_clients() -> None:
    a = control()
    assert a.request("X", "x1", "x1", 0.0) == Admitted()
    for key in ("a1", "a2", "a3"):
        assert isinstance(a.request("A", key, key, 0.0), Queued)
    assert isinstance(a.request("B", "b1", "b1", 0.0), Queued)
    assert isinstance(a.request("C", "c1", "c1", 0.0), Queued)
    order = []
    client = "X"
    for _ in range(5):
        a.release(client)
        ((client, item),) = a.next_ready(0.0)
        order.append(item)
    assert order == ["a1", "b1", "c1", "a2", "a3"]
    assert a.queued == 0 and a.running == 1


def test_per_client_cap_then_queue_then_refusal() -> None:
    a = control(max_total=10, max_per_client=2, max_queued=10)
    assert a.request("A", 1, "r1", 0.0) == Admitted()
    assert a.request("A", 2, "r2", 0.0) == Admitted()
    assert a.request("B", 9, "b", 0.0) == Admitted()  # another client is not held up
    assert isinstance(a.request("A", 3, "r3", 0.0), Queued)
    assert isinstance(a.request("A", 4, "r4", 0.0), Queued)
    refused = a.request("A", 5, "r5", 0.0)
    assert isinstance(refused, Refused) and "too many requests from A" in refused.message
    a.release("A")
    assert a.next_ready(0.0) == [("A", "r3")]
    assert a.running_for("A") == 2


def test_a_client_with_waiting_requests_cannot_jump_its_queue() -> None:
    a = control(max_total=10, max_per_client=2)
    assert a.request("A", 1, "r1", 0.0) == Admitted()
    assert a.request("A", 2, "r2", 0.0) == Admitted()
    assert isinstance(a.request("A", 3, "r3", 0.0), Queued)
    a.release("A")
    # a new request arriving before the queue is served waits behind r3
    assert isinstance(a.request("A", 4, "r4", 0.0), Queued)
    assert a.next_ready(0.0) == [("A", "r3")]


def test_total_queue_bound_and_busy_message() -> None:
    a = control(max_total=1, max_queued=2)
    assert a.request("A", 1, "a", 0.0) == Admitted()
    assert isinstance(a.request("B", 2, "b", 0.0), Queued)
    assert isinstance(a.request("C", 3, "c", 0.0), Queued)
    refused = a.request("D", 4, "d", 0.0)
    assert isinstance(refused, Refused) and "busy" in refused.message


def test_retransmitted_request_is_not_queued_twice() -> None:
    a = control()
    a.request("A", "k0", "a0", 0.0)
    assert isinstance(a.request("A", "k1", "a1", 0.0), Queued)
    assert a.request("A", "k1", "a1", 0.5) == AlreadyWaiting()
    assert a.queued == 1


def test_waiting_requests_expire() -> None:
    a = control(max_wait=2.0)
    a.request("A", 0, "running", 0.0)
    a.request("B", 1, "b", 0.0)
    a.request("C", 2, "c", 1.0)
    assert a.next_expiry() == 2.0
    assert a.expire(2.0) == ["b"]
    assert a.expire(2.5) == []
    assert a.expire(3.0) == ["c"]
    assert a.queued == 0 and a.next_expiry() is None


def test_no_queue_configured_refuses_at_once() -> None:
    a = control(max_queued=0)
    a.request("A", 0, "a", 0.0)
    assert isinstance(a.request("B", 1, "b", 0.0), Refused)
