"""Makes the bundle test vector in this folder (run once; age encryption is randomised, so running it again makes
a different but equally valid bundle.bundle): `python tests/golden/agency/bundle_make.py`.

The device key is the tests' fixed device key (tests/footage/factory.py: Ed25519 from bytes 4..35), the bundle
is encrypted to agency-encryption.pub. Files: bundle.bundle, bundle-device.pub (the device key as a minisign
public key file), bundle-device.b64 (base64 of the raw key, as `doorbell-edge keys show` prints it),
bundle-expected.json (the manifest's files and the summary a test compares)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.footage import bundle as fmt
from edge.footage.keys import key_fingerprint, public_key_b64, public_raw

HERE = Path(__file__).parent
DEVICE = Ed25519PrivateKey.from_private_bytes(bytes(range(4, 36)))
# A 2x2 grey JPEG (cv2.imencode of a 2x2 image of 128s), so the vector needs no image library to make.
SNAPSHOT = bytes.fromhex(
    "ffd8ffe000104a46494600010100000100010000ffdb0043000201010101010201010102020202020403020202020504040304060506"
    "060605060606070908060709070606080b08090a0a0a0a0a06080b0c0b0a0c090a0a0affdb004301020202020202050303050a070607"
    "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0affc00011"
    "080002000203012200021101031101ffc4001f0000010501010101010100000000000000000102030405060708090a0bffc400b51000"
    "02010303020403050504040000017d01020300041105122131410613516107227114328191a1082342b1c11552d1f02433627282090a"
    "161718191a25262728292a3435363738393a434445464748494a535455565758595a636465666768696a737475767778797a83848586"
    "8788898a92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae1e2e3e4e5"
    "e6e7e8e9eaf1f2f3f4f5f6f7f8f9faffc4001f0100030101010101010101010000000000000102030405060708090a0bffc400b51100"
    "020102040403040705040400010277000102031104052131061241510761711322328108144291a1b1c109233352f0156272d10a1624"
    "34e125f11718191a262728292a35363738393a434445464748494a535455565758595a636465666768696a737475767778797a828384"
    "85868788898a92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae2e3e4"
    "e5e6e7e8e9eaf2f3f4f5f6f7f8f9faffda000c03010002110311003f0028a28a00ffd9"
)
META = json.dumps({"segments": [{"camera": "front_door", "clip": "clip-0001", "start": "2026-03-08T11:30:00.000Z",
                                 "end": "2026-03-08T11:30:01.000Z", "events": ["ev-1"]}]}, indent=2).encode()


def main() -> None:
    files = [
        ("snapshots/front_door/clip-0001_20260308T113000000000Z.jpg", "snapshots", "front_door", "clip-0001",
         SNAPSHOT, 1),
        ("event_metadata.json", "event_metadata", None, None, META, 0),
    ]
    manifest = {
        "format": fmt.FORMAT,
        "export_id": "ex-0000beef",
        "created_at": "2026-03-10T12:00:00.000Z",
        "device": {"id": "front-door-pi", "signing_key": public_key_b64(DEVICE),
                   "fingerprint": key_fingerprint(DEVICE)},
        "request": {"id": "fr-00000001", "agency": "metro-pd", "request_id": "MPD-2026-0001", "legal_basis": "warrant",
                    "case_number": "CR-26-1", "document_sha256": "0" * 64, "cameras": ["front_door"],
                    "windows": [{"start": "2026-03-08T11:00:00.000Z", "end": "2026-03-08T12:00:00.000Z"}]},
        "decision": {"request": "fr-00000001", "decision": "release", "data": ["snapshots", "event_metadata"],
                     "clips": [{"clip": "clip-0001", "camera": "front_door", "start": "2026-03-08T11:30:00.000Z",
                                "end": "2026-03-08T11:30:01.000Z"}]},
        "reasons": [{"code": "VERIFIED_WARRANT", "detail": "court-signed warrant"},
                    {"code": "OWNER_APPROVED", "detail": "approved by the owner"}],
        "policy_hash": "0" * 64,
        "approval": {"seq": 1, "at": "2026-03-10T11:59:00.000Z", "attest_original": False, "unblurred": []},
        "files": [{"path": p, "kind": k, "camera": c, "clip": cl, "start": "2026-03-08T11:30:00.000Z",
                   "end": "2026-03-08T11:30:01.000Z", "frames": n, "faces_blurred": True, "size": len(b),
                   "sha256": hashlib.sha256(b).hexdigest()} for p, k, c, cl, b, n in files],
        "notes": [],
    }
    comment = "timestamp:1773144000\tdoorbell-edge export ex-0000beef\tdevice:front-door-pi"
    members = [*fmt.control_members(manifest, DEVICE, comment), *[fmt.Member(p, b) for p, _, _, _, b, _ in files]]
    recipient = fmt.recipient_of((HERE / "agency-encryption.pub").read_text())
    with open(HERE / "bundle.bundle", "wb") as out:
        fmt.write_bundle(out, members, recipient, 1773144000)
    raw = public_raw(DEVICE)
    (HERE / "bundle-device.pub").write_text(fmt.minisign_public_file(raw))
    (HERE / "bundle-device.b64").write_text(public_key_b64(DEVICE) + "\n")
    expected = {"device_fingerprint": key_fingerprint(DEVICE), "minisign_public": fmt.minisign_public(raw),
                "trusted_comment": comment, "manifest_sha256": hashlib.sha256(members[0].data or b"").hexdigest(),
                "files": {p: hashlib.sha256(b).hexdigest() for p, _, _, _, b, _ in files}}
    (HERE / "bundle-expected.json").write_text(json.dumps(expected, indent=2) + "\n")


if __name__ == "__main__":
    main()
