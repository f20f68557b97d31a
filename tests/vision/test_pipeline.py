"""The face stage on real photos as frames: person and face events, votes, strangers forgotten in memory."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import cv2
import numpy as np

from edge.clock import FakeClock
from edge.config import FacesConfig
from edge.types import Frame
from edge.vision.consent import DEFAULT_PURPOSE, Consent
from edge.vision.engine import FaceEngine
from edge.vision.gallery import Gallery
from edge.vision.pipeline import FacePipeline

EX = Path("gallery") / "face_recognition" / "examples"


def _frames(img: np.ndarray, clock: FakeClock, n: int, start_seq: int = 0) -> list[Frame]:
    out = []
    for i in range(n):
        out.append(Frame("front_door", start_seq + i, clock.now(), clock.monotonic(), img))
        clock.advance(0.1)
    return out


def _fit(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    h, w = img.shape[:2]
    s = 640 / max(h, w)
    return cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)


def _pipeline(engine: FaceEngine, data: Path, state: Path, clock: FakeClock) -> FacePipeline:
    g = Gallery(state)
    photos, embs = [], []
    for p in sorted((data / EX / "knn_examples" / "train" / "obama").glob("*.jpg")):
        img = cv2.imread(str(p))
        det = max(engine.detect(img), key=lambda d: d.width)
        photos.append(engine.chip(img, det))  # the gallery keeps the face chip, never the photo
        embs.append(engine.embed_face(img, det))
    consent = Consent("Barack Obama", date(2026, 11, 27), DEFAULT_PURPOSE, date(2099, 12, 31))
    g.enroll("Barack Obama", photos, np.stack(embs), consent, engine.embedder_file)
    p = FacePipeline("front_door", FacesConfig(stranger_ttl_s=20, visit_end_s=1.0), engine, g, clock)
    p.refresh_gallery(clock.monotonic(), force=True)
    return p


def test_enrolled_face_is_named_after_the_vote(data: Path, engine_int8: FaceEngine, tmp_path: Path) -> None:
    clock = FakeClock()
    p = _pipeline(engine_int8, data, tmp_path, clock)
    events = []
    for f in _frames(_fit(data / EX / "obama-720p.jpg"), clock, 5):
        events += p.process(f)
    kinds = [(e.type, e.fields.get("result"), e.fields.get("person")) for e in events]
    assert kinds == [("person", None, None), ("face", "known", "Barack Obama")]
    assert events[1].fields["confidence"] == 1.0  # both embedded frames agreed
    assert set(events[0].fields) == {"confidence", "track_id", "box"}
    assert set(events[1].fields) == {"result", "person", "confidence", "track_id"}
    assert events[0].fields["track_id"] == events[1].fields["track_id"]
    for e in events:
        assert not any(isinstance(v, (np.ndarray, bytes)) for v in e.fields.values())


def test_stranger_is_unknown_and_forgotten(data: Path, engine_int8: FaceEngine, tmp_path: Path) -> None:
    clock = FakeClock()
    p = _pipeline(engine_int8, data, tmp_path, clock)
    before = sorted(str(x) for x in tmp_path.rglob("*"))
    events = []
    for f in _frames(_fit(data / EX / "biden.jpg"), clock, 4):
        events += p.process(f)
    assert [(e.type, e.fields.get("result")) for e in events] == [("person", None), ("face", "unknown")]
    assert "person" not in events[1].fields and len(str(events[1].fields["visit_id"])) >= 4
    assert p.stranger_embeddings() > 0  # in memory during the visit
    clock.advance(2.0)
    p.tick(clock.monotonic())  # visit ended
    assert p.stranger_embeddings() > 0  # kept for the short TTL only
    clock.advance(20.0)
    p.tick(clock.monotonic())
    assert p.stranger_embeddings() == 0
    assert sorted(str(x) for x in tmp_path.rglob("*")) == before  # nothing about the stranger on disk


def test_blank_frames_make_no_events(engine_int8: FaceEngine, tmp_path: Path) -> None:
    clock = FakeClock()
    p = FacePipeline("front_door", FacesConfig(), engine_int8, Gallery(tmp_path), clock)
    img = np.full((480, 640, 3), 127, np.uint8)
    assert [e for f in _frames(img, clock, 3) for e in p.process(f)] == []


def test_face_events_pass_the_mqtt_payload_contract(data: Path, engine_int8: FaceEngine, tmp_path: Path) -> None:
    from edge.events.guard import check_event  # the publisher's gate for every event

    clock = FakeClock()
    p = _pipeline(engine_int8, data, tmp_path, clock)
    events = []
    for name in ("obama-720p.jpg", "biden.jpg"):
        for f in _frames(_fit(data / EX / name), clock, 4):
            events += p.process(f)
        clock.advance(3.0)
    assert [e.type for e in events].count("face") == 2
    for e in events:
        check_event(e)


def test_detects_on_the_analysis_stream_and_cuts_chips_from_main(
    data: Path, engine_int8: FaceEngine, tmp_path: Path
) -> None:
    clock = FakeClock()
    p = _pipeline(engine_int8, data, tmp_path, clock)
    main = _fit(data / EX / "obama-720p.jpg")
    lores = cv2.resize(main, (320, round(320 * main.shape[0] / main.shape[1])), interpolation=cv2.INTER_AREA)
    events = []
    for i in range(4):
        events += p.process(Frame("front_door", i, clock.now(), clock.monotonic(), main, lores))
        clock.advance(0.1)
    assert [(e.type, e.fields.get("person")) for e in events] == [("person", None), ("face", "Barack Obama")]
    x0, y0, x1, _y1 = events[0].fields["box"]
    direct = max(engine_int8.detect(main), key=lambda d: d.width)
    h, w = main.shape[:2]
    assert abs(x0 - direct.x0 / w) < 0.03 and abs(x1 - direct.x1 / w) < 0.03 and abs(y0 - direct.y0 / h) < 0.03


def test_threaded_stage_publishes_and_forgets_on_stop(data: Path, engine_int8: FaceEngine, tmp_path: Path) -> None:
    import threading

    from edge.clock import SystemClock
    from edge.types import MotionFrame, MotionResult
    from edge.vision.pipeline import FaceStage

    clock = SystemClock()
    got: list = []
    done = threading.Event()

    def publish(ev):  # type: ignore[no-untyped-def]
        got.append(ev)
        if ev.type == "face":
            done.set()

    stage = FaceStage(FacesConfig(), engine_int8, Gallery(tmp_path), clock, publish, queue_size=8)
    stage.start()
    img = _fit(data / EX / "biden.jpg")
    for i in range(4):
        stage.submit(MotionFrame(Frame("front_door", i, clock.now(), clock.monotonic(), img), MotionResult(True, 0.2)))
    assert done.wait(10.0)
    stage.stop()
    assert [e.type for e in got] == ["person", "face"] and got[1].fields["result"] == "unknown"
    assert all(p.stranger_embeddings() == 0 for p in stage.pipelines.values())
    assert stage.errors == 0
