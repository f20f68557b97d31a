"""Makes tests/compat/state-68299a3.tar.gz and tests/compat/expected/: a state dir written by the code of commit
68299a3 (before the issue 14 restructuring), and what that code's CLI said about it, for test_old_state.py.

How it was made (from the repository root; the old tree must be the one imported, the script checks):

    git worktree add /tmp/old-68299a3 68299a3
    PYTHONPATH=/tmp/old-68299a3 /work/main/.venv/bin/python tests/compat/make_state.py --shared-data ../shared/data
    git worktree remove /tmp/old-68299a3

What is in it (`fixture/` in the archive): `config.yaml` (state_dir `state`, relative to the config), the state dir
and `agency.key` (the test agency's X25519 identity, to verify the export). The state was written by the old code
with its wall clock pinned (SystemClock.now and the few `datetime.now` calls of the commands used), from
2026-03-10T12:00Z on: an event journal with 7 events (4 acknowledged by the MQTT consumer, 3 still waiting), two
3-second 160x120 clips of 2026-03-08 made by the old clip store and encoder (`write_test_clip`), a manual hold on
clip A until 2099 and a preservation request's 90-day hold on clip B (lapsed long before any test runs), one face
enrolled with `faces enroll` (its consent record; the photo is gallery/facenet_pytorch/test_images/paul_rudd/1.jpg,
stored only as the old code stores it), a warrant request submitted, approved for clip A and exported
(`requests submit | approve | export`) with fixed test keys (bytes(range(...)), as tests/footage/factory.py), and
the audit log all of that wrote. Nothing random matters to the tests: ids the old code draws at random and the
export's encryption differ from one run of this script to the next, the logical content does not.

Then the old CLI is run as subprocesses on an unpacked copy, in the order test_old_state.py runs them with the new
code, and the outputs are saved in expected/ with the copy's root replaced by `<ROOT>`: `check-config`, `events
list`, `clips list`, `faces list`, `requests list`, `requests show`, `audit verify`, `exports verify`, then a
daemon run (`run --for 8`, demo camera) and `clips list` / `events list` / `audit verify` / `clips show` (the held
clip) after it.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
ARCHIVE = HERE / "state-68299a3.tar.gz"
EXPECTED = HERE / "expected"
T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)  # the pinned wall clock when the script starts
CLIP_DAY = T0 - timedelta(days=2)  # the incident: clips and the events around them
CLIP_A = CLIP_DAY.replace(hour=11, minute=40, second=10)
CLIP_B = CLIP_DAY.replace(hour=11, minute=50)
W, H, FPS, SECONDS = 160, 120, 10.0, 3
PHOTO = "gallery/facenet_pytorch/test_images/paul_rudd/1.jpg"
AGENCY_SEED, COURT_SEED, AGENCY_BOX_SEED, DEVICE_SEED = 0, 1, 3, 4  # bytes(range(seed, seed + 32))
EVENTS_UNTIL = "2026-03-11T00:00:00Z"  # every event of the fixture is before this, the daemon's after it
EVENTS_SINCE = "2026-03-01T00:00:00Z"


class Pinned:
    """The wall clock the old code sees while the script writes the state; moved by hand."""

    now = T0

    @classmethod
    def advance(cls, seconds: float) -> None:
        cls.now += timedelta(seconds=seconds)


def pin_the_clock() -> None:
    """SystemClock (every store, desk and journal of the old code) and the commands' own datetime.now calls."""
    import edge.events_cli
    import edge.vision.cli

    import edge.clock
    import edge.vision.gallery

    class PinnedDatetime(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> PinnedDatetime:  # type: ignore[override]
            value = Pinned.now if tz is None else Pinned.now.astimezone(tz)
            return cls.fromtimestamp(value.timestamp(), value.tzinfo)

    edge.clock.SystemClock.now = lambda self: Pinned.now  # type: ignore[method-assign]
    edge.clock.SystemClock.synchronized = lambda self: True  # type: ignore[attr-defined]  # a synced device
    for module in (edge.events_cli, edge.vision.cli, edge.vision.gallery):
        module.datetime = PinnedDatetime  # type: ignore[attr-defined]


def key(seed: int) -> Any:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.from_private_bytes(bytes(range(seed, seed + 32)))


def z(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def config_data() -> dict[str, Any]:
    from nacl.public import PrivateKey

    from edge.footage.request import public_b64

    box = PrivateKey(bytes(range(AGENCY_BOX_SEED, AGENCY_BOX_SEED + 32)))
    return {
        "device": {"id": "compatbell"},
        "cameras": {"front_door": {"source": "demo", "width": W, "height": H, "fps": FPS}},
        "mqtt": {"enabled": False},
        "storage": {"state_dir": "state"},
        # The fixture's events are of 2026-03: kept for the longest the config allows (until 2036) so a device
        # whose clock is synchronised does not age them away before the test looks.
        "events": {"keep_days": 3650},
        "recording": {"clock_trust": "always"},
        # Every fixture clip is past its age, so a retention sweep deletes what no hold keeps; no grace period
        # for the months between the fixture's times and the test's, no free-space target that depends on the disk.
        "retention": {"motion_days": 1, "person_days": 1, "ring_days": 1, "clock_grace_hours": 0,
                      "min_free_mb": 0},
        "footage_requests": {
            "agencies": {"metro-pd": {"name": "Metro Police", "signing_key": public_b64(key(AGENCY_SEED)),
                                      "encryption_key": base64.b64encode(bytes(box.public_key)).decode()}},
            "trusted_courts": {"district-7": {"name": "District Court 7", "signing_key": public_b64(key(COURT_SEED))}},
        },
    }


def install_device_key(state: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    from edge.footage.keys import key_path

    path = key_path(state)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    pem = key(DEVICE_SEED).private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)


def frames(seed: int) -> list[np.ndarray]:
    """A grey scene with a moving block: tiny, but a real video the old encoder compresses."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(int(FPS * SECONDS)):
        image = np.full((H, W, 3), 80 + seed * 20, np.uint8)
        image[40:80, 10 + i * 3 : 40 + i * 3] = rng.integers(0, 255, 3)
        out.append(image)
    return out


def write_events(config: Any) -> None:
    from edge.journal import MQTT
    from edge.journal_files import open_journal

    from edge.clock import FakeClock
    from edge.events import Event

    made = [
        ("system", None, T0 - timedelta(days=3), {"status": "started"}),
        ("motion_start", "front_door", CLIP_A, {"score": 0.41}),
        ("ring", "front_door", CLIP_A + timedelta(seconds=1), {"source": "button"}),
        ("motion_end", "front_door", CLIP_A + timedelta(seconds=3), {}),
        ("motion_start", "front_door", CLIP_B, {"score": 0.22}),
        ("face", "front_door", CLIP_B + timedelta(seconds=1), {"result": "known", "person": "paul",
                                                               "confidence": 0.87}),
        ("motion_end", "front_door", CLIP_B + timedelta(seconds=3), {}),
    ]
    journal = open_journal(config, FakeClock(T0))
    try:
        stamped = [journal.record(Event(kind, camera, ts, fields, id=f"compat-event-{i + 1:02d}"))
                   for i, (kind, camera, ts, fields) in enumerate(made)]
        journal.delivered(MQTT, [int(e.seq or 0) for e in stamped[:4]])  # the broker acknowledged these
        journal.mark_fed(MQTT, stamped[4].id)  # handed to the client, no PUBACK yet
    finally:
        journal.close()


def request_doc(basis: str, request_id: str, start: datetime, end: datetime) -> dict[str, Any]:
    from edge.footage.keys import key_fingerprint

    doc: dict[str, Any] = {
        "request_id": request_id,
        "device": key_fingerprint(key(DEVICE_SEED)),
        "agency": {"id": "metro-pd", "name": "Metro Police", "contact": "records@metro.example"},
        "officer": {"name": "Det. A. Example", "badge": "4411"},
        "legal_basis": basis,
        "case_number": "CR-26-1234",
        "incident": {"description": "Package theft from porch", "time": z(CLIP_A)},
        "issued_at": z(Pinned.now - timedelta(days=1)),
        "expires_at": z(Pinned.now + timedelta(days=6)),
        "scope": {"cameras": ["front_door"], "windows": [{"start": z(start), "end": z(end)}], "data": ["video"]},
    }
    if basis == "warrant":
        doc["issued_by"] = {"court_id": "district-7", "court": "District Court 7", "judge": "Hon. B. Judge"}
    return doc


def write_request(path: Path, doc: dict[str, Any]) -> str:
    from edge.footage.request import sign_document

    path.write_text(json.dumps(sign_document(doc, key(AGENCY_SEED),
                                             key(COURT_SEED) if doc["legal_basis"] == "warrant" else None)))
    return str(path)


def old_cli(*argv: str) -> dict[str, Any]:
    """The old `doorbell-edge` in this process (pinned clock); its --json output."""
    import contextlib
    import io

    from edge.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(argv))
    if code != 0:
        raise SystemExit(f"old doorbell-edge {' '.join(argv)} exited {code}: {out.getvalue()}")
    return json.loads(out.getvalue()) if "--json" in argv else {}


def build(root: Path, shared_data: Path) -> None:
    from edge.clipstore import ClipStore, write_test_clip

    from edge.clock import SystemClock
    from edge.config_load import load_config

    state = root / "state"
    state.mkdir(parents=True, mode=0o700)
    cfg = root / "config.yaml"
    cfg.write_text(yaml.safe_dump(config_data(), sort_keys=False))
    config = load_config(cfg)
    install_device_key(state)
    write_events(config)

    store = ClipStore(state, SystemClock())
    a = write_test_clip(store, "front_door", CLIP_A, frames(1), FPS, [("compat-event-03", "ring")])
    b = write_test_clip(store, "front_door", CLIP_B, frames(2), FPS, [("compat-event-06", "face")])
    store.hold(clip_ids=[a.id], until=datetime(2099, 1, 1, tzinfo=UTC), reason="owner hold",
               reference="owner: the broken fence")

    Pinned.advance(600)
    old_cli("faces", "enroll", "paul", str(shared_data / PHOTO), "--consent-by", "Paul (self)",
            "--consent-date", "2026-03-09", "--config", str(cfg))

    Pinned.advance(600)
    window = (CLIP_DAY.replace(hour=11, minute=30), CLIP_DAY.replace(hour=12, minute=0))
    warrant = write_request(root / "warrant.json", request_doc("warrant", "MPD-2026-0001", *window))
    request = old_cli("requests", "submit", warrant, "--config", str(cfg), "--json")["id"]
    Pinned.advance(600)
    old_cli("requests", "approve", request, "--clips", a.id, "--config", str(cfg), "--json")
    Pinned.advance(60)
    old_cli("requests", "export", request, "--config", str(cfg), "--json")

    Pinned.advance(600)
    hold_window = (CLIP_B - timedelta(minutes=1), CLIP_B + timedelta(minutes=1))
    preservation = write_request(root / "preservation.json",
                                 request_doc("preservation", "MPD-2026-0002", *hold_window))
    old_cli("requests", "submit", preservation, "--config", str(cfg), "--json")
    for name in ("warrant.json", "preservation.json"):
        (root / name).unlink()

    from nacl.public import PrivateKey

    identity = root / "agency.key"
    identity.write_text(base64.b64encode(bytes(PrivateKey(bytes(range(AGENCY_BOX_SEED, AGENCY_BOX_SEED + 32)))))
                        .decode())
    identity.chmod(0o600)
    print(f"clip A (held) {a.id}, clip B {b.id}, request {request}")


# --- what the old CLI says about the fixture (run by test_old_state.py the same way with the new code) ----------

def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOORBELL_EDGE")}
    env.update(TZ="UTC", LC_ALL="C.UTF-8", **(extra or {}))
    return env


def run_cli(root: Path, *argv: str, env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge", *argv], cwd=root, env=env or cli_env(), text=True,
                          capture_output=True, timeout=timeout, check=False)


def steps(root: Path, bundle: str | None, fingerprint: str) -> list[tuple[str, list[str]]]:
    """(name, argv) of the read-only commands, in order; `bundle` the export's path under root, `fingerprint` the
    device key's as `keys show` printed it."""
    cfg = str(root / "config.yaml")
    out = [
        ("check-config", ["check-config", "--config", cfg]),
        ("events-list", ["events", "list", "--json", "--since", EVENTS_SINCE, "--until", EVENTS_UNTIL,
                         "--config", cfg]),
        ("events-list-text", ["events", "list", "--since", EVENTS_SINCE, "--until", EVENTS_UNTIL, "--config", cfg]),
        ("clips-list", ["clips", "list", "--json", "--config", cfg]),
        ("clips-list-text", ["clips", "list", "--config", cfg]),
        ("faces-list", ["faces", "list", "--json", "--config", cfg]),
        ("requests-list", ["requests", "list", "--json", "--config", cfg]),
        ("audit-verify", ["audit", "verify", "--config", cfg]),
    ]
    if bundle is not None:
        out.append(("exports-verify", ["exports", "verify", str(root / bundle), "--identity",
                                       str(root / "agency.key"), "--device-fingerprint", fingerprint]))
    return out


def record_expected(archive: Path) -> None:
    shutil.rmtree(EXPECTED, ignore_errors=True)
    EXPECTED.mkdir()
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        root = Path(tmp) / "fixture"
        bundles = sorted((root / "state").rglob("*.bundle")) + sorted((root / "state").rglob("*.tar*"))
        bundle = str(bundles[0].relative_to(root)) if bundles else None

        def save(name: str, result: subprocess.CompletedProcess[str]) -> None:
            body = {"argv": [a.replace(str(root), "<ROOT>") for a in result.args[3:]], "code": result.returncode,
                    "stdout": result.stdout.replace(str(root), "<ROOT>"),
                    "stderr": result.stderr.replace(str(root), "<ROOT>")}
            (EXPECTED / f"{name}.json").write_text(json.dumps(body, indent=2) + "\n")
            print(f"{name}: exit {result.returncode}")

        keys = run_cli(root, "keys", "show", "--json", "--config", str(root / "config.yaml"))
        save("keys-show", keys)
        for name, argv in steps(root, bundle, json.loads(keys.stdout)["fingerprint"]):
            save(name, run_cli(root, *argv))
        ids = [r["id"] for r in json.loads(json.loads((EXPECTED / "requests-list.json").read_text())["stdout"])]
        for i, request in enumerate(ids):
            save(f"requests-show-{i + 1}", run_cli(root, "requests", "show", request, "--json", "--config",
                                                   str(root / "config.yaml")))
        save("daemon-run", run_cli(root, "run", "--config", str(root / "config.yaml"), "--for", "8"))
        cfg = str(root / "config.yaml")
        save("after-clips-list", run_cli(root, "clips", "list", "--json", "--config", cfg))
        save("after-events-list", run_cli(root, "events", "list", "--json", "--since", EVENTS_SINCE, "--until",
                                          EVENTS_UNTIL, "--config", cfg))
        save("after-audit-verify", run_cli(root, "audit", "verify", "--config", cfg))
        held = json.loads(json.loads((EXPECTED / "clips-list.json").read_text())["stdout"].splitlines()[0])["id"]
        save("after-clips-show", run_cli(root, "clips", "show", held, "--json", "--config", cfg))
        (EXPECTED / "bundle.txt").write_text(f"{bundle}\n")


def scrub_faces(faces: Path) -> None:
    """Nothing of ../shared goes into the repository: each enrolled person's chip becomes a plain grey 150x150 JPEG
    and each template a random vector of the same shape and length. The files stay where and as the old code wrote
    them (names, modes, shapes), which is all the newer code reads back."""
    import cv2

    rng = np.random.default_rng(68299)
    for chip in faces.glob("*/photos/*.jpg"):
        _ok, jpeg = cv2.imencode(".jpg", np.full((150, 150, 3), 128, np.uint8))
        chip.write_bytes(jpeg.tobytes())
    for path in faces.glob("*/templates.npy"):
        old = np.load(path)
        new = rng.standard_normal(old.shape).astype(old.dtype)
        new *= np.linalg.norm(old, axis=-1, keepdims=True) / np.linalg.norm(new, axis=-1, keepdims=True)
        with open(path, "wb") as handle:
            np.save(handle, new)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared-data", type=Path, required=True, help="the shared data folder (gallery/)")
    args = parser.parse_args()
    import edge

    if not Path(edge.__file__).resolve().is_relative_to(Path("/tmp/old-68299a3").resolve()):
        raise SystemExit(f"edge is imported from {edge.__file__}, not the 68299a3 worktree: set PYTHONPATH")
    pin_the_clock()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "fixture"
        build(root, args.shared_data.resolve())
        scrub_faces(root / "state" / "faces")
        with tarfile.open(ARCHIVE, "w:gz") as tar:
            tar.add(root, arcname="fixture")
    print(f"wrote {ARCHIVE} ({ARCHIVE.stat().st_size} bytes)")
    record_expected(ARCHIVE)


if __name__ == "__main__":
    main()
