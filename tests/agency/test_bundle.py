"""`doorbell-edge-agency bundle open` refuses what it must, each with a message that says why, and writes nothing
then: a bundle signed by another device key (naming its own key, or posing with the device's), one flipped byte,
an unknown format version, a file changed inside a re-encrypted bundle, no device key at all. The command's
import graph stays light (no OpenCV, numpy, PyNaCl...)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyrage
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.agency.cli import main
from edge.footage import bundle as fmt
from edge.footage.keys import key_fingerprint, public_key_b64, public_raw
from tests.agency.tools import WITHOUT_HEAVY_MODULES

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
VIDEO = b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 8  # stands in for a video: only its bytes matter here
META = b'{"segments": []}'


def manifest(signer: Ed25519PrivateKey, fmt_version: str = fmt.FORMAT) -> dict[str, Any]:
    import hashlib

    files = [
        {"path": "video/front_door/c1.mp4", "kind": "video", "camera": "front_door", "clip": "c1",
         "start": "2026-03-08T11:30:00.000Z", "end": "2026-03-08T11:30:02.000Z", "frames": 20,
         "faces_blurred": True, "size": len(VIDEO), "sha256": hashlib.sha256(VIDEO).hexdigest()},
        {"path": "event_metadata.json", "kind": "event_metadata", "camera": None, "clip": None,
         "start": "2026-03-08T11:30:00.000Z", "end": "2026-03-08T11:30:02.000Z", "frames": 0,
         "faces_blurred": True, "size": len(META), "sha256": hashlib.sha256(META).hexdigest()},
    ]
    return {
        "format": fmt_version, "export_id": "ex-00000001", "created_at": "2026-03-10T12:00:00.000Z",
        "device": {"id": "front-door-pi", "signing_key": public_key_b64(signer),
                   "fingerprint": key_fingerprint(signer)},
        "request": {"id": "fr-1", "agency": "metro-pd", "request_id": "MPD-1", "legal_basis": "warrant",
                    "case_number": "CR-1", "cameras": ["front_door"],
                    "windows": [{"start": "2026-03-08T11:00:00.000Z", "end": "2026-03-08T12:00:00.000Z"}]},
        "decision": {"decision": "release", "data": ["video", "event_metadata"],
                     "clips": [{"clip": "c1", "camera": "front_door", "start": "2026-03-08T11:30:00.000Z",
                                "end": "2026-03-08T11:30:02.000Z"}]},
        "reasons": [{"code": "VERIFIED_WARRANT", "detail": ""}, {"code": "OWNER_APPROVED", "detail": ""}],
        "approval": None, "files": files, "notes": [],
    }


def seal(recipient: pyrage.x25519.Recipient, signer: Ed25519PrivateKey, *, body: dict[str, Any] | None = None,
         video: bytes = VIDEO) -> bytes:
    import io

    members = [*fmt.control_members(body or manifest(signer), signer, "timestamp:0\tdoorbell-edge export test"),
               fmt.Member("video/front_door/c1.mp4", video), fmt.Member("event_metadata.json", META)]
    out = io.BytesIO()
    fmt.write_bundle(out, members, recipient, 0)
    return out.getvalue()


@pytest.fixture
def parties(tmp_path: Path) -> dict[str, Any]:
    identity = pyrage.x25519.Identity.generate()
    key_file = tmp_path / "encryption.key"
    key_file.write_text(f"# public key: {identity.to_public()}\n{identity}\n")
    device = Ed25519PrivateKey.generate()
    return {"identity": identity, "recipient": identity.to_public(), "key_file": key_file, "device": device,
            "device_key": fmt.minisign_public(public_raw(device)), "tmp": tmp_path}


def open_cmd(capsys: pytest.CaptureFixture[str], p: dict[str, Any], data: bytes, *extra: str) -> tuple[int, str, str]:
    bundle = p["tmp"] / "in.bundle"
    bundle.write_bytes(data)
    code = main(["bundle", "open", str(bundle), "--identity", str(p["key_file"]), "--out", str(p["tmp"] / "out"),
                 *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


def nothing_written(p: dict[str, Any]) -> bool:
    return not (p["tmp"] / "out").exists() and not list(p["tmp"].glob(".out.opening-*"))


def test_the_genuine_bundle_opens_by_key_and_by_fingerprint(parties: dict[str, Any],
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    data = seal(parties["recipient"], parties["device"])
    code, out, err = open_cmd(capsys, parties, data, "--device-key", parties["device_key"])
    assert code == 0, err
    assert (parties["tmp"] / "out" / "video/front_door/c1.mp4").read_bytes() == VIDEO
    assert "20 frame(s), faces blurred" in out and "MPD-1" in out and "VERIFIED_WARRANT, OWNER_APPROVED" in out
    import shutil

    shutil.rmtree(parties["tmp"] / "out")
    code, out, err = open_cmd(capsys, parties, data, "--device-fingerprint", key_fingerprint(parties["device"]))
    assert code == 0, err


def test_without_a_device_key_it_refuses_before_decrypting(parties: dict[str, Any],
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = open_cmd(capsys, parties, seal(parties["recipient"], parties["device"]))
    assert code == 1 and "no device key given" in err and "--device-key" in err and nothing_written(parties)


def test_signed_by_another_device_key_is_refused(parties: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    forger = Ed25519PrivateKey.generate()
    code, _, err = open_cmd(capsys, parties, seal(parties["recipient"], forger), "--device-key", parties["device_key"])
    assert code == 1 and nothing_written(parties)
    assert f"signed by key {key_fingerprint(forger)}, not by the device key {key_fingerprint(parties['device'])}" in err
    # naming the device's key in the manifest does not help: the signature is checked with the key held
    posing = seal(parties["recipient"], forger, body=manifest(parties["device"]))
    code, _, err = open_cmd(capsys, parties, posing, "--device-key", parties["device_key"])
    assert code == 1 and nothing_written(parties)
    assert "manifest.json: the signature does not verify with the device key" in err


def test_one_flipped_byte_is_refused(parties: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    data = bytearray(seal(parties["recipient"], parties["device"]))
    for where in (len(data) // 2, len(data) - 1, 40):  # in the payload, the last tag, the header
        flipped = bytearray(data)
        flipped[where] ^= 0x01
        code, _, err = open_cmd(capsys, parties, bytes(flipped), "--device-key", parties["device_key"])
        assert code == 1 and "refused: cannot decrypt" in err and "altered" in err, err
        assert nothing_written(parties)


def test_a_changed_file_in_a_reencrypted_bundle_is_refused(parties: dict[str, Any],
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    # Whoever holds the agency's public key can encrypt; only the device key signs: the hashes catch it.
    changed = seal(parties["recipient"], parties["device"], video=VIDEO[:-1] + b"\x01")
    code, _, err = open_cmd(capsys, parties, changed, "--device-key", parties["device_key"])
    assert code == 1 and "video/front_door/c1.mp4: sha256 or size does not match the manifest" in err
    assert nothing_written(parties)


def test_an_unknown_format_version_is_refused(parties: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    future = seal(parties["recipient"], parties["device"],
                  body=manifest(parties["device"], "doorbell-edge-export/3"))
    code, _, err = open_cmd(capsys, parties, future, "--device-key", parties["device_key"])
    assert code == 1 and nothing_written(parties)
    assert "unknown bundle format 'doorbell-edge-export/3': this tool reads doorbell-edge-export/2" in err


def test_not_an_age_file_and_a_wrong_identity_are_named(parties: dict[str, Any],
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = open_cmd(capsys, parties, b"PK\x03\x04 an old zip", "--device-key", parties["device_key"])
    assert code == 1 and "is not an age-encrypted file" in err
    other = pyrage.x25519.Identity.generate().to_public()
    code, _, err = open_cmd(capsys, parties, seal(other, parties["device"]), "--device-key", parties["device_key"])
    assert code == 1 and "not encrypted to this identity" in err and nothing_written(parties)


def test_the_out_folder_must_be_new_or_empty(parties: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    (parties["tmp"] / "out").mkdir()
    (parties["tmp"] / "out" / "keep.txt").write_text("evidence from another case")
    code, _, err = open_cmd(capsys, parties, seal(parties["recipient"], parties["device"]), "--device-key",
                            parties["device_key"])
    assert code == 1 and "exists and is not an empty folder" in err
    assert [p.name for p in (parties["tmp"] / "out").iterdir()] == ["keep.txt"]


LIGHT = WITHOUT_HEAVY_MODULES + r"""
from edge.agency.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def test_bundle_open_imports_nothing_heavy(parties: dict[str, Any]) -> None:
    bundle = parties["tmp"] / "in.bundle"
    bundle.write_bytes(seal(parties["recipient"], parties["device"]))
    done = subprocess.run([sys.executable, "-c", LIGHT, "bundle", "open", str(bundle), "--identity",
                           str(parties["key_file"]), "--device-key", parties["device_key"], "--out",
                           str(parties["tmp"] / "out")], capture_output=True, text=True,
                          cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["code"] == 0 and (parties["tmp"] / "out" / "manifest.json").exists()
    heavy = sorted({m.split(".")[0] for m in result["modules"]} &
                   {"cv2", "numpy", "matplotlib", "ai_edge_litert", "tflite_runtime", "av", "PIL", "nacl"})
    assert heavy == [], f"bundle open imported {heavy}"


def test_the_device_minisign_key_is_its_raw_key_with_the_fingerprint_as_key_id() -> None:
    device = Ed25519PrivateKey.from_private_bytes(bytes(range(4, 36)))
    raw = base64.b64decode(fmt.minisign_public(public_raw(device)))
    assert raw[:2] == b"Ed" and raw[2:10].hex() == key_fingerprint(device) and raw[10:] == public_raw(device)
    assert json.dumps(fmt.minisign_public_file(public_raw(device))).count("\\n") == 2
