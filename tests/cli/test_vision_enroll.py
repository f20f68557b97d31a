"""`faces enroll` keeps only the enrolled person (issue 13): a photo with two people is refused until a face is
chosen, then only that face's chip is stored, and no image left in the state dir shows a second face; an enrolled
name is not overwritten by accident; a consent dated in the future is refused; `faces test` stores nothing; an
older gallery's whole photos are replaced by chips.  Through the real command line, models and photos."""

from __future__ import annotations

import json
import os
from datetime import date, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.cli import main
from edge.vision.engine import FaceEngine
from tests.photos import huge_png_header

EX = Path("gallery") / "face_recognition" / "examples"
UNTIL = ["--consent-until", "2099-12-31"]
CONSENT = ["--consent-by", "the person", "--consent-date", "2024-05-01", *UNTIL]


@pytest.fixture()
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DOORBELL_EDGE_STATE_DIR", str(tmp_path / "state"))
    cfg = tmp_path / "config.yaml"
    cfg.write_text("faces:\n  model: int8\n  threads: 2\n")
    monkeypatch.setenv("DOORBELL_EDGE_CONFIG", str(cfg))
    return tmp_path / "state"


@pytest.fixture(scope="module")
def checker() -> FaceEngine:
    """The detector the checks use: the shipped one at a low threshold (0.3, more than enrolment's 0.5 finds)."""
    return FaceEngine.load(model="int8", threads=2, detector_score=0.3)


@pytest.fixture(scope="module")
def two_people(shared_data: Path) -> Path:
    return shared_data / EX / "two_people.jpg"


def faces_in(engine: FaceEngine, image: np.ndarray) -> int:
    """Faces found in an image as it is and laid on a larger canvas at 1x and 2x (the full-range detector misses
    a face that fills the whole frame, as a face chip does): the most found in any of the three."""
    counts = [len(engine.detect(image))]
    for scale in (1, 2):
        big = cv2.resize(image, None, fx=scale, fy=scale)
        h, w = big.shape[:2]
        canvas = np.full((max(480, h + 200), max(640, w + 200), 3), 127, np.uint8)
        canvas[100 : 100 + h, 100 : 100 + w] = big
        counts.append(len(engine.detect(canvas)))
    return max(counts)


def snapshot(root: Path) -> dict[str, tuple[int, bytes | None, int]]:
    """Every file and folder under root: mode, content, mtime."""
    out: dict[str, tuple[int, bytes | None, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_mode, p.read_bytes() if p.is_file() else None, st.st_mtime_ns)
    return out


def enroll(*argv: str) -> int:
    return main(["faces", "enroll", *argv])


def test_a_photo_of_two_people_is_refused_until_a_face_is_chosen(
    two_people: Path, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert enroll("Visitor", str(two_people), *CONSENT) == 1
    err = capsys.readouterr().err
    assert f"{two_people}: 2 faces found; choose the one to enrol with --face N, or --largest:" in err
    assert "  face 1: x=242 y=55 w=160 h=160 score 0.83\n" in err
    assert "  face 2: x=793 y=79 w=163 h=163 score 0.94\n" in err
    assert [p for p in state.rglob("*") if p.is_file()] == []

    assert enroll("Visitor", str(two_people), "--face", "3", *CONSENT) == 1
    assert "there is no face 3; the faces found are:\n  face 1:" in capsys.readouterr().err
    assert enroll("Visitor", str(two_people), str(two_people), "--face", "1", *CONSENT) == 1
    assert "--face N picks a face in one photo" in capsys.readouterr().err
    assert [p for p in state.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("choice", [["--face", "1"], ["--face", "2"], ["--largest"]])
def test_the_chosen_face_alone_is_stored(
    two_people: Path, state: Path, checker: FaceEngine, choice: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    photo = cv2.imread(str(two_people), cv2.IMREAD_COLOR)
    assert faces_in(checker, photo) == 2  # the check below sees both people in the original photo
    assert enroll("Visitor", str(two_people), *choice, *CONSENT) == 0
    assert "enrolled Visitor: 1 photo(s) (face chips only)" in capsys.readouterr().out

    # the stored data: one face (one template, one chip), and it is the chosen person's
    folder = state / "faces" / "visitor"
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == [
        "person.json", "photos", "photos/000.jpg", "templates.npy"]
    person = json.loads((folder / "person.json").read_text())
    assert (person["photos"], person["stored"]) == (1, "chips")
    (template,) = np.load(folder / "templates.npy")
    left, right = sorted(checker.detect(photo), key=lambda d: d.x0)
    chosen, other = (left, right) if choice == ["--face", "1"] else (right, left)  # face 2 is also the largest
    assert np.linalg.norm(template - checker.embed_face(photo, chosen)) < 0.1
    assert np.linalg.norm(template - checker.embed_face(photo, other)) > 0.62

    # no file in the state dir is an image showing a second face, nor the photo itself
    images = 0
    for p in state.rglob("*"):
        if not p.is_file():
            continue
        assert p.read_bytes() != two_people.read_bytes()
        image = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if image is None:
            continue
        images += 1
        assert image.shape == (150, 150, 3), p  # an aligned chip, not a photo
        assert faces_in(checker, image) == 1, p  # the enrolled face, and nobody else
    assert images == 1


def test_an_enrolled_name_needs_replace_or_add(
    shared_data: Path, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    obama = sorted(str(p) for p in (shared_data / EX / "knn_examples" / "train" / "obama").glob("*.jpg"))
    assert enroll("Barack Obama", obama[0], *CONSENT) == 0
    before = snapshot(state)
    assert enroll("barack obama", obama[1], *CONSENT) == 1  # the same person (the same folder), spelt otherwise
    assert capsys.readouterr().err.strip() == (
        "doorbell-edge: Barack Obama is already enrolled (1 photo(s), consent by the person on 2024-05-01): "
        "use --replace to replace that enrolment, or --add to add these photos")
    assert snapshot(state) == before

    added = enroll("Barack Obama", obama[1], "--add", "--consent-by", "Barack Obama", "--consent-date", "2024-06-01",
                   *UNTIL)
    assert added == 0
    assert "added to Barack Obama: 2 photo(s)" in capsys.readouterr().out
    assert main(["faces", "list", "--json"]) == 0
    out = capsys.readouterr().out
    (person,) = json.loads(out[out.index("["):])
    assert (person["photos"], person["consent_by"], person["consent_date"]) == (2, "Barack Obama", "2024-06-01")
    assert len(list((state / "faces" / "barack-obama" / "photos").iterdir())) == 2

    assert enroll("Barack Obama", obama[0], "--replace", *CONSENT) == 0
    assert "replaced Barack Obama: 1 photo(s)" in capsys.readouterr().out
    assert len(np.load(state / "faces" / "barack-obama" / "templates.npy")) == 1
    with pytest.raises(SystemExit):  # argparse: one or the other
        enroll("Barack Obama", obama[0], "--replace", "--add", *CONSENT)


def test_a_consent_date_in_the_future_is_refused(shared_data: Path, state: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    today = datetime.now().astimezone().date()
    for day in (today + timedelta(days=1), today + timedelta(days=400)):
        assert enroll("Visitor", str(shared_data / EX / "obama.jpg"), "--consent-by", "Visitor",
                      "--consent-date", day.isoformat(), *UNTIL) == 1
        assert capsys.readouterr().err.strip() == (
            f"doorbell-edge: consent date {day} is in the future (today is {today}): record the day the person "
            "(or their guardian) actually gave consent (--consent-date)")
    assert not state.exists() or [p for p in state.rglob("*") if p.is_file()] == []
    with pytest.raises(SystemExit):
        enroll("Visitor", str(shared_data / EX / "obama.jpg"), "--consent-by", "V", "--consent-date", "1 May", *UNTIL)
    assert "'1 May' is not a date (YYYY-MM-DD)" in capsys.readouterr().err
    assert enroll("Visitor", str(shared_data / EX / "obama.jpg"), "--consent-by", "Visitor",
                  "--consent-date", today.isoformat(), *UNTIL) == 0  # given today: fine


def test_a_photo_without_a_face_is_refused(shared_data: Path, state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    neg = sorted((shared_data / "negatives" / "skimage").glob("*"))[0]
    assert enroll("X", str(neg), *CONSENT) == 1
    assert capsys.readouterr().err.strip() == (
        f"doorbell-edge: {neg}: no face found; use a photo with the face well lit, looking at the camera and at "
        "least 40 px wide")
    assert [p for p in state.rglob("*") if p.is_file()] == []


def test_a_photo_too_large_to_decode_is_refused_by_its_size(tmp_path: Path, state: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI shares the page's check (edge.actions.faces.read_image): the header's size, before decoding."""
    photo = tmp_path / "huge.png"
    photo.write_bytes(huge_png_header(30000, 30000))
    assert enroll("X", str(photo), *CONSENT) == 1
    assert capsys.readouterr().err.strip() == (
        f"doorbell-edge: {photo}: 30000x30000 pixels is larger than the doorbell can use (at most 40 megapixels; "
        "scale the photo down)")
    assert not state.exists() or [p for p in state.rglob("*") if p.is_file()] == []


def test_faces_test_names_who_would_be_recognised_and_stores_nothing(
    shared_data: Path, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    obama = sorted(str(p) for p in (shared_data / EX / "knn_examples" / "train" / "obama").glob("*.jpg"))
    assert enroll("Barack Obama", *obama, *CONSENT) == 0
    # what a crash left behind: a reading command must not clean it up (`faces enroll` or the daemon will)
    (state / "faces" / ".staging-visitor-0123abcd").mkdir(mode=0o700)
    capsys.readouterr()
    before = snapshot(state)

    both = shared_data / EX / "knn_examples" / "test" / "obama_and_biden.jpg"
    assert main(["faces", "test", str(both), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["enrolled"] == 1
    ((image,),) = [report["images"]]
    results = sorted((f["result"], f["name"], f["nearest"]) for f in image["faces"])
    assert results == [("recognised", "Barack Obama", "Barack Obama"), ("unknown", None, "Barack Obama")]
    named = next(f for f in image["faces"] if f["name"])
    stranger = next(f for f in image["faces"] if not f["name"])
    assert named["distance"] <= 0.55 < 0.62 < stranger["distance"]
    assert set(named["box"]) == {"x", "y", "w", "h", "score"}

    assert main(["faces", "test", str(both), str(shared_data / EX / "biden.jpg")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("1 enrolled; a face is named at distance <= 0.55, unknown above 0.62")
    assert out[1] == f"{both}: 2 face(s)"
    assert sum("Barack Obama (distance 0." in line for line in out) == 1
    assert sum("unknown (nearest Barack Obama, distance " in line for line in out) == 2  # Biden, twice
    assert snapshot(state) == before  # byte for byte, modes and times too: nothing written, nothing cleaned


def test_faces_migrate_replaces_an_old_whole_photo_by_the_enrolled_face(
    two_people: Path, state: Path, checker: FaceEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    # a gallery as an older `faces enroll` left it: the whole photo, the template of its largest face
    photo = cv2.imread(str(two_people), cv2.IMREAD_COLOR)
    largest = max(checker.detect(photo), key=lambda d: d.width * d.height)
    folder = state / "faces" / "visitor"
    (folder / "photos").mkdir(parents=True)
    (folder / "photos" / "000.jpg").write_bytes(two_people.read_bytes())
    np.save(folder / "templates.npy", checker.embed_face(photo, largest)[None, :])
    (folder / "person.json").write_text(json.dumps({
        "name": "Visitor", "consent_by": "Visitor", "consent_date": "2024-01-02",
        "enrolled_at": "2024-01-02T10:00:00Z", "photos": 1, "embedder": "face_embedder_int8.tflite"}))

    assert main(["faces", "list"]) == 0
    assert capsys.readouterr().err == (
        "warning: Visitor: no consent end date recorded: record one with `doorbell-edge faces consent 'Visitor' "
        "--consent-by ... --consent-date ... --consent-until ...`\n"
        "whole photos kept for Visitor: `doorbell-edge faces migrate` keeps only the enrolled face\n")
    assert main(["faces", "migrate"]) == 0
    assert capsys.readouterr().out == "migrated Visitor: 1 whole photo(s) replaced by the enrolled face's chip\n"
    assert main(["faces", "list"]) == 0
    assert "whole photos" not in capsys.readouterr().err
    (stored,) = (folder / "photos").iterdir()
    chip = cv2.imread(str(stored), cv2.IMREAD_COLOR)
    assert chip.shape == (150, 150, 3) and faces_in(checker, chip) == 1
    assert json.loads((folder / "person.json").read_text())["stored"] == "chips"
    assert main(["faces", "migrate"]) == 0
    assert capsys.readouterr().out == "nothing to migrate: the gallery keeps face chips only\n"
    assert date.fromisoformat(json.loads((folder / "person.json").read_text())["consent_date"]) == date(2024, 1, 2)
