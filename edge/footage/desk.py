"""The footage desk: the I/O shell around decide() - intake, owner decisions, holds, the sweep - audit first.

A request is judged now by edge.footage.judge and an approval's scope checked by edge.footage.approval; exports
run in edge.footage.export_run, the read-only views (list, show, the transparency report) are in
edge.footage.report. The owner actions the command line and the web page call are in edge.actions.footage."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from edge.clock import Clock, SystemClock, rfc3339
from edge.config import Config
from edge.crashpoints import crash_point
from edge.errors import RequestError, StorageError
from edge.footage import report as reporting
from edge.footage.approval import Narrowing, approval_body, check_seen
from edge.footage.audit import AuditLog
from edge.footage.crosscheck import verify_with_store
from edge.footage.export_run import ExportResult, ExportRunner
from edge.footage.judge import Judge
from edge.footage.keys import device_key, key_fingerprint, key_path
from edge.footage.notify import Emit, footage_event, head_event, journal_emitter
from edge.footage.policy import HOLD_DAYS, HOLD_RENEWALS, Decision, Policy, decide
from edge.footage.redact import Box, ExportFinders, FindFaces
from edge.footage.request import Intake, parse_request
from edge.footage.store import RequestStore, StoredRequest
from edge.footage.sweep import run_sweep, sweep_lock
from edge.permissions import real_user
from edge.recording.holds import HoldStore, UnknownHold
from edge.service.timesync import hold_time

log = logging.getLogger(__name__)

AUTH_CODES = frozenset({"INCOMPLETE", "UNKNOWN_AGENCY", "BAD_SIGNATURE"})


class FootageDesk:
    """Every footage command goes through here; decide() is the only judge (edge.footage.judge), re-run at every
    step; every step is audited before it takes effect."""

    def __init__(
        self,
        config: Config,
        clock: Clock | None = None,
        *,
        clips: Any = None,
        find_faces: FindFaces | ExportFinders | None = None,
        emit: Emit | None = None,
        actor: str | None = None,
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.state_dir = Path(config.state_dir)
        self.judge = Judge(Policy.from_config(config, device=device_fingerprint(self.state_dir)), self.state_dir,
                           self.clock, clips)
        self.policy = self.judge.policy
        self.audit = AuditLog(self.state_dir, self.clock, on_append=self._witness)
        self.exporter = ExportRunner(self, find_faces)
        self._emit = emit
        self._holds: HoldStore | None = None
        self.actor = actor or _local_user()

    @property
    def holds(self) -> HoldStore:
        """Every legal hold (edge.recording.holds); the request store keeps which request placed which."""
        if self._holds is None:
            self._holds = HoldStore(self.state_dir, self.clock)
        return self._holds

    @property
    def store(self) -> RequestStore:
        return self.judge.store

    def clip_source(self, *, create: bool = True) -> Any:
        return self.judge.clip_source(create=create)

    def evaluate(self, raw: bytes, now: datetime | None = None) -> Decision:
        return self.judge.evaluate(raw, now)

    def load(self, request: str) -> tuple[StoredRequest, Intake]:
        return self.judge.load(request)

    def current(self, request: str, now: datetime | None = None) -> tuple[StoredRequest, Intake, Decision]:
        return self.judge.current(request, now)

    def _publish(self, request: str, state: str, decision: Decision | None = None, **extra: Any) -> None:
        seq, digest = self.audit.head()
        (self._emit or journal_emitter(self.config))(footage_event(
            self.clock.now(), request=request, state=state, decision=decision.decision if decision else None,
            codes=list(decision.codes) if decision else None, audit_seq=seq, audit_hash=digest, **extra))

    def _witness(self, record: dict[str, Any]) -> None:
        """Every new audit head goes out as an event (retained on MQTT as <prefix>/audit/head by the publisher)."""
        (self._emit or journal_emitter(self.config))(head_event(record))

    # --- intake --------------------------------------------------------------------------------------------

    def submit(self, raw: bytes) -> tuple[str, Decision]:
        """Audit the intake, then judge and store in one transaction with the replay claim, then hold/notify.

        Crash ordering: the intake record is written before anything is claimed, and the claim of (agency,
        request_id) commits together with the request row, after the decision record. A crash (or a torn audit
        tail) anywhere before that commit leaves no claim, so the agency's resend is judged afresh, never REPLAY;
        the log then shows the interrupted attempt's intake (and perhaps its decision) with no request behind it."""
        now = self.clock.now()
        intake = parse_request(raw)
        request = self.store.new_id()
        basis = intake.document.legal_basis if intake.document else None
        self.audit.append(
            "intake", request=request, sha256=intake.sha256, bytes=len(raw), agency=intake.agency_id,
            request_id=intake.request_id, basis=basis,
        )
        crash_point("submit:after-intake")
        clips = self.judge.clips_for(intake)
        with self.store.intake() as txn:
            replay = bool(intake.agency_id and intake.request_id) and txn.was_seen(
                str(intake.agency_id), str(intake.request_id)
            )
            # The agency's holds in force, counted inside the write lock: two racing holds cannot both be the 10th.
            active = txn.active_holds(str(intake.agency_id), hold_time(self.state_dir, self.clock)) \
                if intake.agency_id else 0
            decision = decide(intake, self.policy, clips, [], now, replay=replay, active_holds=active)
            verified = not (AUTH_CODES & set(decision.codes))
            # Only an authenticated request uses up its id, so nobody can block an agency's ids by forgery; a hold
            # refused for the limit does not either (the agency may send it again once a hold has ended).
            if verified and not replay and "HOLD_LIMIT" not in decision.codes and intake.agency_id \
                    and intake.request_id:
                # Cannot lose: the transaction holds the write lock since before the replay check above.
                txn.claim(str(intake.agency_id), str(intake.request_id), request)
            self.audit.append("decision", request=request, **decision.to_dict())
            crash_point("submit:after-decision")
            txn.add(
                StoredRequest(request, now, intake.agency_id, intake.request_id, basis, verified, raw,
                              intake.sha256, decision.decision,
                              [{"code": r.code, "detail": r.detail} for r in decision.reasons]),
            )
            crash_point("submit:before-commit")
        crash_point("submit:after-commit")
        log.info("footage request %s: %s %s", request, decision.decision, ",".join(decision.codes))
        self._publish(request, "submitted", decision, basis=basis, agency=intake.agency_id)
        if decision.decision == "hold":
            self._hold(request, intake, decision, renewal=0)
        if basis == "exigent" and decision.decision == "owner_review":
            self.audit.append("notification", request=request, urgent=True, channel="mqtt",
                              text="emergency footage request waiting for the owner's decision")
            self._publish(request, "owner_notified", decision, basis=basis, urgent=True)
        return request, decision

    def _hold(self, request: str, intake: Intake, decision: Decision, renewal: int) -> str | None:
        assert intake.document is not None
        now = self.clock.now()
        until = now + timedelta(days=HOLD_DAYS)
        clip_ids = sorted({s.clip_id for s in decision.segments})
        reference = f"{intake.document.agency.id}:{intake.document.request_id} case {intake.document.case_number}"
        self.audit.append("hold_renew" if renewal else "hold", request=request, clips=clip_ids, until=rfc3339(until),
                          renewal=renewal)
        hold_id = None
        if clip_ids:  # the clip store checks the clips exist and holds them in one transaction
            hold_id = self.clip_source().hold(clip_ids=clip_ids, until=until, reason="preservation request",
                                              reference=reference)
            placed = hold_id
        else:  # nothing to hold: the hold keeps only its time (the agency's limit, its expiry)
            placed = self.holds.place(until=until, reason="preservation request", reference=reference, empty=True)
        self.store.link_hold(request, placed, renewal)
        self._publish(request, "held", decision, hold=hold_id, clips=len(clip_ids))
        return hold_id

    def renew_hold(self, request: str) -> str | None:
        _stored, intake, decision = self.current(request)
        if decision.decision != "hold":
            raise RequestError(f"request {request} is not a preservation hold (decision {decision.decision})")
        if any(kind == "release_hold" for _, kind, _, _ in self.store.actions(request)):
            raise RequestError(f"request {request}: the owner lifted this hold; it cannot be renewed")
        holds = self.store.holds(request)
        renewals = max((h["renewal"] for h in holds), default=0)
        if renewals >= HOLD_RENEWALS:
            raise RequestError(f"request {request}: the hold was already renewed {HOLD_RENEWALS} time(s)")
        return self._hold(request, intake, decision, renewal=renewals + 1)

    # --- owner actions -------------------------------------------------------------------------------------

    def release_hold(self, request: str, reason: str = "") -> list[str]:
        """The owner lifts a request's preservation hold: audited first, then the holds end in the hold store (its
        clips are subject to retention again) and the request store records the release. Running it again after
        a crash finishes what is left (both releases are idempotent). Returns the hold ids lifted."""
        stored = self.store.get(request)
        holds = [h for h in self.store.holds(request) if h["expired_at"] is None]
        if stored.decision != "hold":
            raise RequestError(f"request {request} is not a preservation hold (decision {stored.decision})")
        if not holds:
            raise RequestError(f"request {request} has no preservation hold in force (see `requests show "
                               f"{request}`)")
        ids = [str(h["hold_id"]) for h in holds]
        clip_ids = sorted({c for h in holds for c in json.loads(h["clips"])})
        self.audit.append("hold_release", request=request, holds=ids, clips=clip_ids, reason=reason, by=self.actor)
        crash_point("release-hold:after-audit")
        for hold_id in ids:
            try:
                self.holds.release(hold_id)
            except UnknownHold:  # a lost hold store: nothing holds the clips anyway
                log.warning("hold %s of %s is not in the hold store; nothing to release there", hold_id, request)
        crash_point("release-hold:after-clips")
        self.store.release_holds(request, self.clock.now(), {"reason": reason, "by": self.actor})
        self._publish(request, "hold_released", hold=",".join(ids), clips=len(clip_ids))
        log.info("footage request %s: the owner lifted hold(s) %s", request, ", ".join(ids))
        return ids

    def approve(
        self,
        request: str,
        *,
        clips: Sequence[str] | None = None,
        cameras: Sequence[str] | None = None,
        data: Sequence[str] | None = None,
        unblur: Sequence[str] = (),
        attest_original: bool = False,
        seen_sha256: str | None = None,
    ) -> Decision:
        """The owner releases the request's scope, or a narrower part (approval.approval_body); `seen_sha256`:
        the document's sha256 as the owner was shown it (RequestChanged, nothing recorded, when it differs)."""
        self.sweep()
        stored, intake, decision = self.current(request)
        check_seen(stored, seen_sha256)
        if decision.decision not in ("owner_review", "release"):
            raise RequestError(
                f"request {request} cannot be approved: the decision is {decision.decision} "
                f"({', '.join(decision.codes)})"
            )
        assert intake.document is not None
        full = decide(intake, self.policy, self.judge.clips_for(intake), [], self.clock.now())
        body = approval_body(request, intake.document, decision, full, Narrowing(clips, cameras, data), unblur,
                             attest_original, self.actor)
        self.audit.append("owner_approve", request=request, **body)
        if attest_original:
            self.audit.append("attestation", request=request, by=self.actor,
                              text="the owner checked the paper original of the warrant")
        for clip in sorted(unblur):
            self.audit.append("unblur", request=request, clip=clip, by=self.actor)
        crash_point("approve:after-audit")  # audited but not stored: nothing is released; the owner approves again
        self.store.add_action(request, "approve", self.clock.now(), body)
        _, _, after = self.current(request)
        self._publish(request, "approved", after)
        return after

    def deny(self, request: str, reason: str) -> Decision:
        if not reason.strip():
            raise RequestError("a denial needs a --reason")
        _, _, decision = self.current(request)
        if decision.decision == "hold":
            raise RequestError(f"request {request} is a preservation hold: it discloses nothing, so there is "
                               "nothing to deny")
        # A torn audit tail never blocks a refusal: it is repaired first (kept, logged, recorded as a `repair`
        # record), as `doorbell-edge audit repair` would; everything that releases stays blocked until then.
        self.audit.append("owner_deny", repair_torn=f"{self.actor} (before a denial)", request=request,
                          reason=reason, by=self.actor)
        self.store.add_action(request, "deny", self.clock.now(), {"reason": reason, "by": self.actor})
        _, _, after = self.current(request)
        self._publish(request, "denied", after)
        return after

    def ratify(self, request: str, reference: str) -> Decision:
        stored, _intake, _ = self.current(request)
        if stored.basis != "exigent":
            raise RequestError(f"request {request} is not an emergency request; nothing to ratify")
        if not reference.strip():
            raise RequestError("ratifying needs a --reference (the warrant or case confirmation)")
        self.audit.append("ratify", request=request, reference=reference, by=self.actor)
        self.store.add_action(request, "ratify", self.clock.now(), {"reference": reference, "by": self.actor})
        _, _, after = self.current(request)
        self._publish(request, "ratified", after)
        return after

    # --- time passing --------------------------------------------------------------------------------------

    def sweep(self) -> list[str]:
        """Audit approvals that lapsed unused and preservation holds that ran out (each once)."""
        if not self.store.exists():
            return []
        with sweep_lock(self.state_dir) as locked:
            return run_sweep(self) if locked else []

    # --- exports and reading (edge.footage.export_run, edge.footage.report) ---------------------------------

    def export(self, request: str, out_dir: Path | None = None, include_untrusted: bool = False,
               keep: Box | None = None) -> ExportResult:
        """See ExportRunner.export: audit first, committed by its export_complete record."""
        return self.exporter.export(request, out_dir, include_untrusted, keep)

    def recover_exports(self) -> list[str]:
        return self.exporter.recover()

    def verify_audit(self) -> tuple[bool, str]:
        """The chain check, plus the cross-check both ways with the request store (edge.footage.crosscheck)."""
        return verify_with_store(self.audit, RequestStore(self.state_dir, create=False))

    def summary(self, request: str) -> dict[str, Any]:
        return reporting.summary(self, request)

    def rows(self) -> list[dict[str, Any]]:
        return reporting.rows(self)

    def report(self, since: datetime | None = None) -> dict[str, Any]:
        return reporting.report(self, since)


def device_fingerprint(state_dir: Path) -> str | None:
    """This device's key fingerprint, what a request names in `device`; None when there is no key yet (nobody
    can have been given its fingerprint) or it cannot be read (then no request can be bound to this device).
    Never creates the key: `requests evaluate` and `list` change nothing."""
    try:
        if not key_path(state_dir).exists():
            return None
        return key_fingerprint(device_key(state_dir))
    except (StorageError, OSError) as exc:
        log.warning("cannot read the device key, so requests naming a device are refused: %s", exc)
        return None


def _local_user() -> str:
    # From the system (uid -> passwd), never $LOGNAME/$USER, which whoever runs the command can set.
    return real_user()


def pending_requests(config: Config, clock: Clock | None = None) -> int:
    """How many requests wait for the owner's decision right now (the daemon's `pending_requests` MQTT state):
    exported, denied, expired, held and approved-but-not-yet-exported requests are not pending.
    Read-only: creates nothing when no request was ever submitted."""
    desk = FootageDesk(config, clock, emit=lambda event: None)
    if not RequestStore(desk.state_dir, create=False).exists():
        return 0
    return sum(1 for row in desk.rows() if row["state"] == "waiting")
