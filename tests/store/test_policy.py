"""The interface server code uses: ImageStore.open/list_images/get/find/boot_image, ImageRef."""

from __future__ import annotations

from pathlib import Path

import pytest

from store.conftest import Wims
from wds.errors import StoreError
from wds.store import ImageRef, ImageSource, ImageStore, StoreInputError
from wds.store.model import catalog_from_json, catalog_to_json


def test_boot_images_per_architecture(wims: Wims, store: Path) -> None:
    s = ImageStore.open(store, create=True)
    assert s.boot_image("x64") is None
    first = s.add(wims.boot, arch="x64", name="pe1")
    second = s.add(wims.boot, arch="x64", name="pe2")
    arm = s.add(wims.boot, arch="arm64", name="pe")
    assert s.boot_image("x64") == first.path  # the oldest, until another is made default
    assert s.boot_image("arm64") == arm.path and s.boot_image("x86") is None
    s.set_info("boot/x64/pe2", default=True)
    assert s.boot_image("x64") == s.get("x64", "pe2", kind="boot").path
    assert s.boot_image("x64") == second.path  # a catalog-only change keeps the file
    assert [e.name for e in s.boot_images("x64")] == ["pe2", "pe1"]
    s.add(wims.boot, arch="x64", name="pe3", default=True)
    assert [e.name for e in s.boot_images("x64")] == ["pe3", "pe1", "pe2"]
    s.remove("boot/x64/pe3")
    assert s.boot_image("x64") == s.get("x64", "pe1", kind="boot").path  # back to the oldest


def test_get_and_find(wims: Wims, store: Path) -> None:
    s: ImageSource = ImageStore.open(store, create=True)
    assert isinstance(s, ImageStore)
    added = s.add(wims.two, group="win11", name="Pro")
    assert s.get("WIN11", "pro") == added  # names compare without case, as on Windows
    assert s.find("win11/Pro:2").image(2).name == "Beta"
    with pytest.raises(StoreError, match=r"holds images 1\.\.2"):
        s.find("win11/Pro:3")
    with pytest.raises(StoreError, match="no image win11/Home"):
        s.get("win11", "Home")
    assert [e.ref for e in s.list_images()] == ["win11/Pro"]
    assert s.list_images()[0].path.is_file() and s.list_images()[0].path.is_absolute()


@pytest.mark.parametrize(
    ("text", "ref"),
    [
        ("lab/win11 pro", ImageRef("install", "lab", "win11 pro")),
        ("lab/win11:3", ImageRef("install", "lab", "win11", 3)),
        ("boot/x64/WinPE", ImageRef("boot", "x64", "WinPE")),
        ("boot/arm64/pe:2", ImageRef("boot", "arm64", "pe", 2)),
    ],
)
def test_refs_round_trip(text: str, ref: ImageRef) -> None:
    assert ImageRef.parse(text) == ref and str(ref) == text


@pytest.mark.parametrize("text", ["lab", "a/b/c", "boot/x65/pe", "boot/x64", "lab/", "/x", "l/x:0"])
def test_bad_refs(text: str) -> None:
    with pytest.raises(StoreInputError):
        ImageRef.parse(text)


def test_catalog_json_round_trip_and_orphans(wims: Wims, store: Path) -> None:
    s = ImageStore.open(store, create=True)
    s.add(wims.two, group="lab")
    s.add(wims.boot, arch="x86")
    entries = s.list_images()
    assert catalog_from_json(catalog_to_json(entries, store), store) == entries
    orphan = store / "images" / "lab" / ("0" * 32 + ".wim")
    orphan.write_bytes(b"left by a crash between rename and catalog write")
    ImageStore.open(store)
    assert not orphan.exists() and ImageStore.open(store).list_images() == entries


def test_refuses_a_directory_that_is_not_a_store(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("not ours")
    with pytest.raises(StoreError, match="is not an image store"):
        ImageStore.open(tmp_path, create=True)
