"""Device event history, the IP -> MAC map and DeviceEvents (wds/devices.py): bounds included."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

import wds.devices as devices_module
from wds.context import EventSink
from wds.devices import DeviceError, DeviceEvents, DeviceStore

MAC = "52:54:00:18:00:01"
OTHER = "52:54:00:18:00:02"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DeviceStore]:
    with DeviceStore.open(tmp_path) as opened:
        yield opened


def test_events_are_kept_in_order_per_device(store: DeviceStore) -> None:
    store.add_event(MAC, "booted", "x64 UEFI: ipxe.efi", when=1.0)
    store.add_event("52-54-00-18-00-01", "boot-file", "ipxe.efi 1024 bytes", when=2.0)
    store.add_event(OTHER, "booted", "x86 BIOS: undionly.kpxe", when=3.0)
    events = store.events(MAC)
    assert [(e.when, e.kind, e.detail) for e in events] == [
        (1.0, "booted", "x64 UEFI: ipxe.efi"),
        (2.0, "boot-file", "ipxe.efi 1024 bytes"),
    ]
    assert events[0].to_json() == {
        "when": 1.0,
        "kind": "booted",
        "detail": "x64 UEFI: ipxe.efi",
        "mac": MAC,
    }
    assert [e.kind for e in store.events(OTHER)] == ["booted"]
    assert [e.when for e in store.events(MAC, limit=1)] == [2.0]


def test_events_by_uuid_of_a_prestaged_device(store: DeviceStore) -> None:
    import uuid

    device_uuid = uuid.UUID("4c4c4544-0042-3510-8051-b4c04f4d3232")
    store.prestage(mac=MAC, uuid=device_uuid)
    store.add_event(MAC, "script", "deploy session lab")
    assert [e.kind for e in store.events(str(device_uuid))] == ["script"]


def test_events_of_an_unknown_device_are_refused_clearly(store: DeviceStore) -> None:
    with pytest.raises(DeviceError, match="no device"):
        store.events(MAC)
    store.prestage(mac=MAC)
    assert store.events(MAC) == []
    with pytest.raises(DeviceError, match="not a MAC"):
        store.add_event("zz", "booted", "")
    with pytest.raises(DeviceError, match="unknown event kind"):
        store.add_event(MAC, "exploded", "")


def test_detail_is_cut_and_cleaned(store: DeviceStore) -> None:
    store.add_event(MAC, "failed", "line1\nline2\x00" + "x" * 10_000)
    (event,) = store.events(MAC)
    assert len(event.detail) == devices_module.MAX_DETAIL
    assert event.detail.startswith("line1 line2 x")


def test_history_is_bounded_per_device_and_in_total(
    store: DeviceStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(devices_module, "MAX_EVENTS_PER_DEVICE", 5)
    monkeypatch.setattr(devices_module, "MAX_EVENTS", 20)
    for i in range(12):
        store.add_event(MAC, "progress", f"{i}", when=float(i))
    assert [e.detail for e in store.events(MAC)] == ["7", "8", "9", "10", "11"]
    # a flood of unknown MACs: the table never holds more than MAX_EVENTS rows
    for i in range(100):
        store.add_event(f"02:00:00:00:{i // 256:02x}:{i % 256:02x}", "booted", "flood")
    (count,) = store._db.execute("SELECT count(*) FROM device_event").fetchone()
    assert count <= 20


def test_address_map_newest_wins_and_is_bounded(
    store: DeviceStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert store.mac_for("198.18.0.9") is None
    store.remember_address("198.18.0.9", MAC, when=1.0)
    assert store.mac_for("198.18.0.9") == MAC
    store.remember_address("198.18.0.9", OTHER, when=2.0)  # the address moved to another device
    assert store.mac_for("198.18.0.9") == OTHER
    monkeypatch.setattr(devices_module, "MAX_ADDRESSES", 10)
    for i in range(30):
        store.remember_address(f"198.18.1.{i}", MAC, when=10.0 + i)
    (count,) = store._db.execute("SELECT count(*) FROM device_address").fetchone()
    assert count == 10
    assert store.mac_for("198.18.1.29") == MAC  # the newest stay
    assert store.mac_for("198.18.1.0") is None


def test_address_map_is_shared_through_the_database(tmp_path: Path) -> None:
    with DeviceStore.open(tmp_path) as writer, DeviceStore.open(tmp_path) as reader:
        writer.remember_address("198.18.0.9", MAC)
        assert reader.mac_for("198.18.0.9") == MAC


def test_update_sets_only_what_is_given(store: DeviceStore) -> None:
    store.prestage(mac=MAC, boot_file="ipxe.efi")
    device = store.update(MAC, session="lab")
    assert (device.boot_file, device.session, device.image) == ("ipxe.efi", "lab", "")
    device = store.update(MAC, image="lab/win11:1", session="")
    assert (device.boot_file, device.session, device.image) == ("ipxe.efi", "", "lab/win11:1")
    with pytest.raises(DeviceError, match="no device"):
        store.update(OTHER, session="lab")
    with pytest.raises(DeviceError, match="at most"):
        store.update(MAC, session="x" * 300)


def test_device_events_is_an_event_sink(store: DeviceStore) -> None:
    sink: EventSink = DeviceEvents(store)
    sink.remember_address("198.18.0.9", MAC)
    sink.record("boot-file", "ipxe.efi", ip="198.18.0.9")
    sink.record("booted", "x86 BIOS", mac=MAC.upper())
    assert [e.kind for e in store.events(MAC)] == ["boot-file", "booted"]


def test_device_events_unknown_ip_is_kept_nowhere(
    store: DeviceStore, caplog: pytest.LogCaptureFixture
) -> None:
    events = DeviceEvents(store)
    with caplog.at_level(logging.DEBUG, logger="wds.devices"):
        events.record("boot-file", "ipxe.efi", ip="198.18.0.77")
        events.record("boot-file", "ipxe.efi")
        events.record("booted", "x", mac="not a mac")
    (count,) = store._db.execute("SELECT count(*) FROM device_event").fetchone()
    assert count == 0
    assert events.dropped == 3
    assert "no device known at that address" in caplog.text


def test_progress_is_throttled_per_device(store: DeviceStore) -> None:
    events = DeviceEvents(store, progress_every=5.0)
    for second in range(0, 12):
        events.record("progress", f"t={second}", mac=MAC, now=float(second))
        events.record("progress", f"t={second}", mac=OTHER, now=float(second) + 0.5)
    assert [e.detail for e in store.events(MAC)] == ["t=0", "t=5", "t=10"]
    assert [e.detail for e in store.events(OTHER)] == ["t=0", "t=5", "t=10"]
    events.record("finished", "verified", mac=MAC, now=11.0)  # other kinds are never throttled
    assert store.events(MAC)[-1].kind == "finished"


def test_a_busy_database_costs_the_event_not_an_exception(tmp_path: Path) -> None:
    with (
        DeviceStore.open(tmp_path) as holder,
        DeviceStore.open(tmp_path, busy_timeout_ms=50) as server,
    ):
        events = DeviceEvents(server)
        holder._db.execute("BEGIN IMMEDIATE")  # the CLI holds the write lock
        try:
            events.record("booted", "x", mac=MAC)
            events.remember_address("198.18.0.9", MAC)
        finally:
            holder._db.execute("ROLLBACK")
        assert events.dropped == 1
        events.record("booted", "x", mac=MAC)
        assert [e.kind for e in server.events(MAC)] == ["booted"]
