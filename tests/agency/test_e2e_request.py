"""The request half of issue 15 end to end, the two parties sharing nothing but public keys and fingerprints:
the agency makes its keys (its own process, its own folder); the owner adds the agency from the public key files
and reads out the doorbell's fingerprint; the agency writes a request from the template, checks and signs it;
the owner evaluates and submits it and gets the decision the rules give, with the clip in scope listed.
(The bundle half, export -> `bundle open`, is tests/agency/test_bundle*.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import yaml

from edge.cli import main
from edge.clock import SystemClock
from edge.recording.store import ClipStore
from tests.clips import write_test_clip

from .tools import fill_template

REPO = Path(__file__).parents[2]


def agency(*argv: str) -> subprocess.CompletedProcess[str]:
    """The agency's tool as the agency runs it: its own process (the console script's module)."""
    return subprocess.run([sys.executable, "-m", "edge.agency.cli", *argv], capture_output=True, text=True,
                          cwd=REPO)


def owner(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def z(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_agency_keygen_owner_adds_agency_writes_checks_signs_owner_decides(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home, police = tmp_path / "home", tmp_path / "police"
    home.mkdir()
    police.mkdir()
    # The owner's doorbell: a config, one recorded clip two hours ago, the device key.
    state = home / "state"
    now = datetime.now(UTC).replace(microsecond=0)
    clip_start = now - timedelta(hours=2)
    frames = [np.full((48, 64, 3), 40 * i, np.uint8) for i in range(4)]
    clip = write_test_clip(ClipStore(state, SystemClock()), "front_door", clip_start, frames, 2.0)
    cfg = home / "config.yaml"
    cfg.write_text(f"# the owner's config\ncameras:\n  front_door: {{}}\nmqtt:\n  enabled: false\n"
                   f"storage:\n  state_dir: {state}\n")
    code, out, err = owner(capsys, "keys", "show", "--json", "--config", str(cfg))
    assert code == 0, err
    device_fp = json.loads(out)["fingerprint"]  # read out to the agency on the phone

    # 1. The agency makes its keys and hands over the two public files.
    done = agency("keygen", str(police / "keys"))
    assert done.returncode == 0, done.stderr
    printed_fps = [line.split()[1] for line in done.stdout.splitlines() if line.strip().startswith("fingerprint:")]
    handed = home / "from-agency"
    handed.mkdir()
    for name in ("signing.pub", "encryption.pub"):
        (handed / name).write_bytes((police / "keys" / name).read_bytes())

    # 2. The owner adds the agency and compares the fingerprints it shows with the ones the agency reads out.
    code, out, err = owner(capsys, "agencies", "add", "metro-pd", "--name", "Metro Police", "--signing-key",
                           str(handed / "signing.pub"), "--encryption-key", str(handed / "encryption.pub"),
                           "--write", "--config", str(cfg))
    assert code == 0, err
    shown = "".join(out.split())
    assert all(fp in shown for fp in printed_fps) and len(printed_fps) == 2
    assert "# the owner's config" in cfg.read_text()

    # 3. The agency writes the request from the template, checks it, signs it.
    done = agency("request", "new", "--template", "--device", device_fp, "--agency", "metro-pd")
    assert done.returncode == 0, done.stderr
    request = police / "request.yaml"
    request.write_text(fill_template(done.stdout, {
        "request_id": "metro-pd-2026-0042", "name": "Metro Police", "contact": '"+1 555 0100"',
        "badge": '"4411"', "case_number": "CR-26-42", "description": "parcel taken from the porch",
        "time": f'"{z(clip_start)}"', "start": f'"{z(clip_start - timedelta(minutes=10))}"',
        "end": f'"{z(clip_start + timedelta(minutes=10))}"',
    }))
    done = agency("request", "check", str(request))
    assert done.returncode == 0, done.stderr
    done = agency("request", "sign", str(request), "--key", str(police / "keys" / "signing.key"))
    assert done.returncode == 0, done.stderr

    # 4. The files reach the owner (any channel: the signature covers every byte).
    inbox = home / "inbox"
    inbox.mkdir()
    for name in ("request.yaml", "request.yaml.minisig"):
        (inbox / name).write_bytes((police / name).read_bytes())
    code, out, err = owner(capsys, "requests", "evaluate", str(inbox / "request.yaml"), "--json", "--config",
                           str(cfg))
    assert code == 0, err
    evaluated = json.loads(out)
    assert evaluated["decision"] == "owner_review"
    assert [r["code"] for r in evaluated["reasons"]] == ["CONSENT_REQUIRED"]
    assert [c["clip"] for c in evaluated["clips"]] == [clip.id]
    code, out, err = owner(capsys, "requests", "submit", str(inbox / "request.yaml"), "--json", "--config", str(cfg))
    assert code == 0, err
    submitted = json.loads(out)
    assert (submitted["decision"], submitted["reasons"], submitted["clips"]) == \
        (evaluated["decision"], evaluated["reasons"], evaluated["clips"])
    code, out, _ = owner(capsys, "requests", "show", submitted["id"], "--json", "--config", str(cfg))
    assert code == 0 and json.loads(out)  # stored: the envelope with the signature, shown from the store

    # The same file changed on the way is refused, naming the signature.
    (inbox / "request.yaml").write_text((police / "request.yaml").read_text().replace("porch", "porch and garden"))
    code, out, _ = owner(capsys, "requests", "evaluate", str(inbox / "request.yaml"), "--json", "--config", str(cfg))
    assert [r["code"] for r in json.loads(out)["reasons"]] == ["BAD_SIGNATURE"]
    # and a request for another doorbell (the agency typed the wrong fingerprint) is WRONG_DEVICE
    assert yaml.safe_load((police / "request.yaml").read_text())["device"] == device_fp
    wrong = police / "wrong.yaml"
    wrong.write_text(request.read_text().replace(device_fp, "0123456789abcdef").replace("0042", "0043"))
    done = agency("request", "sign", str(wrong), "--key", str(police / "keys" / "signing.key"))
    assert done.returncode == 0, done.stderr
    code, out, _ = owner(capsys, "requests", "evaluate", str(wrong), "--json", "--config", str(cfg))
    assert [r["code"] for r in json.loads(out)["reasons"]] == ["WRONG_DEVICE"]
