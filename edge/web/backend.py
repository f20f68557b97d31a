"""The ONE place the owner's page reaches the rest of the device: the footage desk, the face gallery, the event
journal, the audit log and the latest frame, called exactly as the CLI calls them (no copies of their logic)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import rfc8785

from edge.clock import Clock, SystemClock
from edge.config import Config

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
    "approve": "Approve sends these clips, with faces blurred and encrypted to the agency's key, and logs it.",
    "narrow": "Narrow sends only the clips you tick, and logs it.",
    "deny": "Deny tells the agency no and logs it.",
}


@dataclass(frozen=True)
class AuditStatus:
    ok: bool
    records: int
    message: str
    tail: list[dict[str, Any]]


class Backend:
    """Built once per web server; each call opens what it needs, as a CLI command would."""

    def __init__(self, config: Config, clock: Clock | None = None, frame_source: FrameSource | None = None,
                 emit: Callable[[Any], object] | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.frame_source = frame_source
        self.emit = emit

    # --- audit --------------------------------------------------------------------------------------------

    def _desk(self, actor: str = "web") -> Any:
        from edge.footage.desk import FootageDesk

        return FootageDesk(self.config, self.clock, emit=self.emit, actor=actor)

    def audit(self, kind: str, **data: Any) -> int:
        """Append one record (with its witness event, as the footage desk does); returns its seq."""
        return int(self._desk().audit.append(kind, **data)["seq"])

    def audit_status(self) -> AuditStatus:
        from edge.footage.audit import AuditLog

        log = AuditLog(self.config.state_dir, self.clock)
        ok, message = self._desk().verify_audit()
        checked = log.verify()
        records = log.records()
        return AuditStatus(ok, checked.records if checked.ok else (checked.bad_record or 1) - 1, message,
                           list(reversed(records[-AUDIT_TAIL:])))

    def transparency(self) -> dict[str, Any] | None:
        """The transparency report (`requests report`); None before any request arrived (nothing is created)."""
        if not (self.config.state_dir / "footage").exists():
            return None
        return dict(self._desk().report())

    # --- now and events -----------------------------------------------------------------------------------

    def latest_jpeg(self) -> bytes | None:
        return self.frame_source() if self.frame_source is not None else None

    def events(self, day: date, types: tuple[str, ...] = (), after_seq: int = 0) -> tuple[list[dict[str, Any]], bool]:
        """The events of one local calendar day (at most DAY_LIMIT from after_seq on) and whether more follow."""
        from edge.actions.events import read_day

        page = read_day(self.config, self.clock, day, types=types, limit=1_000_000 if after_seq else DAY_LIMIT,
                        footage=False)
        if not after_seq:
            return [e.as_dict() for e in page.events], page.more
        rows = [e for e in page.events if e.seq > after_seq]
        return [e.as_dict() for e in rows[:DAY_LIMIT]], len(rows) > DAY_LIMIT

    def latest(self, event_type: str) -> dict[str, Any] | None:
        from edge.actions.events import read_events

        page = read_events(self.config, self.clock, types=(event_type,), limit=1)
        return page.events[-1].as_dict() if page.events else None

    # --- footage requests ---------------------------------------------------------------------------------

    def requests(self) -> list[dict[str, Any]]:
        """Every request, the ones waiting for the owner first (newest first within each group)."""
        if not (self.config.state_dir / "footage").exists():
            return []
        rows = self._desk().rows()
        rows.sort(key=lambda r: r["received_at"], reverse=True)
        rows.sort(key=lambda r: r["state"] != "waiting")
        return rows

    def request(self, request: str) -> dict[str, Any]:
        """A request as the page shows it, with `shown_hash`: the hash of exactly what is shown."""
        from edge.footage.policy import CODES

        summary = self._desk().summary(request)
        now = summary["now"]
        reasons = [{"code": r["code"], "sentence": CODES.get(r["code"], ("note", ""))[1], "detail": r["detail"],
                    "blocking": CODES.get(r["code"], ("note", ""))[0] == "deny"} for r in now["reasons"]]
        doc = summary["document"] or {}
        view = {
            "id": summary["id"],
            "agency": summary["agency"],
            "agency_name": (doc.get("agency") or {}).get("name") or summary["agency"],
            "request_id": summary["request_id"],
            "legal_basis": summary["legal_basis"],
            "basis_note": BASIS_NOTES.get(str(summary["legal_basis"]), "A kind of request the device does not know."),
            "case_number": summary["case_number"],
            "incident": (doc.get("incident") or {}).get("description"),
            "scope": doc.get("scope"),
            "document_sha256": summary["document_sha256"],
            "decision": now["decision"],
            "reasons": reasons,
            "clips": now["clips"],
            "data": now["data"],
            "policy_hash": now["policy_hash"],
            "owner_actions": summary["owner_actions"],
            "exports": [{k: e.get(k) for k in ("id", "started_at", "completed_at", "sha256")}
                        for e in summary["exports"]],
        }
        view["summary"] = _plain_summary(view)
        view["decidable"] = now["decision"] == "owner_review"
        view["blocked_by"] = [r["code"] for r in reasons if r["blocking"]]
        view["shown_hash"] = shown_hash(view)
        return view

    def approve(self, request: str, user: str, clips: list[str] | None = None) -> str:
        """Approve (clips=None) or narrow to `clips`; the desk refuses anything outside the request's scope."""
        return str(self._desk(f"web:{user}").approve(request, clips=clips).decision)

    def deny(self, request: str, user: str, reason: str) -> str:
        return str(self._desk(f"web:{user}").deny(request, reason).decision)

    # --- faces --------------------------------------------------------------------------------------------

    def people(self) -> list[Any]:
        from edge.vision.gallery import Gallery

        return Gallery(self.config.state_dir).people()

    def forget(self, name: str) -> bool:
        from edge.vision.gallery import Gallery

        return Gallery(self.config.state_dir).forget(name)


def shown_hash(view: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of what the owner is shown (a decision is bound to it)."""
    shown = {k: v for k, v in view.items() if k not in ("shown_hash", "decidable", "blocked_by", "summary")}
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
