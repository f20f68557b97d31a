"""The request test vector in tests/golden/agency/: a fixed warrant with the agency's and the court's detached
minisign signatures and their public keys (the secret keys are there too, so the vector can be remade; they
are test keys, used nowhere else). Our code decides it as expected.json says; Debian's minisign and coreutils
alone verify the signatures and compute the fingerprints."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

from edge.agency.encodings import encryption_key_raw, fingerprint, signing_key_raw
from edge.clock import parse_rfc3339
from edge.config import FootageRequestsConfig
from edge.footage.policy import Policy, decide
from edge.footage.request import parse_request, read_request_file

from .tools import tool

GOLDEN = Path(__file__).parents[1] / "golden" / "agency"
EXPECTED = json.loads((GOLDEN / "expected.json").read_text())


def _policy() -> Policy:
    agency, court = EXPECTED["agency"], EXPECTED["court"]
    rules = FootageRequestsConfig.model_validate({
        "agencies": {agency["id"]: {"name": "Metro Police", "signing_key": agency["signing_key_raw_base64"],
                                    "encryption_key": agency["encryption_key_raw_base64"]}},
        "trusted_courts": {court["id"]: {"name": "District Court 7", "signing_key": court["signing_key_raw_base64"]}},
    })
    return Policy(rules, frozenset({"front_door"}), EXPECTED["device"])


def test_the_vector_decides_as_expected_with_our_code() -> None:
    raw = (GOLDEN / "request.yaml").read_bytes()
    assert hashlib.sha256(raw).hexdigest() == EXPECTED["request_sha256"]
    decision = decide(parse_request(read_request_file(GOLDEN / "request.yaml")), _policy(), [], [],
                      parse_rfc3339(EXPECTED["now"]))
    assert {"decision": decision.decision, "codes": list(decision.codes)} == EXPECTED["decision"]


def test_the_keys_and_fingerprints_match() -> None:
    for who, pub in (("agency", "agency.pub"), ("court", "court.pub")):
        raw = signing_key_raw((GOLDEN / pub).read_text())
        assert base64.b64encode(raw).decode() == EXPECTED[who]["signing_key_raw_base64"]
        assert fingerprint(raw) == EXPECTED[who]["signing_fingerprint"]
    enc = encryption_key_raw((GOLDEN / "agency-encryption.pub").read_text())
    assert fingerprint(enc) == EXPECTED["agency"]["encryption_fingerprint"]


def test_a_changed_vector_is_a_bad_signature(tmp_path: Path) -> None:
    for name in ("request.yaml", "request.yaml.minisig", "request.yaml.court.minisig"):
        shutil.copy(GOLDEN / name, tmp_path / name)
    (tmp_path / "request.yaml").write_bytes((GOLDEN / "request.yaml").read_bytes().replace(b"11:30", b"01:30"))
    decision = decide(parse_request(read_request_file(tmp_path / "request.yaml")), _policy(), [], [],
                      parse_rfc3339(EXPECTED["now"]))
    assert decision.codes == ("BAD_SIGNATURE",)


def test_debian_minisign_alone_verifies_both_signatures(tmp_path: Path) -> None:
    minisign = tool("minisign")
    for pub, sig in (("agency.pub", "request.yaml.minisig"), ("court.pub", "request.yaml.court.minisig")):
        done = subprocess.run([minisign, "-V", "-p", str(GOLDEN / pub), "-m", str(GOLDEN / "request.yaml"),
                               "-x", str(GOLDEN / sig)], capture_output=True, text=True)
        assert done.returncode == 0 and "Signature and comment signature verified" in done.stdout, done.stderr
    changed = tmp_path / "request.yaml"
    changed.write_bytes((GOLDEN / "request.yaml").read_bytes() + b"\n")
    done = subprocess.run([minisign, "-V", "-p", str(GOLDEN / "agency.pub"), "-m", str(changed),
                           "-x", str(GOLDEN / "request.yaml.minisig")], capture_output=True, text=True)
    assert done.returncode != 0


def test_coreutils_compute_the_fingerprints() -> None:
    """The fingerprint rule with standard tools: SHA-256 of the raw 32-byte key (the minisign key's last 32
    bytes), first 16 hex digits."""
    tool("sha256sum")
    for who, pub in (("agency", "agency.pub"), ("court", "court.pub")):
        line = f"tail -n 1 {GOLDEN / pub} | base64 -d | tail -c 32 | sha256sum | cut -c 1-16"
        done = subprocess.run(["sh", "-c", line], capture_output=True, text=True, check=True)
        assert done.stdout.strip() == EXPECTED[who]["signing_fingerprint"]
