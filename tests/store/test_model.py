"""Codec-style properties of references and the catalog JSON (hypothesis)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from wds.store import BOOT_ARCHES, ImageRef, StoredImage, StoreInputError, WimImage
from wds.store.model import catalog_from_json, catalog_to_json

ROOT = Path("/srv/store")

groups = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True).filter(
    lambda g: g.lower() != "boot"
)
names = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="/\\:"),
    min_size=1,
    max_size=64,
).filter(lambda n: n == n.strip() and n not in (".", "..") and n.isprintable())
indexes = st.none() | st.integers(1, 256)


@st.composite
def refs(draw: st.DrawFn) -> ImageRef:
    if draw(st.booleans()):
        return ImageRef("boot", draw(st.sampled_from(BOOT_ARCHES)), draw(names), draw(indexes))
    return ImageRef("install", draw(groups), draw(names), draw(indexes))


@given(refs())
def test_ref_round_trip(ref: ImageRef) -> None:
    assert ImageRef.parse(str(ref)) == ref


@given(st.text(max_size=200))
def test_ref_parse_never_crashes(text: str) -> None:
    with contextlib.suppress(StoreInputError):
        ImageRef.parse(text)


@st.composite
def entries(draw: st.DrawFn) -> StoredImage:
    ref = draw(refs())
    count = draw(st.integers(1, 4))
    return StoredImage(
        kind=ref.kind,
        group=ref.group,
        name=ref.name,
        path=ROOT
        / "images"
        / ref.group
        / (draw(st.from_regex(r"[0-9a-f]{32}", fullmatch=True)) + ".wim"),
        guid=draw(st.text(max_size=40)),
        size=draw(st.integers(0, 2**40)),
        compression=draw(st.sampled_from(["LZX", "XPRESS", "LZMS", "None"])),
        boot_index=draw(st.integers(0, count)),
        images=tuple(
            WimImage(
                i, draw(st.text(max_size=20)), draw(st.text(max_size=20)), draw(st.text(max_size=8))
            )
            for i in range(1, count + 1)
        ),
        integrity_checked=draw(st.booleans()),
        added="2026-11-24T04:00:00+00:00",
        source=draw(st.text(max_size=40)),
        revision=draw(st.integers(1, 1000)),
        default=draw(st.booleans()),
    )


@given(
    st.lists(entries(), max_size=5, unique_by=lambda e: (e.kind, e.group.lower(), e.name.lower()))
)
def test_catalog_round_trip(items: list[StoredImage]) -> None:
    doc = json.loads(json.dumps(catalog_to_json(tuple(items), ROOT)))
    assert catalog_from_json(doc, ROOT) == tuple(items)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values, st.lists(json_values, max_size=3))
def test_damaged_catalog_is_a_value_error(junk: Any, items: list[Any]) -> None:
    for doc in (junk, {"format": "wds-image-store", "version": 1, "images": items}):
        with contextlib.suppress(ValueError):
            catalog_from_json(doc, ROOT)
