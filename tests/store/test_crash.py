"""A crash in the middle of `wds image add` (or `set`) leaves the store as it was.

The real processes below SIGKILL themselves at a named step (``WDS_STORE_CRASH_AT``, a hook used
only by tests); the in-process tests make the step after staging raise instead.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

import wds.store.store as store_module
from store.conftest import CliRun, Wims
from store.helpers import snapshot, wds_process
from wds.store import ImageStore


def _visible(store: Path) -> list[str]:
    """What an admin or the server sees: catalog entries, and WIM files outside staging."""
    catalog = json.loads((store / "catalog.json").read_text())
    refs = sorted(item["ref"] for item in catalog["images"])
    files = sorted(str(p.relative_to(store)) for p in (store / "images").rglob("*.wim"))
    return refs + files


@pytest.mark.parametrize("point", ["copying", "staged", "renamed"])
def test_killed_add_leaves_store_consistent(
    point: str, wds: CliRun, wims: Wims, store: Path
) -> None:
    assert wds("add", wims.two, "--group", "lab", "--name", "first")[0] == 0
    before = snapshot(store)
    visible = _visible(store)

    proc = wds_process(
        store, "add", wims.big, "--group", "lab", env={store_module.CRASH_ENV: point}
    )
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    # the catalog is unchanged; the debris is in staging, or (renamed) an unnamed file
    assert (store / "catalog.json").read_bytes() == before["catalog.json"]
    leftovers = set(snapshot(store)) - set(before)
    assert leftovers, "the crash should have left something to clean"
    if point == "renamed":
        assert any(name.startswith("images/") for name in leftovers)
    else:
        assert all(name.startswith(".tmp/") for name in leftovers)
        assert _visible(store) == visible  # no half file visible

    opened = ImageStore.open(store)  # the next open cleans up
    assert snapshot(store) == before
    assert [e.ref for e in opened.list_images()] == ["lab/first"]
    # and the same add now works
    assert wds("add", wims.big, "--group", "lab")[0] == 0
    assert len(ImageStore.open(store).list_images()) == 2


@pytest.mark.parametrize("point", ["copying", "staged", "renamed"])
def test_failing_step_leaves_store_unchanged(
    point: str, wds: CliRun, wims: Wims, store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert wds("add", wims.two, "--group", "lab", "--name", "first")[0] == 0
    before = snapshot(store)

    def fail(at: str) -> None:
        if at == point:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(store_module, "checkpoint", fail)
    code, _, err = wds("add", wims.boot, "--boot", "--arch", "x64")
    assert code == 1 and "No space left on device" in err and "Traceback" not in err
    assert snapshot(store) == before  # staging and the renamed file removed on the way out
    if point == "renamed":
        code, _, err = wds("set", "lab/first:1", "--name", "New")
        assert code == 1 and "No space left on device" in err
        assert snapshot(store) == before


def test_killed_set_keeps_the_old_wim(wds: CliRun, wims: Wims, store: Path) -> None:
    assert wds("add", wims.two, "--group", "lab", "--name", "w")[0] == 0
    before = snapshot(store)
    proc = wds_process(
        store, "set", "lab/w:1", "--name", "New", env={store_module.CRASH_ENV: "renamed"}
    )
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    entry = ImageStore.open(store).get("lab", "w")
    assert snapshot(store) == before and entry.image(1).name == "Alpha"
