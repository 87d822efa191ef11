"""XML data parsing (order-free, hex numbers, hostile input) and the documented JSON keys."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from wds.errors import WimFormatError
from wds.wim import info_to_json, read_wim_info
from wds.wim.xmldata import parse_xml_data
from wim.conftest import Fixtures

DOC = Path(__file__).resolve().parents[2] / "docs" / "WIM.md"


def _utf16(text: str) -> bytes:
    return b"\xff\xfe" + text.encode("utf-16-le")


def test_element_order_does_not_matter_and_hex_numbers_parse() -> None:
    xml = (
        "<WIM><TOTALBYTES>0x10</TOTALBYTES>"
        "<IMAGE INDEX='2'><FILECOUNT>5</FILECOUNT><NAME>two</NAME></IMAGE>"
        "<IMAGE INDEX='1'><WINDOWS><EDITIONID>Pro</EDITIONID><ARCH>12</ARCH>"
        "<VERSION><BUILD>1</BUILD><MAJOR>10</MAJOR></VERSION></WINDOWS>"
        "<LASTMODIFICATIONTIME><LOWPART>0x00000000</LOWPART><HIGHPART>0x01D00000</HIGHPART>"
        "</LASTMODIFICATIONTIME><DIRCOUNT>0x20</DIRCOUNT><NAME>one</NAME>"
        "<DESCRIPTION>d</DESCRIPTION></IMAGE></WIM>"
    )
    total, images = parse_xml_data(_utf16(xml), image_count=2, boot_index=2)
    assert total == 16
    one, two = images
    assert (one.index, one.name, one.description, one.dir_count) == (1, "one", "d", 32)
    assert (one.architecture, one.edition_id, one.major_version, one.minor_version) == (
        "ARM64",
        "Pro",
        10,
        0,
    )
    assert one.last_modification_time is not None
    assert one.last_modification_time.tzinfo is UTC
    assert (
        datetime(2014, 1, 1, tzinfo=UTC)
        < one.last_modification_time
        < datetime(2015, 1, 1, tzinfo=UTC)
    )
    assert (two.name, two.file_count, two.boot, one.boot) == ("two", 5, True, False)
    assert two.creation_time is None and two.architecture is None and two.major_version is None


@pytest.mark.parametrize(
    ("xml", "count", "reason"),
    [
        ("<WIM><IMAGE INDEX='1'/></WIM>", 2, "describes 1 image"),
        ("<WIM><IMAGE INDEX='1'/><IMAGE INDEX='1'/></WIM>", 2, "INDEX=1"),
        ("<WIM><IMAGE INDEX='3'/></WIM>", 1, "INDEX=3"),
        ("<NOTWIM/>", 0, "root element"),
        ("<WIM><IMAGE INDEX='1'><DIRCOUNT>many</DIRCOUNT></IMAGE></WIM>", 1, "not a number"),
        ("<WIM><IMAGE", 1, "does not parse"),
        (
            '<!DOCTYPE WIM [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;">]><WIM>&b;</WIM>',
            0,
            "DTD",
        ),
    ],
)
def test_bad_xml_is_a_clear_format_error(xml: str, count: int, reason: str) -> None:
    with pytest.raises(WimFormatError, match=re.escape(reason)):
        parse_xml_data(_utf16(xml), image_count=count, boot_index=0)


def test_invalid_utf16_is_a_format_error() -> None:
    with pytest.raises(WimFormatError, match="UTF-16"):
        parse_xml_data(b"\xff\xfe\x00\xd8\x41\x00", image_count=0, boot_index=0)


def _documented_keys() -> tuple[set[str], set[str]]:
    text = DOC.read_text()
    top_part, _, image_part = text.partition("Per image:")
    top_part = top_part.rpartition("## `wds image info --json`")[2]
    image_part = image_part.partition("Element order")[0]

    def keys(part: str) -> set[str]:
        found: set[str] = set()
        for line in part.splitlines():
            if line.startswith("| `"):
                found.update(re.findall(r"`([a-z_]+)`", line.split("|")[1]))
        return found

    return keys(top_part), keys(image_part)


def test_json_keys_are_exactly_the_documented_ones(fixtures: Fixtures) -> None:
    top, per_image = _documented_keys()
    j = info_to_json(read_wim_info(fixtures.wims["unicode"]))
    assert set(j) == top
    images = j["images"]
    assert isinstance(images, list)
    assert set(images[0]) == per_image
