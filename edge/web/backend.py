"""The ONE place the owner's page reaches the rest of the device: the service layer (edge.actions: footage
requests, the audit log, faces, events, clips) called exactly as the CLI calls it, and the latest frame."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import rfc8785

from edge.clock import Clock, SystemClock
from edge.config import Config
from edge.layout import StateLayout

if TYPE_CHECKING:
    from edge.actions.faces import Enrolled, Household
    from edge.footage.desk import FootageDesk
    from edge.footage.export_run import ExportResult
    from edge.vision.consent import Consent
    from edge.vision.gallery import Existing, Person

# The service layer is imported when a page first needs it, not when the page starts: an idle page must add
# little to the daemon's memory (bench/web_memory.py, issue 16: <= 20 MB).

FrameSource = Callable[[], bytes | None]
DAY_LIMIT = 200  # events shown per page of one day; the page links to the rest
AUDIT_TAIL = 50

BASIS_NOTES = {
    "warrant": "A judge signed a warrant for this footage. The device checks the court's signature when it can; "
               "you may still refuse, and the police would then have to come to you directly.",
    "court_order": "A court ordered this footage to be handed over. Like a warrant, it comes from a judge.",
    "subpoena": "A subpoena asks for records about events (times, types), never for pictures or video.",
    "consent_request": "The police ask for your voluntary consent. You are free to say no, and nothing "
                       "happens to you if you do.",
    "exigent": "The police say someone is in danger right now. They should follow up with a warrant later.",
    "preservation": "The police ask you to keep these clips from being deleted while they get a warrant. "
                    "Nothing is sent.",
}
BUTTONS = {
    "approve": "Approve sends every clip asked for (all ticked), with faces blurred and encrypted to the agency's "
               "key, and logs it.",
    "narrow": "Narrow sends only the clips you tick, and logs it.",
    "deny": "Deny tells the agency no and logs it.",
    "export": "Export writes the approved clips, faces blurred, as a signed bundle encrypted to the agency's key "
              "on the doorbell, and logs it first. The page shows its fingerprint; it never offers it for download.",
}


@dataclass(frozen=True)
class AuditStatus:
    ok: bool
    records: int  # verified up to this entry (1-based)
    message: str
    summary: str  # "verified up to entry N" (or where the chain breaks), as `audit verify` says it
    tail: list[dict[str, Any]]


@dataclass(frozen=True)
class Media:
    """A stored file the page may show in place (a clip or a snapshot): never offered for download."""

    path: Path
    mime: str


class Backend:
    """Built once per web server; every call goes through edge.actions, the same functions the CLI calls."""

    def __init__(self, config: Config, clock: Clock | None = None, frame_source: FrameSource | None = None,
                 emit: Callable[[Any], object] | None = None, find_faces: Any = None, engine: Any = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.frame_source = frame_source
        self.emit = emit
        self.find_faces = find_faces  # the export's face finders (None: the shipped ones, as the CLI)
        self.engine = engine  # the face models when the caller has them loaded (None: loaded per enrolment)

    def desk(self, user: str | None = None) -> FootageDesk:
        """The footage desk as a CLI command opens it; decisions are recorded as by `web:<user>`."""
        from edge.footage.desk import FootageDesk

        return FootageDesk(self.config, self.clock, emit=self.emit, find_faces=self.find_faces,
                           actor=f"web:{user}" if user else "web")

    # --- audit --------------------------------------------------------------------------------------------

    def audit(self, kind: str, **data: Any) -> int:
        """Append one record (with its witness event, as the footage desk does); returns its seq."""
        return int(self.desk().audit.append(kind, **data)["seq"])

    def last_record_of(self, kinds: tuple[str, ...]) -> dict[str, Any] | None:
        """The newest audit record of one of these kinds (None: none, or no audit log yet; nothing is created)."""
        from edge.footage.audit import AuditLog

        if not StateLayout.of(self.config.state_dir).audit_log.exists():
            return None
        return next((r for r in reversed(AuditLog(self.config.state_dir, self.clock).records())
                     if r.get("kind") in kinds), None)

    def audit_status(self) -> AuditStatus:
        from edge.actions import audit as audit_actions

        desk = self.desk()
        checked = audit_actions.verify(desk)
        return AuditStatus(checked.ok, checked.verified_up_to, checked.message, checked.summary,
                           list(reversed(desk.audit.records()[-AUDIT_TAIL:])))

    def transparency(self) -> dict[str, Any] | None:
        """The transparency report (`audit report`); None before any request arrived (nothing is created)."""
        from edge.actions import audit as audit_actions

        if not StateLayout.of(self.config.state_dir).footage.exists():
            return None
        return dict(audit_actions.transparency_report(self.desk()))

    # --- now and events -----------------------------------------------------------------------------------

    def latest_jpeg(self) -> bytes | None:
        return self.frame_source() if self.frame_source is not None else None

    def events(self, day: date, types: tuple[str, ...] = (), after_seq: int = 0) -> tuple[list[dict[str, Any]], bool]:
        """The events of one local calendar day (at most DAY_LIMIT from after_seq on) and whether more follow,
        each with the ids of its clips and whether it has a snapshot."""
        from edge.actions import events as events_actions

        page = events_actions.read_day(self.config, self.clock, day, types=types,
                                       limit=1_000_000 if after_seq else DAY_LIMIT, footage=False)
        rows = [e for e in page.events if e.seq > after_seq] if after_seq else list(page.events)
        more = len(rows) > DAY_LIMIT if after_seq else page.more
        shown = events_actions.with_footage(self.config, self.clock, rows[:DAY_LIMIT])
        return [{**e.as_dict(), "seq": e.seq, "clips": list(e.clips), "snapshot": bool(e.snapshots)}
                for e in shown], more

    def latest(self, event_type: str) -> dict[str, Any] | None:
        from edge.actions import events as events_actions

        page = events_actions.read_events(self.config, self.clock, types=(event_type,), limit=1)
        return page.events[-1].as_dict() if page.events else None

    def clip(self, clip_id: str) -> Media:
        """A stored clip to play in place (StorageError: no such clip, or its file is gone)."""
        from edge.actions import clips as clips_actions

        ref = clips_actions.playable(clips_actions.open_store(self.config.state_dir, self.clock), clip_id)
        return Media(ref.path, ref.mime)

    def snapshot(self, event_id: str) -> Media:
        from edge.actions import clips as clips_actions

        snap = clips_actions.event_snapshot(clips_actions.open_store(self.config.state_dir, self.clock), event_id)
        return Media(snap.path, "image/jpeg")

    # --- footage requests ---------------------------------------------------------------------------------

    def requests(self) -> list[dict[str, Any]]:
        """Every request (a RequestRow's fields, and the agency's name as configured), the ones waiting for the
        owner first (newest first within each group)."""
        from edge.actions import footage

        if not StateLayout.of(self.config.state_dir).footage.exists():
            return []
        desk = self.desk()
        rows = footage.list_requests(desk)
        rows.sort(key=lambda r: r.received_at, reverse=True)
        rows.sort(key=lambda r: r.state != "waiting")
        return [{**r.to_dict(), "agency_name": footage.agency_name(desk, r.agency, r.verified).text} for r in rows]

    def request(self, request: str) -> dict[str, Any]:
        """A request as the page shows it, with `shown_hash`: the hash of exactly what is shown, and
        `document_sha256`: the document's hash the decision is bound to (approve's seen_sha256)."""
        from edge.actions import footage
        from edge.footage.policy import CODES

        desk = self.desk()
        details = footage.show(desk, request)
        agency = footage.request_agency(desk, details)  # the configured name, as the list and `requests show`
        summary = details.summary
        now = summary["now"]
        reasons = [{"code": r["code"], "sentence": CODES.get(r["code"], ("note", ""))[1], "detail": r["detail"],
                    "blocking": CODES.get(r["code"], ("note", ""))[0] == "deny"} for r in now["reasons"]]
        doc = summary["document"] or {}
        view = {
            "id": summary["id"],
            "state": details.state,
            "agency": summary["agency"],
            "agency_name": agency.name,
            "agency_says": agency.says,  # the document's own name for itself, when it differs: shown as such
            "agency_unverified": agency.configured and not agency.verified,
            "request_id": summary["request_id"],
            "legal_basis": summary["legal_basis"],
            "basis_note": BASIS_NOTES.get(str(summary["legal_basis"]), "A kind of request the device does not know."),
            "case_number": summary["case_number"],
            "incident": (doc.get("incident") or {}).get("description"),
            "scope": doc.get("scope"),
            "document_sha256": details.document_sha256,
            "decision": now["decision"],
            "reasons": reasons,
            "clips": now["clips"],
            "data": now["data"],
            "policy_hash": now["policy_hash"],
            "owner_actions": summary["owner_actions"],
            "exports": self._exports(summary["id"], summary["exports"]),
            "untrusted": self._untrusted([str(c["clip"]) for c in now["clips"]]),
        }
        view["summary"] = _plain_summary(view)
        # Decided only while the request waits for the owner: after an export the approval is used and the policy
        # says owner_review again (APPROVAL_USED), but the request is done, not waiting.
        view["decidable"] = details.state == "waiting" and now["decision"] == "owner_review"
        view["exportable"] = now["decision"] == "release" and not any(e["completed_at"] for e in view["exports"])
        view["blocked_by"] = [r["code"] for r in reasons if r["blocking"]]
        view["shown_hash"] = shown_hash(view)
        return view

    def _exports(self, request: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The request's exports with what each sent: its file count and the notes (clips left out, and why),
        from the export_complete record in the audit log (the bundle itself is encrypted to the agency)."""
        exports = [{k: e.get(k) for k in ("id", "started_at", "completed_at", "sha256", "path")} for e in rows]
        if not any(e["completed_at"] for e in exports):
            return exports
        done = {str(r["data"].get("export")): r["data"] for r in self.desk().audit.records()
                if r.get("kind") == "export_complete" and r["data"].get("request") == request}
        for e in exports:
            record = done.get(str(e["id"]))
            e["files"] = len(record.get("files") or []) if record is not None else None
            e["notes"] = list(record.get("notes") or []) if record is not None else []
        return exports

    def _untrusted(self, clip_ids: list[str]) -> list[str]:
        """The clips in scope recorded while the device clock was not trusted: an export leaves them out."""
        from edge.actions import clips as clips_actions
        from edge.errors import StorageError

        if not clip_ids:
            return []
        try:
            store = clips_actions.open_store(self.config.state_dir, self.clock)
        except StorageError:
            return []
        out = []
        for clip_id in clip_ids:
            try:
                if not store.get(clip_id).trusted:
                    out.append(clip_id)
            except StorageError:
                continue  # gone since the decision was made: the export says so itself
        return out

    def approve(self, request: str, user: str, seen_sha256: str, clips: list[str] | None = None) -> str:
        """Approve (clips=None) or narrow to `clips` (edge.actions.footage); RequestChanged when the document is
        not the one whose hash the owner saw; the desk refuses anything outside the request's scope."""
        from edge.actions import footage
        from edge.footage.approval import Narrowing

        desk = self.desk(user)
        if clips is None:
            return str(footage.approve(desk, request, seen_sha256=seen_sha256).decision)
        return str(footage.narrow(desk, request, Narrowing(clips=clips), seen_sha256=seen_sha256).decision)

    def deny(self, request: str, user: str, reason: str) -> str:
        from edge.actions import footage

        return str(footage.deny(self.desk(user), request, reason).decision)

    def export(self, request: str, user: str) -> ExportResult:
        """Write the signed bundle, encrypted to the agency (`requests export`); the page shows its sha256 and
        where it was written, never the bundle or a clip."""
        from edge.actions import footage

        return footage.export(self.desk(user), request)

    # --- faces --------------------------------------------------------------------------------------------

    def people(self) -> Household:
        """Everyone enrolled with their consent's status today (by the daemon's clock): those whose consent has
        ended first, then those with no end date recorded, then those ending soon (soonest first), then the rest."""
        from dataclasses import replace

        from edge.actions import faces

        household = faces.list_faces(self.config, self.clock)
        order = {"ended": 0, "no_end_date": 1, "ending": 2, "valid": 3}
        listed = sorted(household.listed, key=lambda e: (order[e.status.code], e.status.days_left or 0))
        return replace(household, listed=tuple(listed))

    def forget(self, name: str, user: str) -> bool:
        from edge.actions import faces

        return faces.forget(self.config, name, clock=self.clock, by=f"web:{user}")

    def enrol(self, name: str, photos: list[Path], consent: Consent, user: str,
              existing: Existing = "refuse", largest: bool = False) -> Enrolled:
        """Enrol from uploaded photos with the same rules as `faces enroll` (one clear face per photo, a full
        consent record)."""
        from edge.actions import faces

        return faces.enrol(self.config, self.clock, name, photos, consent, existing=existing, largest=largest,
                           by=f"web:{user}", engine=self.engine)

    def renew(self, name: str, consent: Consent, user: str) -> Person:
        """Record a new consent for someone enrolled, as `faces consent` does (audited first)."""
        from edge.actions import faces

        return faces.renew(self.config, self.clock, name, consent, by=f"web:{user}")


def shown_hash(view: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of what the owner is shown (a decision is bound to it)."""
    shown = {k: v for k, v in view.items()
             if k not in ("shown_hash", "decidable", "exportable", "blocked_by", "summary")}
    return hashlib.sha256(bytes(rfc8785.dumps(json.loads(json.dumps(shown, default=str))))).hexdigest()


def _plain_summary(view: dict[str, Any]) -> str:
    clips = view["clips"]
    basis = str(view["legal_basis"]).replace("_", " ")
    windows = (view.get("scope") or {}).get("windows") or []
    when = ""
    if windows:
        try:
            start = min(datetime.fromisoformat(str(w["start"]).replace("Z", "+00:00")) for w in windows)
            end = max(datetime.fromisoformat(str(w["end"]).replace("Z", "+00:00")) for w in windows)
            when = f" from {start.astimezone():%H:%M}-{end.astimezone():%H:%M} on {start.astimezone():%d %b %Y}"
        except (KeyError, ValueError, TypeError):
            when = ""
    what = f"{len(clips)} clip{'s' if len(clips) != 1 else ''}"
    return f"{view['agency_name']} ask for {what}{when}. They say it is a {basis}."


def today() -> date:
    return datetime.now(UTC).astimezone().date()
