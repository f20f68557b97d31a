"""The footage policy: one pure decide() from request, rules, clips, owner actions and time to a Decision."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

import rfc8785

from edge.clock import rfc3339
from edge.config import Config, FootageRequestsConfig
from edge.footage.request import FootageRequest, Intake, signature_problem

Outcome = Literal["deny", "owner_review", "release", "hold"]
Effect = Literal["deny", "owner_review", "release", "hold", "note"]

# Every reason code, what it does to the request, and one plain line (the docs say more).
CODES: dict[str, tuple[Effect, str]] = {
    "INCOMPLETE": ("deny", "a required field is missing, has the wrong type, or the document does not parse"),
    "UNKNOWN_AGENCY": ("deny", "the agency is not on the owner's list"),
    "BAD_SIGNATURE": ("deny", "a signature does not verify"),
    "REPLAY": ("deny", "this agency already submitted this request id"),
    "WRONG_DEVICE": ("deny", "the request names another device (a key fingerprint that is not this device's)"),
    "NOT_YET_VALID": ("deny", "the request's validity has not started"),
    "EXPIRED": ("deny", "the request has expired"),
    "WARRANT_STALE": ("deny", "the warrant or court order is older than the policy allows"),
    "PROSPECTIVE": ("deny", "a window reaches into the future; no live or future footage, ever"),
    "SCOPE_TOO_BROAD": ("deny", "a window is empty or backwards, or the windows add up to too many hours"),
    "BAD_CAMERA": ("deny", "no cameras, a wildcard, or a camera this device does not have"),
    "BIOMETRICS_NEVER_EXPORTED": ("deny", "face data was requested; it never leaves the device"),
    "SUBPOENA_NO_CONTENT": ("deny", "a subpoena may ask for event metadata only"),
    "AUDIO_REQUIRES_WARRANT": ("deny", "audio needs a warrant"),
    "EXIGENT_DISABLED": ("deny", "the owner does not accept emergency requests without a warrant"),
    "EXIGENT_INCOMPLETE": ("deny", "an emergency request must describe the danger and give a callback number"),
    "VERIFIED_WARRANT": ("owner_review", "a warrant or court order signed by a trusted court"),
    "UNVERIFIED_WARRANT": ("owner_review", "a warrant or court order without a trusted court's signature"),
    "CONSENT_REQUIRED": ("owner_review", "the agency asks for the owner's voluntary consent"),
    "SUBPOENA_METADATA_ONLY": ("owner_review", "a subpoena for event metadata; the owner decides"),
    "EXIGENT_REVIEW": ("owner_review", "an emergency request; the owner is notified at once and decides"),
    "PRESERVATION_HOLD": ("hold", "existing clips in scope are kept from deletion; nothing is disclosed"),
    "HOLD_LIMIT": ("deny", "the agency already has as many preservation holds in force as the owner allows"),
    "AUTO_RELEASED": ("release", "a verified warrant released without asking, as the owner configured"),
    "OWNER_APPROVED": ("release", "the owner approved the release"),
    "OWNER_DENIED": ("deny", "the owner refused"),
    "APPROVAL_LAPSED": ("owner_review", "the owner's approval was not used in time and lapsed"),
    "APPROVAL_USED": ("owner_review", "the owner's approval was already used for an export"),
    "UNBOUND_DEVICE": ("owner_review", "the request names no device: never auto-released, the owner decides"),
    "CLIP_CHANGED": ("owner_review", "a clip changed since the owner approved it (its sha256 differs); approve again"),
    "APPROVAL_UNLISTED": ("owner_review", "an approval that does not list the clips the owner saw; approve again"),
    "CLIPS_NOT_APPROVED": ("note", "clips in scope that the approval does not cover (they appeared after it)"),
    "UNRATIFIED": ("note", "an emergency release not yet confirmed by a warrant or case reference"),
    "RATIFIED": ("note", "an emergency release later confirmed by a warrant or case reference"),
}

CONTENT_KINDS = frozenset({"video", "audio", "snapshots"})
COURT_BASES = frozenset({"warrant", "court_order"})
WILDCARDS = frozenset({"*", "all", "any", "ALL", "ANY"})
HOLD_DAYS = 90
HOLD_RENEWALS = 1


class ClipLike(Protocol):
    """What the policy needs of a clip (edge.recording.store.ClipRef has these and more)."""

    @property
    def id(self) -> str: ...
    @property
    def camera(self) -> str: ...
    @property
    def start(self) -> datetime: ...
    @property
    def end(self) -> datetime: ...
    @property
    def sha256(self) -> str: ...


@dataclass(frozen=True)
class Policy:
    """The owner's rules, the cameras this device has, and this device's key fingerprint (what a request must
    name in `device`; None when the device has no readable signing key, so no request can name it)."""

    rules: FootageRequestsConfig
    cameras: frozenset[str]
    device: str | None = None

    @classmethod
    def from_config(cls, config: Config, device: str | None = None) -> Policy:
        return cls(config.footage_requests, frozenset(config.cameras), device)

    @property
    def hash(self) -> str:
        body: dict[str, Any] = {"footage_requests": self.rules.model_dump(mode="json"), "cameras": sorted(self.cameras),
                                "device": self.device}
        return hashlib.sha256(bytes(rfc8785.dumps(body))).hexdigest()


@dataclass(frozen=True)
class OwnerAction:
    """One owner decision on a request, as recorded (only the local CLI creates these)."""

    kind: Literal["approve", "deny", "ratify"]
    at: datetime
    seq: int = 0
    clips: frozenset[str] | None = None  # the clip ids approved (an older version stored None for "everything")
    cameras: frozenset[str] | None = None
    data: frozenset[str] | None = None
    unblur: frozenset[str] = frozenset()
    attest_original: bool = False
    used: bool = False  # an export completed under this approval
    lapsed: bool = False  # the store recorded this approval as lapsed: it stays lapsed whatever the clock says
    note: str = ""
    # What the owner saw and approved: each in-scope part of each clip with the clip's sha256. An approval
    # releases these parts and nothing else; None (an approval recorded before this list existed) releases nothing.
    shown: tuple[Segment, ...] | None = None


@dataclass(frozen=True)
class Reason:
    code: str
    detail: str

    def __post_init__(self) -> None:
        if self.code not in CODES:
            raise ValueError(f"unknown reason code {self.code!r}")


@dataclass(frozen=True, order=True)
class Segment:
    """The part [start, end) of one clip that falls inside the request's windows, and the clip's sha256 (what
    the owner is shown and what an approval binds to)."""

    camera: str
    start: datetime
    end: datetime
    clip_id: str
    sha256: str = ""

    def to_dict(self) -> dict[str, str]:
        body = {"clip": self.clip_id, "camera": self.camera, "start": rfc3339(self.start), "end": rfc3339(self.end)}
        if self.sha256:
            body["sha256"] = self.sha256
        return body


@dataclass(frozen=True)
class Decision:
    request_id: str | None
    decision: Outcome
    reasons: tuple[Reason, ...]
    segments: tuple[Segment, ...] = ()
    data: tuple[str, ...] = ()
    unblur: frozenset[str] = frozenset()
    approval_seq: int | None = None  # the owner approval this release rests on
    policy_hash: str = ""

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(r.code for r in self.reasons)

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "decision": self.decision,
            "reasons": [{"code": r.code, "detail": r.detail} for r in self.reasons],
            "clips": [s.to_dict() for s in self.segments],
            "data": list(self.data),
            "policy_hash": self.policy_hash,
        }


def merge_windows(windows: Iterable[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    """The union of the non-empty windows, sorted and merged."""
    out: list[tuple[datetime, datetime]] = []
    for start, end in sorted(w for w in windows if w[0] < w[1]):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def in_scope(
    clips: Iterable[ClipLike], cameras: Iterable[str], windows: Iterable[tuple[datetime, datetime]]
) -> list[Segment]:
    """Every piece of every clip on the cameras that overlaps the windows, cut to them."""
    wanted = set(cameras)
    merged = merge_windows(windows)
    segments = []
    for clip in clips:
        if clip.camera not in wanted:
            continue
        for start, end in merged:
            lo, hi = max(clip.start, start), min(clip.end, end)
            if lo < hi:
                segments.append(Segment(clip.camera, lo, hi, clip.id, clip.sha256))
    return sorted(segments)


def _deny(request_id: str | None, policy: Policy, reasons: Sequence[Reason]) -> Decision:
    return Decision(request_id, "deny", tuple(reasons), policy_hash=policy.hash)


def _authenticate(doc: FootageRequest, signed: bytes, policy: Policy) -> list[Reason]:
    agency = policy.rules.agencies.get(doc.agency.id)
    if agency is None:
        return [Reason("UNKNOWN_AGENCY", f"agency {doc.agency.id!r} is not in footage_requests.agencies")]
    problem = signature_problem(agency.signing_key, doc.signatures.agency, signed)
    if problem:
        return [Reason("BAD_SIGNATURE", f"agency signature: {problem}")]
    return []


def court_verified(doc: FootageRequest, signed: bytes, policy: Policy) -> tuple[bool | None, str]:
    """(True, why) verified; (False, why) not verifiable; (None, why) a trusted court's signature is forged."""
    if doc.issued_by is None:
        return False, "no issuing court named"
    court = policy.rules.trusted_courts.get(doc.issued_by.court_id)
    if court is None:
        return False, f"court {doc.issued_by.court_id!r} is not in footage_requests.trusted_courts"
    if doc.signatures.court is None:
        return False, f"no signature from court {doc.issued_by.court_id!r}"
    problem = signature_problem(court.signing_key, doc.signatures.court, signed)
    if problem:
        return None, f"court signature: {problem}"
    return True, f"signed by trusted court {doc.issued_by.court_id!r} ({court.name})"


def _rule_checks(doc: FootageRequest, policy: Policy, now: datetime, replay: bool) -> list[Reason]:
    rules = policy.rules
    basis = doc.legal_basis
    out: list[Reason] = []
    if replay:
        out.append(Reason("REPLAY", f"request_id {doc.request_id!r} was already submitted by {doc.agency.id!r}"))
    if doc.device is not None and doc.device.lower() != policy.device:
        mine = (f"this device's key fingerprint is {policy.device}" if policy.device
                else "this device has no readable signing key, so no request can name it")
        out.append(Reason("WRONG_DEVICE", f"the request is for device {doc.device.lower()}; {mine}"))
    if now < doc.issued_at:
        out.append(Reason("NOT_YET_VALID", f"issued_at {rfc3339(doc.issued_at)} is after now {rfc3339(now)}"))
    if now >= doc.expires_at:
        out.append(Reason("EXPIRED", f"expires_at {rfc3339(doc.expires_at)} is not after now {rfc3339(now)}"))
    if basis in COURT_BASES and now - doc.issued_at > timedelta(days=rules.warrant_max_age_days):
        out.append(Reason("WARRANT_STALE", f"issued more than {rules.warrant_max_age_days} days ago"))
    future = [w for w in doc.scope.windows if w.end > now]
    if future:
        out.append(Reason("PROSPECTIVE", f"window ending {rfc3339(future[0].end)} reaches past now"))
    backwards = [w for w in doc.scope.windows if w.start >= w.end]
    if backwards:
        out.append(Reason("SCOPE_TOO_BROAD", f"window starting {rfc3339(backwards[0].start)} has start >= end"))
    else:
        total = sum(((w.end - w.start) for w in doc.scope.windows), timedelta())
        limit = getattr(rules.max_window_hours, basis)
        if total > timedelta(hours=limit):
            hours = total.total_seconds() / 3600
            out.append(Reason("SCOPE_TOO_BROAD", f"windows cover {hours:g} h; a {basis} allows {limit:g} h"))
    cameras = doc.scope.cameras
    if not cameras:
        out.append(Reason("BAD_CAMERA", "no cameras named"))
    elif any(c.strip() in WILDCARDS or c.strip().lower() in WILDCARDS for c in cameras):
        out.append(Reason("BAD_CAMERA", "wildcard cameras are not accepted; name each camera"))
    else:
        unknown = sorted(set(cameras) - policy.cameras)
        if unknown:
            out.append(Reason("BAD_CAMERA", f"this device has no camera {unknown[0]!r}"))
    data = set(doc.scope.data)
    if "face_data" in data:
        out.append(Reason("BIOMETRICS_NEVER_EXPORTED", "face data is never exported, under any legal basis"))
    if basis == "subpoena" and data & CONTENT_KINDS:
        asked = ", ".join(sorted(data & CONTENT_KINDS))
        out.append(Reason("SUBPOENA_NO_CONTENT", f"a subpoena may not ask for {asked}"))
    if "audio" in data and basis != "warrant":
        out.append(Reason("AUDIO_REQUIRES_WARRANT", f"audio requested under {basis}"))
    if basis == "exigent":
        if rules.exigent == "deny":
            out.append(Reason("EXIGENT_DISABLED", "footage_requests.exigent is 'deny'"))
        emergency = doc.emergency
        if emergency is None or not (emergency.danger or "").strip() or not (emergency.callback or "").strip():
            why = "an emergency request needs emergency.danger and emergency.callback"
            out.append(Reason("EXIGENT_INCOMPLETE", why))
    return out


def static_checks(doc: FootageRequest, now: datetime, rules: FootageRequestsConfig | None = None) -> list[Reason]:
    """The rule checks that need nothing of a particular device (its cameras, key or the agency's history), as
    decide() runs them: what the agency's tool checks before signing (edge/agency/check.py), against the default
    limits unless given the owner's. One code path, so both sides give the same reason codes."""
    device = doc.device.lower() if doc.device else None
    policy = Policy(rules or FootageRequestsConfig(), frozenset(doc.scope.cameras), device)
    return _rule_checks(doc, policy, now, replay=False)


def _latest(consents: Sequence[OwnerAction], kinds: set[str]) -> OwnerAction | None:
    """The last action of these kinds in the order they were written (store sequence, then list order), never by
    wall time: a clock stepped back between an approval and a denial must not let the approval win."""
    found = [(c.seq, index, c) for index, c in enumerate(consents) if c.kind in kinds]
    return max(found, key=lambda item: (item[0], item[1]))[2] if found else None


def decide(
    request: Intake,
    policy: Policy,
    clips: Iterable[ClipLike],
    consents: Sequence[OwnerAction],
    now: datetime,
    *,
    replay: bool = False,
    active_holds: int = 0,
) -> Decision:
    """Deny by default; every branch names its reason code. `replay` says this agency already sent this id;
    `active_holds` how many preservation holds of this agency are in force (judged at intake only)."""
    request_id = request.request_id
    if request.document is None or request.signed_bytes is None or request.problems:
        detail = "; ".join(request.problems) or "document did not validate"
        return _deny(request_id, policy, [Reason("INCOMPLETE", detail[:1000])])
    doc, signed = request.document, request.signed_bytes

    auth = _authenticate(doc, signed, policy)
    if auth:
        return _deny(request_id, policy, auth)
    court_ok: bool | None = False
    court_why = ""
    if doc.legal_basis in COURT_BASES:
        court_ok, court_why = court_verified(doc, signed, policy)
        if court_ok is None:
            return _deny(request_id, policy, [Reason("BAD_SIGNATURE", court_why)])

    problems = _rule_checks(doc, policy, now, replay)
    if problems:
        return _deny(request_id, policy, problems)

    windows = tuple((w.start, w.end) for w in doc.scope.windows)
    segments = tuple(in_scope(clips, doc.scope.cameras, windows))
    data = tuple(k for k in ("video", "audio", "snapshots", "event_metadata") if k in doc.scope.data)
    base = Decision(request_id, "owner_review", (), segments, data, policy_hash=policy.hash)
    # A request that names no device could be for any house: the owner may still decide on it (they know their
    # own address and case), but it is never released without them, and every decision says so.
    unbound: tuple[Reason, ...] = () if doc.device is not None else (
        Reason("UNBOUND_DEVICE", "the request names no device (its `device` field is missing): check that it is "
                                 "for this house; it is never released without your approval"),
    )

    basis = doc.legal_basis
    if basis == "preservation":
        return _preservation(base, doc, policy, unbound, active_holds)
    head = (_review_reason(basis, court_ok, court_why), *unbound)
    auto = (court_ok is True and basis in COURT_BASES and policy.rules.auto_release_verified_warrants
            and not unbound)
    return _owner_word(base, head, consents, policy, now, auto=auto, exigent=basis == "exigent")


def _preservation(base: Decision, doc: FootageRequest, policy: Policy, unbound: tuple[Reason, ...],
                  active_holds: int) -> Decision:
    """A preservation request: held (nothing disclosed), unless the agency already has its limit of holds."""
    if active_holds >= policy.rules.max_active_holds_per_agency:
        limit = policy.rules.max_active_holds_per_agency
        return _deny(base.request_id, policy, [Reason(
            "HOLD_LIMIT", f"agency {doc.agency.id!r} already has {active_holds} preservation hold(s) in force "
            f"(footage_requests.max_active_holds_per_agency: {limit}); the owner can lift one with "
            "`doorbell-edge requests release-hold ID`")])
    reason = Reason("PRESERVATION_HOLD", f"{len({s.clip_id for s in base.segments})} clip(s) held {HOLD_DAYS} days")
    return _replace(base, decision="hold", reasons=(reason, *unbound), data=())


def _review_reason(basis: str, court_ok: bool | None, court_why: str) -> Reason:
    """Why a disclosing request waits for (or needs) the owner: one code per legal basis."""
    if basis in COURT_BASES:
        return Reason("VERIFIED_WARRANT" if court_ok else "UNVERIFIED_WARRANT", court_why)
    if basis == "consent_request":
        return Reason("CONSENT_REQUIRED", "released only if the owner approves")
    if basis == "subpoena":
        return Reason("SUBPOENA_METADATA_ONLY", "event metadata only, if the owner approves")
    return Reason("EXIGENT_REVIEW", "emergency: the owner decides")


def _owner_word(base: Decision, head: tuple[Reason, ...], consents: Sequence[OwnerAction], policy: Policy,
                now: datetime, *, auto: bool, exigent: bool) -> Decision:
    """An authenticated, valid, disclosing request judged by the owner's last word: denied, waiting (never
    approved, approval used or lapsed, unlisted or changed clips), or released as the approval says."""
    owner = _latest(consents, {"approve", "deny"})
    if owner is not None and owner.kind == "deny":
        return _replace(base, decision="deny", reasons=(*head, Reason("OWNER_DENIED", owner.note or "refused")),
                        segments=(), data=())
    if owner is None:
        if auto:
            return _replace(base, decision="release", reasons=(*head, Reason("AUTO_RELEASED", "policy allows")))
        return _replace(base, reasons=head)
    lapse_at = owner.at + timedelta(hours=policy.rules.approval_valid_hours)
    if owner.used:
        if auto:
            return _replace(base, decision="release", reasons=(*head, Reason("AUTO_RELEASED", "policy allows")))
        return _replace(base, reasons=(*head, Reason("APPROVAL_USED", f"approval {owner.seq} was used")))
    if owner.lapsed:
        lapsed = Reason("APPROVAL_LAPSED", f"approval {owner.seq} was recorded as lapsed")
        return _replace(base, reasons=(*head, lapsed))
    if now >= lapse_at:
        return _replace(base, reasons=(*head, Reason("APPROVAL_LAPSED", f"approval lapsed at {rfc3339(lapse_at)}")))
    if owner.shown is None:
        return _replace(base, reasons=(*head, Reason("APPROVAL_UNLISTED", f"approval {owner.seq} does not list the "
                                                     "clips you saw (an older version recorded it); approve again")))
    segments = base.segments
    kept, problem = _approved_parts(segments, owner)
    if problem is not None:
        return _replace(base, reasons=(*head, problem))

    kept_data = tuple(k for k in base.data if owner.data is None or k in owner.data)
    unblur = frozenset(owner.unblur) & {s.clip_id for s in kept}
    detail = "approved" + (" after checking the paper original" if owner.attest_original else "")
    reasons: tuple[Reason, ...] = (*head, Reason("OWNER_APPROVED", detail))
    later = sorted({s.clip_id for s in segments} - {s.clip_id for s in owner.shown})
    if later:
        reasons += (Reason("CLIPS_NOT_APPROVED", f"{len(later)} clip(s) in scope are not part of approval "
                                                 f"{owner.seq} and are not released under it: {', '.join(later[:5])}"
                                                 + (", ..." if len(later) > 5 else "")),)
    if exigent:
        ratified = _latest(consents, {"ratify"})
        reasons += (
            (Reason("RATIFIED", ratified.note or "confirmed"),)
            if ratified
            else (Reason("UNRATIFIED", "no warrant or case confirmation recorded yet"),)
        )
    return _replace(base, decision="release", reasons=reasons, segments=kept, data=kept_data, unblur=unblur,
                    approval_seq=owner.seq)


def _approved_parts(segments: Sequence[Segment], owner: OwnerAction) -> tuple[tuple[Segment, ...], Reason | None]:
    """The in-scope parts the approval covers: each approved part of each approved clip, cut to what is in scope
    now (an approval may narrow the scope, never widen it). A clip whose sha256 is not the one the owner saw
    stops the whole release (CLIP_CHANGED): the owner approved other bytes."""
    assert owner.shown is not None
    current = {s.clip_id: s.sha256 for s in segments}
    for part in owner.shown:
        if part.clip_id in current and current[part.clip_id] != part.sha256:
            now_hash = current[part.clip_id][:16] or "(none)"
            return (), Reason("CLIP_CHANGED", f"clip {part.clip_id} has sha256 {now_hash}..., not "
                                              f"{part.sha256[:16]}... as when you approved it (approval "
                                              f"{owner.seq}); approve again")
    kept = []
    for s in segments:
        if owner.clips is not None and s.clip_id not in owner.clips:
            continue
        if owner.cameras is not None and s.camera not in owner.cameras:
            continue
        for part in owner.shown:
            if part.clip_id != s.clip_id:
                continue
            lo, hi = max(s.start, part.start), min(s.end, part.end)
            if lo < hi:
                kept.append(replace(s, start=lo, end=hi))
    return tuple(sorted(set(kept))), None


def _replace(base: Decision, **changes: Any) -> Decision:
    return replace(base, **changes)
