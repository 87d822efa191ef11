"""Turning a ``[[session]]`` into what its sender streams: the image file and a signed manifest.

Everything here is blocking (store lookups, wimlib exports, hashing gigabytes) and runs in a
worker thread; the session manager awaits it with ``asyncio.to_thread``.

A restarted server must publish byte-identical manifests so receivers resume: the session id is
derived from the session name and the image's SHA-256, the key is the persistent
``STATE_DIR/manifest.key``, Ed25519 signatures are deterministic, and the group and port come
from a stable allocation (:mod:`wds.sessions.pool`). The chunk hashes of an image are cached under
``STATE_DIR/manifests`` keyed by the file's path, size and mtime, so a restart does not re-hash.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import logging
import os
import socket
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from multicast import keys
from multicast.codec import MAX_CHUNK_COUNT, ChunkManifest, block_size_for_mtu, build_manifest
from multicast.manifest import build_manifest_from_file, manifest_digest, sign_manifest
from wds.config import Config, SessionConfig
from wds.errors import ConfigError, RequestError, StoreError, WdsError
from wds.store import ImageRef, ImageStore, StoredImage

log = logging.getLogger(__name__)

KEY_FILE = "manifest.key"
EXPORTS_DIR = "exports"
HASHES_DIR = "manifests"
_HASH_MAGIC = b"WDSHASH1"
#: chunk-hash files kept in STATE_DIR/manifests (the least recently written go first)
MAX_CACHED_HASHES = 256
_EXPORTING = threading.Lock()
#: <linux/sockios.h>: the address of an interface
SIOCGIFADDR = 0x8915


@dataclass(frozen=True)
class Prepared:
    """A session ready to send: the file streamed and its signed manifest."""

    image: Path
    manifest: ChunkManifest
    wire: bytes  # the signed manifest bytes served at /sessions/NAME/manifest
    digest: bytes  # what ANNOUNCE carries


def load_key(state_dir: Path) -> Ed25519PrivateKey:
    """The server's manifest key, created with its ``.pub`` on first start."""
    Path(state_dir).mkdir(parents=True, exist_ok=True)
    return keys.load_or_create_private_key(Path(state_dir) / KEY_FILE)


def check_image_ref(text: str) -> ImageRef:
    """An install image reference, or a RequestError saying how to write one."""
    try:
        ref = ImageRef.parse(text)
    except StoreError as exc:
        raise RequestError(f"image {text!r}: {exc}") from None
    if ref.kind != "install":
        raise RequestError(f"image {text!r} is a boot image; a session sends an install image")
    return ref


def find_image(store_root: Path, text: str) -> tuple[ImageStore, ImageRef, StoredImage]:
    """The store entry of ``GROUP/NAME[:INDEX]``, or a RequestError saying what is missing."""
    ref = check_image_ref(text)
    try:
        store = ImageStore.open(store_root)
        return store, ref, store.find(ref)
    except StoreError as exc:
        raise RequestError(f"session image {text!r}: {exc}") from None


def resolve_image(store_root: Path, state_dir: Path, text: str) -> Path:
    """The file to stream for ``GROUP/NAME[:INDEX]``.

    With an index and a WIM of several images, that image is exported (wimlib) once to
    ``STATE_DIR/exports``; a single-image WIM, or no index, is streamed as stored.
    """
    store, ref, entry = find_image(store_root, text)
    if ref.index is None or len(entry.images) <= 1:
        return entry.path
    with _EXPORTING:  # two sessions of the same image: one export, the other reuses it
        return _export(store, ref, entry, Path(state_dir), text)


def _export(
    store: ImageStore, ref: ImageRef, entry: StoredImage, state_dir: Path, text: str
) -> Path:
    assert ref.index is not None
    exports = state_dir / EXPORTS_DIR
    exports.mkdir(parents=True, exist_ok=True)
    stem = f"{entry.guid}-{ref.index}-"
    cached = exports / f"{stem}r{entry.revision}.wim"
    if cached.is_file():
        return cached
    for old in exports.glob(f"{stem}r*.wim"):  # earlier revisions of the same image
        old.unlink(missing_ok=True)
    log.info("exporting %s to %s for its session", text, cached)
    try:
        return store.export(ref, cached)
    except StoreError as exc:
        raise WdsError(f"session image {text!r}: export failed: {exc}") from None


def derive_session_id(name: str, image_sha256: bytes) -> int:
    """64 bits from the session name and the image: stable across restarts, distinct per image."""
    h = hashlib.sha256(b"wds-session\x00" + name.encode() + b"\x00" + image_sha256).digest()
    return int.from_bytes(h[:8], "big")


def _hash_cache_path(state_dir: Path, image: Path, chunk_size: int) -> Path:
    st = image.stat()
    key = f"{image.resolve()}|{st.st_size}|{st.st_mtime_ns}|{chunk_size}"
    return Path(state_dir) / HASHES_DIR / (hashlib.sha256(key.encode()).hexdigest() + ".bin")


def _read_hashes(path: Path) -> tuple[int, bytes, tuple[bytes, ...]] | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    head = len(_HASH_MAGIC) + 8 + 32
    if len(data) < head or not data.startswith(_HASH_MAGIC) or (len(data) - head) % 32:
        return None
    count = (len(data) - head) // 32
    if not 0 < count <= MAX_CHUNK_COUNT:
        return None
    (size,) = struct.unpack_from(">Q", data, len(_HASH_MAGIC))
    whole = data[len(_HASH_MAGIC) + 8 : head]
    chunks = tuple(data[head + 32 * i : head + 32 * (i + 1)] for i in range(count))
    return size, whole, chunks


def _write_hashes(path: Path, m: ChunkManifest) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    blob = _HASH_MAGIC + struct.pack(">Q", m.image_size) + m.image_sha256 + b"".join(m.chunk_sha256)
    tmp.write_bytes(blob)
    os.replace(tmp, path)
    cached = sorted(path.parent.glob("*.bin"), key=lambda p: p.stat().st_mtime_ns)
    for old in cached[:-MAX_CACHED_HASHES]:
        old.unlink(missing_ok=True)


def build_signed(
    image: Path,
    spec: SessionConfig,
    config: Config,
    key: Ed25519PrivateKey,
    *,
    group: str,
    port: int,
) -> Prepared:
    """Hash (or reuse the cached hashes of) ``image`` and sign the session's manifest."""
    mc = config.multicast
    rate_kbps = int((spec.rate_mbps or mc.max_rate_mbps) * 1000)
    cache = _hash_cache_path(config.server.state_dir, image, mc.chunk_size)
    cached = _read_hashes(cache)
    if cached is not None and cached[0] == image.stat().st_size:
        size, whole, chunks = cached
        manifest = ChunkManifest(
            session_id=0,
            name=spec.name,
            image_size=size,
            chunk_size=mc.chunk_size,
            block_size=block_size_for_mtu(mc.mtu),
            group=group,
            port=port,
            rate_kbps=rate_kbps,
            image_sha256=whole,
            chunk_sha256=chunks,
        )
    else:
        log.info("session %s: hashing %s", spec.name, image)
        try:
            manifest = build_manifest_from_file(
                image,
                session_id=0,
                name=spec.name,
                chunk_size=mc.chunk_size,
                block_size=block_size_for_mtu(mc.mtu),
                group=group,
                port=port,
                rate_kbps=rate_kbps,
            )
        except OSError as exc:
            raise WdsError(f"session {spec.name}: cannot read {image}: {exc.strerror}") from None
        try:
            _write_hashes(cache, manifest)
        except OSError as exc:  # only a cache: the next start hashes again
            log.warning(
                "session %s: cannot cache the chunk hashes in %s: %s", spec.name, cache, exc
            )
    manifest = dataclasses.replace(
        manifest, session_id=derive_session_id(spec.name, manifest.image_sha256)
    )
    signed = sign_manifest(manifest, key)
    wire = build_manifest(signed)
    return Prepared(image=image, manifest=signed, wire=wire, digest=manifest_digest(wire))


def sending_address(config: Config) -> str:
    """The IPv4 address sessions multicast from: [server] address, else that of [server]
    interface, else the source of the route to the first group of the pool."""
    server = config.server
    if server.address != "0.0.0.0":
        return server.address
    if server.interface:
        return interface_address(server.interface)
    group = config.multicast.group_pool.split("/")[0]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((group, 9))
        except OSError as exc:
            raise ConfigError(
                f"no route for multicast ({exc.strerror}); set [server] address or interface",
                file=str(config.source),
                key="server.interface",
            ) from None
        return str(s.getsockname()[0])


def interface_address(name: str) -> str:
    """The IPv4 address of a network interface (SIOCGIFADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            packed = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
        except OSError as exc:
            raise ConfigError(
                f"interface {name!r} has no IPv4 address ({exc.strerror})",
                key="server.interface",
            ) from None
    return socket.inet_ntoa(packed[20:24])
