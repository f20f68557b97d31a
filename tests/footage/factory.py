"""Shared builders for footage tests: keys (the agency's, a court's, the device's), policies, signed request
documents bound to the test device."""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nacl.public import PrivateKey

from edge.config import Config, FootageRequestsConfig
from edge.footage.keys import key_fingerprint, key_path
from edge.footage.policy import Policy
from edge.footage.request import Intake, parse_request, public_b64, sign_document

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
AGENCY_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
COURT_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(2, 34)))
AGENCY_BOX = PrivateKey(bytes(range(3, 35)))
# The test device's signing key: config(state_dir) installs it, so requests name DEVICE (its fingerprint).
DEVICE_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(4, 36)))
DEVICE = key_fingerprint(DEVICE_KEY)
ELSEWHERE = key_fingerprint(OTHER_KEY)  # another doorbell
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


def install_device_key(state_dir: Any, key: Ed25519PrivateKey = DEVICE_KEY) -> None:
    """Put the test device key where edge.footage.keys looks for it (0600), unless a key is there already."""
    path = key_path(Path(state_dir))
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, pem)
    finally:
        os.close(fd)


def config(state_dir: Any = None, **overrides: Any) -> Config:
    data: dict[str, Any] = {
        "cameras": {name: {} for name in CAMERAS},
        "footage_requests": rules(**overrides),
        "mqtt": {"enabled": False},
    }
    if state_dir is not None:
        data["storage"] = {"state_dir": str(state_dir)}
        install_device_key(state_dir)
    return Config.model_validate(data)


def policy(device: str | None = DEVICE, **overrides: Any) -> Policy:
    return Policy(FootageRequestsConfig.model_validate(rules(**overrides)), frozenset(CAMERAS), device)


def document(basis: str = "warrant", **overrides: Any) -> dict[str, Any]:
    """An unsigned request for the test device that passes every rule at NOW (with a court signature for court
    bases); `device=None` makes it unbound (as documents from before the field)."""
    doc: dict[str, Any] = {
        "request_id": "MPD-2026-0001",
        "device": DEVICE,
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
