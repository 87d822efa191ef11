"""Build a manifest from an image (streaming SHA-256 per chunk), sign and verify it (Ed25519).

PROTOCOL.md section 5. ``build_manifest_from_file`` reads the image once, ``chunk_size`` bytes
at a time; ``sign_manifest`` fills ``public_key`` and ``signature``; ``verify_manifest`` is the
only way a receiver should turn manifest bytes into a :class:`ChunkManifest` it acts on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from multicast.codec import (
    MAX_CHUNK_COUNT,
    SIGNATURE_SIZE,
    ChunkManifest,
    build_manifest_body,
    parse_manifest,
)
from multicast.keys import fingerprint, raw_public_key
from wds.errors import LocalProtocolError, RemoteProtocolError

#: domain separation: a manifest signature is valid as nothing else (PROTOCOL.md section 5)
SIGNATURE_CONTEXT = b"wds-manifest-v1\x00"


class UntrustedManifest(RemoteProtocolError):
    """The manifest is well-formed but not signed by the key the receiver was told to trust."""

    exit_code = 3


def build_manifest_from_file(
    path: Path,
    *,
    session_id: int,
    name: str,
    chunk_size: int,
    block_size: int,
    group: str,
    port: int,
    rate_kbps: int,
) -> ChunkManifest:
    """Hash ``path`` chunk by chunk (two chunks in memory at a time). Unsigned result.

    The whole-file hash runs on a second thread, one chunk behind the chunk hashes (hashlib
    releases the GIL on large buffers): the two passes over the image overlap on two cores, and
    a sender's start-up is about one hash of the file instead of two."""
    whole = hashlib.sha256()
    hashes: list[bytes] = []
    size = 0
    with path.open("rb") as f, ThreadPoolExecutor(1, thread_name_prefix="wds-hash") as pool:
        behind: Future[None] | None = None
        while chunk := f.read(chunk_size):
            if behind is not None:
                behind.result()
            behind = pool.submit(whole.update, chunk)
            hashes.append(hashlib.sha256(chunk).digest())
            size += len(chunk)
            if len(hashes) > MAX_CHUNK_COUNT:
                raise LocalProtocolError(f"{path}: more than {MAX_CHUNK_COUNT} chunks")
        if behind is not None:
            behind.result()
    if size == 0:
        raise LocalProtocolError(f"{path}: empty file, nothing to send")
    return ChunkManifest(
        session_id=session_id,
        name=name,
        image_size=size,
        chunk_size=chunk_size,
        block_size=block_size,
        group=group,
        port=port,
        rate_kbps=rate_kbps,
        image_sha256=whole.digest(),
        chunk_sha256=tuple(hashes),
    )


def sign_manifest(manifest: ChunkManifest, key: Ed25519PrivateKey) -> ChunkManifest:
    signed = dataclasses.replace(manifest, public_key=raw_public_key(key))
    signature = key.sign(SIGNATURE_CONTEXT + build_manifest_body(signed))
    return dataclasses.replace(signed, signature=signature)


def manifest_digest(data: bytes) -> bytes:
    """What ANNOUNCE carries: the first 16 bytes of SHA-256 of the signed manifest bytes."""
    return hashlib.sha256(data).digest()[:16]


def verify_manifest(
    data: bytes,
    *,
    public_key: Ed25519PublicKey | None = None,
    key_fingerprint: str | None = None,
    insecure: bool = False,
) -> ChunkManifest:
    """Parse and verify manifest bytes against a pinned key or fingerprint.

    Exactly one of ``public_key`` / ``key_fingerprint`` is required unless ``insecure``; with
    ``insecure`` and neither, the signature is still checked against the embedded key (which
    proves only integrity, not origin).
    """
    if public_key is None and key_fingerprint is None and not insecure:
        raise LocalProtocolError("verify_manifest needs a public key or fingerprint, or insecure")
    manifest = parse_manifest(data)
    embedded = manifest.public_key
    if public_key is not None and not hmac.compare_digest(raw_public_key(public_key), embedded):
        raise UntrustedManifest("manifest is signed by a different key than the one pinned")
    if key_fingerprint is not None and fingerprint(embedded) != key_fingerprint.strip().lower():
        raise UntrustedManifest(
            f"manifest key {fingerprint(embedded)} does not match the pinned fingerprint"
        )
    try:
        key = Ed25519PublicKey.from_public_bytes(embedded)
        # parse_manifest checked the exact length: everything before the signature is signed
        key.verify(manifest.signature, SIGNATURE_CONTEXT + data[:-SIGNATURE_SIZE])
    except (InvalidSignature, ValueError):
        raise UntrustedManifest("manifest signature is not valid") from None
    return manifest
