"""``wds image info --json`` agrees with wimlib's wiminfo, wiminfo --header and wiminfo --xml."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from wim.conftest import Fixtures
from wim.helpers import wds, wds_json, wiminfo_header, wiminfo_summary, wiminfo_xml

FIXTURE_NAMES = [
    "none-check",
    "none",
    "xpress-check",
    "xpress",
    "lzx-check",
    "lzx",
    "lzms-check",
    "lzms",
    "solid",
    "pipable",
    "pipable-lzx",
    "unicode",
    "multi",
    "exported",
    "optimized",
    "split-part1",
    "split-part2",
]


def _wiminfo_time(t: str | None) -> str | None:
    if t is None:
        return None
    parsed = datetime.fromisoformat(t.replace("Z", "+00:00"))
    return parsed.strftime("%a %b %d %H:%M:%S %Y UTC")


def _filetime(elem: Any) -> str:
    ticks = (int(elem.findtext("HIGHPART"), 16) << 32) | int(elem.findtext("LOWPART"), 16)
    t = datetime(1601, 1, 1, tzinfo=UTC) + timedelta(microseconds=ticks // 10)
    return t.isoformat(timespec="microseconds").replace("+00:00", "Z")


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_header_facts_match_wiminfo(fixtures: Fixtures, name: str) -> None:
    path = fixtures.wims[name]
    j = wds_json(path)
    head, _ = wiminfo_summary(path)
    assert j["guid"] == head["GUID"]
    assert str(j["version"]) == head["Version"]
    assert str(j["image_count"]) == head["Image Count"]
    assert j["compression"] == head["Compression"]
    assert f"{j['chunk_size']} bytes" == head["Chunk Size"]
    assert f"{j['part_number']}/{j['total_parts']}" == head["Part Number"]
    assert str(j["boot_index"]) == head["Boot Index"]
    assert f"{j['total_bytes']} bytes" == head["Size"]
    attributes = head["Attributes"].split(", ")
    assert j["has_integrity_table"] == ("Integrity info" in attributes)
    assert j["is_pipable"] == ("Pipable" in attributes)
    assert j["file_size"] == path.stat().st_size


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_raw_header_matches_wiminfo_header(fixtures: Fixtures, name: str) -> None:
    path = fixtures.wims[name]
    j = wds_json(path)
    h = wiminfo_header(path)
    magic = "WLPWM\\0\\0\\0" if j["is_pipable"] else "MSWIM\\0\\0\\0"
    assert h["Magic Characters"] == magic
    assert int(h["Version"], 16) == j["version"]
    assert int(h["Flags"], 16) == j["flags"]
    assert h["set flags"].split() == j["flag_names"]
    assert int(h["Chunk Size"]) == j["chunk_size"]
    assert "0x" + h["GUID"] == j["guid"]
    assert int(h["Part Number"]) == j["part_number"]
    assert int(h["Total Parts"]) == j["total_parts"]
    assert int(h["Image Count"]) == j["image_count"]
    assert int(h["Boot Index"]) == j["boot_index"]
    assert (int(h["Integrity Size"]) != 0) == j["has_integrity_table"]


_TEXT_FIELDS = {
    "Name": "name",
    "Description": "description",
    "Display Name": "display_name",
    "Display Description": "display_description",
    "Flags": "flags",
    "Architecture": "architecture",
    "Product Name": "product_name",
    "Edition ID": "edition_id",
    "Installation Type": "installation_type",
    "Product Type": "product_type",
    "Default Language": "default_language",
    "System Root": "system_root",
}
_INT_FIELDS = {
    "Index": "index",
    "Directory Count": "dir_count",
    "File Count": "file_count",
    "Total Bytes": "total_bytes",
    "Hard Link Bytes": "hard_link_bytes",
    "Major Version": "major_version",
    "Minor Version": "minor_version",
    "Build": "build",
    "Service Pack Build": "sp_build",
    "Service Pack Level": "sp_level",
}


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_images_match_wiminfo(fixtures: Fixtures, name: str) -> None:
    path = fixtures.wims[name]
    j = wds_json(path)
    _, images = wiminfo_summary(path)
    assert len(images) == len(j["images"]) == j["image_count"]
    for theirs, ours in zip(images, j["images"], strict=True):
        for label, key in _TEXT_FIELDS.items():
            assert theirs.get(label) == ours[key], (label, theirs, ours)
        for label, key in _INT_FIELDS.items():
            expected = int(theirs[label]) if label in theirs else None
            assert expected == ours[key], (label, theirs, ours)
        assert theirs["Creation Time"] == _wiminfo_time(ours["creation_time"])
        assert theirs["Last Modification Time"] == _wiminfo_time(ours["last_modification_time"])
        assert theirs.get("Languages", "").split() == ours["languages"]
        assert (theirs["WIMBoot compatible"] == "yes") == ours["wimboot"]
        assert ours["boot"] == (ours["index"] == j["boot_index"])


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_images_match_wiminfo_xml(fixtures: Fixtures, name: str) -> None:
    path = fixtures.wims[name]
    j = wds_json(path)
    root = wiminfo_xml(path)
    assert int(root.findtext("TOTALBYTES") or -1) == j["total_bytes"]
    by_index = {int(e.get("INDEX") or 0): e for e in root.findall("IMAGE")}
    assert sorted(by_index) == [image["index"] for image in j["images"]]
    for image in j["images"]:
        e = by_index[image["index"]]
        assert (e.findtext("NAME") or "") == image["name"]
        assert (e.findtext("DESCRIPTION") or "") == image["description"]
        assert e.findtext("DISPLAYNAME") == image["display_name"]
        assert e.findtext("DISPLAYDESCRIPTION") == image["display_description"]
        assert e.findtext("FLAGS") == image["flags"]
        assert int(e.findtext("DIRCOUNT") or 0) == image["dir_count"]
        assert int(e.findtext("FILECOUNT") or 0) == image["file_count"]
        assert int(e.findtext("TOTALBYTES") or 0) == image["total_bytes"]
        assert int(e.findtext("HARDLINKBYTES") or 0) == image["hard_link_bytes"]
        assert _filetime(e.find("CREATIONTIME")) == image["creation_time"]
        assert _filetime(e.find("LASTMODIFICATIONTIME")) == image["last_modification_time"]
        assert e.findtext("WINDOWS/EDITIONID") == image["edition_id"]
        langs = [x.text for x in e.findall("WINDOWS/LANGUAGES/LANGUAGE")]
        assert langs == image["languages"]


def test_fixtures_cover_what_the_issue_asks(fixtures: Fixtures) -> None:
    """Each kind of WIM the issue lists is really among the fixtures, as wiminfo sees it."""
    seen = {name: wds_json(fixtures.wims[name]) for name in FIXTURE_NAMES}
    assert {j["compression"] for j in seen.values()} >= {"None", "XPRESS", "LZX", "LZMS"}
    assert any(j["has_integrity_table"] for j in seen.values())
    assert any(not j["has_integrity_table"] for j in seen.values())
    multi = seen["multi"]
    assert multi["image_count"] == 3 and multi["boot_index"] == 3
    assert multi["images"][1]["flags"] == "Professional"
    assert seen["split-part1"]["total_parts"] >= 3 and seen["split-part2"]["part_number"] == 2
    assert seen["pipable"]["is_pipable"] and seen["pipable-lzx"]["is_pipable"]
    uni = seen["unicode"]["images"][0]
    assert uni["name"] == "Windows 11 Pro ñ ☃ 日本語"
    assert uni["description"] == "Déscription ü €"
    assert uni["architecture"] == "x86_64" and uni["edition_id"] == "Professional"
    assert seen["solid"]["version"] == 0xE00


def test_human_info_shows_header_and_every_image(fixtures: Fixtures) -> None:
    proc = wds("image", "info", fixtures.wims["multi"])
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for text in ("LZX", "32,768", "1 of 1", "first", "second", "third description", "Professional"):
        assert text in out
    assert "Boot image" in out
    proc = wds("image", "info", fixtures.wims["unicode"])
    assert "日本語" in proc.stdout and "x86_64" in proc.stdout and "Professional" in proc.stdout


def test_api_read_wim_info_types(fixtures: Fixtures) -> None:
    from wds.wim import WimInfo, read_wim_info

    info = read_wim_info(Path(fixtures.wims["multi"]))
    assert isinstance(info, WimInfo)
    assert info.images[2].boot and not info.images[0].boot
    assert info.images[0].creation_time is not None
    assert info.images[0].creation_time.tzinfo is UTC
    with pytest.raises(AttributeError):
        info.guid = "x"  # type: ignore[misc]
