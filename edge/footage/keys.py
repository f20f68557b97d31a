"""The device's Ed25519 signing key for export manifests: generated once under <state_dir>/keys/, mode 0600."""

from __future__ import annotations

import base64
import logging
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.errors import StorageError

log = logging.getLogger(__name__)

KEY_NAME = "device_ed25519.pem"


def key_path(state_dir: Path) -> Path:
    return Path(state_dir) / "keys" / KEY_NAME


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


def public_key_b64(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()
