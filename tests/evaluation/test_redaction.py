"""`eval redaction` on a real video through the real export path: the JSON it reports, a deliberately unblurred
export counted as leaking every reference face, the reference detector in another process (its protocol, and
the one-line errors when that process is missing, lacks dlib or dies), and the owner's state dir untouched."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.cli import main
from edge.errors import EdgeError
from edge.evaluation.redaction import SubprocessReference, detect_near, iou, unchanged
from edge.footage.redact import blur_boxes

CLIP = Path("video") / "face_recognition_short_hamilton_clip.mp4"
FRAMES = 6
FIELDS = {
    "video", "reference", "reference_independent", "frames", "fps", "width", "height", "duration_s", "unblurred",
    "reference_faces", "frames_with_reference_face", "leaked_faces", "leaked_detected", "leaked_unchanged",
    "leaked_per_reference_face_pct", "frames_with_leak", "largest_leaked_box_px", "snapshot_reference_faces",
    "snapshot_leaked_faces", "export_s", "export_cpu_s", "export_min_per_video_min", "check_refused", "meets_targets",
    "leaks", "frames_checked",
}


@pytest.fixture()
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DOORBELL_EDGE_STATE_DIR", str(tmp_path / "state"))
    cfg = tmp_path / "config.yaml"
    cfg.write_text("mqtt:\n  enabled: false\n")
    monkeypatch.setenv("DOORBELL_EDGE_CONFIG", str(cfg))
    return tmp_path / "state"


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, Any]]:
    assert main(["eval", "redaction", *args, "--json"]) == 0
    out: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
    return out


def test_redacted_and_unblurred_exports_of_a_real_video(
    data: Path, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    video = str(data / CLIP)
    (baseline,) = run_json(capsys, video, "--frames", str(FRAMES), "--unblurred")
    (redacted,) = run_json(capsys, video, "--frames", str(FRAMES))
    for result in (baseline, redacted):
        assert set(result) == FIELDS
        assert result["frames"] == FRAMES and (result["width"], result["height"]) == (640, 360)
        assert result["fps"] == 29.97 and result["duration_s"] == pytest.approx(FRAMES / 29.97, abs=1e-3)
        assert "fallback" in result["reference"]  # no --reference-python: labelled as the weaker reference
        assert result["export_s"] > 0 and result["export_min_per_video_min"] > 0
    assert baseline["check_refused"] is None  # the owner's unblur: nothing for the check to refuse
    # Both runs saw the same recorded frames, so the reference found the same faces in them.
    assert baseline["reference_faces"] == redacted["reference_faces"] > 0
    # The owner's explicit unblur: every reference face is in the export, found again and pixel-for-pixel there.
    assert baseline["unblurred"] and not redacted["unblurred"]
    assert baseline["leaked_faces"] == baseline["leaked_unchanged"] == baseline["reference_faces"]
    assert baseline["leaked_per_reference_face_pct"] == 100.0
    assert baseline["frames_with_leak"] == baseline["frames_with_reference_face"]
    assert baseline["largest_leaked_box_px"] == max(leak["width"] for leak in baseline["leaks"]) > 0
    assert baseline["snapshot_leaked_faces"] == baseline["snapshot_reference_faces"] > 0
    assert not baseline["meets_targets"]
    # Redaction changes the picture: fewer leaks than the unblurred export, and leaks are listed widest first.
    assert redacted["leaked_faces"] < baseline["leaked_faces"]
    assert redacted["leaked_unchanged"] < baseline["leaked_unchanged"]
    widths = [leak["width"] for leak in redacted["leaks"]]
    assert widths == sorted(widths, reverse=True)
    # The evaluation records into a scratch state dir of its own: the owner's state dir gets no clip or export.
    assert not state.exists() or not any(p.suffix in (".mp4", ".webm", ".bundle") for p in state.rglob("*"))


def test_the_text_report_names_the_reference_and_the_targets(
    data: Path, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["eval", "redaction", str(data / CLIP), "--frames", "2", "--unblurred"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("reference: ") and "fallback" in out
    assert "face_recognition_short_hamilton_clip.mp4" in out and "targets (issue 13)" in out and "NOT met" in out


def fake_python(tmp_path: Path, body: str) -> Path:
    """An executable standing in for another venv's python that speaks the reference protocol."""
    path = tmp_path / "fake-python"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def test_the_reference_process_protocol(data: Path, state: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    box = [100, 60, 200, 150]  # big enough that the export is searched whole (no crop to shift its answer)
    python = fake_python(tmp_path, 'echo \'{"ready": "fake reference"}\'\n'
                                   f'while read line; do test -s "$line" && echo \'{{"boxes": [{box}]}}\'; done\n')
    (result,) = run_json(capsys, str(data / CLIP), "--frames", "3", "--unblurred", "--reference-python", str(python))
    assert result["reference"] == f"fake reference (in {python})" and result["reference_independent"]
    assert result["reference_faces"] == result["leaked_faces"] == result["leaked_detected"] == 3
    assert result["snapshot_reference_faces"] == result["snapshot_leaked_faces"] == 1
    assert result["largest_leaked_box_px"] == 200 and result["frames_checked"] == 3
    # --every 2: the export holds all 3 frames, the reference looks at frames 0 and 2 (and the snapshot)
    (sampled,) = run_json(capsys, str(data / CLIP), "--frames", "3", "--unblurred", "--every", "2",
                          "--reference-python", str(python))
    assert sampled["frames"] == 3 and sampled["frames_checked"] == 2 and sampled["reference_faces"] == 2
    assert [leak["frame"] for leak in sampled["leaks"]] == [0, 2]
    assert all(leak["box"] == box and leak["detected_iou"] == 1.0 for leak in result["leaks"])


def _one_line_error(capsys: pytest.CaptureFixture[str], args: list[str]) -> str:
    assert main(["eval", "redaction", *args]) != 0
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_reference_errors_are_one_line(data: Path, state: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    video = str(data / CLIP)
    missing = tmp_path / "no-venv" / "bin" / "python"
    err = _one_line_error(capsys, [video, "--reference-python", str(missing)])
    assert str(missing) in err and "no such file" in err
    # This venv has no face_recognition: the reference python is named with what it lacks.
    if not _importable("face_recognition"):
        err = _one_line_error(capsys, [video, "--reference-python", sys.executable])
        assert sys.executable in err and "face_recognition" in err
    err = _one_line_error(capsys, [str(tmp_path / "nothing.mp4")])
    assert "nothing.mp4: no such video file" in err
    err = _one_line_error(capsys, [video, "--reference", "haar"])
    assert "--reference needs --reference-python" in err


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def test_a_reference_process_that_dies_is_named_with_its_exit_status(tmp_path: Path) -> None:
    python = fake_python(tmp_path, 'echo \'{"ready": "dies"}\'\nexit 3\n')
    reference = SubprocessReference(python)
    try:
        with pytest.raises(EdgeError, match=r"ended \(exit status 3\)"):
            reference.detect(np.zeros((20, 20, 3), np.uint8))
    finally:
        reference.close()
    assert not reference._dir.exists()  # the frames handed over are deleted


def test_unchanged_and_iou() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    box = (40, 30, 48, 48)
    assert unchanged(image, image.copy(), box)[0]
    noisy = np.clip(image.astype(int) + rng.integers(-2, 3, image.shape), 0, 255).astype(np.uint8)
    assert unchanged(image, noisy, box)[0]  # re-encoding noise is still "unchanged"
    assert not unchanged(image, blur_boxes(image, [box]), box)[0]  # the redactor's blur is not
    assert iou(box, box) == 1.0 and iou(box, (200, 200, 10, 10)) == 0.0
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)


class _Recorder:
    """A reference that finds one face at a fixed place of whatever image it is given, and notes its size."""

    name, independent = "recorder", True

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def detect(self, image: np.ndarray) -> list[tuple[int, int, int, int]]:
        self.shapes.append(image.shape)
        return [(20, 20, 20, 20)]

    def close(self) -> None:
        pass


def test_the_export_is_searched_around_the_reference_faces_in_image_coordinates() -> None:
    image = np.zeros((720, 1280, 3), np.uint8)
    ref = _Recorder()
    assert detect_near(ref, image, [(600, 300, 20, 20)]) == [(600, 300, 20, 20)]  # crop from (580, 280)
    assert ref.shapes == [(60, 60, 3)]
    assert detect_near(ref, image, [(0, 0, 600, 400)]) == [(20, 20, 20, 20)]  # most of the frame: searched whole
    assert ref.shapes[-1] == (720, 1280, 3)


def test_a_refusal_by_the_check_is_reported_and_the_redaction_still_measured(data: Path, tmp_path: Path) -> None:
    """A redactor that blurs nothing and a check that always fires: the device ships nothing (reported), and the
    eval exports again with the check off to count what that redaction leaves (every reference face)."""
    from edge.config import Config
    from edge.evaluation.redaction import evaluate_video, fallback_reference
    from edge.footage.redact import ExportFinders

    finders = ExportFinders(lambda image: [], lambda image: [(10, 10, 30, 30)], ("nothing", "always"))
    reference = fallback_reference()
    try:
        result = evaluate_video(Config.model_validate({"mqtt": {"enabled": False}}), data / CLIP, reference,
                                max_frames=3, find_faces=finders)  # type: ignore[arg-type]
    finally:
        reference.close()
    assert result.check_refused is not None and "export refused" in result.check_refused
    assert "always" in result.check_refused and not result.meets_targets
    assert result.reference_faces > 0 and result.leaked_faces == result.leaked_unchanged == result.reference_faces
