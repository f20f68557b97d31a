"""Issue 15 end to end, bundle half included, the two parties sharing nothing but public keys and fingerprints:
agency keygen -> owner adds the agency -> the agency fills, checks and signs a request -> the owner submits,
approves, exports -> the agency opens the bundle with Debian's age, tar, minisign and sha256sum alone, and
separately with `doorbell-edge-agency bundle open`, and gets exactly the in-scope frames, the face blurred."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from edge.cli import main
from edge.clock import SystemClock
from edge.config_load import load_config
from edge.footage.desk import FootageDesk
from edge.recording.codec import decode_frames
from edge.recording.store import ClipStore
from tests.clips import write_test_clip

from .tools import fill_template, tool

REPO = Path(__file__).parents[2]
W, H, FPS = 160, 120, 10.0
FACE = (40, 30, 40, 40)  # x, y, w, h of the drawn "face" (a checkerboard the fake finder reports)


def agency(*argv: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge.agency.cli", *argv], capture_output=True, text=True,
                          cwd=REPO if cwd == REPO else cwd)


def owner(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def z(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def frames(n: int) -> list[np.ndarray]:
    out = []
    x, y, w, h = FACE
    checker = (np.indices((h, w)).sum(0) // 4 % 2 * 255).astype(np.uint8)
    for i in range(n):
        image = np.full((H, W, 3), 100, np.uint8)
        image[y:y + h, x:x + w] = checker[..., None]
        for bit in range(5):  # the frame's index in binary, five 12x12 blocks: frames are told apart after coding
            image[80:92, 90 + 12 * bit:102 + 12 * bit] = 255 if i >> bit & 1 else 0
        out.append(image)
    return out


def index_of(image: np.ndarray) -> int:
    return sum(1 << bit for bit in range(5) if image[82:90, 92 + 12 * bit:100 + 12 * bit].mean() > 128)


def find_faces(image: np.ndarray) -> list[tuple[int, int, int, int]]:
    return [FACE]  # the fake detector (the real ones are tested in tests/footage/test_redact_export.py)


def run(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, cwd=cwd)


def test_keygen_to_opened_bundle_with_debian_tools_and_the_helper(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    age, minisign, tar, sha256sum = tool("age"), tool("minisign"), tool("tar"), tool("sha256sum")
    home, police = tmp_path / "home", tmp_path / "police"
    home.mkdir()
    police.mkdir()
    state = home / "state"
    clip_start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    recorded = frames(20)  # 2 s; the request's window ends after the first second: frames 0..9 are in scope
    store = ClipStore(state, SystemClock())
    clip = write_test_clip(store, "front_door", clip_start, recorded, FPS)
    cfg = home / "config.yaml"
    cfg.write_text(f"cameras:\n  front_door: {{}}\nmqtt:\n  enabled: false\nstorage:\n  state_dir: {state}\n")
    code, out, err = owner(capsys, "keys", "show", "--json", "--config", str(cfg))
    assert code == 0, err
    shown = json.loads(out)  # given to the agency in advance: fingerprint read out, the key handed over

    done = agency("keygen", str(police / "keys"))
    assert done.returncode == 0, done.stderr
    code, out, err = owner(capsys, "agencies", "add", "metro-pd", "--name", "Metro Police", "--signing-key",
                           str(police / "keys" / "signing.pub"), "--encryption-key",
                           str(police / "keys" / "encryption.pub"), "--write", "--config", str(cfg))
    assert code == 0, err

    done = agency("request", "new", "--template", "--device", shown["fingerprint"], "--agency", "metro-pd")
    assert done.returncode == 0, done.stderr
    request = police / "request.yaml"
    request.write_text(fill_template(done.stdout, {
        "request_id": "metro-pd-2026-0042", "name": "Metro Police", "contact": '"+1 555 0100"',
        "badge": '"4411"', "case_number": "CR-26-42", "description": "parcel taken from the porch",
        "time": f'"{z(clip_start)}"', "start": f'"{z(clip_start - timedelta(minutes=10))}"',
        "end": f'"{z(clip_start + timedelta(seconds=1))}"',
    }))
    done = agency("request", "sign", str(request), "--key", str(police / "keys" / "signing.key"))
    assert done.returncode == 0, done.stderr

    code, out, err = owner(capsys, "requests", "submit", str(request), "--json", "--config", str(cfg))
    assert code == 0, err
    request_id = json.loads(out)["id"]
    code, out, err = owner(capsys, "requests", "approve", request_id, "--config", str(cfg))
    assert code == 0, err
    desk = FootageDesk(load_config(str(cfg)), SystemClock(), clips=store, find_faces=find_faces,
                       emit=lambda event: None, actor="owner")
    result = desk.export(request_id)
    bundle = police / result.path.name  # any channel: it is encrypted and signed
    bundle.write_bytes(result.path.read_bytes())

    # The agency with Debian's tools alone.
    plain = police / "debian"
    plain.mkdir()
    step = run(age, "-d", "-i", str(police / "keys" / "encryption.key"), "-o", str(police / "bundle.tar"),
               str(bundle), cwd=police)
    assert step.returncode == 0, step.stderr
    step = run(tar, "-xf", str(police / "bundle.tar"), "-C", str(plain), cwd=police)
    assert step.returncode == 0, step.stderr
    for name in ("manifest.json", "SHA256SUMS"):
        step = run(minisign, "-V", "-P", shown["minisign"], "-m", name, cwd=plain)
        assert step.returncode == 0 and "Signature and comment signature verified" in step.stdout + step.stderr, \
            step.stdout + step.stderr
        assert "doorbell-edge export" in step.stdout
    step = run(sha256sum, "-c", "--strict", "SHA256SUMS", cwd=plain)
    assert step.returncode == 0, step.stdout + step.stderr
    manifest = json.loads((plain / "manifest.json").read_text())
    videos = [f for f in manifest["files"] if f["kind"] == "video"]
    assert len(videos) == 1 and videos[0]["clip"] == clip.id and videos[0]["faces_blurred"] is True
    assert "OK" in step.stdout and videos[0]["path"] in step.stdout

    # Separately, with the helper: the same files, and what is in them said.
    opened = police / "opened"
    done = agency("bundle", "open", str(bundle), "--identity", str(police / "keys" / "encryption.key"),
                  "--device-key", shown["minisign"], "--out", str(opened))
    assert done.returncode == 0, done.stderr
    for text in ("OK", shown["fingerprint"], "metro-pd-2026-0042", "front_door", "10 frame(s), faces blurred",
                 "OWNER_APPROVED", "release", f"window:     {z(clip_start - timedelta(minutes=10))[:-1]}.000Z"):
        assert text in done.stdout, (text, done.stdout)
    extracted = sorted(p.relative_to(plain) for p in plain.rglob("*") if p.is_file())
    assert sorted(p.relative_to(opened) for p in opened.rglob("*") if p.is_file()) == extracted
    assert all((opened / p).read_bytes() == (plain / p).read_bytes() for p in extracted)

    # Exactly the in-scope frames (0..9, in order), the face pixelated.
    shown_frames = [image for _, image in decode_frames(opened / videos[0]["path"])]
    assert len(shown_frames) == videos[0]["frames"] == 10
    x, y, w, h = FACE
    for index, image in enumerate(shown_frames):
        assert index_of(image) == index, f"exported frame {index} is recorded frame {index_of(image)}"
        assert recorded[index][y:y + h, x:x + w].std() > 100  # the checkerboard face as recorded
        assert image[y + 4:y + h - 4, x + 4:x + w - 4].std() < 40, f"frame {index}: the face is not blurred"
