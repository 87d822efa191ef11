"""Two admins changing the store at once: the fcntl lock serialises the catalog updates."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

import wds.store.store as store_module
from store.conftest import Wims
from store.helpers import wds_process
from wds.store import ImageStore, StoredImage
from wds.wim import read_wim_info


def test_two_concurrent_adds_both_land(wims: Wims, store: Path) -> None:
    # Each process holds the lock 0.5 s before committing, so their commits must overlap in
    # time: without the lock the second catalog write would drop the first image.
    hold = {store_module.HOLD_ENV: "0.5"}
    ImageStore.open(store, create=True)
    started = time.monotonic()
    procs = [
        wds_process(store, "add", wims.two, "--group", "lab", "--name", f"img{n}", env=hold)
        for n in (1, 2)
    ]
    results = [p.communicate(timeout=60) for p in procs]
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
    assert time.monotonic() - started >= 1.0  # the two held the lock one after the other

    catalog = json.loads((store / "catalog.json").read_text())  # valid JSON, both present
    assert sorted(item["ref"] for item in catalog["images"]) == ["lab/img1", "lab/img2"]
    entries = ImageStore.open(store).list_images()
    assert len({e.path for e in entries}) == 2 and all(e.path.exists() for e in entries)
    assert not list((store / ".tmp").iterdir())


def test_same_name_twice_at_once_one_wins(wims: Wims, store: Path) -> None:
    hold = {store_module.HOLD_ENV: "0.3"}
    ImageStore.open(store, create=True)
    procs = [
        wds_process(store, "add", wims.two, "--group", "lab", "--name", "same", env=hold)
        for _ in range(2)
    ]
    results = [p.communicate(timeout=60) for p in procs]
    assert sorted(p.returncode for p in procs) == [0, 1]
    assert any("already in the store" in err for _, err in results)
    entries = ImageStore.open(store).list_images()
    assert [e.ref for e in entries] == ["lab/same"]
    assert len(list((store / "images").rglob("*.wim"))) == 1  # the loser's copy was removed


def test_a_held_lock_times_out_with_a_clear_message(wims: Wims, store: Path) -> None:
    from wds.errors import StoreError
    from wds.store.fs import StoreLock

    opened = ImageStore.open(store, create=True)
    with StoreLock(store / ".lock", timeout=1):
        slow = ImageStore(opened.root, lock_timeout=0.2)
        try:
            slow.add(wims.two, group="lab")
        except StoreError as exc:
            assert "locked by another wds process" in str(exc)
        else:
            raise AssertionError("the add should have waited for the lock and given up")
    assert opened.list_images() == ()


def test_export_survives_a_concurrent_remove(
    wims: Wims, store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exporter = ImageStore.open(store, create=True)
    stored = exporter.add(wims.two, group="lab", name="w")
    real_export = store_module.export_to

    def remove_first(entry: StoredImage, *args: Any, **kwargs: Any) -> Path:
        ImageStore.open(store).remove("lab/w")  # another admin, between find and wimlib
        assert not stored.path.exists()
        return real_export(entry, *args, **kwargs)

    monkeypatch.setattr(store_module, "export_to", remove_first)
    dest = exporter.export("lab/w", tmp_path / "out.wim")
    assert read_wim_info(dest).image_count == 2
    assert exporter.list_images() == () and not list((store / ".tmp").iterdir())


def test_open_keeps_a_live_staging_area(wims: Wims, store: Path) -> None:
    from wds.store.fs import StoreLock, staging_area

    s = ImageStore.open(store, create=True)
    with staging_area(store / ".tmp", StoreLock(store / ".lock", 5)) as area:
        (area / "half.wim").write_bytes(b"being copied")
        ImageStore.open(store)  # another process's cleanup: the flock says "in use"
        assert (area / "half.wim").exists()
    assert not list((store / ".tmp").iterdir())
    assert s.list_images() == ()
