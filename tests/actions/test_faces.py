"""edge.actions.faces with the real models, the real gallery on disk and real photos from ../shared/data: enrol
with consent (one face per photo, size and sharpness as the daemon needs), list with consent records, forget."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge.actions.faces import enrol, forget, list_faces, read_image, renew
from edge.clock import FakeClock
from edge.config import Config
from edge.errors import EdgeError, StorageError
from edge.footage.audit import AuditLog
from edge.permissions import real_user
from edge.vision.consent import DEFAULT_PURPOSE, Consent
from edge.vision.engine import FaceEngine
from tests.photos import huge_png_header, jpeg_claiming

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO.parent / "shared" / "data" / "gallery" / "face_recognition" / "examples"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CONSENTED = date(2026, 2, 1)
UNTIL = date(2027, 2, 1)


def agreed(by: str, given: date = CONSENTED, until: date | None = UNTIL) -> Consent:
    return Consent(by, given, DEFAULT_PURPOSE, until)


@pytest.fixture(scope="module")
def engine() -> FaceEngine:
    return FaceEngine.load(model="int8", threads=2)


@pytest.fixture(scope="module")
def photos() -> dict[str, Path]:
    if not EXAMPLES.is_dir():  # fail loudly: CI lays shared/data beside the checkout
        raise AssertionError(f"test data missing: {EXAMPLES}")
    obama = sorted((EXAMPLES / "knn_examples" / "train" / "obama").glob("*.jpg"))
    return {"obama1": obama[0], "obama2": obama[1], "two": EXAMPLES / "two_people.jpg"}


def config(tmp_path: Path, **faces: Any) -> Config:
    return Config.model_validate({"storage": {"state_dir": str(tmp_path / "state")},
                                  "faces": {"model": "int8", "threads": 2, **faces}})


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_enrol_list_add_and_forget(tmp_path: Path, engine: FaceEngine, photos: dict[str, Path]) -> None:
    cfg, clock = config(tmp_path), FakeClock(NOW)
    done = enrol(cfg, clock, "Barack Obama", [photos["obama1"]], agreed("Barack Obama"), engine=engine)
    assert done.outcome == "enrolled" and done.person.photos == 1 and done.migrated == ()
    assert files(cfg.state_dir / "faces" / "barack-obama") == ["person.json", "photos/000.jpg", "templates.npy"]

    household = list_faces(cfg, clock)
    (person,) = household.people
    assert (person.name, person.consent_by, person.consent_date, person.consent_until, person.consent_purpose) == (
        "Barack Obama", "Barack Obama", "2026-02-01", "2027-02-01", DEFAULT_PURPOSE)
    assert household.whole_photos == () and household.listed[0].status.text == "valid until 2027-02-01"
    pid = person.person_id
    assert pid is not None and len(pid) == 12 and "obama" not in pid.lower()

    with pytest.raises(EdgeError, match=r"already enrolled .*use --replace .* or --add"):
        enrol(cfg, clock, "Barack Obama", [photos["obama2"]], agreed("Barack Obama"), engine=engine)
    added = enrol(cfg, clock, "Barack Obama", [photos["obama2"]], agreed("his guardian", date(2026, 2, 20)),
                  existing="add", engine=engine)
    assert added.outcome == "added to" and added.person.photos == 2 and added.person.person_id == pid
    assert list_faces(cfg).people[0].consent_by == "his guardian"  # the consent record becomes the newest
    renewed = renew(cfg, clock, "Barack Obama", agreed("Barack Obama", date(2026, 3, 1), date(2028, 3, 1)),
                    by="web:alice")
    assert (renewed.consent_date, renewed.consent_until, renewed.photos, renewed.person_id) == (
        "2026-03-01", "2028-03-01", 2, pid)
    replaced = enrol(cfg, clock, "Barack Obama", [photos["obama1"]], agreed("Barack Obama"), existing="replace",
                     engine=engine)
    assert replaced.outcome == "replaced" and replaced.person.photos == 1 and replaced.person.person_id == pid

    assert forget(cfg, "Barack Obama", clock=clock, by="web:alice") is True
    assert list_faces(cfg).people == () and files(cfg.state_dir / "faces") == []
    assert forget(cfg, "Barack Obama", clock=clock) is False
    with pytest.raises(EdgeError, match="Barack Obama is not enrolled"):
        renew(cfg, clock, "Barack Obama", agreed("Barack Obama"))

    # Each enrolment, the renewal and the forgetting is one hash-chained audit record, by the person's random id;
    # a forget or renewal of nobody records nothing. Nothing in the log names the person or who consented.
    log = AuditLog(cfg.state_dir, clock)
    assert log.verify().ok
    records = [(r["kind"], r["data"]["person_id"], r["data"].get("outcome"), r["data"]["by"]) for r in log.records()]
    me = real_user()
    assert records == [("face_enrol", pid, "enrolled", me),
                       ("face_enrol", pid, "added to", me),
                       ("face_consent", pid, None, "web:alice"),
                       ("face_enrol", pid, "replaced", me),
                       ("face_forget", pid, None, "web:alice")]
    renewal = log.records()[2]["data"]
    assert (renewal["consent_date"], renewal["consent_until"], renewal["previous_until"]) == (
        "2026-03-01", "2028-03-01", "2027-02-01")
    text = log.path.read_text().lower()
    assert "obama" not in text and "barack" not in text and "guardian" not in text


def test_a_photo_of_two_people_needs_a_chosen_face(tmp_path: Path, engine: FaceEngine,
                                                   photos: dict[str, Path]) -> None:
    cfg, clock = config(tmp_path), FakeClock(NOW)
    with pytest.raises(EdgeError, match=r"2 faces found; choose the one to enrol with --face N") as refused:
        enrol(cfg, clock, "Visitor", [photos["two"]], agreed("the person"), engine=engine)
    assert "  face 1: x=242 y=55 w=160 h=160 score 0.83" in str(refused.value)
    assert files(cfg.state_dir / "faces") == []
    with pytest.raises(EdgeError, match="there is no face 3"):
        enrol(cfg, clock, "Visitor", [photos["two"]], agreed("the person"), face=3, engine=engine)
    with pytest.raises(EdgeError, match="--face N picks a face in one photo"):
        enrol(cfg, clock, "Visitor", [photos["two"], photos["obama1"]], agreed("the person"), face=1,
              engine=engine)
    chosen = enrol(cfg, clock, "Visitor", [photos["two"]], agreed("the person"), face=2, engine=engine)
    assert chosen.person.photos == 1
    largest = enrol(cfg, clock, "Other", [photos["two"]], agreed("the person"), largest=True, engine=engine)
    assert largest.person.photos == 1


def test_the_daemons_quality_rules_and_the_consent_date_are_enforced(
        tmp_path: Path, engine: FaceEngine, photos: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(NOW)
    with monkeypatch.context() as m:
        m.setattr("edge.actions.faces.load_engine", lambda *a: pytest.fail("models loaded for a refused consent"))
        with pytest.raises(StorageError, match=r"consent date 2026-03-05 is in the future"):
            enrol(config(tmp_path), clock, "Ada", [photos["obama1"]], agreed("Ada", date(2026, 3, 5)))
    with pytest.raises(EdgeError, match=r"face too small \(\d+ px wide < faces.min_face_px 2000\)"):
        enrol(config(tmp_path, min_face_px=2000), clock, "Ada", [photos["obama1"]], agreed("Ada"),
              engine=engine)
    with pytest.raises(EdgeError, match="the face is too blurred"):
        enrol(config(tmp_path, min_sharpness=1e9), clock, "Ada", [photos["obama1"]], agreed("Ada"),
              engine=engine)
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not a jpeg")
    with pytest.raises(EdgeError, match=r"junk\.jpg: not a readable image"):
        enrol(config(tmp_path), clock, "Ada", [junk], agreed("Ada"), engine=engine)
    assert files(tmp_path / "state" / "faces") == []


@pytest.mark.parametrize(("name", "data", "size"), [
    ("bomb.png", huge_png_header(30000, 30000), "30000x30000"),  # beyond even Pillow's own bomb limit
    ("big.png", huge_png_header(7000, 6000), "7000x6000"),  # 42 MP: over ours, under Pillow's
    ("bomb.jpg", jpeg_claiming(20000, 20000), "20000x20000"),
])
def test_a_photo_too_large_to_decode_is_refused_by_its_header(tmp_path: Path, engine: FaceEngine, name: str,
                                                               data: bytes, size: str) -> None:
    """Found by trying the page (helper webtest): an 855 KB PNG of 30000x30000 pixels took the daemon to 5.5 GB
    RSS while it was decoded. The header says the size; above 40 megapixels the photo is refused undecoded."""
    photo = tmp_path / name
    photo.write_bytes(data)
    with pytest.raises(EdgeError, match=rf"{name}: {size} pixels is larger than the doorbell can use"):
        read_image(photo)
    with pytest.raises(EdgeError, match=rf"{name}: {size} pixels"):
        enrol(config(tmp_path), FakeClock(NOW), "Ada", [photo], agreed("Ada"), engine=engine)
    assert files(tmp_path / "state" / "faces") == []


def test_a_photo_just_under_the_limit_is_decoded(tmp_path: Path) -> None:
    photo = tmp_path / "wide.png"
    assert cv2.imwrite(str(photo), np.zeros((4000, 10000), np.uint8))  # exactly 40 MP: allowed
    assert read_image(photo).shape == (4000, 10000, 3)
