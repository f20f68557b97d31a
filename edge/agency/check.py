"""Checking a request before it is signed: the device's own schema and rule checks, each finding placed at its
field as `file:line:col: field: CODE: message`, and the commented YAML template agencies start from.

Nothing here decides differently from the device: the document is read by edge.footage.request.load_document
(the device's loader), validated by its FootageRequest model and judged by edge.footage.policy.static_checks
(the part of decide() that needs no particular device) against the default limits. This module only adds where
each finding sits in the file, and refuses the template's CHANGE-ME placeholders."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import yaml
from pydantic import ValidationError

from edge.config_load import position_of
from edge.footage.policy import CONTENT_KINDS, WILDCARDS, Reason, static_checks
from edge.footage.request import FootageRequest, _DocumentError, _NoAliasLoader, load_document

PLACEHOLDER = "CHANGE-ME"
PathKey = tuple[str | int, ...]
Positions = dict[PathKey, tuple[int, int]]
# Codes the device gives from its owner's settings rather than the document: a warning here, not a refusal.
OWNER_DEPENDENT = frozenset({"EXIGENT_DISABLED"})


@dataclass(frozen=True)
class Finding:
    line: int
    col: int
    field: str
    code: str  # a device reason code (INCOMPLETE, PROSPECTIVE, ...) or TEMPLATE for a placeholder left in
    message: str
    severity: Literal["error", "warning"] = "error"

    def render(self, filename: str) -> str:
        tag = "" if self.severity == "error" else "warning: "
        return f"{filename}:{self.line}:{self.col}: {tag}{self.field}: {self.code}: {self.message}"


def dotted(path: PathKey) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(document)"


def positions_of(text: str) -> Positions:
    """Where every key and list item starts (1-based line, column), read with the device's YAML loader (JSON is
    YAML too); empty when the text does not compose (the loader's own error says why)."""
    loader = _NoAliasLoader(text)
    try:
        root = loader.get_single_node()
    except (yaml.YAMLError, _DocumentError):
        return {}
    finally:
        loader.dispose()
    found: Positions = {}

    def walk(node: yaml.Node, path: PathKey) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                child = (*path, str(key_node.value))
                found.setdefault(child, (key_node.start_mark.line + 1, key_node.start_mark.column + 1))
                walk(value_node, child)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                child = (*path, index)
                found[child] = (item.start_mark.line + 1, item.start_mark.column + 1)
                walk(item, child)

    if root is not None:
        walk(root, ())
    return found


def _at(positions: Positions, path: PathKey) -> tuple[int, int]:
    return position_of(path, positions)


def _syntax_position(text: str) -> tuple[int, int]:
    loader = _NoAliasLoader(text)
    try:
        loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        if mark is not None:
            return mark.line + 1, mark.column + 1
    except (yaml.YAMLError, _DocumentError):
        pass
    finally:
        loader.dispose()
    return (1, 1)


def _placeholders(value: Any, path: PathKey = ()) -> list[PathKey]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _placeholders(v, (*path, str(k)))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _placeholders(v, (*path, i))]
    return [path] if isinstance(value, str) and PLACEHOLDER in value else []


def _validation_findings(exc: ValidationError, data: dict[str, Any], positions: Positions) -> list[Finding]:
    out = []
    for err in exc.errors(include_url=False):
        loc: PathKey = tuple(p for p in err["loc"] if isinstance(p, str | int))
        message = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown field (requests may not carry other fields, photos or watch-lists)"
        elif err["type"] == "missing":
            message = "required field is missing"
        if not loc:  # a whole-document rule: name the field it is about
            loc = next(((name,) for name in ("issued_by", "expires_at", "version") if name in message), ())
        while len(loc) > 1 and loc not in positions and not isinstance(loc[-1], str):
            loc = loc[:-1]
        # A missing issued_by is wanted because of the legal basis: point there.
        line, col = _at(positions, ("legal_basis",) if loc == ("issued_by",) and "issued_by" not in data else loc)
        out.append(Finding(line, col, dotted(loc), "INCOMPLETE", message))
    return out


def _fields_for(reason: Reason, doc: FootageRequest, now: datetime) -> list[PathKey]:
    """The field(s) a reason code is about, found the way the rule found them."""
    windows, cameras, data = doc.scope.windows, doc.scope.cameras, doc.scope.data
    locate: dict[str, Callable[[], list[PathKey]]] = {
        "NOT_YET_VALID": lambda: [("issued_at",)],
        "EXPIRED": lambda: [("expires_at",)],
        "WARRANT_STALE": lambda: [("issued_at",)],
        "PROSPECTIVE": lambda: [("scope", "windows", i, "end") for i, w in enumerate(windows) if w.end > now],
        "SCOPE_TOO_BROAD": lambda: (
            [("scope", "windows", i, "start") for i, w in enumerate(windows) if w.start >= w.end]
            or [("scope", "windows")]
        ),
        "BAD_CAMERA": lambda: (
            [("scope", "cameras", i) for i, c in enumerate(cameras)
             if c.strip() in WILDCARDS or c.strip().lower() in WILDCARDS] or [("scope", "cameras")]
        ),
        "BIOMETRICS_NEVER_EXPORTED": lambda: [("scope", "data", i) for i, k in enumerate(data) if k == "face_data"],
        "SUBPOENA_NO_CONTENT": lambda: [("scope", "data", i) for i, k in enumerate(data) if k in CONTENT_KINDS],
        "AUDIO_REQUIRES_WARRANT": lambda: [("scope", "data", i) for i, k in enumerate(data) if k == "audio"],
        "EXIGENT_INCOMPLETE": lambda: [("emergency",) if doc.emergency is not None else ("legal_basis",)],
        "EXIGENT_DISABLED": lambda: [("legal_basis",)],
    }
    return (locate.get(reason.code) or (lambda: [()]))() or [()]


def check_request(raw: bytes, now: datetime, rules: Any = None) -> list[Finding]:
    """Every finding about a request document, errors first in file order; [] when the device would accept its
    form and rules (whether it is released is still the owner's, the agency's listing and the signature's)."""
    try:
        data = load_document(raw)
    except _DocumentError as exc:
        line, col = _syntax_position(raw.decode("utf-8", "replace"))
        return [Finding(line, col, "(document)", "INCOMPLETE", str(exc))]
    positions = positions_of(raw.decode("utf-8"))
    if "envelope" in data:
        return [Finding(1, 1, "envelope", "INCOMPLETE", "this is a stored envelope, not a request to check: check "
                        "the request file itself")]
    left = _placeholders(data)
    if left:
        found = [Finding(*_at(positions, path), dotted(path), "TEMPLATE",
                         f"still the template's {PLACEHOLDER} placeholder: fill it in") for path in left]
        return sorted(found, key=lambda f: (f.line, f.col))
    # Detached signatures (the standard path) leave `signatures` out of the file: validate as the device will,
    # with the signature the envelope supplies.
    candidate = data if "signatures" in data else {**data, "signatures": {"agency": "(detached)"}}
    try:
        doc = FootageRequest.model_validate(candidate)
    except ValidationError as exc:
        return sorted(_validation_findings(exc, data, positions), key=lambda f: (f.line, f.col))
    findings = []
    for reason in static_checks(doc, now, rules):
        severity: Literal["error", "warning"] = "warning" if reason.code in OWNER_DEPENDENT else "error"
        message = reason.detail
        if reason.code == "EXIGENT_DISABLED":
            message = ("doorbells deny emergency requests without a warrant unless their owner chose "
                       "`footage_requests.exigent: owner`")
        for path in _fields_for(reason, doc, now):
            findings.append(Finding(*_at(positions, path), dotted(path), reason.code, message, severity))
    if doc.device is None:
        findings.append(Finding(1, 1, "device", "UNBOUND_DEVICE", "no device named: the doorbell's owner must "
                                "decide and it is never released automatically; put the fingerprint the owner gave "
                                "you in `device`", "warning"))
    return sorted(findings, key=lambda f: (f.severity != "error", f.line, f.col))


def template(now: datetime, device: str | None = None, agency: str | None = None) -> str:
    """The commented YAML template `request new --template` prints (times near `now`; CHANGE-ME elsewhere)."""
    def z(t: datetime) -> str:
        return t.strftime("%Y-%m-%dT%H:%M:%SZ")

    return TEMPLATE.format(
        device=device or PLACEHOLDER, agency=agency or PLACEHOLDER,
        issued=z(now), expires=z(now + timedelta(days=7)),
    )


TEMPLATE = """\
# A footage request for one doorbell (doorbell-edge request format, version 1: docs/formats.md).
# Fill in every CHANGE-ME, then
#   doorbell-edge-agency request check request.yaml
#   doorbell-edge-agency request sign request.yaml --key KEYDIR/signing.key   (or: minisign -S -m request.yaml)
# and give request.yaml with request.yaml.minisig to the doorbell's owner. Times are RFC 3339 with a zone
# (Z = UTC): quote them. Change nothing after signing: the signature covers every byte of this file.
version: 1
# Your own id for this request, unique for your agency (a doorbell refuses a second one with it: REPLAY).
request_id: {agency}-CHANGE-ME
# The doorbell this is for: the 16-hex-digit key fingerprint its owner gave you (`doorbell-edge keys show`).
# Another doorbell refuses it (WRONG_DEVICE); without it (UNBOUND_DEVICE) only the owner can release it.
device: {device}
agency:
  id: {agency}             # the id the owner listed you under (`doorbell-edge agencies add ID ...`)
  name: CHANGE-ME
  contact: CHANGE-ME       # a phone number or address the owner can check independently
officer:
  name: CHANGE-ME
  badge: CHANGE-ME
# consent_request | preservation | subpoena | court_order | warrant | exigent
legal_basis: consent_request
case_number: CHANGE-ME
incident:
  description: CHANGE-ME
  time: "CHANGE-ME"        # e.g. "2026-03-10T11:20:00Z"
# For a warrant or court order, the issuing court (it co-signs: doorbell-edge-agency court sign):
# issued_by:
#   court_id: district-7
#   court: District Court 7
#   judge: Hon. A. Judge
issued_at: "{issued}"
expires_at: "{expires}"
scope:
  # Name each camera (wildcards such as * or all are refused: BAD_CAMERA).
  cameras: [front_door]
  # Windows in the past only (PROSPECTIVE otherwise), together at most the owner's limit for the legal basis
  # (by default 1 h for consent_request and exigent, 12 h for warrant, court_order and subpoena, 72 h for
  # preservation: SCOPE_TOO_BROAD otherwise).
  windows:
    - start: "CHANGE-ME"
      end: "CHANGE-ME"
  # video | snapshots | event_metadata   (audio needs a warrant; face_data is never exported)
  data: [video]
# For legal_basis exigent only (and only if the owner accepts emergency requests):
# emergency:
#   danger: what is happening and why it cannot wait for a warrant
#   callback: "+1 555 0100"
"""
