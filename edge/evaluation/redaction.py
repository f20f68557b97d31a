"""Redaction evaluation: videos recorded into a scratch clip store, exported by the footage desk under a test
warrant the owner approves, and every face a reference detector finds in the recorded frames checked in the
export (still detected there, or its pixels unchanged)."""

from __future__ import annotations

import base64
import json
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.clock import FakeClock
from edge.config import Config, FootageRequestsConfig
from edge.errors import EdgeError
from edge.evaluation.references import (
    Box,
    InProcessReference,
    Reference,
    SubprocessReference,
    fallback_reference,
)
from edge.types import Image

__all__ = ["Box", "InProcessReference", "Reference", "SubprocessReference", "VideoResult", "detect_near",
           "evaluate_video", "export_video", "fallback_reference", "iou", "report_text", "unchanged"]

FindFaces = Callable[[Image], Sequence[Box]]

LEAK_IOU = 0.3  # a reference face counts as leaked when the reference still finds it in the export at this IoU
UNCHANGED_MAD = 4.0  # mean absolute difference (grey levels) under which a box counts as unchanged ...
UNCHANGED_DETAIL = 0.6  # ... while the export keeps this much of the original's fine detail (Laplacian energy)
MAX_LEAKS_LISTED = 50
TARGET_LEAK_PCT = 1.0  # issue 13's acceptance: leaked faces per reference face, at most
TARGET_BOX_PX = 40  # ... and no leaked face box this wide or wider
TARGET_MIN_PER_MIN = 1.0  # ... and at most a minute of export processing per minute of video
CAMERA = "front_door"


# --- measuring ---------------------------------------------------------------------------------------------


def iou(a: Box, b: Box) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _clip(box: Box, image: Image) -> tuple[int, int, int, int]:
    height, width = image.shape[:2]
    x, y, w, h = box
    return max(0, x), max(0, y), min(width, x + w), min(height, y + h)


def unchanged(original: Image, exported: Image, box: Box) -> tuple[bool, float]:
    """Whether the box shows the same pixels in both (up to the export's re-encoding): a small mean difference
    and the fine detail (Laplacian energy) still there. Returns (unchanged, mean absolute difference)."""
    x0, y0, x1, y1 = _clip(box, original)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return False, 0.0
    a = cv2.cvtColor(original[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY).astype(np.float32)
    b = cv2.cvtColor(exported[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY).astype(np.float32)
    mad = float(np.abs(a - b).mean())
    detail_a = float(np.abs(cv2.Laplacian(a, cv2.CV_32F)).mean())
    detail_b = float(np.abs(cv2.Laplacian(b, cv2.CV_32F)).mean())
    kept = detail_b / detail_a if detail_a > 0 else 1.0
    return mad < UNCHANGED_MAD and kept >= UNCHANGED_DETAIL, mad


def detect_near(reference: Reference, image: Image, boxes: Sequence[Box]) -> list[Box]:
    """The reference's detections in the part of `image` around `boxes` (each grown by its size on every side),
    in image coordinates: only faces overlapping a reference box can count, and a 1080p frame upsampled for
    dlib's CNN costs seconds. The whole image when that part is most of it."""
    height, width = image.shape[:2]
    x0 = max(0, min(x - w for x, _, w, _ in boxes))
    y0 = max(0, min(y - h for _, y, _, h in boxes))
    x1 = min(width, max(x + 2 * w for x, _, w, _ in boxes))
    y1 = min(height, max(y + 2 * h for _, y, _, h in boxes))
    if (x1 - x0) * (y1 - y0) > 0.5 * width * height:
        return reference.detect(image)
    return [(x + x0, y + y0, w, h) for x, y, w, h in reference.detect(np.ascontiguousarray(image[y0:y1, x0:x1]))]


@dataclass(frozen=True)
class Leak:
    frame: int  # -1: the exported snapshot
    box: Box  # the reference face in the recorded frame
    detected_iou: float  # best IoU of a reference detection in the export (0: none)
    unchanged: bool
    mad: float

    @property
    def width(self) -> int:
        return self.box[2]


@dataclass
class Tally:
    reference_faces: int = 0
    frames_with_reference_face: int = 0
    leaks: list[Leak] = field(default_factory=list)
    frames_with_leak: int = 0

    frames_checked: int = 0

    def add_frame(self, index: int, original: Image, exported: Image, reference: Reference) -> None:
        self.frames_checked += 1
        faces = reference.detect(original)
        if not faces:
            return
        self.reference_faces += len(faces)
        self.frames_with_reference_face += 1
        found = detect_near(reference, exported, faces)
        leaked = False
        for box in faces:
            best = max((iou(box, other) for other in found), default=0.0)
            same, mad = unchanged(original, exported, box)
            if best >= LEAK_IOU or same:
                self.leaks.append(Leak(index, box, round(best, 3), same, round(mad, 2)))
                leaked = True
        self.frames_with_leak += leaked


@dataclass(frozen=True)
class VideoResult:
    video: str
    reference: str
    frames_checked: int  # frames the reference looked at (every --every'th; the snapshot besides)
    reference_independent: bool
    frames: int
    fps: float
    width: int
    height: int
    duration_s: float
    unblurred: bool
    reference_faces: int
    frames_with_reference_face: int
    leaked_faces: int
    leaked_detected: int
    leaked_unchanged: int
    leaked_per_reference_face_pct: float
    frames_with_leak: int
    largest_leaked_box_px: int
    snapshot_reference_faces: int
    snapshot_leaked_faces: int
    export_s: float
    export_cpu_s: float
    export_min_per_video_min: float
    check_refused: str | None
    meets_targets: bool
    leaks: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- the real export path ----------------------------------------------------------------------------------


def read_video(path: Path, max_frames: int | None = None) -> tuple[float, Iterator[Image]]:
    """The video's frame rate (10 when it does not say) and its frames, streamed (OpenCV reads mp4 and GIF)."""
    if not path.is_file():
        raise EdgeError(f"{path}: no such video file")
    capture = cv2.VideoCapture(str(path))
    ok, first = capture.read()
    if not ok:
        capture.release()
        raise EdgeError(f"{path}: not a readable video")
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    fps = fps if 1.0 <= fps <= 120.0 else 10.0

    def frames() -> Iterator[Image]:
        try:
            image, count = first, 0
            while True:
                if image.ndim == 2:
                    image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
                yield image[: image.shape[0] // 2 * 2, : image.shape[1] // 2 * 2]  # even sizes for the encoder
                count += 1
                if max_frames is not None and count >= max_frames:
                    return
                ok, image = capture.read()
                if not ok:
                    return
        finally:
            capture.release()

    return fps, frames()


def record(store: Any, start: datetime, frames: Iterable[Image], fps: float) -> Any:
    """Record frames into the clip store as the recorder would (the project's encoder), frame i at start + i/fps."""
    from edge.recording.codec import choose_codec, make_encoder

    codec = choose_codec("auto")
    encoder = writer = None
    try:
        for i, image in enumerate(frames):
            if encoder is None or writer is None:
                height, width = image.shape[:2]
                encoder = make_encoder(codec, width, height, fps, 1.0, "medium")
                writer = store.begin(CAMERA, start, codec, width, height)
            for packet in encoder.encode(image, start + timedelta(seconds=i / fps), i / fps):
                writer.write(packet)
    finally:
        if encoder is not None:
            encoder.close()
    ref = writer.finish() if writer is not None else None
    if ref is None:
        raise EdgeError("the video gave no playable frame")
    return ref


@dataclass(frozen=True)
class Exported:
    recorded: Path  # the clip as stored (what the export reads)
    video: Path  # the exported, redacted video taken out of the sealed bundle
    snapshot: Image | None
    seconds: float
    cpu_seconds: float
    frames: int
    refused: str | None  # the export-time check refused the export (the figures are then with the check off)


def export_finders() -> Any:
    """The finders a real export uses: those the shell provided (edge/cli.py), else the same shipped ones."""
    from edge.errors import ModelError
    from edge.footage.redact import ExportFinders, shipped_finders

    try:
        return shipped_finders()
    except ModelError:
        from edge.vision import redaction_finders

        return ExportFinders(redaction_finders.find_faces(), redaction_finders.check_faces(), redaction_finders.NAMES)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _scratch_config(base: Config, state: Path, agency_key: str, court_key: str, box_key: str) -> Config:
    """The evaluation's device: one camera, a scratch state dir, no MQTT, one agency and one court it trusts."""
    rules = FootageRequestsConfig.model_validate({
        "agencies": {"eval": {"name": "Redaction evaluation", "signing_key": agency_key, "encryption_key": box_key}},
        "trusted_courts": {"eval-court": {"name": "Evaluation Court", "signing_key": court_key}},
    })
    return base.model_copy(update={
        "cameras": {CAMERA: next(iter(base.cameras.values()))},
        "storage": base.storage.model_copy(update={"state_dir": state}),
        "mqtt": base.mqtt.model_copy(update={"enabled": False}),
        "footage_requests": rules,
    })


def _warrant(stem: str, now: datetime, start: datetime, end: datetime) -> dict[str, Any]:
    """The test warrant (unsigned): the clip recorded from `start` to `end`, video and snapshots."""
    def z(ts: datetime) -> str:
        return ts.isoformat().replace("+00:00", "Z")

    return {
        "request_id": f"EVAL-{stem[:40]}",
        "agency": {"id": "eval", "name": "Redaction evaluation", "contact": "nobody@eval.invalid"},
        "officer": {"name": "Evaluation", "badge": "0"},
        "legal_basis": "warrant",
        "case_number": "EVAL-1",
        "incident": {"description": "redaction evaluation", "time": z(start)},
        "issued_at": z(now - timedelta(hours=1)),
        "expires_at": z(now + timedelta(days=1)),
        "issued_by": {"court_id": "eval-court", "court": "Evaluation Court", "judge": "Evaluation"},
        "scope": {
            "cameras": [CAMERA],
            "windows": [{"start": z(start - timedelta(seconds=1)), "end": z(end + timedelta(seconds=2))}],
            "data": ["video", "snapshots"],
        },
    }


def export_video(
    base: Config, video: Path, workdir: Path, *, max_frames: int | None = None, unblurred: bool = False,
    find_faces: FindFaces | None = None,
) -> tuple[float, Exported]:
    """Record `video` into a scratch state dir, submit a signed warrant for it, approve it as the owner (with
    --unblur when `unblurred`: the owner's explicit release, the baseline) and export it through FootageDesk;
    returns the video's fps and the exported files. `find_faces` None: the desk's own redaction."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from nacl.public import PrivateKey

    from edge.footage.desk import FootageDesk
    from edge.footage.exporter import verify_bundle
    from edge.footage.keys import device_key, public_key_b64
    from edge.footage.redact import ExportFinders, FaceLeak
    from edge.footage.request import public_b64, sign_document
    from edge.recording.store import ClipStore

    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(days=1)
    state = workdir / "state"
    clock = FakeClock(now)
    store = ClipStore(state, clock)
    fps, frames = read_video(video, max_frames)
    clip = record(store, start, frames, fps)

    agency, court, box = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate(), PrivateKey.generate()
    cfg = _scratch_config(base, state, public_b64(agency), public_b64(court),
                          base64.b64encode(bytes(box.public_key)).decode())
    document = _warrant(video.stem, now, start, clip.end)
    finders: Any = find_faces if find_faces is not None else export_finders()
    desk = FootageDesk(cfg, clock, clips=store, find_faces=finders, emit=lambda _event: None, actor="eval")
    raw = json.dumps(sign_document(document, agency, court)).encode()
    request, decision = desk.submit(raw)
    if decision.decision != "owner_review":
        raise EdgeError(f"eval warrant not accepted ({decision.decision}: {', '.join(decision.codes)})")
    desk.approve(request, unblur=[clip.id] if unblurred else ())
    refused = None
    wall, cpu = time.perf_counter(), _cpu()
    try:
        result = desk.export(request, workdir / "exports")
    except FaceLeak as leak:
        # The device would ship nothing. To still measure what its redaction leaves, the same export is run
        # again (the approval stays unused after a refusal) with the check switched off, and the refusal reported.
        refused = str(leak)
        unchecked = ExportFinders(finders.find, None, (finders.names[0], "none (eval: check off after a refusal)"))
        desk = FootageDesk(cfg, clock, clips=store, find_faces=unchecked, emit=lambda _event: None, actor="eval")
        wall, cpu = time.perf_counter(), _cpu()
        result = desk.export(request, workdir / "exports")
    wall, cpu = time.perf_counter() - wall, _cpu() - cpu
    check = verify_bundle(result.path.read_bytes(), box, public_key_b64(device_key(state)))
    if not check.ok or check.manifest is None:
        raise EdgeError(f"the eval export does not verify: {'; '.join(check.problems)}")
    entries = check.manifest["files"]
    videos = [f for f in entries if f["kind"] == "video"]
    if len(videos) != 1:
        raise EdgeError(f"the eval export holds {len(videos)} videos, expected 1: {check.manifest.get('notes')}")
    out = workdir / ("export" + Path(videos[0]["path"]).suffix)
    out.write_bytes(check.files[videos[0]["path"]])
    snapshot = None
    for entry in entries:
        if entry["kind"] == "snapshots":
            snapshot = cv2.imdecode(np.frombuffer(check.files[entry["path"]], np.uint8), cv2.IMREAD_COLOR)
    return fps, Exported(Path(store.get(clip.id).path), out, snapshot, wall, cpu, int(videos[0]["frames"]), refused)


def evaluate_video(
    base: Config, video: Path, reference: Reference, *, max_frames: int | None = None, unblurred: bool = False,
    find_faces: FindFaces | None = None, keep: Path | None = None, every: int = 1,
) -> VideoResult:
    """Export `video` through the real path and count the reference's faces that survive in the export, on every
    `every`th frame (the export itself always holds them all; dlib's CNN costs seconds of CPU per frame)."""
    from edge.recording.codec import decode_frames

    workdir = Path(tempfile.mkdtemp(prefix="redaction-eval-", dir=keep))
    try:
        fps, exported = export_video(base, video, workdir, max_frames=max_frames, unblurred=unblurred,
                                     find_faces=find_faces)
        tally, snap = Tally(), Tally()
        count, width, height = 0, 0, 0
        originals = decode_frames(exported.recorded)
        for index, ((_, original), (_, redacted)) in enumerate(
                zip(originals, decode_frames(exported.video), strict=True)):
            if index == 0:
                height, width = original.shape[:2]
                if exported.snapshot is not None:
                    snap.add_frame(-1, original, exported.snapshot, reference)
            if index % every == 0:
                tally.add_frame(index, original, redacted, reference)
            count += 1
    except ValueError as exc:  # zip(strict=True): the export does not hold every recorded frame
        raise EdgeError(f"{video}: the export's frames do not line up with the recording: {exc}") from exc
    finally:
        if keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    if count != exported.frames:
        raise EdgeError(f"{video}: {count} frames decoded, the manifest lists {exported.frames}")
    duration = count / fps
    leaks = sorted(tally.leaks, key=lambda leak: (-leak.width, leak.frame))
    pct = 100.0 * len(leaks) / tally.reference_faces if tally.reference_faces else 0.0
    largest = leaks[0].width if leaks else 0
    per_min = exported.seconds / duration if duration > 0 else 0.0
    return VideoResult(
        video=str(video), reference=reference.name, frames_checked=tally.frames_checked,
        reference_independent=reference.independent, frames=count,
        fps=round(fps, 3), width=width, height=height, duration_s=round(duration, 3), unblurred=unblurred,
        reference_faces=tally.reference_faces, frames_with_reference_face=tally.frames_with_reference_face,
        leaked_faces=len(leaks), leaked_detected=sum(1 for leak in leaks if leak.detected_iou >= LEAK_IOU),
        leaked_unchanged=sum(1 for leak in leaks if leak.unchanged),
        leaked_per_reference_face_pct=round(pct, 2), frames_with_leak=tally.frames_with_leak,
        largest_leaked_box_px=largest, snapshot_reference_faces=snap.reference_faces,
        snapshot_leaked_faces=len(snap.leaks), export_s=round(exported.seconds, 3),
        export_cpu_s=round(exported.cpu_seconds, 3), export_min_per_video_min=round(per_min, 3),
        check_refused=exported.refused,
        meets_targets=(pct <= TARGET_LEAK_PCT and largest < TARGET_BOX_PX and not snap.leaks
                       and per_min <= TARGET_MIN_PER_MIN and exported.refused is None),
        leaks=[{"frame": leak.frame, "box": list(leak.box), "width": leak.width, "detected_iou": leak.detected_iou,
                "unchanged": leak.unchanged, "mad": leak.mad} for leak in leaks[:MAX_LEAKS_LISTED]],
    )


def report_text(results: Sequence[VideoResult], out: Any = None) -> None:
    out = out or sys.stdout
    if not results:
        return
    print(f"reference: {results[0].reference}", file=out)
    sampled = [r for r in results if r.frames_checked < r.frames]
    for r in sampled:
        print(f"{Path(r.video).name}: the reference looked at {r.frames_checked} of {r.frames} frames (--every)",
              file=out)
    if results[0].unblurred:
        print("exports released unblurred by the owner (--unblurred): the baseline, every face should leak", file=out)
    head = (f"{'video':<44} {'frames':>6} {'ref faces':>9} {'leaked':>6} {'leaked %':>8} {'frames w/ leak':>14} "
            f"{'largest px':>10} {'export min/min':>14}")
    print(head, file=out)
    for r in results:
        print(f"{Path(r.video).name[:44]:<44} {r.frames:>6} {r.reference_faces:>9} {r.leaked_faces:>6} "
              f"{r.leaked_per_reference_face_pct:>8.2f} {r.frames_with_leak:>14} {r.largest_leaked_box_px:>10} "
              f"{r.export_min_per_video_min:>14.3f}", file=out)
    for r in results:
        if r.check_refused:
            print(f"{Path(r.video).name}: the export-time check REFUSED the export (figures above are with the check "
                  f"off): {r.check_refused}", file=out)
        if r.snapshot_reference_faces:
            print(f"{Path(r.video).name}: snapshot {r.snapshot_leaked_faces} of {r.snapshot_reference_faces} "
                  "reference faces leaked", file=out)
        for leak in r.leaks[:5]:
            how = " and ".join(w for w, on in (("still detected", leak["detected_iou"] >= LEAK_IOU),
                                               ("unchanged", leak["unchanged"])) if on)
            print(f"  {Path(r.video).name} frame {leak['frame']}: box {tuple(leak['box'])} {leak['width']} px "
                  f"wide, {how} (IoU {leak['detected_iou']}, diff {leak['mad']})", file=out)
        if len(r.leaks) > 5:
            print(f"  ... {r.leaked_faces - 5} more (--json lists the {len(r.leaks)} widest)", file=out)
    met = all(r.meets_targets for r in results)
    print(f"targets (issue 13): leaked <= {TARGET_LEAK_PCT:g}% of reference faces, no leaked box >= "
          f"{TARGET_BOX_PX} px wide, no snapshot leak, <= {TARGET_MIN_PER_MIN:g} min export per min of video, "
          "not refused by the check: "
          f"{'met' if met else 'NOT met'}", file=out)
    if not results[0].reference_independent or "fallback" in results[0].reference:
        print("note: weaker fallback reference; the acceptance figures need --reference-python "
              "(docs/redaction-eval.md)", file=out)

