"""Enrolment, recognition of the enrolled person, strangers stay unknown, forget purges everything; the gallery
stores face chips only (whole photos refused, old galleries migrated), asks before touching an enrolled name, and
refuses a consent dated in the future."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, date, datetime
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.errors import StorageError
from edge.vision import recognise as R
from edge.vision.consent import DEFAULT_PURPOSE, Consent
from edge.vision.engine import FaceEngine
from edge.vision.gallery import CHIPS, Gallery, decode_chip
from edge.vision.gallery_legacy import legacy_chipper, migrate_at_start
from tests.footage.crash import killed_at

EX = Path("gallery") / "face_recognition" / "examples"
CHIP_PIXELS = np.full((150, 150, 3), 128, np.uint8)
NOON = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # the same calendar day in every time zone within +-11 h


def ada_consent(given: date, until: date = date(2027, 3, 1)) -> Consent:
    return Consent("Ada", given, DEFAULT_PURPOSE, until)


def _faces(engine: FaceEngine, path: Path) -> list[np.ndarray]:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, path
    return [engine.embed_face(img, d) for d in engine.detect(img)]


def _enroll_obama(engine: FaceEngine, data: Path, state: Path) -> Gallery:
    photos, templates = [], []
    for p in sorted((data / EX / "knn_examples" / "train" / "obama").glob("*.jpg")):
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        (det,) = engine.detect(img)
        chip = engine.chip(img, det)
        photos.append(chip)
        templates.append(engine.embedder.embed(chip))
    g = Gallery(state)
    consent = Consent("Barack Obama", date(2026, 11, 27), DEFAULT_PURPOSE, date(2099, 12, 31))
    g.enroll("Barack Obama", photos, np.stack(templates), consent, engine.embedder_file)
    return g


def test_obama_recognised_biden_unknown(data: Path, engine_int8: FaceEngine, tmp_path: Path) -> None:
    g = _enroll_obama(engine_int8, data, tmp_path)
    templates = g.templates()
    th = R.Thresholds()
    others = [
        "obama-240p.jpg",
        "obama-480p.jpg",
        "obama-720p.jpg",
        "obama-1080p.jpg",
        "obama_small.jpg",
        "knn_examples/test/obama1.jpg",
    ]
    for name in others:
        (emb,) = _faces(engine_int8, data / EX / name)
        assert R.match(emb, templates, th).name == "Barack Obama", name
    for p in [data / EX / "biden.jpg", *sorted((data / EX / "knn_examples" / "train" / "biden").glob("*.jpg"))]:
        (emb,) = _faces(engine_int8, p)
        assert R.match(emb, templates, th).name == R.UNKNOWN, p
    # a photo with both: one of each
    names = sorted(
        R.match(e, templates, th).name
        for e in _faces(engine_int8, data / EX / "knn_examples" / "test" / "obama_and_biden.jpg")
    )
    assert names == ["Barack Obama", R.UNKNOWN]


def test_gallery_files_are_private_and_forget_purges(data: Path, engine_int8: FaceEngine, tmp_path: Path) -> None:
    g = _enroll_obama(engine_int8, data, tmp_path)
    files = [p for p in (tmp_path / "faces").rglob("*")]
    assert any(p.suffix == ".jpg" for p in files) and any(p.name == "templates.npy" for p in files)
    for p in files:
        mode = stat.S_IMODE(os.stat(p).st_mode)
        assert mode == (0o700 if p.is_dir() else 0o600), (p, oct(mode))
    assert [p.name for p in g.people()] == ["Barack Obama"]
    assert g.forget("Barack Obama")
    left = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert left == []
    assert g.people() == [] and g.templates() == {}
    assert not g.forget("Barack Obama")


def test_enroll_requires_consent(tmp_path: Path) -> None:
    with pytest.raises(StorageError):
        Gallery(tmp_path).enroll("X", [CHIP_PIXELS], np.zeros((1, 128), np.float32),
                                 Consent(" ", date(2026, 1, 1), DEFAULT_PURPOSE, date(2099, 12, 31)), "m")


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_whole_photos_are_refused(data: Path, tmp_path: Path) -> None:
    photo = cv2.imread(str(data / EX / "two_people.jpg"), cv2.IMREAD_COLOR)
    rgb = cv2.cvtColor(photo, cv2.COLOR_BGR2RGB)
    for image in (rgb, cv2.resize(rgb, (150, 150))[:, :, 0], rgb[:150, :151]):
        with pytest.raises(StorageError, match="only aligned 150x150 face chips are stored, never whole photos"):
            Gallery(tmp_path).enroll("X", [image], np.zeros((1, 128), np.float32), ada_consent(date(2026, 1, 1)), "m",
                                     NOON)
    assert _files(tmp_path) == []


def _enroll(tmp_path: Path, shade: int, count: int = 1, **kw: object) -> None:
    chips = [np.full((150, 150, 3), shade + i, np.uint8) for i in range(count)]
    Gallery(tmp_path).enroll(
        "Ada", chips, np.full((count, 128), shade, np.float32), ada_consent(date(2026, 1, 2)), "m", NOON, **kw  # type: ignore[arg-type]
    )


def test_an_enrolled_name_is_refused_replaced_or_added_to(tmp_path: Path) -> None:
    _enroll(tmp_path, 10, 2, existing="refuse")
    before = {p: p.read_bytes() for p in _files(tmp_path)}
    with pytest.raises(StorageError, match=r"Ada is already enrolled \(2 photo\(s\), consent by Ada on 2026-01-02\): "
                       r"use --replace to replace that enrolment, or --add to add these photos"):
        _enroll(tmp_path, 50, existing="refuse")
    assert {p: p.read_bytes() for p in _files(tmp_path)} == before  # untouched

    _enroll(tmp_path, 50, existing="add")
    g = Gallery(tmp_path)
    (ada,) = g.people()
    assert ada.photos == 3 and ada.stored == CHIPS
    assert g.templates()["Ada"][:, 0].tolist() == [10, 10, 50]
    assert [int(c.mean().round()) for c in g.chips("Ada")] == [10, 11, 50]

    _enroll(tmp_path, 90, existing="replace")
    assert Gallery(tmp_path).templates()["Ada"][:, 0].tolist() == [90]
    with pytest.raises(StorageError, match="enrolled with m, these templates come from other"):
        Gallery(tmp_path).enroll("ada", [CHIP_PIXELS], np.zeros((1, 128), np.float32), ada_consent(date(2026, 1, 2)),
                                 "other", NOON, existing="add")


@pytest.mark.parametrize(("point", "added"), [("enroll:photos-written", False), ("enroll:staged", False),
                                               ("enroll:old-moved-aside", True), ("gallery:removing", True)])
def test_kill_during_an_add_leaves_the_old_or_the_whole_new_enrolment(tmp_path: Path, point: str,
                                                                      added: bool) -> None:
    _enroll(tmp_path, 10, 2, existing="refuse")
    killed_at(point, lambda: _enroll(tmp_path, 50, existing="add"))
    g = Gallery(tmp_path)
    (ada,) = g.people()
    want = [10, 10, 50] if added else [10, 10]
    assert ada.photos == len(want) and g.templates()["Ada"][:, 0].tolist() == want
    assert [int(c.mean().round()) for c in g.chips("Ada")] == [10, 11, 50][: len(want)]
    assert sorted(os.listdir(tmp_path / "faces")) == ["ada"]  # no staging or trash left once reopened


def test_a_consent_date_in_the_future_is_refused(tmp_path: Path) -> None:
    g = Gallery(tmp_path)
    one = np.zeros((1, 128), np.float32)
    for day in (date(2026, 3, 2), date(2027, 1, 1)):
        with pytest.raises(StorageError, match=rf"consent date {day} is in the future \(today is 2026-03-01\)"):
            g.enroll("Ada", [CHIP_PIXELS], one, ada_consent(day), "m", NOON)
    assert _files(tmp_path) == []
    g.enroll("Ada", [CHIP_PIXELS], one, ada_consent(date(2026, 3, 1)), "m", NOON)  # today is fine
    assert [p.consent_date for p in g.people()] == ["2026-03-01"]


def _legacy_gallery(state: Path, photo: Path, template: np.ndarray, extra: list[bytes] = ()) -> Path:  # type: ignore[assignment]
    """A gallery as `faces enroll` wrote it before chips: the whole photo, stored as it was given."""
    folder = state / "faces" / "ada"
    (folder / "photos").mkdir(parents=True)
    blobs = [photo.read_bytes(), *extra]
    for i, blob in enumerate(blobs):
        (folder / "photos" / f"{i:03d}.jpg").write_bytes(blob)
    np.save(folder / "templates.npy", np.stack([template] * len(blobs)).astype(np.float32))
    (folder / "person.json").write_text(json.dumps({
        "name": "Ada", "consent_by": "Ada", "consent_date": "2024-01-02", "enrolled_at": "2024-01-02T10:00:00Z",
        "photos": len(blobs), "embedder": "face_embedder_int8.tflite"}))
    return folder


def test_migrate_keeps_only_the_enrolled_face_of_an_old_whole_photo(
    data: Path, engine_int8: FaceEngine, tmp_path: Path
) -> None:
    photo = data / EX / "two_people.jpg"
    img = cv2.imread(str(photo), cv2.IMREAD_COLOR)
    left, right = sorted(engine_int8.detect(img), key=lambda d: d.x0)
    assert left.width * left.height < right.width * right.height  # so not simply "the largest face"
    enrolled = engine_int8.embed_face(img, left)
    bystander = engine_int8.embed_face(img, right)
    noface = sorted((data / "negatives" / "skimage").glob("*"))[0].read_bytes()
    _legacy_gallery(tmp_path, photo, enrolled, [noface])
    g = Gallery(tmp_path)
    assert g.whole_photos() == ["Ada"] and g.chips("Ada") == []

    done = g.migrate(legacy_chipper(engine_int8, 0.62))
    assert done == ["Ada: 1 whole photo(s) replaced by the enrolled face's chip, 1 dropped (face not found "
                    "again; its template is kept)"]
    (ada,) = g.people()
    assert (ada.stored, ada.photos, ada.consent_date, ada.enrolled_at) == (CHIPS, 2, "2024-01-02",
                                                                           "2024-01-02T10:00:00Z")
    assert g.whole_photos() == []
    (stored,) = g.photos("Ada")
    chip = decode_chip(stored.read_bytes())
    assert chip is not None and chip.shape == (150, 150, 3)
    again = engine_int8.embedder.embed(chip)
    assert np.linalg.norm(again - enrolled) < 0.15  # the enrolled person's face ...
    assert np.linalg.norm(again - bystander) > 0.62  # ... not the bystander's
    np.testing.assert_array_equal(g.templates()["Ada"], np.stack([enrolled, enrolled]))  # recognition unchanged
    assert g.migrate(legacy_chipper(engine_int8, 0.62)) == []  # nothing left to do


def test_the_daemon_migrates_at_start_and_starts_anyway_when_it_cannot(
    data: Path, engine_int8: FaceEngine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    photo = data / EX / "obama.jpg"
    img = cv2.imread(str(photo), cv2.IMREAD_COLOR)
    (det,) = engine_int8.detect(img)
    folder = _legacy_gallery(tmp_path / "good", photo, engine_int8.embed_face(img, det))
    migrate_at_start(Gallery(tmp_path / "good"), engine_int8, 0.62)
    assert Gallery(tmp_path / "good").whole_photos() == []
    assert decode_chip((folder / "photos" / "000.jpg").read_bytes()) is not None

    folder = _legacy_gallery(tmp_path / "damaged", photo, engine_int8.embed_face(img, det))
    (folder / "templates.npy").write_bytes(b"\x93NUMPY garbage")  # a damaged template file
    before = {p: p.read_bytes() for p in _files(tmp_path / "damaged")}
    migrate_at_start(Gallery(tmp_path / "damaged"), engine_int8, 0.62)  # logs, does not raise
    assert {p: p.read_bytes() for p in _files(tmp_path / "damaged")} == before
    assert "keeps whole photos (could not migrate: face gallery: " in caplog.text
    assert "run `doorbell-edge faces migrate`" in caplog.text


@pytest.mark.parametrize("point", ["enroll:photos-written", "enroll:staged", "enroll:old-moved-aside",
                                   "enroll:renamed", "gallery:removing"])
def test_kill_during_migrate_leaves_the_old_or_the_migrated_enrolment(
    data: Path, engine_int8: FaceEngine, tmp_path: Path, point: str
) -> None:
    photo = data / EX / "obama.jpg"
    img = cv2.imread(str(photo), cv2.IMREAD_COLOR)
    (det,) = engine_int8.detect(img)
    chip = engine_int8.chip(img, det)
    _legacy_gallery(tmp_path, photo, engine_int8.embed_face(img, det))
    Gallery(tmp_path)  # opening gives the older enrolment its id (its own all-or-nothing rewrite, once)
    killed_at(point, lambda: Gallery(tmp_path).migrate(lambda blob, template: chip))  # no model in the child
    g = Gallery(tmp_path)
    (ada,) = g.people()
    files = sorted(p.relative_to(tmp_path).as_posix() for p in _files(tmp_path))
    assert files == ["faces/ada/person.json", "faces/ada/photos/000.jpg", "faces/ada/templates.npy"]
    migrated = point in ("enroll:old-moved-aside", "enroll:renamed", "gallery:removing")
    assert ada.stored == (CHIPS if migrated else "photos")
    assert (g.photos("Ada")[0].read_bytes() == photo.read_bytes()) is not migrated
    g.migrate(lambda blob, template: chip)  # run again: finishes the job
    assert g.whole_photos() == [] and len(g.chips("Ada")) == 1


def test_reembed_from_chips_matches_the_other_precision(
    data: Path, engine_int8: FaceEngine, engine_float: FaceEngine, tmp_path: Path
) -> None:
    g = _enroll_obama(engine_int8, data, tmp_path)
    redone = g.reembed("Barack Obama", engine_float)
    direct = []
    for p in sorted((data / EX / "knn_examples" / "train" / "obama").glob("*.jpg")):
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        (det,) = engine_int8.detect(img)
        direct.append(engine_float.embedder.embed(engine_int8.chip(img, det)))
    assert redone.shape == (2, 128)
    # the stored JPEG chip (quality 95) gives the float embedder nearly the template the exact chip gives
    assert float(np.max(np.linalg.norm(redone - np.stack(direct), axis=1))) < 0.05
