"""`doorbell-edge-agency keygen`: both key pairs in standard forms (minisign, age) that the Debian tools use as
they are, private files 0600, fingerprints as the owner's side computes them, and never half a key set."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge.agency.cli import main
from edge.agency.encodings import encryption_key_raw, fingerprint, signing_key_raw
from edge.footage.request import minisign_problem

from .tools import tool


def test_keygen_writes_four_files_and_prints_keys_and_fingerprints(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keygen", str(tmp_path / "keys")]) == 0
    out = capsys.readouterr().out
    keys = tmp_path / "keys"
    modes = {p.name: p.stat().st_mode & 0o777 for p in keys.iterdir()}
    assert modes == {"signing.key": 0o600, "encryption.key": 0o600, "signing.pub": 0o644, "encryption.pub": 0o644}
    assert keys.stat().st_mode & 0o077 == 0
    signing = (keys / "signing.pub").read_text().splitlines()[1]
    recipient = (keys / "encryption.pub").read_text().strip()
    assert signing.startswith("RW") and recipient.startswith("age1")
    assert (keys / "encryption.key").read_text().splitlines()[2].startswith("AGE-SECRET-KEY-1")
    for key, fp in ((signing, fingerprint(signing_key_raw(signing))),
                    (recipient, fingerprint(encryption_key_raw(recipient)))):
        assert key in out and fp in out and len(fp) == 16


def test_keygen_refuses_a_folder_with_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "signing.key").write_text("precious")
    assert main(["keygen", str(tmp_path / "keys")]) == 1
    assert "not overwriting" in capsys.readouterr().err
    assert (tmp_path / "keys" / "signing.key").read_text() == "precious"
    (tmp_path / "empty").mkdir()
    assert main(["keygen", str(tmp_path / "empty")]) == 0  # an empty folder is fine


@pytest.mark.parametrize("point", ["keygen:after-signing", "keygen:before-rename"])
def test_a_kill_during_keygen_leaves_no_half_key_set(tmp_path: Path, point: str) -> None:
    target = tmp_path / "keys"
    env = {**os.environ, "DOORBELL_EDGE_CRASH_AT": point}
    done = subprocess.run([sys.executable, "-m", "edge.agency.cli", "keygen", str(target)], env=env,
                          capture_output=True, text=True, cwd=Path(__file__).parents[2])
    assert done.returncode == -9, done.stderr
    assert not target.exists()
    assert main(["keygen", str(target)]) == 0  # and a second run just works
    assert len(list(target.iterdir())) == 4


def test_debian_age_encrypts_to_the_recipient_and_decrypts_with_the_identity(tmp_path: Path) -> None:
    age = tool("age")
    assert main(["keygen", str(tmp_path / "keys")]) == 0
    keys = tmp_path / "keys"
    (tmp_path / "clip.txt").write_bytes(b"footage")
    subprocess.run([age, "-R", str(keys / "encryption.pub"), "-o", str(tmp_path / "clip.age"),
                    str(tmp_path / "clip.txt")], check=True)
    done = subprocess.run([age, "-d", "-i", str(keys / "encryption.key"), str(tmp_path / "clip.age")],
                          capture_output=True, check=True)
    assert done.stdout == b"footage"


def test_debian_minisign_signs_with_the_key_and_the_device_reads_it(tmp_path: Path) -> None:
    minisign = tool("minisign")
    assert main(["keygen", str(tmp_path / "keys")]) == 0
    keys = tmp_path / "keys"
    (tmp_path / "f").write_bytes(b"request bytes")
    subprocess.run([minisign, "-S", "-s", str(keys / "signing.key"), "-m", str(tmp_path / "f")], check=True,
                   capture_output=True, stdin=subprocess.DEVNULL)
    import base64

    raw = base64.b64encode(signing_key_raw((keys / "signing.pub").read_text())).decode()
    signature = (tmp_path / "f.minisig").read_text()
    assert minisign_problem(raw, signature, b"request bytes") is None
    assert minisign_problem(raw, signature, b"request bytez") is not None
