"""Bundles are checked against a device key the agency holds in advance: a bundle forged with another key fails,
verification with no device key fails, and `keys show` prints the key and fingerprint the agency needs."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.cli import main
from edge.footage.exporter import FORMAT, NO_DEVICE_KEY, ExportFile, seal_bundle, verify_bundle
from edge.footage.keys import (
    device_key,
    fingerprint,
    key_fingerprint,
    parse_fingerprint,
    parse_public_key,
    public_key_b64,
    public_key_pem,
    public_raw,
)

from .factory import AGENCY_BOX, NOW, rules, z

AGENCY_PUBLIC = base64.b64encode(bytes(AGENCY_BOX.public_key)).decode()


def _manifest(signing_public: str, files: list[ExportFile]) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "export_id": "ex-00000001",
        "created_at": z(NOW),
        "device": {"id": "front-door-pi", "signing_key": signing_public},
        "request": {"id": "fr-00000001", "agency": "metro-pd"},
        "decision": {"decision": "release", "clips": [], "data": ["event_metadata"]},
        "reasons": [],
        "policy_hash": "0" * 64,
        "approval": None,
        "files": [f.entry() for f in files],
        "notes": [],
    }


def _bundle(signer: Ed25519PrivateKey, named: Ed25519PrivateKey | None = None) -> bytes:
    """A sealed bundle whose manifest names `named`'s key (default: the signer's) and is signed by `signer`."""
    meta = ExportFile("event_metadata.json", "event_metadata", None, None, NOW, NOW, b'{"segments": []}')
    manifest = _manifest(public_key_b64(named or signer), [meta])
    return seal_bundle(manifest, [meta], signer, AGENCY_PUBLIC)


@pytest.fixture
def device(tmp_path: Path) -> Ed25519PrivateKey:
    return device_key(tmp_path / "state")


def test_fingerprint_is_the_documented_prefix_of_sha256_of_the_raw_key(device: Ed25519PrivateKey) -> None:
    raw = public_raw(device)
    assert len(raw) == 32
    assert key_fingerprint(device) == fingerprint(raw) == hashlib.sha256(raw).hexdigest()[:16]
    assert parse_public_key(public_key_b64(device)) == raw
    assert parse_public_key(public_key_pem(device)) == raw
    assert parse_fingerprint(" ".join([key_fingerprint(device)[:8].upper(), key_fingerprint(device)[8:]])) == \
        key_fingerprint(device)


def test_the_devices_own_bundle_verifies_with_its_key_or_fingerprint(device: Ed25519PrivateKey) -> None:
    sealed = _bundle(device)
    for check in (verify_bundle(sealed, AGENCY_BOX, public_key_b64(device)),
                  verify_bundle(sealed, AGENCY_BOX, public_key_pem(device)),
                  verify_bundle(sealed, AGENCY_BOX, device_fingerprint=key_fingerprint(device))):
        assert check.ok, check.problems
        assert check.files == {"event_metadata.json": b'{"segments": []}'}


def test_a_bundle_forged_with_another_key_fails(device: Ed25519PrivateKey) -> None:
    forger = Ed25519PrivateKey.generate()
    forged = _bundle(forger)  # a well-formed bundle, sealed to the agency, naming and signed by the forger's key
    for check in (verify_bundle(forged, AGENCY_BOX, public_key_b64(device)),
                  verify_bundle(forged, AGENCY_BOX, device_fingerprint=key_fingerprint(device))):
        assert not check.ok
        assert any(f"signed by key {key_fingerprint(forger)}" in p and "not from that doorbell" in p
                   for p in check.problems), check.problems
    # Naming the device's key in the manifest does not help: the signature is checked with the key given.
    posing = _bundle(forger, named=device)
    for check in (verify_bundle(posing, AGENCY_BOX, public_key_b64(device)),
                  verify_bundle(posing, AGENCY_BOX, device_fingerprint=key_fingerprint(device))):
        assert not check.ok and len(check.problems) == 1, check.problems
        assert check.problems[0].startswith(
            f"manifest.json: the signature does not verify with the device key {key_fingerprint(device)}")


def test_verification_with_no_device_key_fails_saying_why(device: Ed25519PrivateKey) -> None:
    for sealed in (_bundle(device), _bundle(Ed25519PrivateKey.generate())):
        check = verify_bundle(sealed, AGENCY_BOX)
        assert not check.ok and check.problems == (NO_DEVICE_KEY,)
        assert check.manifest is None and check.files == {}  # nothing is handed out from an unchecked bundle
    assert "proves only that someone signed it" in NO_DEVICE_KEY and "--device-key" in NO_DEVICE_KEY


def test_malformed_device_keys_are_named(device: Ed25519PrivateKey) -> None:
    sealed = _bundle(device)
    assert "not 16" in verify_bundle(sealed, AGENCY_BOX, base64.b64encode(b"x" * 16).decode()).problems[0]
    assert "base64 of the raw 32-byte" in verify_bundle(sealed, AGENCY_BOX, "not a key!").problems[0]
    assert "16 hex digits" in verify_bundle(sealed, AGENCY_BOX, device_fingerprint="abc").problems[0]


def test_cli_keys_show_then_agency_verifies_against_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"device": {"id": "front-door-pi"}, "mqtt": {"enabled": False},
                                   "storage": {"state_dir": str(state)}, "footage_requests": rules()}))
    assert main(["keys", "show", "--config", str(cfg), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    key = device_key(state)
    assert shown["public_key"] == public_key_b64(key) and shown["fingerprint"] == key_fingerprint(key)
    assert shown["pem"] == public_key_pem(key) and shown["device"] == "front-door-pi"
    assert main(["keys", "show", "--config", str(cfg)]) == 0
    text = capsys.readouterr().out
    assert shown["fingerprint"] in text and shown["public_key"] in text and "BEGIN PUBLIC KEY" in text

    identity = tmp_path / "agency.identity"
    identity.write_text(base64.b64encode(bytes(AGENCY_BOX)).decode())
    pem = tmp_path / "device.pem"
    pem.write_text(shown["pem"])
    genuine, forged = tmp_path / "genuine.bundle", tmp_path / "forged.bundle"
    genuine.write_bytes(_bundle(key))
    forged.write_bytes(_bundle(Ed25519PrivateKey.generate()))

    assert main(["exports", "verify", str(genuine), "--identity", str(identity), "--device-key", str(pem)]) == 0
    assert f"fingerprint {shown['fingerprint']}" in capsys.readouterr().out
    assert main(["exports", "verify", str(genuine), "--identity", str(identity), "--device-fingerprint",
                 shown["fingerprint"]]) == 0
    capsys.readouterr()
    assert main(["exports", "verify", str(forged), "--identity", str(identity), "--device-key",
                 shown["public_key"]]) == 1
    err = capsys.readouterr().err
    assert "not from that doorbell" in err and "OK" not in err
    assert main(["exports", "verify", str(genuine), "--identity", str(identity)]) == 1
    err = capsys.readouterr().err
    assert "no device key given" in err and "--device-fingerprint" in err
