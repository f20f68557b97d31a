"""Enrolled people on disk: consent record, aligned face chips and templates, files mode 0600.

<state_dir>/faces/<slug>/: person.json (the consent record, edge.vision.consent, and the person's random id),
templates.npy, photos/<n>.jpg (the 150x150 aligned chip of the enrolled face only, never the whole photo; older
galleries' whole photos are replaced by `migrate`, edge.vision.gallery_legacy). Nothing about people not enrolled
is ever written; `forget` removes a person's whole folder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from edge.errors import StorageError
from edge.layout import StateLayout
from edge.vision.align import CHIP
from edge.vision.consent import Consent, check_record, checked, new_person_id
from edge.vision.gallery_files import GalleryFolders, private_dir, why_unreadable

if TYPE_CHECKING:
    from edge.vision.engine import FaceEngine

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
CHIPS = "chips"  # Person.stored: the photos folder holds aligned face chips only
WHOLE = "photos"  # Person.stored of a gallery written before chips: whole photos (see `migrate`)
CHIP_JPEG_QUALITY = 95
Existing = Literal["refuse", "replace", "add"]


@dataclass(frozen=True)
class Person:
    name: str
    consent_by: str
    consent_date: str  # ISO date
    enrolled_at: str  # RFC 3339 UTC
    photos: int  # face photos enrolled (one template each)
    embedder: str  # model file the templates were computed with
    stored: str = WHOLE  # what photos/ holds: CHIPS, or WHOLE photos in a gallery from before chips
    # Absent from a gallery written before consent had an end date (edge.vision.consent.status says so):
    consent_purpose: str | None = None
    consent_until: str | None = None  # ISO date: the last day the consent covers
    person_id: str | None = None  # random (consent.new_person_id); the audit log's name for the person

    def with_consent(self, consent: Consent) -> Person:
        assert consent.until is not None, "a consent record without an end date is never written"
        return replace(self, consent_by=consent.by, consent_date=consent.given.isoformat(),
                       consent_purpose=consent.purpose, consent_until=consent.until.isoformat())


def encode_chip(chip_rgb: npt.NDArray[Any]) -> bytes:
    """A 150x150 RGB face chip as the JPEG the gallery stores (no metadata; deterministic)."""
    import cv2

    if chip_rgb.shape != (CHIP, CHIP, 3) or chip_rgb.dtype != np.uint8:
        raise StorageError(
            f"only aligned {CHIP}x{CHIP} face chips are stored, never whole photos "
            f"(got an image of shape {tuple(chip_rgb.shape)}, {chip_rgb.dtype})"
        )
    bgr = cv2.cvtColor(chip_rgb, cv2.COLOR_RGB2BGR)
    ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, CHIP_JPEG_QUALITY])
    if not ok:
        raise StorageError("cannot encode a face chip as JPEG")
    return bytes(jpeg.tobytes())


def decode_chip(blob: bytes) -> npt.NDArray[np.uint8] | None:
    """A stored chip back as RGB, None when it is not a readable chip-sized image."""
    import cv2

    img = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR)
    if img is None or img.shape[:2] != (CHIP, CHIP):
        return None
    return np.ascontiguousarray(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))


def _slug(name: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", name.strip().lower()).strip("-")
    if not s:
        raise StorageError(f"unusable name {name!r}")
    return s


class Gallery(GalleryFolders):
    """Who is enrolled, with their consent, chips and templates; every write all-or-nothing (GalleryFolders).

    Opening it also gives each person enrolled by an older version a random id (once: written with the record,
    all-or-nothing like an enrolment). `recover=False` opens it strictly read-only (`faces test`): nothing in the
    state dir is touched."""

    def __init__(self, state_dir: Path, *, recover: bool = True) -> None:
        super().__init__(StateLayout.of(state_dir).faces)
        if recover:
            self.recover(blocking=False)
            self.assign_ids()

    def _dir(self, name: str) -> Path:
        return self.root / _slug(name)

    def enroll(
        self,
        name: str,
        chips: list[npt.NDArray[np.uint8]],
        templates: F32,
        consent: Consent,
        embedder: str,
        now: datetime | None = None,
        existing: Existing = "replace",
    ) -> Person:
        """Store a person: consent, the aligned 150x150 RGB chip of their face in each photo and its template.

        Whole photos are refused (only chips are ever written).  A name already enrolled is refused
        (`existing="refuse"`), replaced in full ("replace"), or gets these chips and templates added ("add":
        the consent record becomes this one, the newest); either way the person keeps their id.  The consent
        must pass `consent.checked` on the local date of `now` (who, what for, given by today, an end date after
        it and not past)."""
        now = now or datetime.now(UTC)
        consent = checked(consent.by, consent.given, consent.until, consent.purpose, now)
        if len(chips) != len(templates) or not chips:
            raise StorageError("one template per face chip, at least one")
        blobs = [encode_chip(c) for c in chips]  # refuses anything that is not a chip before a file is written
        private_dir(self.root)
        slug = _slug(name)
        final = self.root / slug
        person = Person(name, "", "", now.strftime("%Y-%m-%dT%H:%M:%SZ"), len(chips), embedder, CHIPS,
                        person_id=new_person_id()).with_consent(consent)
        templates = templates.astype(np.float32)
        with self._locked():
            self._recover_locked()
            old = self._person_at(final)
            if old is not None and old.person_id is not None:
                person = replace(person, person_id=old.person_id)
            if old is not None and existing == "refuse":
                raise StorageError(
                    f"{old.name} is already enrolled ({old.photos} photo(s), consent by {old.consent_by} on "
                    f"{old.consent_date}): use --replace to replace that enrolment, or --add to add these photos"
                )
            if old is not None and existing == "add":
                if old.embedder != embedder:
                    raise StorageError(
                        f"{old.name} was enrolled with {old.embedder}, these templates come from {embedder}: "
                        "use --replace (templates of two models cannot be compared)"
                    )
                if old.stored != CHIPS and any((final / "photos").iterdir()):
                    raise StorageError(
                        f"{old.name}'s enrolment still holds whole photos: run `doorbell-edge faces migrate` first"
                    )
                kept = [p.read_bytes() for p in sorted((final / "photos").glob("*"))]
                blobs = kept + blobs
                templates = np.concatenate([self._load_templates(final), templates])
                person = replace(person, photos=len(templates))
            self._commit_locked(slug, asdict(person), blobs, templates)
        return person

    def renew(self, name: str, consent: Consent, now: datetime, person_id: str) -> tuple[Person, Person]:
        """Record a new consent for an enrolled person, photos and templates untouched: (before, after). The
        consent must pass `consent.checked`; `person_id` is the id the caller audited the change under, so a
        person forgotten or enrolled anew meanwhile is refused rather than given someone else's consent."""
        consent = checked(consent.by, consent.given, consent.until, consent.purpose, now)
        folder = self._dir(name)
        with self._locked():
            self._recover_locked()
            old = self._person_at(folder)
            if old is None or old.person_id != person_id:
                raise StorageError(f"{name} is not enrolled any more: the consent record was not changed")
            new = old.with_consent(consent)
            self._rewrite_locked(folder, asdict(new))
        return old, new

    def ensure_id(self, name: str) -> Person | None:
        """The person enrolled under `name`, given a random id first if their record has none (written once);
        None if nobody is."""
        person = self.enrolled(name)
        if person is None or person.person_id is not None:
            return person
        with self._locked():
            self._recover_locked()
            return self._id_locked(self._dir(name))

    def _id_locked(self, folder: Path) -> Person | None:
        person = self._person_at(folder)
        if person is not None and person.person_id is None:
            person = replace(person, person_id=new_person_id())
            self._rewrite_locked(folder, asdict(person))
            log.warning("face gallery %s: an enrolment from an older version now has the id %s", self.root,
                        person.person_id)
        return person

    def assign_ids(self) -> None:
        """Give every person without an id (enrolled by an older version) one; nothing is written when all have
        one. A busy gallery (someone enrolling) or one that cannot be written is left for the next opening."""
        try:
            if all(p.person_id is not None for p in self.people()):
                return
        except StorageError:
            return  # unreadable: whatever reads it next says so, with the reason
        with contextlib.ExitStack() as stack:
            try:
                if not stack.enter_context(self._locked(blocking=False)):
                    return
                missing = [p.name for p in self.people() if p.person_id is None]
            except (OSError, StorageError) as exc:
                log.warning("cannot give the enrolled people of %s their ids: %s", self.root, exc)
                return
            for name in missing:
                try:
                    self._id_locked(self._dir(name))
                except (OSError, StorageError) as exc:  # a damaged or read-only folder: left as it is
                    log.warning("cannot give an enrolled person of %s an id: %s", self.root, exc)

    def enrolled(self, name: str) -> Person | None:
        """The person enrolled under this name (or one that spells to the same folder), None if nobody is."""
        return self._person_at(self._dir(name))

    def _person_at(self, folder: Path) -> Person | None:
        """The record in `folder`/person.json; None when there is none (an enrolment cut short: person.json is
        written last, or a stray file); StorageError naming the file when it cannot be read or is damaged."""
        pj = folder / "person.json"
        try:
            text = pj.read_text()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise StorageError(f"cannot read the face gallery: {pj}: {why_unreadable(pj.parent, exc)}") from exc
        try:
            data = json.loads(text)
            check_record(data)
            return Person(**data)
        except (ValueError, TypeError) as exc:
            raise StorageError(f"{pj}: unreadable: {exc}") from exc

    def whole_photos(self) -> list[str]:
        """Names whose enrolment (from before chips) still keeps whole photos, which may show other people."""
        return [p.name for p in self.people() if p.stored != CHIPS and self.photos(p.name)]

    def migrate(self, chip_of: Callable[[bytes, F32], npt.NDArray[np.uint8] | None]) -> list[str]:
        """Replace every whole photo kept from before chips by the chip of the enrolled face, what was done.

        `chip_of(photo bytes, the template enrolled from it)` returns the chip of the face in the photo that
        template came from, or None when it cannot be found again (then the photo is dropped and only its
        template kept).  Each person is rewritten all-or-nothing, like an enrolment; the templates, the
        consent record and the enrolment time stay as they were."""
        done: list[str] = []
        for name in self.whole_photos():
            with self._locked():
                self._recover_locked()
                folder = self._dir(name)
                person = self._person_at(folder)
                if person is None or person.stored == CHIPS:
                    continue  # forgotten or migrated meanwhile
                templates = self._load_templates(folder)
                photos = sorted((folder / "photos").glob("*"))
                blobs: list[bytes] = []
                for i, photo in enumerate(photos):
                    chip = chip_of(photo.read_bytes(), templates[i]) if i < len(templates) else None
                    if chip is not None:
                        blobs.append(encode_chip(chip))
                self._commit_locked(folder.name, asdict(replace(person, stored=CHIPS)), blobs, templates)
                dropped = len(photos) - len(blobs)
                done.append(
                    f"{name}: {len(blobs)} whole photo(s) replaced by the enrolled face's chip"
                    + (f", {dropped} dropped (face not found again; its template is kept)" if dropped else "")
                )
        for line in done:
            log.warning("face gallery %s: %s", self.root, line)
        return done

    def chips(self, name: str) -> list[npt.NDArray[np.uint8]]:
        """The person's stored face chips (RGB); empty for an enrolment that still keeps whole photos."""
        person = self.enrolled(name)
        if person is None or person.stored != CHIPS:
            return []
        out = []
        for path in self.photos(name):
            chip = decode_chip(path.read_bytes())
            if chip is not None:
                out.append(chip)
        return out

    def reembed(self, name: str, engine: FaceEngine) -> F32:
        """The person's templates computed again with `engine`'s embedder (enrolled with the other precision)."""
        chips = self.chips(name)
        if chips:
            return np.stack([engine.embedder.embed(c) for c in chips]).astype(np.float32)
        from edge.vision.gallery_legacy import embed_whole_photos

        return embed_whole_photos(self.photos(name), engine)

    def people(self) -> list[Person]:
        """Everyone enrolled; a gallery this process cannot read is a StorageError, never an empty list."""
        try:
            entries = [e for e in os.listdir(self.root) if not e.startswith(".")]
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StorageError(f"cannot read the face gallery {self.root}: {why_unreadable(self.root, exc)}") from exc
        found = (self._person_at(self.root / e) for e in sorted(entries, key=lambda e: e + "/"))  # glob's order
        return [p for p in found if p is not None]

    def templates(self) -> dict[str, F32]:
        out: dict[str, F32] = {}
        for p in self.people():
            out[p.name] = self._load_templates(self._dir(p.name))
        return out

    def photos(self, name: str) -> list[Path]:
        return sorted((self._dir(name) / "photos").glob("*"))

    def forget(self, name: str) -> bool:
        """Delete the person's consent record, photos and templates; True if they were enrolled."""
        d = self._dir(name)
        if not d.exists():
            return False
        with self._locked():
            self._recover_locked()
            if not d.exists():
                return False
            self._trash_locked(d)
        return True

    def stamp(self) -> float:
        """Changes whenever someone is enrolled or forgotten (for reloading in a running daemon)."""
        try:
            if not self.root.is_dir():
                return 0.0
        except OSError as exc:  # the state dir itself cannot be entered
            raise StorageError(f"cannot read the face gallery {self.root}: {why_unreadable(self.root, exc)}") from exc
        stamps = [self.root.stat().st_mtime_ns] + [p.stat().st_mtime_ns for p in self.root.glob("*/person.json")]
        return float(max(stamps))
