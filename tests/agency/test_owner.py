"""The owner's side of the key exchange: `agencies add` (printed or written in place, comments kept, validated,
every key form an agency may hand over, clear errors for the wrong ones) and `keys show --qr`."""

from __future__ import annotations

import base64
import builtins
import subprocess
from pathlib import Path
from typing import Any

import pytest

from edge.agency.cli import main as agency_main
from edge.agency.encodings import encryption_key_raw, fingerprint, signing_key_raw, spaced
from edge.cli import main
from edge.config_load import load_config, load_config_text
from edge.errors import ConfigError


@pytest.fixture()
def keys(tmp_path: Path) -> Path:
    assert agency_main(["keygen", str(tmp_path / "keys")]) == 0
    return tmp_path / "keys"


def add(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["agencies", "add", *argv])
    out, err = capsys.readouterr()
    return code, out, err


BASE = """\
# my doorbell's config (hand-written)
cameras:
  front_door: {}    # the porch camera
storage:
  state_dir: STATE
"""


@pytest.mark.parametrize("tail", [
    "",  # no footage_requests section
    "footage_requests:\n  # rules I chose\n  exigent: owner\n",  # a section without agencies
    "footage_requests: {}\n",
    "footage_requests:\n  agencies: {}\n",
    "footage_requests:\n  agencies:\n    county-sheriff:   # since 2025\n      name: County Sheriff\n"
    "      signing_key: AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"
    "      encryption_key: AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n  exigent: owner\n",
])
def test_write_adds_the_entry_in_place_keeping_every_other_line(tmp_path: Path, keys: Path, tail: str,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "config.yaml"
    before = BASE.replace("STATE", str(tmp_path / "state")) + tail
    cfg.write_text(before)
    cfg.chmod(0o640)
    code, out, err = add(capsys, "metro-pd", "--name", "Metro Police", "--signing-key", str(keys / "signing.pub"),
                         "--encryption-key", str(keys / "encryption.pub"), "--write", "--config", str(cfg))
    assert code == 0, err
    signing = signing_key_raw((keys / "signing.pub").read_text())
    encryption = encryption_key_raw((keys / "encryption.pub").read_text())
    assert spaced(fingerprint(signing)) in out and spaced(fingerprint(encryption)) in out
    assert "published" in out  # how to compare: a call placed to the agency's published number
    after = cfg.read_text()
    kept = [line for line in before.splitlines() if line.strip() not in ("footage_requests: {}", "agencies: {}")]
    for line in kept:
        assert line.rstrip() in after.splitlines() or line.rstrip().removesuffix(" {}") in after.splitlines(), line
    config = load_config(cfg)
    agency = config.footage_requests.agencies["metro-pd"]
    assert agency.name == "Metro Police"
    assert base64.b64decode(agency.signing_key) == signing
    assert base64.b64decode(agency.encryption_key) == encryption
    assert cfg.stat().st_mode & 0o777 == 0o640
    if "county-sheriff" in tail:
        assert "county-sheriff" in config.footage_requests.agencies and "# since 2025" in after
    if "exigent: owner" in tail:
        assert config.footage_requests.exigent == "owner"


def test_without_write_it_prints_the_entry_and_changes_nothing(tmp_path: Path, keys: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(BASE.replace("STATE", str(tmp_path)))
    before = cfg.read_text()
    signing = (keys / "signing.pub").read_text().splitlines()[1]  # the RW... line pasted
    recipient = (keys / "encryption.pub").read_text().strip()
    code, out, _ = add(capsys, "metro-pd", "--signing-key", signing, "--encryption-key", recipient,
                       "--config", str(cfg))
    assert code == 0 and cfg.read_text() == before
    block = out[out.index("footage_requests:"):]
    config = load_config_text(BASE.replace("STATE", str(tmp_path)) + block)
    assert config.footage_requests.agencies["metro-pd"].name == "metro-pd"


def test_a_second_entry_with_the_same_id_is_refused(tmp_path: Path, keys: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(BASE.replace("STATE", str(tmp_path)))
    argv = ["metro-pd", "--signing-key", str(keys / "signing.pub"), "--encryption-key",
            str(keys / "encryption.pub"), "--write", "--config", str(cfg)]
    assert add(capsys, *argv)[0] == 0
    before = cfg.read_text()
    code, _, err = add(capsys, *argv)
    assert code == 1 and "already in the config" in err and cfg.read_text() == before


def test_openssl_keys_are_read_and_wrong_forms_say_what_is_expected(tmp_path: Path, keys: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    pem = subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519"], capture_output=True, check=True).stdout
    pub_pem = subprocess.run(["openssl", "pkey", "-pubout"], input=pem, capture_output=True, check=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubout", "-outform", "DER"], input=pem, capture_output=True,
                         check=True).stdout
    enc = str(keys / "encryption.pub")
    fps = set()
    for form in (pub_pem.decode(), base64.b64encode(der).decode(), base64.b64encode(der[-32:]).decode()):
        code, out, err = add(capsys, "x", "--signing-key", form, "--encryption-key", enc)
        assert code == 0, err
        fps.add(out.splitlines()[1])
    assert len(fps) == 1  # the same key, whichever form
    code, _, err = add(capsys, "x", "--signing-key", enc, "--encryption-key", enc)
    assert code == 1 and "age recipient" in err and "not a signing key" in err
    code, _, err = add(capsys, "x", "--signing-key", str(keys / "signing.pub"), "--encryption-key",
                       str(keys / "encryption.key"))
    assert code == 1 and "PRIVATE key" in err
    code, _, err = add(capsys, "x", "--signing-key", base64.b64encode(b"\0" * 40).decode(), "--encryption-key", enc)
    assert code == 1 and "40 bytes" in err and "minisign public key" in err


def test_a_config_with_an_openssl_der_key_gets_a_hint() -> None:
    der = bytes.fromhex("302a300506032b6570032100") + bytes(32)
    text = ("footage_requests:\n  agencies:\n    pd:\n      name: PD\n"
            f"      signing_key: {base64.b64encode(der).decode()}\n"
            f"      encryption_key: {base64.b64encode(bytes(32)).decode()}\n")
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, "c.yaml")
    message = str(caught.value)
    assert "c.yaml:5:" in message and "decodes to 44 bytes" in message and "tail -c 32" in message


def test_keys_show_draws_a_qr_code(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(BASE.replace("STATE", str(tmp_path / "state")))
    assert main(["keys", "show", "--qr", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "fingerprint:" in out and "█" in out  # the QR code's blocks, after the text
    real_import = builtins.__import__

    def no_segno(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "segno":
            raise ImportError("No module named 'segno'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_segno)
    assert main(["keys", "show", "--qr", "--config", str(cfg)]) == 1
    captured = capsys.readouterr()
    assert "fingerprint:" in captured.out and "pip install segno" in captured.err


def test_a_full_disk_while_writing_the_config_leaves_it_as_it_was(tmp_path: Path, keys: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import errno
    import os

    cfg = tmp_path / "config.yaml"
    cfg.write_text(BASE.replace("STATE", str(tmp_path / "state")))
    before = cfg.read_text()

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    code, _, err = add(capsys, "metro-pd", "--signing-key", str(keys / "signing.pub"), "--encryption-key",
                       str(keys / "encryption.pub"), "--write", "--config", str(cfg))
    assert code == 1 and "No space left" in err
    assert cfg.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "keys"]


def test_a_config_that_would_not_load_after_the_edit_is_not_written(tmp_path: Path, keys: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(BASE.replace("STATE", str(tmp_path / "state")) + "mqtt:\n  porr: 1\n")  # already broken
    before = cfg.read_text()
    code, _, err = add(capsys, "metro-pd", "--signing-key", str(keys / "signing.pub"), "--encryption-key",
                       str(keys / "encryption.pub"), "--write", "--config", str(cfg))
    assert code == 78 and "mqtt.porr" in err
    assert cfg.read_text() == before
