"""The owner's page: what the device saw and keeps - Now, the events of a day (snapshots, clips played in place),
the faces with their consent (enrol from uploaded photos, renew a consent, forget) and the audit log."""

from __future__ import annotations

import logging
import shutil
import tempfile
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, RedirectResponse, Response

from edge.actions.events import DAY, FIRST_DAY, LAST_DAY
from edge.errors import EdgeError, StorageError
from edge.web.backend import today
from edge.web.sessions import Session
from edge.web.watched import Watched

if TYPE_CHECKING:
    from edge.vision.consent import Consent
    from edge.vision.gallery import Existing
    from edge.web.app import WebApp

log = logging.getLogger(__name__)

MAX_PHOTOS = 10
PHOTO_TYPES = (".jpg", ".jpeg", ".png", ".webp")
CONSENT_FIELDS = ("consent_by", "consent_date", "consent_until", "consent_purpose")


class Views:
    """Read-mostly pages, and the faces' two actions; every call goes through edge.web.backend."""

    def __init__(self, web: WebApp) -> None:
        self.web = web
        self.backend = web.backend
        self.watched = Watched(self.backend.audit)

    def now_page(self, request: Request, session: Session) -> Response:
        return self.web.render(request, "now.html", session=session,
                               has_frame=self.backend.latest_jpeg() is not None,
                               ring=self.backend.latest("ring"), face=self.backend.latest("face"))

    def now_jpeg(self, request: Request, session: Session) -> Response:
        jpeg = self.backend.latest_jpeg()  # the newest frame in memory, masks applied; nothing is written
        if jpeg is None:
            return PlainTextResponse("no picture yet", status_code=404)
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    def events_page(self, request: Request, session: Session) -> Response:
        try:
            day = date.fromisoformat(request.query_params["day"]) if request.query_params.get("day") else today()
            after = int(request.query_params.get("after", "0"))
        except ValueError:
            return self.web.render(request, "error.html", 400, session=session,
                                   error="That is not a date (YYYY-MM-DD).")
        try:
            events, more = self.backend.events(day, after_seq=after)
        except EdgeError as exc:
            return self.web.render(request, "error.html", 400, session=session, error=str(exc))
        return self.web.render(request, "events.html", session=session, day=day, events=events, more=more,
                               prev_day=day - DAY if day > FIRST_DAY else None,
                               next_day=day + DAY if day < min(LAST_DAY, today()) else None,
                               last_seq=events[-1]["seq"] if events else 0)

    def clip(self, request: Request, session: Session) -> Response:
        """A stored clip, streamed for the <video> on the events page (Range requests: the player seeks). Shown
        inline, never as an attachment; a footage request's bundle is never served by the page. Audited first:
        once per session and clip (web_clip_viewed); no record, no clip."""
        clip_id = request.path_params["clip_id"]
        try:
            media = self.backend.clip(clip_id)
        except StorageError:
            return PlainTextResponse("no such clip", status_code=404)
        try:
            self.watched.clip(session, clip_id)
        except StorageError as exc:
            log.error("web: clip %s not shown: the audit log cannot be written: %s", clip_id, exc)
            return PlainTextResponse("the clip is not shown: the audit log cannot be written (doorbell-edge audit "
                                     "verify says why)", status_code=503)
        return FileResponse(media.path, media_type=media.mime, headers={"Cache-Control": "private, no-store"})

    def snapshot(self, request: Request, session: Session) -> Response:
        try:
            media = self.backend.snapshot(request.path_params["event_id"])
        except StorageError:
            return PlainTextResponse("no snapshot for this event", status_code=404)
        return FileResponse(media.path, media_type=media.mime, headers={"Cache-Control": "private, no-store"})

    def faces_page(self, request: Request, session: Session, status: int = 200, error: str | None = None,
                   form: dict[str, str] | None = None) -> Response:
        from edge.vision.consent import DEFAULT_PURPOSE, WARN_DAYS

        household = self.backend.people()
        return self.web.render(request, "faces.html", status, session=session, people=household.listed,
                               today=household.today, error=error, form=form or {}, max_photos=MAX_PHOTOS,
                               default_purpose=DEFAULT_PURPOSE, warn_days=WARN_DAYS)

    def renew(self, request: Request, form: FormData, session: Session | None) -> Response:
        """Record a new consent for someone enrolled (`faces consent`): their photos and templates stay."""
        assert session is not None
        fields = {k: str(form.get(k, "")).strip() for k in ("name", *CONSENT_FIELDS)}
        try:
            if not fields["name"]:
                raise EdgeError("say whose consent this is")
            consent = _consent(fields)
            if form.get("consent") != "yes":
                raise EdgeError(f"tick the box: {fields['name']} (or their guardian) agreed to this, until that day")
            self.backend.renew(fields["name"], consent, session.user.name)
        except EdgeError as exc:
            return self.faces_page(request, session, 400, f"Consent not recorded: {_plain(exc, {})}")
        return RedirectResponse("/faces", status_code=303)

    def forget(self, request: Request, form: FormData, session: Session | None) -> Response:
        assert session is not None
        name = str(form.get("name", ""))
        if form.get("confirm") != "yes":
            return self.faces_page(request, session, 400, f"Tick the box to confirm forgetting {name}.")
        if not self.backend.forget(name, session.user.name):
            return self.faces_page(request, session, 404, f"{name} is not enrolled.")
        return RedirectResponse("/faces", status_code=303)

    def enrol(self, request: Request, form: FormData, session: Session | None) -> Response:
        """Enrol from uploaded photos with the consent form: the same rules as `faces enroll` (one clear face per
        photo, big and sharp enough; only its aligned chip kept). The uploads go to a private temporary folder
        and are deleted when the enrolment is done or refused."""
        assert session is not None
        fields = {k: str(form.get(k, "")).strip() for k in ("name", *CONSENT_FIELDS)}
        uploads = [f for f in form.getlist("photo") if isinstance(f, UploadFile) and f.filename]
        shown_as: dict[str, str] = {}  # a saved photo's path -> the file name the owner chose
        try:
            if not fields["name"]:
                raise EdgeError("give the person's name")
            consent = _consent(fields)
            if form.get("consent") != "yes":
                raise EdgeError("tick the box: the person (or their guardian) consented to being recognised")
            if not uploads:
                raise EdgeError("choose at least one photo of the person's face")
            if len(uploads) > MAX_PHOTOS:
                raise EdgeError(f"at most {MAX_PHOTOS} photos at a time")
            existing: Existing = "add" if form.get("existing") == "add" else "refuse"
            with tempfile.TemporaryDirectory(prefix="enrol-") as folder:  # 0700: only the daemon's user
                photos = [_save(upload, Path(folder), i) for i, upload in enumerate(uploads)]
                shown_as.update((str(p), u.filename or p.name) for p, u in zip(photos, uploads, strict=True))
                done = self.backend.enrol(fields["name"], photos, consent, session.user.name, existing=existing,
                                          largest=form.get("largest") == "yes")
        except EdgeError as exc:
            return self.faces_page(request, session, 400, f"Not enrolled: {_plain(exc, shown_as)}", fields)
        log.info("web: enrolment done (%s, %d photo(s))", done.outcome, len(uploads))
        return RedirectResponse("/faces", status_code=303)

    def audit_page(self, request: Request, session: Session) -> Response:
        return self.web.render(request, "audit.html", session=session, audit=self.backend.audit_status(),
                               report=self.backend.transparency())


def _consent(fields: dict[str, str]) -> Consent:
    """The consent form's fields as a record for the faces actions, which check it (`consent.checked`); only
    what is not a date at all is refused here."""
    from edge.vision.consent import Consent

    def day(key: str, words: str) -> date:
        try:
            return date.fromisoformat(fields[key])
        except ValueError:
            raise EdgeError(f"{words} is not a date (YYYY-MM-DD)") from None

    until = day("consent_until", "the day the consent ends") if fields["consent_until"] else None
    return Consent(fields["consent_by"], day("consent_date", "the date of consent"), fields["consent_purpose"], until)


def _save(upload: UploadFile, folder: Path, index: int) -> Path:
    """An uploaded photo into the private folder, under a name of ours (never the browser's file name)."""
    suffix = Path(upload.filename or "").suffix.lower()
    if suffix not in PHOTO_TYPES:
        raise EdgeError(f"{upload.filename}: send a JPEG, PNG or WebP photo")
    path = folder / f"photo-{index + 1}{suffix}"
    upload.file.seek(0)
    with path.open("wb") as out:
        shutil.copyfileobj(upload.file, out)
    return path


def _plain(exc: EdgeError, shown_as: dict[str, str]) -> str:
    """The action's message for the page: the owner's file names, not the temporary ones; the page's words for
    the CLI's options."""
    text = str(exc)
    if "faces found; choose the one" in text:
        text = text.split("\n")[0]  # the CLI's listing of boxes and scores means nothing on the page
    for path, name in shown_as.items():
        text = text.replace(path, name)
    for option in ("--consent-by", "--consent-date", "--consent-until", "--consent-purpose"):
        text = text.replace(f" ({option})", "")
    return (text.replace("choose the one to enrol with --face N, or --largest:",
                         "tick \u201cuse the largest face\u201d, or use a photo with only that person in it")
            .replace("use --replace to replace that enrolment, or --add to add these photos",
                     "tick \u201cadd these photos\u201d to add them, or forget them first"))
