"""The footage-request document: safe parsing (JSON or YAML), its typed model, canonical bytes and signatures."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import rfc8785
import yaml
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from edge import strictjson

MAX_DOCUMENT_BYTES = 256 * 1024
MAX_DEPTH = 16

LegalBasis = Literal["consent_request", "preservation", "subpoena", "court_order", "warrant", "exigent"]
DataKind = Literal["video", "audio", "snapshots", "event_metadata", "face_data"]
LEGAL_BASES: tuple[str, ...] = ("consent_request", "preservation", "subpoena", "court_order", "warrant", "exigent")
DATA_KINDS: tuple[str, ...] = ("video", "audio", "snapshots", "event_metadata", "face_data")

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")
_ID = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$"
# A device is named by its signing key's fingerprint (edge.footage.keys.fingerprint: 16 hex digits), as
# `doorbell-edge keys show` prints it; upper-case digits are accepted and compared in lower case.
_DEVICE = r"^[0-9A-Fa-f]{16}$"


def parse_rfc3339(value: object) -> datetime:
    """An RFC 3339 timestamp with a zone, as aware UTC; anything else is an error naming the value."""
    if not isinstance(value, str):
        raise ValueError(f"must be an RFC 3339 timestamp string, not {type(value).__name__}")
    if not _RFC3339.match(value):
        raise ValueError(f"{value[:40]!r} is not an RFC 3339 timestamp with a zone (e.g. 2026-01-01T12:00:00Z)")
    text = value.upper().replace("Z", "+00:00")
    head, _, rest = text.partition(".")
    if rest:  # Python keeps microseconds only
        digits = rest[: len(rest) - 6]
        text = f"{head}.{(digits + '000000')[:6]}{rest[-6:]}"
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"{value!r} is not a real date and time ({exc})") from exc


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
    agency: Annotated[str, Field(min_length=1, max_length=200)]
    court: Annotated[str, Field(min_length=1, max_length=200)] | None = None


class FootageRequest(_Doc):
    """A request for footage as the agency sent it (validated; times are aware UTC)."""

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
    agency_id, request_id = _claimed(data)
    try:
        signed = canonical_unsigned(data)
    except Exception as exc:  # rfc8785 raises its own family plus TypeError/ValueError on odd values
        problem = f"document cannot be put in canonical JSON form: {exc}"[:300]
        return Intake(raw, digest, None, None, (problem,), agency_id, request_id)
    try:
        document = FootageRequest.model_validate(data)
    except ValidationError as exc:
        return Intake(raw, digest, None, signed, _validation_lines(exc), agency_id, request_id)
    return Intake(raw, digest, document, signed, (), agency_id, request_id)


def decode_key(value: str) -> bytes:
    raw = base64.b64decode(value, validate=True)
    if len(raw) != 32:
        raise ValueError("key must be 32 bytes")
    return raw


def signature_problem(public_key_b64: str, signature_b64: str, message: bytes) -> str | None:
    """None when the Ed25519 signature verifies; otherwise what is wrong, in words."""
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
