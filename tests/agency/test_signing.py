"""Request signatures both ways: our helper's and Debian minisign's detached signatures over the file's bytes,
verified by the device (and the helper's by minisign itself); tampering, another key, a court co-signature, the
envelope's version and mixed forms."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge.agency.cli import main
from edge.agency.encodings import signing_key_raw
from edge.config import FootageRequestsConfig
from edge.footage.policy import Policy, decide
from edge.footage.request import make_envelope, parse_request, read_request_file
from tests.footage.factory import CAMERAS, DEVICE, NOW, document, rules, z

from .tools import tool


@pytest.fixture()
def parties(tmp_path: Path) -> dict[str, Path]:
    for who in ("agency", "court", "other"):
        assert main(["keygen", str(tmp_path / who)]) == 0
    return {who: tmp_path / who for who in ("agency", "court", "other")}


def device_policy(parties: dict[str, Path]) -> Policy:
    def raw_b64(folder: Path) -> str:
        return base64.b64encode(signing_key_raw((folder / "signing.pub").read_text())).decode()

    body = rules()
    body["agencies"]["metro-pd"]["signing_key"] = raw_b64(parties["agency"])
    body["trusted_courts"]["district-7"]["signing_key"] = raw_b64(parties["court"])
    return Policy(FootageRequestsConfig.model_validate(body), frozenset(CAMERAS), DEVICE)


def write(tmp_path: Path, doc: dict[str, Any], name: str = "request.yaml") -> Path:
    path = tmp_path / name
    path.write_text("# written by hand at the agency\n" + yaml.safe_dump(doc, sort_keys=False))
    return path


def judge(path: Path, parties: dict[str, Path]) -> Any:
    return decide(parse_request(read_request_file(path)), device_policy(parties), [], [], NOW)


NOW_ARG = ["--now", z(NOW)]


def test_helper_signature_verifies_on_the_device_and_with_minisign(tmp_path: Path, parties: dict[str, Path]) -> None:
    path = write(tmp_path, document("consent_request", signatures=None))
    assert main(["request", "sign", str(path), "--key", str(parties["agency"] / "signing.key"), *NOW_ARG]) == 0
    assert judge(path, parties).codes == ("CONSENT_REQUIRED",)
    minisign = tool("minisign")
    done = subprocess.run([minisign, "-V", "-q", "-m", str(path), "-p", str(parties["agency"] / "signing.pub")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_debian_minisign_signature_verifies_on_the_device(tmp_path: Path, parties: dict[str, Path]) -> None:
    minisign = tool("minisign")
    path = write(tmp_path, document("warrant"))
    for who, out in (("agency", ".minisig"), ("court", ".court.minisig")):
        done = subprocess.run([minisign, "-S", "-s", str(parties[who] / "signing.key"), "-m", str(path),
                               "-x", str(path) + out], capture_output=True, text=True, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stderr
    decision = judge(path, parties)
    assert decision.codes == ("VERIFIED_WARRANT",), decision
    # minisign's legacy (not prehashed) form is read as well
    done = subprocess.run([minisign, "-S", "-l", "-s", str(parties["agency"] / "signing.key"), "-m", str(path)],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert judge(path, parties).codes == ("VERIFIED_WARRANT",)


def test_court_sign_makes_a_verified_warrant(tmp_path: Path, parties: dict[str, Path]) -> None:
    path = write(tmp_path, document("warrant"))
    assert main(["request", "sign", str(path), "--key", str(parties["agency"] / "signing.key"), *NOW_ARG]) == 0
    assert judge(path, parties).codes == ("UNVERIFIED_WARRANT",)
    assert main(["court", "sign", str(path), "--key", str(parties["court"] / "signing.key"), *NOW_ARG]) == 0
    assert judge(path, parties).codes == ("VERIFIED_WARRANT",)
    # the court's key in the agency's place does not pass for the agency
    path.with_name("request.yaml.minisig").write_bytes(path.with_name("request.yaml.court.minisig").read_bytes())
    assert judge(path, parties).codes == ("BAD_SIGNATURE",)


def test_one_changed_byte_or_another_key_is_a_bad_signature(tmp_path: Path, parties: dict[str, Path]) -> None:
    path = write(tmp_path, document("consent_request"))
    assert main(["request", "sign", str(path), "--key", str(parties["agency"] / "signing.key"), *NOW_ARG]) == 0
    original = path.read_bytes()
    path.write_bytes(original.replace(b"front_door", b"front_doos"))
    assert judge(path, parties).codes == ("BAD_SIGNATURE",)
    path.write_bytes(original + b"# a comment added after signing\n")  # bytes, not meaning, are signed
    assert judge(path, parties).codes == ("BAD_SIGNATURE",)
    path.write_bytes(original)
    assert main(["request", "sign", str(path), "--key", str(parties["other"] / "signing.key"), *NOW_ARG]) == 0
    decision = judge(path, parties)
    assert decision.codes == ("BAD_SIGNATURE",)
    assert "minisign signature does not verify" in decision.reasons[0].detail


def test_sign_refuses_what_the_device_would_refuse(tmp_path: Path, parties: dict[str, Path],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    doc = document("warrant")
    doc["scope"]["cameras"] = ["*"]
    path = write(tmp_path, doc)
    assert main(["request", "sign", str(path), "--key", str(parties["agency"] / "signing.key"), *NOW_ARG]) == 1
    err = capsys.readouterr().err
    assert "request.yaml:" in err and "scope.cameras[0]: BAD_CAMERA" in err and "not signed" in err
    assert not path.with_name("request.yaml.minisig").exists()


def test_envelope_versions_and_mixed_forms_are_refused_clearly(tmp_path: Path, parties: dict[str, Path]) -> None:
    path = write(tmp_path, document("consent_request"))
    assert main(["request", "sign", str(path), "--key", str(parties["agency"] / "signing.key"), *NOW_ARG]) == 0
    envelope = json.loads(read_request_file(path))
    assert envelope["envelope"] == "doorbell-edge-signed-request" and envelope["version"] == 1
    future = parse_request(json.dumps({**envelope, "version": 2}).encode())
    assert future.problems == ("envelope version 2 is not one this device reads (it reads version 1)",)
    # an embedded signatures field and a detached signature: one way only
    signed_inside = yaml.safe_dump({**document("consent_request"), "signatures": {"agency": "AAAA"}}).encode()
    mixed = parse_request(make_envelope(signed_inside, path.with_name("request.yaml.minisig").read_bytes()))
    assert mixed.problems and "sign one way only" in mixed.problems[0]
    # a court signature lying there without the agency's
    path.with_name("request.yaml.minisig").rename(path.with_name("elsewhere.minisig"))
    path.with_name("request.yaml.court.minisig").write_text("x")
    with pytest.raises(FileNotFoundError, match="agency's signature is not"):
        read_request_file(path)


def test_a_garbled_minisig_is_a_bad_signature_not_a_crash(tmp_path: Path, parties: dict[str, Path]) -> None:
    path = write(tmp_path, document("consent_request"))
    path.with_name("request.yaml.minisig").write_text("untrusted comment: x\nnot base64\n")
    decision = judge(path, parties)
    assert decision.codes == ("BAD_SIGNATURE",)
    assert "not a readable minisign signature" in decision.reasons[0].detail


def test_the_helper_signs_with_a_key_debian_minisign_made(tmp_path: Path, parties: dict[str, Path]) -> None:
    minisign = tool("minisign")
    made = tmp_path / "made"
    made.mkdir()
    subprocess.run([minisign, "-G", "-W", "-p", str(made / "signing.pub"), "-s", str(made / "signing.key")],
                   check=True, capture_output=True, stdin=subprocess.DEVNULL)
    parties = {**parties, "agency": made}
    path = write(tmp_path, document("consent_request"))
    assert main(["request", "sign", str(path), "--key", str(made / "signing.key"), *NOW_ARG]) == 0
    assert judge(path, parties).codes == ("CONSENT_REQUIRED",)


def test_a_full_disk_while_signing_leaves_the_old_signature_whole(tmp_path: Path, parties: dict[str, Path],
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import errno
    import os

    path = write(tmp_path, document("consent_request"))
    key = str(parties["agency"] / "signing.key")
    assert main(["request", "sign", str(path), "--key", key, *NOW_ARG]) == 0
    before = path.with_name("request.yaml.minisig").read_bytes()

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    assert main(["request", "sign", str(path), "--key", key, *NOW_ARG]) == 1
    assert "No space left" in capsys.readouterr().err
    assert path.with_name("request.yaml.minisig").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agency", "court", "other", "request.yaml",
                                                          "request.yaml.minisig"]  # no temp file left
