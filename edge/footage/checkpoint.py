"""Signed checkpoints of the audit log's head, in the C2SP signed-note / tlog-checkpoint format.

A checkpoint is a note (https://c2sp.org/signed-note, https://c2sp.org/tlog-checkpoint):

    doorbell-edge/<device.id>/footage-audit      origin: which log
    42                                           the number of records (the head's seq)
    <base64 of the head record's 32-byte hash>   the head's hash (a hash-chain head, not an RFC 6962 Merkle root)
    time 2026-03-10T12:00:00Z                    extension line: when the checkpoint was made (its signer's clock)

    — <key name> <base64(4-byte key id || 64-byte Ed25519 signature over the lines above)>

The key is made by `doorbell-edge audit checkpoint-key` and kept where the daemon cannot read it (root, mode
0600, outside the state dir); the verifier key (`<name>+<key id hex>+<base64(0x01 || public key)>`, the format Go's
golang.org/x/mod/sumdb/note uses) is public. The hash chain itself is unchanged (edge.footage.audit).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge.clock import rfc3339
from edge.errors import RequestError, StorageError
from edge.footage.audit import normalise_hash

ALG_ED25519 = 0x01
DASH = "\u2014"  # the em dash that starts a signature line
DEFAULT_KEY = Path("/etc/doorbell-edge/audit-checkpoint.key")  # root only: the daemon's user cannot read it
DEFAULT_VKEY = DEFAULT_KEY.with_suffix(".pub")


class CheckpointError(RequestError):
    """A checkpoint or key that cannot be read, or does not verify: the message names what is wrong."""


def origin_for(device_id: str) -> str:
    return f"doorbell-edge/{device_id}/footage-audit"


def _key_id(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public).digest()[:4]


def _check_name(name: str) -> None:
    if not name or any(c.isspace() or c == "+" for c in name):
        raise CheckpointError(f"key name {name!r}: must be non-empty, without spaces or '+'")


@dataclass(frozen=True)
class Signer:
    name: str
    key: Ed25519PrivateKey

    @property
    def public(self) -> bytes:
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        return self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @property
    def verifier(self) -> str:
        return vkey(self.name, self.public)

    def text(self) -> str:
        """The private key as Go's note package writes it: PRIVATE+KEY+<name>+<id hex>+<base64(0x01 || seed)>."""
        from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

        seed = self.key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return (f"PRIVATE+KEY+{self.name}+{_key_id(self.name, self.public).hex()}+"
                f"{base64.b64encode(bytes([ALG_ED25519]) + seed).decode()}")


def vkey(name: str, public: bytes) -> str:
    return f"{name}+{_key_id(name, public).hex()}+{base64.b64encode(bytes([ALG_ED25519]) + public).decode()}"


@dataclass(frozen=True)
class Verifier:
    name: str
    key_id: bytes
    public: bytes


def parse_vkey(text: str) -> Verifier:
    parts = text.strip().split("+", 2)  # the base64 key may itself contain "+"
    if len(parts) != 3:
        raise CheckpointError(f"{text.strip()[:60]!r} is not a verifier key (<name>+<key id hex>+<base64 key>)")
    name, key_hex, key_b64 = parts
    _check_name(name)
    try:
        raw = base64.b64decode(key_b64, validate=True)
        key_id = bytes.fromhex(key_hex)
    except (binascii.Error, ValueError) as exc:
        raise CheckpointError(f"verifier key {name}: not hex and base64 where they belong") from exc
    if len(raw) != 33 or raw[0] != ALG_ED25519 or len(key_id) != 4:
        raise CheckpointError(f"verifier key {name}: not an Ed25519 key (algorithm byte 0x01 and 32 bytes)")
    if _key_id(name, raw[1:]) != key_id:
        raise CheckpointError(f"verifier key {name}: its key id {key_hex} does not match the key")
    return Verifier(name, key_id, raw[1:])


def parse_signer(text: str) -> Signer:
    parts = text.strip().split("+", 4)
    if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
        raise CheckpointError("not a checkpoint signing key (PRIVATE+KEY+<name>+<key id hex>+<base64 key>)")
    name, key_hex, key_b64 = parts[2:]
    _check_name(name)
    try:
        raw = base64.b64decode(key_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CheckpointError(f"signing key {name}: the key is not base64") from exc
    if len(raw) != 33 or raw[0] != ALG_ED25519:
        raise CheckpointError(f"signing key {name}: not an Ed25519 key")
    signer = Signer(name, Ed25519PrivateKey.from_private_bytes(raw[1:]))
    if _key_id(name, signer.public).hex() != key_hex:
        raise CheckpointError(f"signing key {name}: its key id {key_hex} does not match the key")
    return signer


def generate(name: str) -> Signer:
    _check_name(name)
    return Signer(name, Ed25519PrivateKey.generate())


def write_key(path: Path, signer: Signer) -> Path:
    """The signing key at `path` (mode 0600, never overwritten) and the verifier key beside it as `<path>.pub`
    (path with the suffix .pub); returns the verifier key's path."""
    public_path = path.with_suffix(".pub")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise StorageError(f"{path} exists; not overwriting a checkpoint key") from exc
    except OSError as exc:
        raise StorageError(f"cannot create {path}: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "w") as fh:
        fh.write(signer.text() + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    public_path.write_text(signer.verifier + "\n")
    os.chmod(public_path, 0o644)
    return public_path


def read_key(path: Path) -> Signer:
    try:
        text = path.read_text()
    except OSError as exc:
        raise StorageError(f"cannot read the checkpoint key {path}: {exc.strerror or exc} (it is meant to be "
                           "readable by root or the owner only: run `sudo doorbell-edge audit checkpoint`)") from exc
    try:
        return parse_signer(text)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc


# --- the note -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int  # the number of records: the head's seq
    head_hash: str  # hex, as the log writes it
    time: str | None = None

    def body(self) -> str:
        lines = [self.origin, str(self.size), base64.b64encode(bytes.fromhex(self.head_hash)).decode()]
        if self.time:
            lines.append(f"time {self.time}")
        return "".join(line + "\n" for line in lines)


def sign(checkpoint: Checkpoint, signer: Signer) -> str:
    body = checkpoint.body()
    signature = signer.key.sign(body.encode())
    blob = base64.b64encode(_key_id(signer.name, signer.public) + signature).decode()
    return f"{body}\n{DASH} {signer.name} {blob}\n"


def make(origin: str, seq: int, digest: str, signer: Signer, when: datetime | None = None) -> str:
    return sign(Checkpoint(origin, seq, digest, rfc3339(when) if when else None), signer)


def open_note(text: str, verifier: Verifier, origin: str | None = None) -> Checkpoint:
    """The checkpoint in `text` once a signature by `verifier` verifies over it (other signatures are ignored,
    as the signed-note format says); CheckpointError naming what is wrong otherwise."""
    body, sep, signatures = text.partition("\n\n")
    if not sep or not body:
        raise CheckpointError("not a signed note: no blank line between the text and its signatures")
    body += "\n"
    good = False
    seen = []
    for line in signatures.splitlines():
        if not line:
            continue
        if not line.startswith(DASH + " "):
            raise CheckpointError(f"signature line {line[:40]!r} does not start with '{DASH} '")
        try:
            name, blob = line[2:].rsplit(" ", 1)
            raw = base64.b64decode(blob, validate=True)
        except (ValueError, binascii.Error) as exc:
            raise CheckpointError(f"signature line {line[:40]!r} is not '<name> <base64>'") from exc
        seen.append(name)
        if name != verifier.name or raw[:4] != verifier.key_id:
            continue
        try:
            Ed25519PublicKey.from_public_bytes(verifier.public).verify(raw[4:], body.encode())
        except InvalidSignature as exc:
            raise CheckpointError(f"the signature by {name} does not verify (the checkpoint was altered, or signed "
                                  "by another key of that name)") from exc
        good = True
    if not good:
        raise CheckpointError(f"no signature by {verifier.name} (signed by: {', '.join(seen) or 'nobody'})")
    lines = body.splitlines()
    if len(lines) < 3:
        raise CheckpointError("a checkpoint has at least three lines: origin, record count, head hash")
    if origin is not None and lines[0] != origin:
        raise CheckpointError(f"the checkpoint is for {lines[0]!r}, not this device's log {origin!r}")
    if not lines[1].isdigit() or (lines[1] != "0" and lines[1].startswith("0")):
        raise CheckpointError(f"record count {lines[1]!r} is not a decimal number")
    try:
        digest = normalise_hash(lines[2])
    except ValueError as exc:
        raise CheckpointError(f"head hash: {exc}") from exc
    when = next((line[5:] for line in lines[3:] if line.startswith("time ")), None)
    return Checkpoint(lines[0], int(lines[1]), digest, when)
