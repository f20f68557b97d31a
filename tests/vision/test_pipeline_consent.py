"""Consent in the running face stage, with the real models and real photos: a person whose consent has ended is
reported `unknown` and their templates match nobody; the day passing, or the wall clock stepping across the end
date while the pipeline runs, takes effect without a restart and without anything on disk changing (nothing is
deleted, so a step back restores recognition); a gallery from an older version (no end date, no id) still loads
and recognises, with a warning at start."""

from __future__ import annotations

import json
import logging
from datetime import UTC, date, datetime
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.clock import FakeClock
from edge.config import FacesConfig
from edge.types import Frame
from edge.vision import consent as C
from edge.vision.consent import DEFAULT_PURPOSE, Consent
from edge.vision.engine import FaceEngine
from edge.vision.gallery import Gallery
from edge.vision.pipeline import GALLERY_CHECK_S, FacePipeline

EX = Path("gallery") / "face_recognition" / "examples"
LAST_DAY = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)  # noon: 2026-03-10 in every time zone within +-11 h
DAY = 86400.0


def chips_and_templates(engine: FaceEngine, data: Path, who: str) -> tuple[list[np.ndarray], np.ndarray]:
    chips, embs = [], []
    for p in sorted((data / EX / "knn_examples" / "train" / who).glob("*.jpg")):
        img = cv2.imread(str(p))
        det = max(engine.detect(img), key=lambda d: d.width)
        chips.append(engine.chip(img, det))
        embs.append(engine.embed_face(img, det))
    return chips, np.stack(embs)


def photo(data: Path, name: str) -> np.ndarray:
    img = cv2.imread(str(data / EX / name), cv2.IMREAD_COLOR)
    h, w = img.shape[:2]
    s = 640 / max(h, w)
    return cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)


def visit(p: FacePipeline, clock: FakeClock, img: np.ndarray) -> list[tuple[str | None, str | None]]:
    """A few frames of one visit, then the visit ends: the face events' (result, person)."""
    events = []
    for i in range(5):
        events += p.process(Frame("front_door", i, clock.now(), clock.monotonic(), img))
        clock.advance(0.1)
    clock.advance(3.0)
    p.tick(clock.monotonic())
    return [(e.fields.get("result"), e.fields.get("person")) for e in events if e.type == "face"]  # type: ignore


@pytest.fixture
def obama_and_biden(shared_data: Path, engine_int8: FaceEngine, tmp_path: Path) -> Gallery:
    """Obama's consent's last day is 2026-03-10; Biden's lasts a year more."""
    g = Gallery(tmp_path)
    for name, who, until in (("Barack Obama", "obama", date(2026, 3, 10)), ("Joe Biden", "biden", date(2027, 3, 10))):
        chips, templates = chips_and_templates(engine_int8, shared_data, who)
        g.enroll(name, chips, templates, Consent(name, date(2026, 3, 1), DEFAULT_PURPOSE, until),
                 engine_int8.embedder_file, now=LAST_DAY)
    return g


def test_an_ended_consent_is_unknown_and_its_templates_match_nobody(
        shared_data: Path, engine_int8: FaceEngine, obama_and_biden: Gallery) -> None:
    clock = FakeClock(LAST_DAY.replace(day=11))  # the day after Obama's last day
    p = FacePipeline("front_door", FacesConfig(visit_end_s=1.0), engine_int8, obama_and_biden, clock)
    p.refresh_gallery(clock.monotonic(), force=True)
    assert sorted(p.templates) == ["Joe Biden"]  # Obama's templates are not matched against at all
    assert visit(p, clock, photo(shared_data, "obama-720p.jpg")) == [("unknown", None)]
    assert visit(p, clock, photo(shared_data, "biden.jpg")) == [("known", "Joe Biden")]
    assert [x.name for x in obama_and_biden.people()] == ["Barack Obama", "Joe Biden"]  # nothing deleted


def test_the_clock_stepping_across_the_end_date_takes_effect_while_running(
        shared_data: Path, engine_int8: FaceEngine, obama_and_biden: Gallery,
        caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(LAST_DAY)
    p = FacePipeline("front_door", FacesConfig(visit_end_s=1.0), engine_int8, obama_and_biden, clock)
    p.refresh_gallery(clock.monotonic(), force=True)
    obama = photo(shared_data, "obama-720p.jpg")
    stamp = obama_and_biden.stamp()
    files = {f: f.read_bytes() for f in sorted(obama_and_biden.root.rglob("*")) if f.is_file()}
    assert visit(p, clock, obama) == [("known", "Barack Obama")]  # his last day

    clock.step(DAY)  # NTP steps the wall clock a day ahead: monotonic time does not move
    clock.advance(GALLERY_CHECK_S)
    with caplog.at_level(logging.WARNING, "edge.vision.pipeline"):
        assert visit(p, clock, obama) == [("unknown", None)]
    person_id = obama_and_biden.enrolled("Barack Obama").person_id  # type: ignore[union-attr]
    assert f"consent ended for 1 enrolled person(s) (ids {person_id})" in caplog.text
    assert "Obama" not in caplog.text  # the log names the id, never the person

    clock.step(-DAY)  # and back (a wrong clock corrected): nothing was deleted, so he is recognised again
    clock.advance(GALLERY_CHECK_S)
    assert visit(p, clock, obama) == [("known", "Barack Obama")]
    assert obama_and_biden.stamp() == stamp  # all of it without a change on disk ...
    assert {f: f.read_bytes() for f in sorted(obama_and_biden.root.rglob("*")) if f.is_file()} == files

    clock.advance(DAY)  # ... and the day simply passing, without a step, does the same
    assert visit(p, clock, obama) == [("unknown", None)]


def test_a_gallery_from_an_older_version_loads_recognises_and_warns_at_start(
        shared_data: Path, engine_int8: FaceEngine, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    chips, templates = chips_and_templates(engine_int8, shared_data, "obama")
    Gallery(tmp_path).enroll("Barack Obama", chips, templates,
                             Consent("Barack Obama", date(2026, 3, 1), DEFAULT_PURPOSE, date(2027, 3, 1)),
                             engine_int8.embedder_file, now=LAST_DAY)
    pj = tmp_path / "faces" / "barack-obama" / "person.json"
    old = {k: v for k, v in json.loads(pj.read_text()).items()
           if k not in ("consent_purpose", "consent_until", "person_id")}
    pj.write_text(json.dumps(old))  # as written before consent end dates and ids

    clock = FakeClock(LAST_DAY)
    with caplog.at_level(logging.WARNING):
        gallery = Gallery(tmp_path)  # the daemon's opening: gives him an id
        C.warn_at_start(gallery, C.today_of(clock.now()))
    (person,) = gallery.people()
    assert person.person_id is not None and person.consent_until is None
    assert (f"face gallery: 1 enrolled person(s) (ids {person.person_id}) have no consent end date recorded; "
            "they are still recognised") in caplog.text
    p = FacePipeline("front_door", FacesConfig(visit_end_s=1.0), engine_int8, gallery, clock)
    p.refresh_gallery(clock.monotonic(), force=True)
    assert visit(p, clock, photo(shared_data, "obama-720p.jpg")) == [("known", "Barack Obama")]
