"""The server's Ed25519 manifest key: generate, save (0600), load, fingerprint (PROTOCOL.md 5).

Files: the private key as unencrypted PKCS#8 PEM (mode 0600, written atomically), the public key
as SubjectPublicKeyInfo PEM. A fingerprint is ``sha256:`` + hex(SHA-256(raw 32-byte public key)).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from wds.errors import WdsError

#: PEM key files are a few hundred bytes; refuse to read anything bigger
MAX_KEY_FILE = 16 * 1024


class KeyFileError(WdsError):
    """A key file is missing, unreadable, too large, or not an Ed25519 key."""

    exit_code = 3


def generate_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def raw_public_key(key: Ed25519PublicKey | Ed25519PrivateKey) -> bytes:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(key: Ed25519PublicKey | Ed25519PrivateKey | bytes) -> str:
    """``sha256:<64 hex digits>`` of the raw public key."""
    raw = key if isinstance(key, bytes) else raw_public_key(key)
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def save_private_key(key: Ed25519PrivateKey, path: Path) -> None:
    """Write the key with mode 0600 from the start (never readable by others, not even briefly)."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def save_public_key(key: Ed25519PublicKey | Ed25519PrivateKey, path: Path) -> None:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    pem = pub.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    path.write_bytes(pem)


def _read(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_KEY_FILE + 1)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read the key file: {exc}") from None
    if len(data) > MAX_KEY_FILE:
        raise KeyFileError(f"{path}: larger than {MAX_KEY_FILE} bytes, not a key file")
    return data


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(_read(path), password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: not an Ed25519 key; generate one with wds")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(_read(path))
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path}: not an Ed25519 public key")
    return key


def load_or_create_private_key(path: Path) -> Ed25519PrivateKey:
    """The server's key: loaded if present, else generated and saved (0600) with its .pub."""
    if path.exists():
        return load_private_key(path)
    key = generate_key()
    save_private_key(key, path)
    save_public_key(key, path.with_suffix(".pub"))
    return key
