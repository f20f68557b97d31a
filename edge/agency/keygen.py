"""`doorbell-edge-agency keygen DIR`: the agency's signing key (minisign) and encryption key (age), written whole.

DIR gets four files: signing.key (minisign secret key, unencrypted, 0600: `minisign -S -s` reads it as it is),
signing.pub (minisign public key file), encryption.key (age identity file, 0600: `age -d -i` reads it) and
encryption.pub (the age1... recipient). They are written into a fresh sibling folder and renamed into place in
one step, so a kill or a full disk leaves either no DIR or a complete one, never half a key set."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import minisign
import pyrage

from edge.agency.encodings import encryption_key_raw, fingerprint, signing_key_raw
from edge.crashpoints import crash_point

SIGNING_KEY, SIGNING_PUB = "signing.key", "signing.pub"
ENCRYPTION_KEY, ENCRYPTION_PUB = "encryption.key", "encryption.pub"
FILES = (SIGNING_KEY, SIGNING_PUB, ENCRYPTION_KEY, ENCRYPTION_PUB)


class KeygenError(Exception):
    pass


@dataclass(frozen=True)
class KeySet:
    signing_public: str  # minisign public key, RW...
    signing_fingerprint: str
    encryption_public: str  # age recipient, age1...
    encryption_fingerprint: str


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def keygen(target: Path, now: datetime | None = None) -> KeySet:
    target = Path(target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise KeygenError(f"{target} exists and is not an empty folder; not overwriting keys (pick a new folder)")
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.keygen-", dir=target.parent))
    try:
        os.chmod(work, 0o700)
        pair = minisign.KeyPair.generate()
        pair.secret_key.untrusted_comment = "doorbell-edge-agency signing key (minisign, unencrypted)"
        _write(work / SIGNING_KEY, bytes(pair.secret_key) + b"\n", 0o600)
        _write(work / SIGNING_PUB, bytes(pair.public_key) + b"\n", 0o644)
        crash_point("keygen:after-signing")
        identity = pyrage.x25519.Identity.generate()
        recipient = str(identity.to_public())
        stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = f"# created: {stamp}\n# public key: {recipient}\n{identity}\n"
        _write(work / ENCRYPTION_KEY, body.encode(), 0o600)
        _write(work / ENCRYPTION_PUB, f"{recipient}\n".encode(), 0o644)
        crash_point("keygen:before-rename")
        os.rename(work, target)  # atomic; replaces an empty folder, refuses a non-empty one
        fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        shutil.rmtree(work, ignore_errors=True)
        raise KeygenError(f"cannot write the keys to {target}: {exc.strerror or exc}") from exc
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    public = pair.public_key.to_base64().decode()
    return KeySet(public, fingerprint(signing_key_raw(public)), recipient,
                  fingerprint(encryption_key_raw(recipient)))


def load_secret_key(path: Path) -> minisign.SecretKey:
    """A minisign secret key file; an encrypted one asks for its password on the terminal."""
    try:
        key = minisign.SecretKey.from_file(path)
    except OSError as exc:
        raise KeygenError(f"cannot read the signing key {path}: {exc.strerror or exc}") from exc
    except (minisign.Error, ValueError) as exc:
        raise KeygenError(f"{path} is not a minisign secret key ({exc}); make one with `doorbell-edge-agency "
                          "keygen DIR` or `minisign -G -W`") from exc
    if key.is_encrypted():
        import getpass
        import sys

        if not sys.stdin.isatty():
            raise KeygenError(f"{path} is password-protected and there is no terminal to ask for the password")
        try:
            key.decrypt(getpass.getpass(f"password for {path}: "))
        except minisign.Error as exc:
            raise KeygenError(f"{path}: {exc}") from exc
    return key
