"""Shared builders for footage tests: keys, policies, signed request documents."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nacl.public import PrivateKey

from edge.config import Config, FootageRequestsConfig
from edge.footage.policy import Policy
from edge.footage.request import Intake, parse_request, public_b64, sign_document

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
AGENCY_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
COURT_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(2, 34)))
AGENCY_BOX = PrivateKey(bytes(range(3, 35)))
CAMERAS = ("front_door", "side_gate")


def z(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def rules(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "agencies": {
            "metro-pd": {
                "name": "Metro Police",
                "signing_key": public_b64(AGENCY_KEY),
                "encryption_key": base64.b64encode(bytes(AGENCY_BOX.public_key)).decode(),
            }
        },
        "trusted_courts": {"district-7": {"name": "District Court 7", "signing_key": public_b64(COURT_KEY)}},
    }
    body.update(overrides)
    return body


def config(state_dir: Any = None, **overrides: Any) -> Config:
    data: dict[str, Any] = {
        "cameras": {name: {} for name in CAMERAS},
        "footage_requests": rules(**overrides),
        "mqtt": {"enabled": False},
    }
    if state_dir is not None:
        data["storage"] = {"state_dir": str(state_dir)}
    return Config.model_validate(data)


def policy(**overrides: Any) -> Policy:
    return Policy(FootageRequestsConfig.model_validate(rules(**overrides)), frozenset(CAMERAS))


def document(basis: str = "warrant", **overrides: Any) -> dict[str, Any]:
    """An unsigned request that passes every rule at NOW (with a court signature for court bases)."""
    doc: dict[str, Any] = {
        "request_id": "MPD-2026-0001",
        "agency": {"id": "metro-pd", "name": "Metro Police", "contact": "records@metro.example"},
        "officer": {"name": "Det. A. Example", "badge": "4411"},
        "legal_basis": basis,
        "case_number": "CR-26-1234",
        "incident": {"description": "Package theft from porch", "time": z(NOW - timedelta(days=2))},
        "issued_at": z(NOW - timedelta(days=1)),
        "expires_at": z(NOW + timedelta(days=6)),
        "scope": {
            "cameras": ["front_door"],
            "windows": [{"start": z(NOW - timedelta(days=2, minutes=30)), "end": z(NOW - timedelta(days=2))}],
            "data": ["video"],
        },
    }
    if basis in ("warrant", "court_order"):
        doc["issued_by"] = {"court_id": "district-7", "court": "District Court 7", "judge": "Hon. B. Judge"}
    if basis == "exigent":
        doc["emergency"] = {"danger": "missing child last seen at the door", "callback": "+1 555 0100"}
    for key, value in overrides.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


def signed(doc: dict[str, Any], *, court: bool | None = None, agency_key: Ed25519PrivateKey = AGENCY_KEY) -> bytes:
    with_court = doc.get("legal_basis") in ("warrant", "court_order") if court is None else court
    return json.dumps(sign_document(doc, agency_key, COURT_KEY if with_court else None)).encode()


def intake(doc: dict[str, Any], **kwargs: Any) -> Intake:
    return parse_request(signed(doc, **kwargs))
