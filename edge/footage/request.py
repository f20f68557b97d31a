"""The footage-request document: safe parsing (JSON or YAML), its typed model, canonical bytes and signatures."""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import rfc8785
import yaml
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from edge import strictjson
from edge.clock import parse_rfc3339

MAX_DOCUMENT_BYTES = 256 * 1024
MAX_DEPTH = 16
MAX_SIGNATURE_CHARS = 4000
# The request format's version: a document may say `version: 1` (those without the field are version 1); any
# other value is refused, naming the versions this device reads.
FORMAT_VERSIONS = (1,)
# The envelope `requests submit FILE` builds when FILE comes with detached minisign signatures (FILE.minisig,
# FILE.court.minisig): the exact bytes signed and the signature texts, stored as the request's raw document.
ENVELOPE = "doorbell-edge-signed-request"
ENVELOPE_VERSIONS = (1,)
MINISIG_SUFFIX = ".minisig"
COURT_MINISIG_SUFFIX = ".court.minisig"

LegalBasis = Literal["consent_request", "preservation", "subpoena", "court_order", "warrant", "exigent"]
DataKind = Literal["video", "audio", "snapshots", "event_metadata", "face_data"]
LEGAL_BASES: tuple[str, ...] = ("consent_request", "preservation", "subpoena", "court_order", "warrant", "exigent")
DATA_KINDS: tuple[str, ...] = ("video", "audio", "snapshots", "event_metadata", "face_data")

_ID = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$"
# A device is named by its signing key's fingerprint (edge.footage.keys.fingerprint: 16 hex digits), as
# `doorbell-edge keys show` prints it; upper-case digits are accepted and compared in lower case.
_DEVICE = r"^[0-9A-Fa-f]{16}$"


Timestamp = Annotated[datetime, BeforeValidator(parse_rfc3339)]
Ident = Annotated[str, Field(pattern=_ID)]
Short = Annotated[str, Field(min_length=1, max_length=200)]
Long = Annotated[str, Field(min_length=1, max_length=4000)]


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class AgencyRef(_Doc):
    id: Ident
    name: Short
    contact: Short


class Officer(_Doc):
    name: Short
    badge: Short


class Incident(_Doc):
    description: Long
    time: Timestamp


class IssuedBy(_Doc):
    court_id: Ident
    court: Short
    judge: Short


class Window(_Doc):
    start: Timestamp
    end: Timestamp


class Scope(_Doc):
    cameras: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(max_length=32)
    windows: list[Window] = Field(min_length=1, max_length=48)
    data: list[DataKind] = Field(min_length=1, max_length=5)


class Emergency(_Doc):
    danger: Annotated[str, Field(max_length=4000)] | None = None
    callback: Annotated[str, Field(max_length=200)] | None = None


class Signatures(_Doc):
    # Base64 Ed25519 signatures over the canonical bytes (embedded form), or the text of minisign signatures
    # (detached form, carried here by the envelope; see docs/formats.md), hence the longer limit.
    agency: Annotated[str, Field(min_length=1, max_length=MAX_SIGNATURE_CHARS)]
    court: Annotated[str, Field(min_length=1, max_length=MAX_SIGNATURE_CHARS)] | None = None


class FootageRequest(_Doc):
    """A request for footage as the agency sent it (validated; times are aware UTC)."""

    version: int | None = None  # the format version (None: 1); see FORMAT_VERSIONS
    request_id: Ident
    # The device this request is for, inside what the agency signs. None: an unbound request (documents from
    # before the field existed); it is never auto-released and the owner is told (UNBOUND_DEVICE).
    device: Annotated[str, Field(pattern=_DEVICE)] | None = None
    agency: AgencyRef
    officer: Officer
    legal_basis: LegalBasis
    case_number: Short
    incident: Incident
    issued_by: IssuedBy | None = None
    issued_at: Timestamp
    expires_at: Timestamp
    scope: Scope
    emergency: Emergency | None = None
    signatures: Signatures

    @model_validator(mode="after")
    def _per_basis(self) -> FootageRequest:
        if self.version is not None and self.version not in FORMAT_VERSIONS:
            readable = ", ".join(str(v) for v in FORMAT_VERSIONS)
            raise ValueError(f"version {self.version} is not a request format this device reads (it reads "
                             f"version {readable}); ask the agency for a version {FORMAT_VERSIONS[-1]} document")
        if self.legal_basis in ("warrant", "court_order") and self.issued_by is None:
            raise ValueError(f"issued_by (court_id, court, judge) is required for a {self.legal_basis}")
        if self.expires_at <= self.issued_at:
            raise ValueError("expires_at must be after issued_at")
        return self


@dataclass(frozen=True)
class Intake:
    """One received document: its bytes, the validated request (or the problems), and the bytes signed."""

    raw: bytes
    sha256: str
    document: FootageRequest | None
    signed_bytes: bytes | None  # RFC 8785 canonical JSON of the document without `signatures`
    problems: tuple[str, ...] = field(default=())
    claimed_agency: str | None = None  # best effort, for the record, when the document did not validate
    claimed_request_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.document is not None and self.signed_bytes is not None and not self.problems

    @property
    def agency_id(self) -> str | None:
        return self.document.agency.id if self.document else self.claimed_agency

    @property
    def request_id(self) -> str | None:
        return self.document.request_id if self.document else self.claimed_request_id


class _DocumentError(ValueError):
    pass


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader without timestamps (they stay strings, as the signature covers), aliases or duplicate keys."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise _DocumentError("YAML aliases are not accepted")
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                raise _DocumentError(f"mapping keys must be strings, not {type(key).__name__}")
            if key in seen:
                raise _DocumentError(f"duplicate key {key!r}")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_NoAliasLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            return deepest
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


def load_document(raw: bytes) -> dict[str, Any]:
    """Bytes -> a plain JSON-shaped mapping; raises ValueError naming what is wrong."""
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise _DocumentError(f"document is {len(raw)} bytes; the limit is {MAX_DOCUMENT_BYTES}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _DocumentError(f"document is not UTF-8 text (byte {exc.start})") from exc
    try:
        # JSON when it looks like JSON; otherwise YAML through a SafeLoader subclass without aliases.
        data = strictjson.loads(text) if text.lstrip().startswith("{") else yaml.load(text, Loader=_NoAliasLoader)
    except RecursionError as exc:
        raise _DocumentError("document is nested too deeply") from exc
    except _DocumentError:
        raise
    except strictjson.StrictJSONError as exc:
        raise _DocumentError(str(exc)) from exc
    except (ValueError, yaml.YAMLError) as exc:
        raise _DocumentError(f"document does not parse as JSON or YAML: {str(exc).splitlines()[0][:200]}") from exc
    if not isinstance(data, dict):
        raise _DocumentError(f"document must be a mapping of fields, not {type(data).__name__}")
    if _depth(data) > MAX_DEPTH:
        raise _DocumentError(f"document is nested more than {MAX_DEPTH} levels deep")
    return data


def canonical_unsigned(data: dict[str, Any]) -> bytes:
    """The bytes every signature covers: RFC 8785 canonical JSON of the document without `signatures`."""
    return bytes(rfc8785.dumps({k: v for k, v in data.items() if k != "signatures"}))


def _validation_lines(exc: ValidationError) -> tuple[str, ...]:
    lines = []
    for err in exc.errors()[:20]:
        where = ".".join(str(p) for p in err["loc"]) or "(document)"
        message = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown field (requests may not carry other fields, photos or watch-lists)"
        lines.append(f"{where}: {message}"[:300])
    return tuple(lines)


def _claimed(data: dict[str, Any]) -> tuple[str | None, str | None]:
    agency = data.get("agency")
    agency_id = agency.get("id") if isinstance(agency, dict) else None
    request_id = data.get("request_id")
    return (
        agency_id[:128] if isinstance(agency_id, str) else None,
        request_id[:128] if isinstance(request_id, str) else None,
    )


def parse_request(raw: bytes) -> Intake:
    """Never raises on bad input: the Intake carries the problems instead (INCOMPLETE downstream)."""
    digest = hashlib.sha256(raw).hexdigest()
    try:
        data = load_document(raw)
    except _DocumentError as exc:
        return Intake(raw, digest, None, None, (str(exc),))
    detached: bytes | None = None
    if "envelope" in data:
        try:
            detached, data = _open_envelope(data)
        except _DocumentError as exc:
            return Intake(raw, digest, None, None, (str(exc),))
    agency_id, request_id = _claimed(data)
    try:
        # Detached signatures cover the exact bytes of the file the agency signed; embedded ones the canonical form.
        signed = detached if detached is not None else canonical_unsigned(data)
    except Exception as exc:  # rfc8785 raises its own family plus TypeError/ValueError on odd values
        problem = f"document cannot be put in canonical JSON form: {exc}"[:300]
        return Intake(raw, digest, None, None, (problem,), agency_id, request_id)
    try:
        document = FootageRequest.model_validate(data)
    except ValidationError as exc:
        return Intake(raw, digest, None, signed, _validation_lines(exc), agency_id, request_id)
    return Intake(raw, digest, document, signed, (), agency_id, request_id)


def make_envelope(document: bytes, agency_signature: bytes, court_signature: bytes | None = None) -> bytes:
    """The stored form of a request with detached minisign signatures: JSON naming the envelope and its version,
    the document's exact bytes (base64) and the signature files' text."""
    import json

    signatures = {"agency": agency_signature.decode("utf-8", "replace")}
    if court_signature is not None:
        signatures["court"] = court_signature.decode("utf-8", "replace")
    body = {"envelope": ENVELOPE, "version": ENVELOPE_VERSIONS[-1],
            "document": base64.b64encode(document).decode(), "minisign": signatures}
    return json.dumps(body, indent=1).encode()


def read_request_file(path: Path) -> bytes:
    """A request file as `requests submit|evaluate FILE` reads it: FILE alone (embedded signatures), or, when
    FILE.minisig lies beside it, the envelope of FILE's bytes with that signature (and FILE.court.minisig if
    present). A court signature without the agency's is an error naming the missing file."""
    document = path.read_bytes()
    agency = path.with_name(path.name + MINISIG_SUFFIX)
    court = path.with_name(path.name + COURT_MINISIG_SUFFIX)
    if not agency.exists():
        if court.exists():
            raise FileNotFoundError(2, f"{court.name} is here but the agency's signature is not", str(agency))
        return document
    return make_envelope(document, agency.read_bytes(), court.read_bytes() if court.exists() else None)


def _open_envelope(data: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """(the bytes signed, the document with the minisign signature texts as its `signatures`)."""
    if data.get("envelope") != ENVELOPE:
        raise _DocumentError(f"envelope {str(data.get('envelope'))[:60]!r} is not a {ENVELOPE!r}")
    version = data.get("version")
    if version not in ENVELOPE_VERSIONS:
        readable = ", ".join(str(v) for v in ENVELOPE_VERSIONS)
        raise _DocumentError(f"envelope version {str(version)[:20]} is not one this device reads (it reads version "
                             f"{readable})")
    unknown = sorted(set(data) - {"envelope", "version", "document", "minisign"})
    if unknown:
        raise _DocumentError(f"envelope: unknown field {unknown[0][:60]!r}")
    signatures = data.get("minisign")
    if not isinstance(signatures, dict) or not isinstance(signatures.get("agency"), str) or \
            set(signatures) - {"agency", "court"} or not all(isinstance(v, str) for v in signatures.values()):
        raise _DocumentError("envelope: minisign must map agency (and optionally court) to signature texts")
    try:
        document = base64.b64decode(str(data.get("document")), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _DocumentError("envelope: document is not valid base64") from exc
    inner = load_document(document)
    if "envelope" in inner:
        raise _DocumentError("envelope: the document is itself an envelope")
    if "signatures" in inner:
        raise _DocumentError("the document carries embedded signatures and came with detached ones (.minisig); "
                             "sign one way only")
    return document, {**inner, "signatures": dict(signatures)}


def decode_key(value: str) -> bytes:
    raw = base64.b64decode(value, validate=True)
    if len(raw) != 32:
        raise ValueError("key must be 32 bytes")
    return raw


def signature_problem(public_key_b64: str, signature_b64: str, message: bytes) -> str | None:
    """None when the Ed25519 signature verifies; otherwise what is wrong, in words. A signature that is the text
    of a minisign signature file is checked as one (the key's raw 32 bytes are the minisign key's)."""
    if signature_b64.lstrip().startswith("untrusted comment:"):
        return minisign_problem(public_key_b64, signature_b64, message)
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        return "signature is not valid base64"
    if len(signature) != 64:
        return f"signature must be 64 bytes, not {len(signature)}"
    try:
        key = Ed25519PublicKey.from_public_bytes(decode_key(public_key_b64))
    except (binascii.Error, ValueError):
        return "configured public key is unusable"
    try:
        key.verify(signature, message)
    except InvalidSignature:
        return "signature does not verify against the configured key"
    return None


def minisign_problem(public_key_b64: str, signature_text: str, message: bytes) -> str | None:
    """None when the minisign signature (the text of a .minisig file) verifies over `message` with the configured
    raw Ed25519 key; otherwise what is wrong. py-minisign does the checking (both the signature and the global
    signature over the trusted comment). The minisign key id is only a label for picking a key: the configured
    key is the one that must verify, so the key is given the signature's id."""
    import minisign

    text = signature_text.strip()
    try:
        signature = minisign.Signature.from_bytes(text.encode())
    except (minisign.Error, ValueError) as exc:
        return f"not a readable minisign signature ({exc})"
    try:
        raw_key = decode_key(public_key_b64)
    except (binascii.Error, ValueError):
        return "configured public key is unusable"
    key_id = base64.b64decode(text.splitlines()[1])[2:10]
    key = minisign.PublicKey.from_base64(base64.b64encode(b"Ed" + key_id + raw_key))
    try:
        key.verify(message, signature)
    except minisign.VerifyError:
        return "minisign signature does not verify against the configured key"
    return None


def sign_document(
    data: dict[str, Any], agency_key: Ed25519PrivateKey, court_key: Ed25519PrivateKey | None = None
) -> dict[str, Any]:
    """Agency-side helper (and for tests): the document with `signatures` over its canonical bytes."""
    message = canonical_unsigned(data)
    signatures = {"agency": base64.b64encode(agency_key.sign(message)).decode()}
    if court_key is not None:
        signatures["court"] = base64.b64encode(court_key.sign(message)).decode()
    return {**{k: v for k, v in data.items() if k != "signatures"}, "signatures": signatures}


def public_b64(key: Ed25519PrivateKey) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()
