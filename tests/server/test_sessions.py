"""The session manager's parts in-process: pool allocation, stable signed manifests and their
hash cache, per-receiver tracking, and the SessionControl rules (names, conflicts, reload)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from serve_support import add_image, make_wim

from multicast.codec import (
    BlockRange,
    ReceiverReport,
    RepairRequest,
    ReportFlags,
    build_datagram,
    parse_manifest,
)
from multicast.events import ReceiverDone, ReceiverJoined
from wds.config import Config, MulticastConfig, ServerConfig, SessionConfig
from wds.errors import Conflict, NotFound, RequestError
from wds.sessions import SessionManager
from wds.sessions.pool import Pool
from wds.sessions.prepare import build_signed, derive_session_id, load_key
from wds.sessions.tracking import ReceiverTracker

# -- pool -------------------------------------------------------------------------------------


def test_pool_gives_stable_distinct_groups_and_ports() -> None:
    pool = Pool("239.1.2.0/29", "9000-9005")
    first = {name: pool.allocate(name) for name in ("a", "b", "c", "d", "e", "f")}
    assert len({g for g, _ in first.values()}) == 6  # the 6 hosts of a /29: all distinct
    assert len({p for _, p in first.values()}) == 6
    with pytest.raises(Conflict, match="exhausted"):
        pool.allocate("g")
    again = Pool("239.1.2.0/29", "9000-9005")
    assert again.allocate("c") == first["c"]  # from the name: the same after a restart
    pool.release("c")
    assert pool.allocate("g") == first["c"]


def test_pool_refuses_an_explicit_group_or_port_another_session_has() -> None:
    pool = Pool("239.1.2.0/24", "9000-9099")
    group, port = pool.allocate("a")
    with pytest.raises(Conflict, match="session a"):
        pool.allocate("b", group=group)
    with pytest.raises(Conflict, match="session a"):
        pool.allocate("b", port=port)
    assert pool.allocate("a", group, port) == (group, port)  # its own: fine


# -- manifests --------------------------------------------------------------------------------


def _config(tmp_path: Path, *sessions: SessionConfig) -> Config:
    return Config(
        server=ServerConfig(address="127.0.0.1", state_dir=tmp_path / "state", store=tmp_path),
        multicast=MulticastConfig(group_pool="239.9.9.0/24", chunk_size=65536),
        session=sessions,
    )


def test_signed_manifest_is_byte_identical_after_a_restart_and_uses_the_hash_cache(
    tmp_path: Path,
) -> None:
    image = tmp_path / "image.bin"
    image.write_bytes(bytes(range(256)) * 1000)
    spec = SessionConfig(name="s", image="g/n")
    config = _config(tmp_path, spec)
    key = load_key(config.server.state_dir)
    one = build_signed(image, spec, config, key, group="239.9.9.9", port=9001)
    assert list((config.server.state_dir / "manifests").glob("*.bin"))
    again = build_signed(
        image, spec, config, load_key(config.server.state_dir), group="239.9.9.9", port=9001
    )
    assert again.wire == one.wire and again.digest == one.digest
    m = parse_manifest(one.wire)
    assert m.session_id == derive_session_id("s", m.image_sha256)
    assert (m.group, m.port, m.chunk_size) == ("239.9.9.9", 9001, 65536)
    # a changed image is hashed again (the cache key has its size and mtime)
    image.write_bytes(b"x" * 70000)
    changed = parse_manifest(
        build_signed(image, spec, config, key, group="239.9.9.9", port=9001).wire
    )
    assert changed.image_size == 70000 and changed.session_id != m.session_id


# -- receivers --------------------------------------------------------------------------------


def test_tracker_reports_progress_loss_repairs_rejections_and_eta() -> None:
    progress: list[tuple[str, int, int]] = []
    tracker = ReceiverTracker(10, 1000, 10_000, lambda *a: progress.append(a))
    addr = ("127.0.0.1", 5000)
    tracker.event(ReceiverJoined(7, addr), now=0.0)

    def report(verified: int, now: float) -> None:
        d = ReceiverReport(1, 7, ReportFlags(0), 50, verified, 1, 0, 0, b"")
        tracker.feedback(build_datagram(d), addr, now)

    report(0, 0.0)
    report(4, 2.0)
    nak = RepairRequest(1, 7, (BlockRange(3, 0, 5),))
    tracker.feedback(build_datagram(nak), addr, 2.1)
    tracker.feedback(build_datagram(nak), ("127.0.0.2", 5000), 2.1)  # another address: ignored
    (rx,) = tracker.statuses(lambda ip: "52:54:00:00:00:01")
    assert (rx.receiver_id, rx.state, rx.verified_chunks, rx.chunks) == (
        "0" * 15 + "7",
        "joined",
        4,
        10,
    )
    assert rx.rejected_chunks == 1 and rx.repairs == 5 and rx.loss == 0.05
    assert rx.rate_bps == 2000.0 and rx.eta_s == 3.0 and rx.device == "52:54:00:00:00:01"
    report(5, 2.5)  # within PROGRESS_EVENT_EVERY of the last progress event: not another one
    assert progress == [("127.0.0.1", 4, 10)]
    tracker.event(ReceiverDone(7, addr), now=3.0)
    (rx,) = tracker.statuses(lambda ip: None)
    assert rx.state == "done" and rx.verified_chunks == 10 and rx.eta_s == 0.0


# -- the manager ------------------------------------------------------------------------------


def _run(coro: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(coro(), 60))


async def _until(check: Callable[[], bool]) -> None:
    for _ in range(600):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in 30 s")


@pytest.fixture
def store_config(tmp_path: Path) -> Config:
    add_image(tmp_path / "store", make_wim(tmp_path, mib=1), "lab", "one")
    config = _config(tmp_path, SessionConfig(name="a", image="lab/one"))
    return dataclasses.replace(
        config, server=dataclasses.replace(config.server, store=tmp_path / "store")
    )


def test_manager_rules_for_names_images_groups_and_states(store_config: Config) -> None:
    async def main() -> None:
        lines: list[str] = []
        manager = SessionManager(store_config, announce=lines.append)
        try:
            await manager.open()
            with pytest.raises(Conflict, match="being prepared"):
                manager.content("a")
            await _until(lambda: manager.get("a").size > 0)
            assert manager.content("a").manifest == manager.content("a").manifest
            assert lines and lines[0].startswith("wds serve: session a on 239.9.9.")
            a = manager.get("a")
            assert (a.state, a.origin, a.mode) == ("idle", "config", "auto")
            with pytest.raises(NotFound):
                manager.get("zz")
            with pytest.raises(Conflict, match="exists"):
                await manager.create(SessionConfig(name="a", image="lab/one"))
            with pytest.raises(RequestError, match="lab/none"):
                await manager.create(SessionConfig(name="b", image="lab/none"))
            with pytest.raises(RequestError, match="boot image"):
                await manager.create(SessionConfig(name="b", image="boot/x64/pe"))
            with pytest.raises(Conflict, match="used by session a"):
                await manager.create(SessionConfig(name="b", image="lab/one", group=a.group or ""))
            b = await manager.create(
                SessionConfig(name="b", image="lab/one", mode="scheduled", min_clients=3)
            )
            assert b.origin == "runtime" and b.group != a.group and b.port != a.port
            await _until(lambda: manager.get("b").state == "waiting")
            assert "3 clients" in manager.get("b").message
            with pytest.raises(Conflict, match="already idle"):
                await manager.start("a")
            assert (await manager.stop("a")).state == "stopped"
            with pytest.raises(Conflict, match="nothing to stop"):
                await manager.stop("a")
            assert (await manager.start("a")).state == "idle"
            device = dataclasses.make_dataclass("D", [("session", str), ("image", str)])
            assert manager.for_device(device("b", "")).name == "b"  # type: ignore[union-attr]
            assert manager.for_device(device("", "LAB/one")).name == "a"  # type: ignore[union-attr]
            assert manager.for_device(device("", "lab/other")) is None
        finally:
            await manager.close()

    _run(main)


def test_reload_adds_changes_and_removes_idle_sessions(store_config: Config) -> None:
    async def main() -> None:
        manager = SessionManager(store_config)
        try:
            await manager.open()
            await _until(lambda: manager.get("a").size > 0)
            old_manifest = manager.content("a").manifest
            changed = SessionConfig(name="a", image="lab/one", rate_mbps=50)
            added = SessionConfig(name="c", image="lab/one")
            await manager.reload(dataclasses.replace(store_config, session=(changed, added)))
            await _until(lambda: manager.get("a").size > 0 and manager.get("c").size > 0)
            assert manager.content("a").manifest != old_manifest  # re-prepared: new rate
            assert parse_manifest(manager.content("a").manifest).rate_kbps == 50_000
            await manager.reload(dataclasses.replace(store_config, session=(added,)))
            assert [s.name for s in manager.list()] == ["c"]
        finally:
            await manager.close()

    _run(main)


def test_sending_address_from_server_address_or_interface(tmp_path: Path) -> None:
    from wds.errors import ConfigError
    from wds.sessions.prepare import sending_address

    config = _config(tmp_path)
    assert sending_address(config) == "127.0.0.1"
    on_lo = dataclasses.replace(
        config, server=dataclasses.replace(config.server, address="0.0.0.0", interface="lo")
    )
    assert sending_address(on_lo) == "127.0.0.1"
    missing = dataclasses.replace(
        config, server=dataclasses.replace(config.server, address="0.0.0.0", interface="wdsnone0")
    )
    with pytest.raises(ConfigError, match=r"server\.interface"):
        sending_address(missing)
