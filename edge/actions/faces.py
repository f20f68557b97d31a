"""The household's faces: enrol someone with their consent (who, when, for what, until when; one clear, sharp face
per photo, only its aligned chip kept), renew a consent, list who is enrolled with their consent and its status,
forget someone. The audit log names people by their random id, never by name."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from edge.clock import Clock, SystemClock
from edge.config import Config
from edge.errors import EdgeError
from edge.footage.audit import AuditLog
from edge.permissions import real_user
from edge.vision import consent as C
from edge.vision.gallery import CHIPS, Existing, Gallery, Person
from edge.vision.gallery_legacy import legacy_chipper

if TYPE_CHECKING:
    from edge.vision.detector import Detection
    from edge.vision.engine import FaceEngine

Image = npt.NDArray[Any]  # BGR, as OpenCV decodes it


@dataclass(frozen=True)
class Enrolled:
    person: Person
    outcome: Literal["enrolled", "replaced", "added to"]
    migrated: tuple[str, ...] = ()  # whole photos an older version kept, replaced by chips on the way


@dataclass(frozen=True)
class Listed:
    """One enrolled person with their consent's status today."""

    person: Person
    status: C.Status


@dataclass(frozen=True)
class Household:
    people: tuple[Person, ...]
    whole_photos: tuple[str, ...]  # names whose enrolment (from before chips) still keeps whole photos
    listed: tuple[Listed, ...] = ()  # the same people, each with their consent's status on `today`
    today: date | None = None  # the device's local date the statuses are for


def load_engine(config: Config, model: str | None = None) -> FaceEngine:
    """The face models as the daemon runs them (faces.model unless `model` says int8 or float)."""
    from edge.vision.engine import FaceEngine

    return FaceEngine.load(model="float" if (model or config.faces.model) == "float" else "int8",
                           threads=config.faces.threads, detector_score=config.faces.detector_score)


def enrol(config: Config, clock: Clock, name: str, images: Sequence[Path], consent: C.Consent, *,
          face: int | None = None, largest: bool = False, existing: Existing = "refuse",
          engine: FaceEngine | None = None, by: str | None = None) -> Enrolled:
    """Enrol `name` from photos with `consent` (who, when, for what, until when: `consent.checked`'s rules).
    Each photo must show one face (or `face` N of the listing, or the `largest`) at least faces.min_face_px wide
    and as sharp as the daemon needs; nothing else of the photo is kept. `existing` says what to do when `name`
    is enrolled already. The checks that need no model come first; `engine` is loaded from the config when not
    given. The enrolment is recorded in the audit log by the person's id as by `by` (default: the local user)."""
    consent = C.checked(consent.by, consent.given, consent.until, consent.purpose, clock.now())
    if face is not None and len(images) > 1:
        raise EdgeError("--face N picks a face in one photo: enrol that photo on its own (then --add the others)")
    gallery = Gallery(config.state_dir)
    old = gallery.enrolled(name)
    if old is not None and existing == "refuse":
        raise EdgeError(
            f"{old.name} is already enrolled ({old.photos} photo(s), consent by {old.consent_by} on "
            f"{old.consent_date}): use --replace to replace that enrolment, or --add to add these photos"
        )
    engine = engine or load_engine(config)
    chips = [_chip(config, engine, path, face, largest) for path in images]
    templates = [engine.embedder.embed(chip) for chip in chips]
    migrated: list[str] = []
    if gallery.whole_photos():  # an older version kept whole photos: now is a good moment to drop them
        migrated = gallery.migrate(legacy_chipper(engine, config.faces.unknown_distance))
    person = gallery.enroll(name, chips, np.stack(templates), consent, engine.embedder_file, now=clock.now(),
                            existing=existing)
    outcome: Literal["enrolled", "replaced", "added to"] = (
        "added to" if old is not None and existing == "add" else "replaced" if old is not None else "enrolled")
    AuditLog(config.state_dir, clock).append(
        "face_enrol", person_id=person.person_id, outcome=outcome, photos=len(chips), **_consent_fields(person),
        by=by or real_user())
    return Enrolled(person, outcome, tuple(migrated))


def _consent_fields(person: Person) -> dict[str, str | None]:
    """What the audit log keeps of a consent: its dates. Never the free text (who consented, what for): it can
    carry the person's name, and the log can never drop it."""
    return {"consent_date": person.consent_date, "consent_until": person.consent_until}


def renew(config: Config, clock: Clock, name: str, consent: C.Consent, *, by: str | None = None) -> Person:
    """Record a new consent for someone enrolled (`consent.checked`'s rules, as at enrolment), their photos and
    templates untouched. The audit log records it first (`face_consent`, by the person's id, as by `by`): a
    kill before the record is rewritten leaves the record and the old consent; the rewrite itself is
    all-or-nothing. EdgeError when `name` is not enrolled."""
    consent = C.checked(consent.by, consent.given, consent.until, consent.purpose, clock.now())
    gallery = Gallery(config.state_dir)
    person = gallery.ensure_id(name)
    if person is None or person.person_id is None:
        raise EdgeError(f"{name} is not enrolled")
    AuditLog(config.state_dir, clock).append(
        "face_consent", person_id=person.person_id, **_consent_fields(person.with_consent(consent)),
        previous_until=person.consent_until, by=by or real_user())
    _, new = gallery.renew(name, consent, clock.now(), person.person_id)
    return new


def _chip(config: Config, engine: FaceEngine, path: Path, face: int | None, largest: bool) -> Image:
    """The aligned chip of the chosen face in one photo: the only thing that leaves the photo."""
    from edge.vision.recognise import sharpness

    img = read_image(path)
    dets = faces_in(engine, img)
    if not dets:
        raise EdgeError(
            f"{path}: no face found; use a photo with the face well lit, looking at the camera and at least "
            f"{config.faces.min_face_px} px wide"
        )
    if face is not None:
        if not 1 <= face <= len(dets):
            raise EdgeError(f"{path}: there is no face {face}; the faces found are:\n{listing(dets)}")
        det = dets[face - 1]
    elif largest:
        det = max(dets, key=lambda d: d.width * d.height)
    elif len(dets) > 1:
        raise EdgeError(
            f"{path}: {len(dets)} faces found; choose the one to enrol with --face N, or --largest:\n"
            f"{listing(dets)}\nonly the chosen face is kept (its aligned 150x150 chip), nothing of the others"
        )
    else:
        det = dets[0]
    if det.width < config.faces.min_face_px:
        raise EdgeError(
            f"{path}: face too small ({det.width:.0f} px wide < faces.min_face_px {config.faces.min_face_px}); "
            "use a closer photo"
        )
    chip = engine.chip(img, det)
    if sharpness(chip) < config.faces.min_sharpness:
        raise EdgeError(f"{path}: the face is too blurred (the device would not use it); use a sharper photo")
    return chip


def list_faces(config: Config, clock: Clock | None = None) -> Household:
    """Everyone enrolled with their consent records and each one's status on the device's local date (from
    `clock`); StorageError when the gallery cannot be read."""
    people = Gallery(config.state_dir).people()
    today = C.today_of((clock or SystemClock()).now())
    return Household(tuple(people), tuple(p.name for p in people if p.stored != CHIPS),
                     tuple(Listed(p, C.status(p, today)) for p in people), today)


def forget(config: Config, name: str, *, clock: Clock | None = None, by: str | None = None) -> bool:
    """Delete the person's templates, face chips and consent record; False when `name` is not enrolled. The audit
    log records it first, by the person's id (as by `by`, default the local user): no record, nothing deleted."""
    gallery = Gallery(config.state_dir)
    person = gallery.ensure_id(name)
    if person is None:
        return False
    AuditLog(config.state_dir, clock or SystemClock()).append(
        "face_forget", person_id=person.person_id, **_consent_fields(person), by=by or real_user())
    return gallery.forget(name)


MAX_PHOTO_PIXELS = 40_000_000  # 40 MP: more than any phone camera; decoded as BGR that is 120 MB already


def read_image(path: Path) -> Image:
    """A photo decoded (BGR) once its header says it is small enough to decode: a small file can claim
    30000x30000 pixels (a one-colour PNG compresses ~1000:1), and decoding that takes GBs."""
    import cv2

    if not path.is_file():
        raise EdgeError(f"{path}: not a readable image")
    size = pixel_size(path)
    if size is None:
        raise EdgeError(f"{path}: not a readable image")
    width, height = size
    if width * height > MAX_PHOTO_PIXELS:
        raise EdgeError(f"{path}: {width}x{height} pixels is larger than the doorbell can use (at most "
                        f"{MAX_PHOTO_PIXELS // 1_000_000} megapixels; scale the photo down)")
    blob = path.read_bytes()
    img = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR) if blob else None
    if img is None:
        raise EdgeError(f"{path}: not a readable image")
    return img


def pixel_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the image file's header, nothing decoded (Pillow reads only the header on open);
    None when Pillow does not recognise the file; EdgeError when it is too big to even say its size."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below by our own, lower limit
        try:
            with Image.open(path) as im:
                return im.size
        except Image.DecompressionBombError:
            # Pillow refuses to open one this big at all (> 2 x Image.MAX_IMAGE_PIXELS); its own format's reader
            # still tells the size from the header, for the message.
            size = _bomb_size(path)
            if size is None:
                raise EdgeError(f"{path}: more than {2 * (Image.MAX_IMAGE_PIXELS or 0)} pixels is larger than the "
                                "doorbell can use (scale the photo down)") from None
            return size
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            return None


def _bomb_size(path: Path) -> tuple[int, int] | None:
    from PIL import JpegImagePlugin, PngImagePlugin

    for reader in (PngImagePlugin.PngImageFile, JpegImagePlugin.JpegImageFile):
        try:
            with reader(path) as im:
                return im.size
        except (SyntaxError, OSError, ValueError, IndexError):
            continue
    return None


def faces_in(engine: FaceEngine, img: Image) -> list[Detection]:
    """Detections left to right, so the listing's numbers follow the photo."""
    return sorted(engine.detect(img), key=lambda d: (d.x0, d.y0))


def box(det: Detection) -> dict[str, float]:
    return {"x": round(det.x0), "y": round(det.y0), "w": round(det.width), "h": round(det.height),
            "score": round(det.score, 2)}


def listing(dets: Sequence[Detection]) -> str:
    return "\n".join(
        "  face {i}: x={x} y={y} w={w} h={h} score {score:.2f}".format(i=i, **box(d)) for i, d in enumerate(dets, 1)
    )
