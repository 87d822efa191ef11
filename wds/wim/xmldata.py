"""The WIM XML data resource: UTF-16LE text (with a byte order mark) describing every image.

Element order inside ``<IMAGE>`` is not fixed (wimlib and DISM write them differently), so values
are looked up by name with :mod:`xml.etree.ElementTree`, never by position.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

from wds.errors import WimFormatError
from wds.wim.models import WimImageInfo

#: Windows PROCESSOR_ARCHITECTURE_* values, named as wiminfo prints them
ARCHITECTURES = {0: "x86", 5: "ARM", 6: "ia64", 9: "x86_64", 12: "ARM64"}

_FILETIME_EPOCH = datetime(1601, 1, 1, tzinfo=UTC)


def decode_xml_text(data: bytes) -> str:
    """UTF-16LE bytes (BOM optional) to text; a WimFormatError if they do not decode."""
    if data[:2] == b"\xff\xfe":
        data = data[2:]
    if len(data) % 2:
        data = data[:-1]  # an odd trailing byte cannot be UTF-16; wimlib ignores it too
    try:
        text = data.decode("utf-16-le")
    except UnicodeDecodeError as exc:
        raise WimFormatError(f"XML data is not valid UTF-16LE (at byte {exc.start})") from None
    return text.rstrip("\x00")


def _int_text(text: str | None, what: str) -> int | None:
    if text is None or not text.strip():
        return None
    s = text.strip()
    try:
        return int(s[2:], 16) if s.lower().startswith("0x") else int(s, 10)
    except ValueError:
        raise WimFormatError(f"XML data: {what} is {s[:40]!r}, not a number") from None


def _child_text(elem: ET.Element, path: str) -> str | None:
    child = elem.find(path)
    if child is None:
        return None
    return child.text or ""


def _child_int(elem: ET.Element, path: str, what: str) -> int | None:
    return _int_text(_child_text(elem, path), what)


def _filetime(elem: ET.Element, path: str, where: str) -> datetime | None:
    node = elem.find(path)
    if node is None:
        return None
    high = _child_int(node, "HIGHPART", f"{where} {path}/HIGHPART") or 0
    low = _child_int(node, "LOWPART", f"{where} {path}/LOWPART") or 0
    ticks = ((high & 0xFFFFFFFF) << 32) | (low & 0xFFFFFFFF)
    try:
        return _FILETIME_EPOCH + timedelta(microseconds=ticks // 10)
    except OverflowError:
        return None


def _image(elem: ET.Element, index: int, boot_index: int) -> WimImageInfo:
    where = f"image {index}"
    windows = elem.find("WINDOWS")
    arch: str | None = None
    version: ET.Element | None = None
    languages: tuple[str, ...] = ()
    w: dict[str, str | None] = {}
    if windows is not None:
        arch_num = _child_int(windows, "ARCH", f"{where} WINDOWS/ARCH")
        if arch_num is not None:
            arch = ARCHITECTURES.get(arch_num, "unknown")
        for key in ("PRODUCTNAME", "EDITIONID", "INSTALLATIONTYPE", "PRODUCTTYPE", "SYSTEMROOT"):
            w[key] = _child_text(windows, key)
        w["DEFAULT"] = _child_text(windows, "LANGUAGES/DEFAULT")
        languages = tuple((lang.text or "") for lang in windows.findall("LANGUAGES/LANGUAGE"))
        version = windows.find("VERSION")

    def ver(tag: str) -> int | None:
        if version is None:
            return None
        return _child_int(version, tag, f"{where} WINDOWS/VERSION/{tag}") or 0

    wimboot = _child_int(elem, "WIMBOOT", f"{where} WIMBOOT")
    return WimImageInfo(
        index=index,
        name=_child_text(elem, "NAME") or "",
        description=_child_text(elem, "DESCRIPTION") or "",
        display_name=_child_text(elem, "DISPLAYNAME"),
        display_description=_child_text(elem, "DISPLAYDESCRIPTION"),
        flags=_child_text(elem, "FLAGS"),
        dir_count=_child_int(elem, "DIRCOUNT", f"{where} DIRCOUNT") or 0,
        file_count=_child_int(elem, "FILECOUNT", f"{where} FILECOUNT") or 0,
        total_bytes=_child_int(elem, "TOTALBYTES", f"{where} TOTALBYTES") or 0,
        hard_link_bytes=_child_int(elem, "HARDLINKBYTES", f"{where} HARDLINKBYTES") or 0,
        creation_time=_filetime(elem, "CREATIONTIME", where),
        last_modification_time=_filetime(elem, "LASTMODIFICATIONTIME", where),
        architecture=arch,
        product_name=w.get("PRODUCTNAME"),
        edition_id=w.get("EDITIONID"),
        installation_type=w.get("INSTALLATIONTYPE"),
        product_type=w.get("PRODUCTTYPE"),
        languages=languages,
        default_language=w.get("DEFAULT"),
        system_root=w.get("SYSTEMROOT"),
        major_version=ver("MAJOR"),
        minor_version=ver("MINOR"),
        build=ver("BUILD"),
        sp_build=ver("SPBUILD"),
        sp_level=ver("SPLEVEL"),
        wimboot=bool(wimboot),
        boot=index == boot_index,
    )


def parse_xml_data(
    data: bytes, *, image_count: int, boot_index: int
) -> tuple[int | None, tuple[WimImageInfo, ...]]:
    """Parse the XML data resource; returns the root TOTALBYTES and the images in index order.

    The XML must list exactly ``image_count`` images with the indexes 1..N (as wimlib requires).
    """
    text = decode_xml_text(data)
    # no DTDs: an entity definition is the only way XML can make a small file expand hugely
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise WimFormatError("XML data contains a DTD or entity definition; a WIM's never does")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise WimFormatError(f"XML data does not parse: {exc}") from None
    if root.tag != "WIM":
        raise WimFormatError(f"XML data root element is <{root.tag[:40]}>, expected <WIM>")
    images: dict[int, WimImageInfo] = {}
    for n, elem in enumerate(root.findall("IMAGE"), start=1):
        index = _int_text(elem.get("INDEX"), "IMAGE INDEX attribute")
        if index is None:
            index = n
        if index in images or not 1 <= index <= image_count:
            raise WimFormatError(
                f"XML data has an image with INDEX={index}; the header says "
                f"{image_count} image(s), so indexes must be 1..{image_count}, each once"
            )
        images[index] = _image(elem, index, boot_index)
    if len(images) != image_count:
        raise WimFormatError(
            f"XML data describes {len(images)} image(s) but the header says {image_count}"
        )
    total = _child_int(root, "TOTALBYTES", "WIM TOTALBYTES")
    return total, tuple(images[i] for i in sorted(images))
