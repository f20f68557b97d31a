"""Public-key encodings both parties exchange, read into raw 32-byte keys, with hints for the forms people paste.

Signing keys (Ed25519) are accepted as a minisign public key (`RW...`, or the two-line .pub file), base64 of the
raw 32 bytes (what the config stores), a PEM public key block, or base64 of its DER form (44 bytes, what
`openssl pkey -pubout -outform DER | base64` prints). Encryption keys (X25519) as an age recipient (`age1...`)
or base64 of the raw 32 bytes. Fingerprints are the first 16 hex digits of the SHA-256 of the raw 32 bytes,
the same rule as the device's (edge.footage.keys.fingerprint)."""

from __future__ import annotations

import base64
import binascii
import hashlib

import bech32
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

# The fixed 12-byte DER prefix of an Ed25519 / X25519 SubjectPublicKeyInfo (RFC 8410): the raw key follows it.
ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
X25519_SPKI_PREFIX = bytes.fromhex("302a300506032b656e032100")
MINISIGN_ALG = b"Ed"
FINGERPRINT_HEX = 16


class KeyFormatError(ValueError):
    """A key that is not in a form we read; the message names the form expected and how to convert."""


def fingerprint(raw: bytes) -> str:
    if len(raw) != 32:
        raise ValueError(f"a public key is 32 bytes, not {len(raw)}")
    return hashlib.sha256(raw).hexdigest()[:FINGERPRINT_HEX]


def spaced(fp: str) -> str:
    """A fingerprint in groups of four, for reading aloud: 3f9a 1c0d 27b4 e6a8."""
    return " ".join(fp[i:i + 4] for i in range(0, len(fp), 4))


def _text(value: str) -> str:
    """The key itself from a pasted value or file content: comment lines (minisign's `untrusted comment:`,
    age's `# public key:`) are dropped; one line must remain."""
    lines = [line.strip() for line in value.strip().splitlines()]
    if lines and lines[0].startswith("-----BEGIN"):
        return "\n".join(lines)
    kept = [line for line in lines if line and not line.startswith(("untrusted comment:", "#"))]
    if len(kept) != 1:
        raise KeyFormatError("expected one key (a line of base64, an RW... minisign key or an age1... recipient), "
                             f"found {len(kept)} lines")
    return kept[0]


SIGNING_FORMS = ("a minisign public key (RW..., from `minisign -G` or `doorbell-edge-agency keygen`), base64 of "
                 "the raw 32-byte Ed25519 public key, or a PEM public key")


def signing_key_raw(value: str) -> bytes:
    """An Ed25519 public key in any accepted form -> its raw 32 bytes; KeyFormatError with a hint otherwise."""
    text = _text(value)
    if text.startswith("-----BEGIN"):
        try:
            loaded = serialization.load_pem_public_key(text.encode())
        except ValueError as exc:
            raise KeyFormatError(f"not a readable PEM public key ({exc}); expected {SIGNING_FORMS}") from exc
        if not isinstance(loaded, Ed25519PublicKey):
            raise KeyFormatError(f"the PEM key is a {type(loaded).__name__.removeprefix('_')}, not an Ed25519 key")
        return loaded.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    if text.startswith("age1"):
        raise KeyFormatError("this is an age recipient (an encryption key), not a signing key")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyFormatError(f"not valid base64; expected {SIGNING_FORMS}") from exc
    if len(raw) == 32:
        return raw
    if len(raw) == 42 and raw[:2] == MINISIGN_ALG:  # minisign: "Ed" + 8-byte key id + the 32-byte key
        return raw[10:]
    if len(raw) == 44 and raw[:12] == ED25519_SPKI_PREFIX:
        return raw[12:]
    raise KeyFormatError(f"decodes to {len(raw)} bytes, which is no Ed25519 public key form we know; "
                         f"expected {SIGNING_FORMS}" + der_hint(len(raw)))


def der_hint(length: int) -> str:
    if length == 44:
        return ("; 44 bytes is the DER form openssl writes (`openssl pkey -pubout -outform DER`): the raw key is "
                "its last 32 bytes: `openssl pkey -pubin -in key.pem -outform DER | tail -c 32 | base64`")
    if length == 48:
        return "; 48 bytes looks like a private key: give the public key"
    return ""


def encryption_key_raw(value: str) -> bytes:
    """An X25519 public key as an age recipient (age1...) or base64 of the raw 32 bytes -> raw 32 bytes."""
    text = _text(value)
    if text.lower().startswith("age1"):
        hrp, data = bech32.bech32_decode(text)
        raw = bytes(bech32.convertbits(data, 5, 8, False) or b"") if hrp == "age" and data is not None else b""
        if len(raw) != 32:
            raise KeyFormatError("not a valid age recipient (age1..., as `age-keygen` or `doorbell-edge-agency "
                                 "keygen` prints it): its checksum or length is wrong")
        return raw
    if text.upper().startswith("AGE-SECRET-KEY-"):
        raise KeyFormatError("this is an age identity (a PRIVATE key): give its public key, the age1... line")
    if text.startswith("-----BEGIN"):
        try:
            loaded = serialization.load_pem_public_key(text.encode())
        except ValueError as exc:
            raise KeyFormatError(f"not a readable PEM public key ({exc})") from exc
        if not isinstance(loaded, X25519PublicKey):
            raise KeyFormatError("the PEM key is not an X25519 key")
        return loaded.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyFormatError("not an age recipient (age1...) nor valid base64 of a raw 32-byte X25519 key") from exc
    if len(raw) == 44 and raw[:12] == X25519_SPKI_PREFIX:
        return raw[12:]
    if len(raw) != 32:
        raise KeyFormatError(f"decodes to {len(raw)} bytes; an encryption key is an age recipient (age1...) or "
                             "base64 of the raw 32-byte X25519 public key")
    return raw


def age_recipient(raw: bytes) -> str:
    """The age recipient string (age1...) of a raw 32-byte X25519 public key."""
    if len(raw) != 32:
        raise ValueError(f"an X25519 public key is 32 bytes, not {len(raw)}")
    words = bech32.convertbits(raw, 8, 5)
    assert words is not None
    return str(bech32.bech32_encode("age", words))


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()
