"""Codec tier: parse(build(x)) == x, golden bytes from real WIMs, and fuzzing.

Fuzz invariant (STYLE.md): every parser either succeeds or raises WimFormatError; so do
read_wim_info and verify_wim on a real WIM with bytes mutated anywhere in its structures.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wds.errors import WimFormatError
from wds.wim import codec, read_wim_info, verify_wim
from wds.wim.metadata import parse_metadata
from wds.wim.xmldata import parse_xml_data
from wim.conftest import Fixtures

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, (1 << 64) - 1)
sha1 = st.binary(min_size=20, max_size=20)

reshdrs = st.builds(
    codec.ResourceHeader,
    size_in_wim=st.integers(0, (1 << 56) - 1),
    flags=u8,
    offset=u64,
    original_size=u64,
)
headers = st.builds(
    codec.WimHeader,
    magic=st.sampled_from([codec.WIM_MAGIC, codec.PWM_MAGIC]),
    header_size=u32,
    version=u32,
    flags=u32,
    chunk_size=u32,
    guid=st.binary(min_size=16, max_size=16),
    part_number=u16,
    total_parts=u16,
    image_count=u32,
    blob_table=reshdrs,
    xml_data=reshdrs,
    boot_metadata=reshdrs,
    boot_index=u32,
    integrity_table=reshdrs,
    unused=st.binary(min_size=60, max_size=60),
)
blob_entries = st.builds(
    codec.BlobEntry, resource=reshdrs, part_number=u16, refcount=u32, sha1=sha1
)


@given(reshdrs)
def test_reshdr_round_trip(r: codec.ResourceHeader) -> None:
    raw = codec.build_reshdr(r)
    assert len(raw) == codec.RESHDR_SIZE
    assert codec.parse_reshdr(raw) == r


@given(headers)
def test_header_round_trip(h: codec.WimHeader) -> None:
    raw = codec.build_header(h)
    assert len(raw) == codec.HEADER_SIZE
    assert codec.parse_header(raw) == h


@given(st.lists(blob_entries, max_size=20))
def test_blob_table_round_trip(entries: list[codec.BlobEntry]) -> None:
    raw = codec.build_blob_table(tuple(entries))
    assert len(raw) == codec.BLOB_ENTRY_SIZE * len(entries)
    assert codec.parse_blob_table(raw, max_entries=len(entries)) == tuple(entries)


@given(st.lists(sha1, max_size=30), st.integers(1, 0xFFFFFFFF))
def test_integrity_table_round_trip(hashes: list[bytes], chunk_size: int) -> None:
    t = codec.IntegrityTable(
        size=12 + 20 * len(hashes), chunk_size=chunk_size, hashes=tuple(hashes)
    )
    raw = codec.build_integrity_table(t)
    assert codec.parse_integrity_table(raw, max_entries=len(hashes)) == t


@given(u64, sha1, u32)
def test_pipable_blob_header_round_trip(size: int, digest: bytes, flags: int) -> None:
    h = codec.PipableBlobHeader(codec.PWM_BLOB_MAGIC, size, digest, flags)
    assert codec.parse_pipable_blob_header(codec.build_pipable_blob_header(h)) == h


def test_golden_headers_from_real_wims(fixtures: Fixtures) -> None:
    """Real wimlib headers parse and rebuild byte for byte, pipable end header included."""
    for name in ("lzx-check", "multi", "solid", "pipable", "split-part2"):
        data = fixtures.wims[name].read_bytes()
        for raw in (data[: codec.HEADER_SIZE], data[-codec.HEADER_SIZE :]):
            if raw[:8] not in (codec.WIM_MAGIC, codec.PWM_MAGIC):
                continue
            assert codec.build_header(codec.parse_header(raw)) == raw
        h = codec.parse_header(data[-codec.HEADER_SIZE :] if name == "pipable" else data[:208])
        blob = data[h.blob_table.offset : h.blob_table.end]
        entries = codec.parse_blob_table(blob, max_entries=len(blob) // 50)
        assert codec.build_blob_table(entries) == blob
        integ = data[h.integrity_table.offset : h.integrity_table.end]
        table = codec.parse_integrity_table(integ, max_entries=len(integ) // 20)
        assert codec.build_integrity_table(table) == integ


def _only_format_errors(fn: object, *args: object, **kwargs: object) -> None:
    with contextlib.suppress(WimFormatError):
        fn(*args, **kwargs)  # type: ignore[operator]


@given(st.binary(max_size=400))
def test_fuzz_parsers_raise_only_wim_format_error(blob: bytes) -> None:
    _only_format_errors(codec.parse_header, blob)
    _only_format_errors(codec.parse_reshdr, blob)
    _only_format_errors(codec.parse_blob_table, blob, max_entries=4)
    _only_format_errors(codec.parse_integrity_table, blob, max_entries=10)
    _only_format_errors(codec.parse_pipable_blob_header, blob)
    _only_format_errors(codec.parse_security_header, blob, resource_size=len(blob))
    _only_format_errors(parse_metadata, blob)
    _only_format_errors(parse_xml_data, blob, image_count=1, boot_index=0)


@given(st.text(max_size=300), st.integers(0, 3))
def test_fuzz_xml_text_raises_only_wim_format_error(text: str, count: int) -> None:
    for doc in (text, f"<WIM><IMAGE INDEX='1'>{text}</IMAGE></WIM>"):
        data = b"\xff\xfe" + doc.encode("utf-16-le", errors="surrogatepass")
        _only_format_errors(parse_xml_data, data, image_count=count, boot_index=0)


@given(st.data())
def test_fuzz_real_header_mutations(data: st.DataObject) -> None:
    good = codec.build_header(
        codec.WimHeader(
            magic=codec.WIM_MAGIC,
            header_size=208,
            version=0x10D00,
            flags=0,
            chunk_size=0,
            guid=bytes(16),
            part_number=1,
            total_parts=1,
            image_count=1,
            blob_table=codec.ResourceHeader(50, 2, 300, 50),
            xml_data=codec.ResourceHeader(100, 2, 350, 100),
            boot_metadata=codec.EMPTY_RESHDR,
            boot_index=0,
            integrity_table=codec.EMPTY_RESHDR,
        )
    )
    raw = bytearray(good)
    for _ in range(data.draw(st.integers(1, 8))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(u8)
    _only_format_errors(codec.parse_header, bytes(raw))


def _mutate(src: bytes, data: st.DataObject, lo: int, hi: int) -> bytes:
    raw = bytearray(src)
    for _ in range(data.draw(st.integers(1, 6))):
        raw[data.draw(st.integers(lo, hi - 1))] = data.draw(u8)
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    return bytes(raw)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_mutated_wim_files_give_only_wim_format_error(
    fixtures: Fixtures, data: st.DataObject
) -> None:
    """Bytes flipped in the header, blob table, XML or integrity table of real (uncompressed)
    WIMs: read_wim_info and verify_wim return or raise WimFormatError, never anything else."""
    name = data.draw(st.sampled_from(["none-check", "none", "pipable"]))
    src = fixtures.wims[name].read_bytes()
    region = data.draw(st.sampled_from(["header", "tail"]))
    if region == "header":
        lo, hi = (len(src) - 208, len(src)) if name == "pipable" else (0, 208)
    else:
        h = codec.parse_header(src[-208:] if name == "pipable" else src[:208])
        lo, hi = h.blob_table.offset, len(src)
    mutated = _mutate(src, data, lo, hi)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.wim"
        path.write_bytes(mutated)
        _only_format_errors(read_wim_info, path)
        _only_format_errors(verify_wim, path)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_fuzz_mutated_real_metadata_gives_only_wim_format_error(
    fixtures: Fixtures, data: st.DataObject
) -> None:
    """A real (uncompressed) metadata resource with bytes changed or cut: parse_metadata returns
    entries or raises WimFormatError."""
    raw = fixtures.wims["none"].read_bytes()
    h = codec.parse_header(raw[: codec.HEADER_SIZE])
    table = raw[h.blob_table.offset : h.blob_table.end]
    entry = next(
        e for e in codec.parse_blob_table(table, max_entries=100) if e.resource.is_metadata
    )
    meta = raw[entry.resource.offset : entry.resource.end]
    assert parse_metadata(meta)[0].path == "/"
    _only_format_errors(parse_metadata, _mutate(meta, data, 0, len(meta)))
