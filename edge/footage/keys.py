"""The device's Ed25519 signing key for export manifests (generated once under <state_dir>/keys/, mode 0600), and
how others name and check it: the raw public key in base64 or PEM, and its fingerprint.

The fingerprint is the first 16 hex digits (64 bits) of the SHA-256 of the raw 32-byte public key, lower case,
e.g. `3f9a1c0d27b4e6a8`. It is short enough to read out over the phone and to put in a request; it names the
device, and `exports verify --device-fingerprint` accepts it, but the full public key (`--device-key`) is the
stronger check: matching 64 bits by brute force is expensive, not impossible."""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge import layout
from edge.errors import RequestError, StorageError
from edge.layout import StateLayout

log = logging.getLogger(__name__)

KEY_NAME = layout.DEVICE_KEY  # edge.layout's name, kept for the code that imports it here
FINGERPRINT_HEX = 16  # hex digits of SHA-256(raw public key) kept: 64 bits


def key_path(state_dir: Path) -> Path:
    return StateLayout.of(state_dir).device_key


def device_key(state_dir: Path) -> Ed25519PrivateKey:
    """Load the device key, creating it (O_EXCL, 0600) the first time; a key readable by others is refused."""
    path = key_path(state_dir)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not path.exists():
            key = Ed25519PrivateKey.generate()
            pem = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass  # another process made it first; read theirs
            else:
                try:
                    os.write(fd, pem)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                log.info("generated device signing key %s", path)
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise StorageError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise StorageError(f"cannot use the device key {path}: {exc}") from exc
    except ValueError as exc:
        raise StorageError(f"{path} is not a usable Ed25519 private key: {exc}") from exc
    if not isinstance(loaded, Ed25519PrivateKey):
        raise StorageError(f"{path} is not an Ed25519 private key")
    return loaded


def public_raw(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """The raw 32-byte public key."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_b64(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    return base64.b64encode(public_raw(key)).decode()


def public_key_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The public key as a PEM SubjectPublicKeyInfo block (what `openssl pkey -pubout` prints)."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def fingerprint(raw: bytes) -> str:
    """The fingerprint of a raw 32-byte Ed25519 public key (see the module docstring)."""
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key is 32 bytes, not {len(raw)}")
    return hashlib.sha256(raw).hexdigest()[:FINGERPRINT_HEX]


def key_fingerprint(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    return fingerprint(public_raw(key))


def parse_public_key(text: str) -> bytes:
    """A public key as an agency holds it: base64 of the raw 32 bytes, or a PEM public key block. Returns the raw
    bytes; anything else is a RequestError saying what was expected."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        try:
            loaded = serialization.load_pem_public_key(text.encode())
        except ValueError as exc:
            raise RequestError(f"not a readable PEM public key: {exc}") from exc
        if not isinstance(loaded, Ed25519PublicKey):
            raise RequestError("the PEM public key is not an Ed25519 key")
        return public_raw(loaded)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError("a device key is base64 of the raw 32-byte Ed25519 public key, or a PEM public key "
                           "block (as `doorbell-edge keys show` prints them)") from exc
    if len(raw) != 32:
        raise RequestError(f"a device key is 32 bytes (base64 of the raw Ed25519 public key), not {len(raw)}")
    return raw


def parse_fingerprint(text: str) -> str:
    """A fingerprint as typed: 16 hex digits, spaces, colons and case ignored."""
    cleaned = "".join(ch for ch in text.strip().lower() if ch not in " :-")
    if len(cleaned) != FINGERPRINT_HEX or any(ch not in "0123456789abcdef" for ch in cleaned):
        raise RequestError(f"a device fingerprint is {FINGERPRINT_HEX} hex digits (as `doorbell-edge keys show` "
                           f"prints it), not {text!r}")
    return cleaned
