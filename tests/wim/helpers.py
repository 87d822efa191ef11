"""Run the real ``wds`` console script and parse what wimlib's ``wiminfo`` prints."""

from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any


def wds(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run ``wds ARGS`` as a user would; never raises on a non-zero exit."""
    return subprocess.run(
        ["wds", *map(str, args)], capture_output=True, text=True, check=False, timeout=120
    )


def wds_json(path: Path) -> dict[str, Any]:
    proc = wds("image", "info", "--json", path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def _wiminfo(*args: str | Path) -> str:
    proc = subprocess.run(["wiminfo", *map(str, args)], capture_output=True, check=True, timeout=60)
    return proc.stdout.decode("utf-8")


def wiminfo_summary(path: Path) -> tuple[dict[str, str], list[dict[str, str]]]:
    """``wiminfo PATH``: the WIM Information block and one dict per image."""
    text = _wiminfo(path)
    head_text, _, images_text = text.partition("Available Images:")
    head = {}
    for line in head_text.splitlines():
        key, sep, value = line.partition(":")
        if sep and not key.startswith("-"):
            head[key.strip()] = value.strip()
    images: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in images_text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        if key.strip() == "Index":
            current = {}
            images.append(current)
        current[key.strip()] = value.strip()
    return head, images


def wiminfo_header(path: Path) -> dict[str, str]:
    """``wiminfo --header PATH`` as key = value pairs, plus the list of set flags."""
    out: dict[str, str] = {}
    flags = []
    for line in _wiminfo("--header", path).splitlines():
        if line.strip().endswith(" is set"):
            flags.append(line.strip().removesuffix(" is set"))
            continue
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    out["set flags"] = " ".join(flags)
    return out


def wiminfo_xml(path: Path) -> ET.Element:
    """``wiminfo --xml PATH``: the raw XML data (UTF-16LE), parsed."""
    raw = subprocess.run(
        ["wiminfo", "--xml", str(path)], capture_output=True, check=True, timeout=60
    ).stdout
    text = raw.decode("utf-16")
    return ET.fromstring(text)


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))
