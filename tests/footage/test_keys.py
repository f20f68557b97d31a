"""The device signing key: made once, mode 0600, reused, and refused when others could read it."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.errors import StorageError
from edge.footage.keys import device_key, key_path, public_key_b64


def test_created_once_private_and_reused(tmp_path: Path) -> None:
    first = device_key(tmp_path)
    path = key_path(tmp_path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert public_key_b64(device_key(tmp_path)) == public_key_b64(first)


def test_readable_key_refused(tmp_path: Path) -> None:
    device_key(tmp_path)
    key_path(tmp_path).chmod(0o644)
    with pytest.raises(StorageError, match="chmod 600"):
        device_key(tmp_path)


def test_garbage_key_refused(tmp_path: Path) -> None:
    path = key_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a key")
    path.chmod(0o600)
    with pytest.raises(StorageError, match="not a usable Ed25519"):
        device_key(tmp_path)
