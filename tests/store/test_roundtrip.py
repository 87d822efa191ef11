"""add, list, set, export, split, remove through `wds image ...`, checked with wimlib's wiminfo."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from store.conftest import CliRun, Wims
from store.helpers import snapshot, wiminfo
from wds.store import ImageStore


def _listed(wds: CliRun) -> list[dict[str, object]]:
    code, out, _ = wds("list", "--json")
    assert code == 0
    result: list[dict[str, object]] = json.loads(out)
    return result


def test_add_list_export_split_remove(wds: CliRun, wims: Wims, store: Path, tmp_path: Path) -> None:
    code, out, err = wds("add", wims.two, "--group", "lab", "--name", "both")
    assert (code, err) == (0, ""), err
    assert "added lab/both: 2 image(s)" in out
    assert wds("add", wims.two, "--group", "lab", "--index", "2")[0] == 0  # named after "Beta"
    assert wds("add", wims.boot, "--boot", "--arch", "x64")[0] == 0  # named after "WinPE"

    listed = {item["ref"]: item for item in _listed(wds)}
    assert set(listed) == {"lab/both", "lab/Beta", "boot/x64/WinPE"}
    assert [i["name"] for i in listed["lab/both"]["images"]] == ["Alpha", "Beta"]  # type: ignore[index]
    assert listed["boot/x64/WinPE"]["boot_index"] == 1
    assert listed["boot/x64/WinPE"]["answered"] is True
    stored = Path(str(listed["lab/both"]["file"]))
    assert stored.read_bytes() == wims.two.read_bytes()  # copied byte for byte
    beta = wiminfo(Path(str(listed["lab/Beta"]["file"])))
    assert "Image Count:    1" in beta and "Name:                   Beta" in beta

    code, out, _ = wds("list")  # the rich table
    assert code == 0 and "lab/both" in out and "boot/x64/WinPE" in out

    # export one image with other compression: wiminfo sees exactly that image
    code, _, err = wds("export", "lab/both:2", tmp_path / "beta.wim", "--compress", "xpress")
    assert code == 0, err
    info = wiminfo(tmp_path / "beta.wim")
    assert "Image Count:    1" in info and "Beta" in info and "Alpha" not in info
    assert "Compression:    XPRESS" in info and "Integrity info" in info
    code, _, err = wds("export", "lab/both", tmp_path / "beta.wim")
    assert code == 1 and "exists" in err  # never overwrites

    # split for media: every part is part n of N of one set, and they join back to the WIM
    code, out, err = wds("split", "lab/both", tmp_path / "media.swm", "--part-size", "0.03")
    assert code == 0, err
    parts = sorted(tmp_path.glob("media*.swm"))
    assert len(parts) >= 2 and f"into {len(parts)} parts" in out
    assert f"Part Number:    1/{len(parts)}" in wiminfo(tmp_path / "media.swm")
    joined = tmp_path / "joined.wim"
    subprocess.run(
        ["wimlib-imagex", "join", str(joined), *map(str, parts)], check=True, capture_output=True
    )
    assert "Image Count:    2" in wiminfo(joined)
    assert not list(tmp_path.glob(".media*"))  # no staging left behind

    before = snapshot(store)
    assert wds("remove", "lab/both")[0] == 0
    assert not stored.exists()
    assert {item["ref"] for item in _listed(wds)} == {"lab/Beta", "boot/x64/WinPE"}
    code, _, err = wds("remove", "lab/both")
    assert code == 1 and "no image lab/both" in err
    assert snapshot(store) != before


def test_set_changes_the_wim_by_copy(wds: CliRun, wims: Wims, store: Path) -> None:
    assert wds("add", wims.two, "--group", "lab", "--name", "w")[0] == 0
    old = ImageStore.open(store).get("lab", "w")
    code, _, err = wds("set", "lab/w", "--flags", "Professional")
    assert code == 2 and "say which one" in err  # two images: REF:INDEX needed
    code, _, err = wds(
        "set", "lab/w:2", "--name", "Beta Pro", "--description", "lab build", "--flags", "Pro"
    )
    assert code == 0, err
    assert wds("set", "lab/w", "--boot-index", "2")[0] == 0
    assert wds("set", "lab/w", "--rename", "w2")[0] == 0
    new = ImageStore.open(store).get("lab", "w2")
    assert not old.path.exists() and new.path != old.path  # never changed in place
    assert new.revision == old.revision + 3 and new.boot_index == 2
    assert new.image(2).name == "Beta Pro" and new.image(2).flags == "Pro"
    xml = subprocess.run(
        ["wimlib-imagex", "info", str(new.path), "--xml"], check=True, capture_output=True
    ).stdout.decode("utf-16")
    assert "<NAME>Beta Pro</NAME>" in xml and "<DESCRIPTION>lab build</DESCRIPTION>" in xml
    assert "<FLAGS>Pro</FLAGS>" in xml and "Boot Index:     2" in wiminfo(new.path)
    assert wims.two.read_bytes() != new.path.read_bytes()  # the source was not touched


def test_export_drops_the_space_of_deleted_images(
    wds: CliRun, wims: Wims, store: Path, tmp_path: Path
) -> None:
    # ImageX /delete leaves the deleted image's data in the file; wimlib's --soft does the same
    src = tmp_path / "deleted.wim"
    shutil.copyfile(wims.two, src)
    subprocess.run(
        ["wimlib-imagex", "delete", str(src), "2", "--soft"], check=True, capture_output=True
    )
    assert wds("add", src, "--group", "lab", "--name", "d")[0] == 0
    stored = ImageStore.open(store).get("lab", "d")
    assert stored.size == src.stat().st_size and len(stored.images) == 1

    dest = tmp_path / "compact.wim"
    code, _, err = wds("export", "lab/d", dest)
    assert code == 0, err
    assert dest.stat().st_size < stored.size * 0.75  # Beta's ~60 kB of data are gone
    info = wiminfo(dest)
    assert "Image Count:    1" in info and "Alpha" in info
    subprocess.run(["wimlib-imagex", "verify", str(dest)], check=True, capture_output=True)
