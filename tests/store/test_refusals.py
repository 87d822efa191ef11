"""Bad input is refused with the reason and exit 1 or 2, no traceback, and the store unchanged."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from store.conftest import CliRun, Wims
from store.helpers import capture, snapshot
from wds.store import ImageStore
from wds.wim import read_wim_info


def _corrupt_copy(wims: Wims, tmp_path: Path) -> Path:
    """A copy of the two-image WIM with one byte flipped inside its integrity-checked data."""
    bad = tmp_path / "bad.wim"
    shutil.copyfile(wims.two, bad)
    assert read_wim_info(bad).has_integrity_table
    data = bytearray(bad.read_bytes())
    data[208 + 1000] ^= 0x01  # just after the 208-byte header, inside the first blob
    bad.write_bytes(bytes(data))
    return bad


@pytest.mark.parametrize("extra", [[], ["--index", "1"]])
def test_corrupt_wim_is_refused_with_the_reason(
    extra: list[str], wds: CliRun, wims: Wims, store: Path, tmp_path: Path
) -> None:
    assert wds("add", wims.two, "--group", "lab", "--name", "good")[0] == 0
    before = snapshot(store)
    bad = _corrupt_copy(wims, tmp_path)
    code, out, err = wds("add", bad, "--group", "lab", "--name", "bad", *extra)
    assert code == 1 and out == ""
    assert err.startswith("wds: error: ") and err.count("\n") == 1
    assert f"{bad}: refused: the WIM failed verification" in err
    assert "bad.wim: integrity check failed: chunk 0" in err  # the reason
    assert "Traceback" not in err
    assert snapshot(store) == before


def test_not_a_wim_exits_2(wds: CliRun, store: Path, tmp_path: Path) -> None:
    junk = tmp_path / "notes.wim"
    junk.write_text("this is not a WIM\n" * 100)
    code, _, err = wds("add", junk, "--group", "lab")
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert str(junk) in err
    code, _, err = wds("add", tmp_path / "missing.wim", "--group", "lab")
    assert code == 2 and "no such file" in err
    assert [p.name for p in (store / "images").iterdir()] == []
    assert not (store / "catalog.json").exists()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["add", "{two}", "--group", "boot"], 2, "reserved for boot images"),
        (["add", "{two}", "--group", "a/b"], 2, "not a valid image group name"),
        (["add", "{two}", "--group", "lab", "--name", "x:y"], 2, "must not contain"),
        (["add", "{two}", "--group", "lab", "--index", "3"], 2, "holds images 1..2"),
        (["add", "{two}", "--boot"], 2, "--boot needs --arch"),
        (["add", "{two}", "--group", "lab", "--arch", "x64"], 2, "--arch is for boot images"),
        (["remove", "lab"], 2, "not an image reference"),
        (["remove", "lab/nothing"], 1, "no image lab/nothing"),
        (["remove", "lab/x:1"], 2, "remove takes a whole stored WIM"),
        (["set", "lab/x"], 1, "no image lab/x"),
        (["split", "lab/x", "{tmp}/a.wim", "--part-size", "1"], 2, "NAME.swm"),
        (["export", "lab/x", "{tmp}/no/such/dir.wim"], 1, "no image lab/x"),
    ],
)
def test_bad_requests(
    args: list[str],
    code: int,
    message: str,
    wds: CliRun,
    wims: Wims,
    store: Path,
    tmp_path: Path,
) -> None:
    ImageStore.open(store, create=True)
    argv = [a.format(two=wims.two, tmp=tmp_path) for a in args]
    got, _, err = wds(*argv)
    assert (got, message in err) == (code, True), err
    assert "Traceback" not in err


def test_damaged_catalog_is_named(wds: CliRun, wims: Wims, store: Path) -> None:
    assert wds("add", wims.two, "--group", "lab")[0] == 0
    (store / "catalog.json").write_text('{"format": "wds-image-store", "version": 1, "images": 5}')
    code, _, err = wds("list")
    assert code == 1 and "catalog.json: the catalog is damaged" in err


def test_missing_store_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from wds.cli.main import main

    assert main(["image", "list", "--store", str(tmp_path / "nowhere")]) == 1
    assert "no image store at" in capsys.readouterr().err


def test_store_comes_from_config(
    wims: Wims, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from wds.cli.main import main

    config = tmp_path / "etc" / "wds.toml"
    config.parent.mkdir()
    config.write_text('[server]\nstore = "../images"\n')  # relative to the config's directory
    assert (
        main(["image", "add", str(wims.boot), "--boot", "--arch", "x64", "--config", str(config)])
        == 0
    )
    assert ImageStore.open(tmp_path / "images").boot_image("x64") is not None
    config.write_text('[server]\nstor = "x"\n')
    assert main(["image", "list", "--config", str(config)]) == 1
    assert "unknown key 'stor'" in capsys.readouterr().err


def test_boot_image_for_another_architecture_is_refused(
    wds: CliRun, store: Path, tmp_path: Path
) -> None:
    src = tmp_path / "pe"
    src.mkdir()
    (src / "boot.txt").write_text("x86 PE\n")
    pe = capture([src], tmp_path / "pe.wim", ["PE"], "--boot", "--image-property", "WINDOWS/ARCH=0")
    code, _, err = wds("add", pe, "--boot", "--arch", "x64")
    assert code == 1 and "image 1 is a x86 image, not x86_64; add it with --arch x86" in err
    assert wds("add", pe, "--boot", "--arch", "x86")[0] == 0
