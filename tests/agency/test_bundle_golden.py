"""The fixed bundle in tests/golden/agency/ (bundle.bundle, made by bundle_make.py): our code opens and checks it
against the device key given as a minisign file, as base64 and as a fingerprint; Debian's age, tar, minisign
and sha256sum alone do the same; one changed byte of it, or of the key, is refused."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from edge.agency.cli import main
from edge.footage import bundle as fmt
from edge.footage.exporter import load_identity, verify_bundle

from .tools import tool

GOLDEN = Path(__file__).parents[1] / "golden" / "agency"
EXPECTED = json.loads((GOLDEN / "bundle-expected.json").read_text())


def test_our_code_opens_the_vector(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for n, key in enumerate((["--device-key", str(GOLDEN / "bundle-device.pub")],
                             ["--device-key", (GOLDEN / "bundle-device.b64").read_text().strip()],
                             ["--device-fingerprint", EXPECTED["device_fingerprint"]])):
        out = tmp_path / f"out{n}"
        code = main(["bundle", "open", str(GOLDEN / "bundle.bundle"), "--identity",
                     str(GOLDEN / "agency-encryption.key"), "--out", str(out), *key])
        printed = capsys.readouterr()
        assert code == 0, printed.err
        assert "MPD-2026-0001" in printed.out and EXPECTED["trusted_comment"] + "\tfile:manifest.json" in printed.out
        for name, digest in EXPECTED["files"].items():
            assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest
        assert hashlib.sha256((out / "manifest.json").read_bytes()).hexdigest() == EXPECTED["manifest_sha256"]
    assert fmt.minisign_public(fmt.base64.b64decode((GOLDEN / "bundle-device.b64").read_text())) == \
        EXPECTED["minisign_public"]
    identity = load_identity((GOLDEN / "agency-encryption.key").read_text())
    check = verify_bundle(GOLDEN / "bundle.bundle", identity, (GOLDEN / "bundle-device.b64").read_text())
    assert check.ok and check.manifest is not None and check.manifest["format"] == "doorbell-edge-export/2"


def test_a_changed_byte_or_another_key_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = bytearray((GOLDEN / "bundle.bundle").read_bytes())
    data[len(data) // 2] ^= 0x80
    (tmp_path / "b.bundle").write_bytes(bytes(data))
    code = main(["bundle", "open", str(tmp_path / "b.bundle"), "--identity", str(GOLDEN / "agency-encryption.key"),
                 "--out", str(tmp_path / "o"), "--device-key", str(GOLDEN / "bundle-device.pub")])
    assert code == 1 and "cannot decrypt" in capsys.readouterr().err
    code = main(["bundle", "open", str(GOLDEN / "bundle.bundle"), "--identity", str(GOLDEN / "agency-encryption.key"),
                 "--out", str(tmp_path / "o"), "--device-key", str(GOLDEN / "agency.pub")])  # the agency's own key
    assert code == 1 and "not from that doorbell" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_debian_tools_alone_open_the_vector(tmp_path: Path) -> None:
    age, minisign, tar, sha256sum = tool("age"), tool("minisign"), tool("tar"), tool("sha256sum")

    def run(*argv: str) -> str:
        done = subprocess.run(list(argv), capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode == 0, f"{argv}: {done.stdout}{done.stderr}"
        return done.stdout + done.stderr

    run(age, "-d", "-i", str(GOLDEN / "agency-encryption.key"), "-o", "bundle.tar", str(GOLDEN / "bundle.bundle"))
    listing = run(tar, "-tf", "bundle.tar").split()
    assert listing[:4] == ["manifest.json", "manifest.json.minisig", "SHA256SUMS", "SHA256SUMS.minisig"]
    run(tar, "-xf", "bundle.tar")
    for name in ("manifest.json", "SHA256SUMS"):
        said = run(minisign, "-V", "-p", str(GOLDEN / "bundle-device.pub"), "-m", name)
        assert f"Trusted comment: {EXPECTED['trusted_comment']}\tfile:{name}" in said
        run(minisign, "-V", "-P", EXPECTED["minisign_public"], "-m", name)
    said = run(sha256sum, "-c", "--strict", "SHA256SUMS")
    assert sorted(line.split(":")[0] for line in said.splitlines()) == sorted(EXPECTED["files"])
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert {f["path"]: f["sha256"] for f in manifest["files"]} == EXPECTED["files"]
    (tmp_path / "SHA256SUMS").write_text((tmp_path / "SHA256SUMS").read_text() + "\n")
    done = subprocess.run([minisign, "-V", "-p", str(GOLDEN / "bundle-device.pub"), "-m", "SHA256SUMS"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode != 0  # a changed SHA256SUMS does not verify
