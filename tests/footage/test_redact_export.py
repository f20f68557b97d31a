"""Exports of a real crowded clip (the arcade video) through the real path: with the shipped finders the
independent check finds no face in any exported frame or snapshot; with redaction deliberately weakened the
check refuses the export, says why, and the audit log records it; the owner's kept region pixelates the rest."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge.clock import FakeClock
from edge.errors import ModelError, RequestError
from edge.footage import redact
from edge.footage.desk import FootageDesk
from edge.footage.exporter import verify_bundle
from edge.footage.redact import ExportFinders, FaceLeak
from edge.recording.codec import decode_frames
from edge.recording.store import ClipStore
from tests.clips import write_test_clip

from .factory import AGENCY_BOX, DEVICE, NOW, config, document, signed

ARCADE = "video/facenet_pytorch_video.mp4"
START = NOW - timedelta(days=2, minutes=20)  # inside the factory document's window
SCOPE = {**document()["scope"], "data": ["video", "snapshots"]}


def arcade_frames(shared_data: Path, count: int) -> list[np.ndarray]:
    """The arcade clip (25 fps, 1920x1080) as a doorbell would record it: 1280x720 at 10 fps."""
    cap = cv2.VideoCapture(str(shared_data / ARCADE))
    frames, index = [], 0
    while len(frames) < count:
        ok, frame = cap.read()
        if not ok:
            break
        if index % 5 in (0, 2):  # 2 of every 5 frames: 25 fps -> 10 fps
            frames.append(cv2.resize(frame, (1280, 720), interpolation=cv2.INTER_AREA))
        index += 1
    cap.release()
    assert len(frames) == count, f"{ARCADE}: only {len(frames)} frames"
    return frames


@pytest.fixture(scope="module")
def shipped() -> ExportFinders:
    from edge.vision import redaction_finders as rf

    return ExportFinders(rf.find_faces(), rf.check_faces(), rf.NAMES)


def released(tmp_path: Path, frames: list[np.ndarray], finders: Any) -> tuple[FootageDesk, str, str]:
    clock = FakeClock(NOW)
    store = ClipStore(tmp_path / "state", clock)
    clip = write_test_clip(store, "front_door", START, frames, 10.0)
    desk = FootageDesk(config(tmp_path / "state"), clock, clips=store, find_faces=finders, emit=lambda e: None)
    request, _ = desk.submit(signed(document("warrant", scope=SCOPE)))
    desk.approve(request)
    return desk, request, clip.id


def exported_images(tmp_path: Path, check: Any) -> list[tuple[str, np.ndarray]]:
    out = []
    for entry in check.manifest["files"]:
        path = tmp_path / Path(entry["path"]).name
        path.write_bytes(check.files[entry["path"]])
        images = [img for _, img in decode_frames(path)] if entry["kind"] == "video" else [cv2.imread(str(path))]
        assert len(images) == entry["frames"]
        out.extend((entry["path"], image) for image in images)
    return out


def test_arcade_export_leaves_no_face_the_check_or_the_detector_finds(shared_data: Path, shipped: ExportFinders,
                                                                      tmp_path: Path) -> None:
    frames = arcade_frames(shared_data, 30)
    faces_before = sum(len(shipped.check(f)) for f in frames[::10])
    assert faces_before >= 10  # a crowded scene: the check does see faces in the recording
    desk, request, clip = released(tmp_path, frames, shipped)
    result = desk.export(request)
    check = verify_bundle(result.path.read_bytes(), AGENCY_BOX, device_fingerprint=DEVICE)
    assert check.ok and check.manifest is not None
    assert {f["clip"] for f in check.manifest["files"]} == {clip}
    images = exported_images(tmp_path, check)
    assert len(images) == 31  # 30 video frames and the snapshot
    from edge.vision.engine import FaceEngine

    detector = FaceEngine.load("int8", 1).detector  # the recognition pipeline's own detector, its own score
    for name, image in images:
        assert shipped.check(image) == [], name  # as decoded by the agency, not only as checked before encoding
        assert detector.detect(image) == [], name
    start = [r for r in desk.audit.records() if r["kind"] == "export_start"][-1]["data"]
    assert start["redaction"] == {"find": shipped.names[0], "check": shipped.names[1]}


def test_weakened_redaction_is_refused_by_the_check(shared_data: Path, shipped: ExportFinders,
                                                    tmp_path: Path) -> None:
    frames = arcade_frames(shared_data, 6)
    weak = ExportFinders(lambda image: [], shipped.check, ("finds nothing (test)", shipped.names[1]))
    desk, request, clip = released(tmp_path, frames, weak)
    with pytest.raises(FaceLeak) as refused:
        desk.export(request)
    message = str(refused.value)
    assert message.startswith("export refused: after redaction the check detector")
    assert f"clip {clip}, frame 0" in message and "nothing was exported" in message and "--keep-region" in message
    record = [r for r in desk.audit.records() if r["kind"] == "export_refused"][-1]["data"]
    assert record["request"] == request and record["clip"] == clip and record["frame"] == 0
    assert record["reason"] == "face_after_redaction" and record["boxes"] and record["check"] == shipped.names[1]
    assert desk.audit.verify().ok
    exports = desk.exporter.exports_dir()
    assert not [p for p in exports.iterdir() if p.name != ".partial"]  # no bundle
    assert not any((exports / ".partial").iterdir())  # and no remains
    assert desk.summary(request)["now"]["decision"] == "release"  # the approval is not used up: retry possible


def test_keep_region_pixelates_outside_and_is_audited(shared_data: Path, shipped: ExportFinders,
                                                      tmp_path: Path) -> None:
    frames = arcade_frames(shared_data, 4)
    nothing = ExportFinders(lambda image: [], shipped.check, ("finds nothing (test)", shipped.names[1]))
    desk, request, _clip = released(tmp_path, frames, nothing)
    keep = (0, 0, 160, 120)  # a corner with no face in it: the rest of the frame is pixelated
    result = desk.export(request, keep=keep)  # passes the check although the finder found nothing
    check = verify_bundle(result.path.read_bytes(), AGENCY_BOX, device_fingerprint=DEVICE)
    assert check.ok
    images = exported_images(tmp_path, check)
    for _name, image in images:
        assert shipped.check(image) == []
    first = images[0][1].astype(int)
    assert np.abs(first[:120, :160] - frames[0][:120, :160].astype(int)).mean() < 8  # kept (encoding noise)
    # outside: flat tiles of 32 px (1280 / 40), i.e. almost no detail left within a tile
    assert np.abs(np.diff(first[200:232, 320:352], axis=1)).mean() < 3
    start = [r for r in desk.audit.records() if r["kind"] == "export_start"][-1]["data"]
    assert start["keep_region"] == list(keep)


def test_an_unloadable_detector_refuses_before_anything_is_started(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> ExportFinders:
        raise ModelError("face_detector_back.tflite: model file missing")

    monkeypatch.setattr(redact, "_provider", broken)
    frames = [np.full((120, 160, 3), 90, np.uint8) for _ in range(3)]
    desk, request, _ = released(tmp_path, frames, None)
    with pytest.raises(RequestError, match=r"cannot blur faces, so nothing is exported: .*model file missing"):
        desk.export(request)
    assert "export_start" not in [r["kind"] for r in desk.audit.records()]


def test_a_mistyped_keep_region_is_named_before_anything_starts(state_dir: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    from edge.cli import main

    assert main(["requests", "export", "fr-00000000", "--keep-region", "10,20,30"]) != 0
    err = capsys.readouterr().err
    assert "--keep-region '10,20,30': expected x,y,w,h in pixels" in err
    assert not (state_dir / "footage").exists()  # no desk, no lock, no audit record
