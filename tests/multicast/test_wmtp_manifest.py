"""Manifest building (streaming SHA-256), Ed25519 signing and verification, key files."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from multicast import keys
from multicast.codec import ChunkManifest, build_manifest, parse_manifest
from multicast.manifest import (
    UntrustedManifest,
    build_manifest_from_file,
    manifest_digest,
    sign_manifest,
    verify_manifest,
)
from wds.errors import LocalProtocolError, RemoteProtocolError

CHUNK = 65536


@pytest.fixture
def image(tmp_path: Path) -> tuple[Path, bytes]:
    data = os.urandom(3 * CHUNK + 1234)
    path = tmp_path / "install.wim"
    path.write_bytes(data)
    return path, data


def _manifest_of(path: Path) -> ChunkManifest:
    """The manifest these tests build: session 7, chunks of CHUNK bytes, blocks for MTU 1500."""
    return build_manifest_from_file(
        path,
        session_id=7,
        name="win11",
        chunk_size=CHUNK,
        block_size=1444,
        group="239.255.42.1",
        port=9000,
        rate_kbps=100_000,
    )


def test_manifest_hashes_every_chunk_and_the_file(image: tuple[Path, bytes]) -> None:
    path, data = image
    key = keys.generate_key()
    m = _manifest_of(path)
    assert m.image_size == len(data) and m.chunk_count == 4
    assert m.image_sha256 == hashlib.sha256(data).digest()
    for i, h in enumerate(m.chunk_sha256):
        assert h == hashlib.sha256(data[i * CHUNK : (i + 1) * CHUNK]).digest()
    wire = build_manifest(sign_manifest(m, key))
    got = verify_manifest(wire, public_key=key.public_key())
    assert got.chunk_sha256 == m.chunk_sha256
    assert verify_manifest(wire, key_fingerprint=keys.fingerprint(key)) == got
    assert len(manifest_digest(wire)) == 16


def test_tampered_manifest_rejected(image: tuple[Path, bytes]) -> None:
    path, _ = image
    key = keys.generate_key()
    m = _manifest_of(path)
    wire = build_manifest(sign_manifest(m, key))
    # flip one bit in a chunk hash, in the size, in the signature: each must be refused
    for offset in (81 + 5 + 40, 27, len(wire) - 1):
        bad = bytearray(wire)
        bad[offset] ^= 0x01
        with pytest.raises(RemoteProtocolError):
            verify_manifest(bytes(bad), public_key=key.public_key())


def test_manifest_signed_by_another_key_rejected(image: tuple[Path, bytes]) -> None:
    path, _ = image
    m = _manifest_of(path)
    ours, forger = keys.generate_key(), keys.generate_key()
    forged = build_manifest(sign_manifest(m, forger))  # validly signed, by the wrong key
    with pytest.raises(UntrustedManifest, match="different key"):
        verify_manifest(forged, public_key=ours.public_key())
    with pytest.raises(UntrustedManifest, match="fingerprint"):
        verify_manifest(forged, key_fingerprint=keys.fingerprint(ours))
    # --insecure: the embedded key is used; integrity holds, origin is not proven
    assert verify_manifest(forged, insecure=True).image_size == m.image_size
    with pytest.raises(LocalProtocolError):
        verify_manifest(forged)
    # a forger who keeps the real key but changes content cannot produce a valid signature
    swapped = bytearray(forged)
    real = keys.raw_public_key(ours)
    swapped[-96:-64] = real
    with pytest.raises(UntrustedManifest, match="signature"):
        verify_manifest(bytes(swapped), public_key=ours.public_key())
    assert parse_manifest(bytes(swapped)).public_key == real


def test_key_files(tmp_path: Path) -> None:
    path = tmp_path / "manifest.key"
    key = keys.load_or_create_private_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = keys.load_or_create_private_key(path)
    assert keys.fingerprint(again) == keys.fingerprint(key)
    pub = keys.load_public_key(path.with_suffix(".pub"))
    assert keys.fingerprint(pub) == keys.fingerprint(key)
    assert keys.fingerprint(key).startswith("sha256:") and len(keys.fingerprint(key)) == 71
    (tmp_path / "junk.key").write_bytes(b"not a key")
    with pytest.raises(keys.KeyFileError):
        keys.load_private_key(tmp_path / "junk.key")
    with pytest.raises(keys.KeyFileError):
        keys.load_public_key(tmp_path / "missing.pub")
    (tmp_path / "big.key").write_bytes(b"x" * (keys.MAX_KEY_FILE + 1))
    with pytest.raises(keys.KeyFileError, match="larger"):
        keys.load_private_key(tmp_path / "big.key")


def test_empty_image_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(LocalProtocolError):
        build_manifest_from_file(
            tmp_path / "empty",
            session_id=1,
            name="x",
            chunk_size=CHUNK,
            block_size=1444,
            group="239.255.42.1",
            port=9000,
            rate_kbps=1,
        )
