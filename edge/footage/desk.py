"""The footage desk: the I/O shell around decide() - intake, owner actions, holds, exports - audit first."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from edge.clock import Clock, SystemClock, rfc3339
from edge.config import Config
from edge.crashpoints import crash_point
from edge.errors import RequestError, StorageError
from edge.footage import exporter as exporting
from edge.footage.audit import AuditLog
from edge.footage.keys import device_key, key_fingerprint, key_path, public_key_b64
from edge.footage.notify import Emit, footage_event, head_event, journal_emitter
from edge.footage.policy import HOLD_DAYS, HOLD_RENEWALS, ClipLike, Decision, Policy, Reason, decide
from edge.footage.redact import Box, ExportFinders, FaceLeak, FindFaces, Redactor, shipped_finders
from edge.footage.request import Intake, parse_request
from edge.footage.store import RequestStore, StoredRequest
from edge.fsutil import fsync_dir
from edge.permissions import real_user
from edge.recording.holds import HoldStore, UnknownHold
from edge.service.timesync import hold_time

log = logging.getLogger(__name__)

AUTH_CODES = frozenset({"INCOMPLETE", "UNKNOWN_AGENCY", "BAD_SIGNATURE"})


def bundle_part(final: Path) -> Path:
    """Where a bundle is sealed before it is renamed to `final`: hidden, beside it, on the same file system."""
    return final.with_name(f".{final.name}.part")


def write_durably(path: Path, data: bytes) -> None:
    """Create `path` (0600, never over an existing file) holding `data`, and fsync it and its directory."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(path.parent)


@dataclass(frozen=True)
class ExportResult:
    path: Path
    sha256: str
    export_id: str
    manifest: dict[str, Any]


class FootageDesk:
    """Every footage command goes through here; decide() is the only judge, re-run at every step."""

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
        self.policy = Policy.from_config(config, device=device_fingerprint(Path(config.state_dir)))
        self.state_dir = Path(config.state_dir)
        self.audit = AuditLog(self.state_dir, self.clock, on_append=self._witness)
        self._clips = clips
        self._find_faces = find_faces
        self._emit = emit
        self._store: RequestStore | None = None
        self._holds: HoldStore | None = None
        self.actor = actor or _local_user()

    # --- plumbing ------------------------------------------------------------------------------------------

    @property
    def holds(self) -> HoldStore:
        """Every legal hold (edge.recording.holds); the request store keeps which request placed which."""
        if self._holds is None:
            self._holds = HoldStore(self.state_dir, self.clock)
        return self._holds

    @property
    def store(self) -> RequestStore:
        if self._store is None:
            self._store = RequestStore(self.state_dir)
        return self._store

    def clip_source(self, *, create: bool = True) -> Any:
        if self._clips is None:
            from edge.recording.store import INDEX_NAME, ClipStore

            if not create and not (self.state_dir / INDEX_NAME).exists():
                return None
            self._clips = ClipStore(self.state_dir, self.clock)
        return self._clips

    def _clips_for(self, intake: Intake, *, create: bool = True) -> list[ClipLike]:
        doc = intake.document
        if doc is None:
            return []
        windows = [(w.start, w.end) for w in doc.scope.windows if w.start < w.end]
        if not windows:
            return []
        source = self.clip_source(create=create)
        if source is None:
            return []
        start, end = min(w[0] for w in windows), max(w[1] for w in windows)
        found: list[ClipLike] = []
        for camera in sorted(set(doc.scope.cameras) & self.policy.cameras):
            found.extend(source.list(camera=camera, start=start, end=end))
        return found

    def _publish(self, request: str, state: str, decision: Decision | None = None, **extra: Any) -> None:
        emit = self._emit or journal_emitter(self.config)
        seq, digest = self.audit.head()
        event = footage_event(
            self.clock.now(),
            request=request,
            state=state,
            decision=decision.decision if decision else None,
            codes=list(decision.codes) if decision else None,
            audit_seq=seq,
            audit_hash=digest,
            **extra,
        )
        emit(event)

    def _witness(self, record: dict[str, Any]) -> None:
        """Every new audit head goes out as an event (retained on MQTT as <prefix>/audit/head by the publisher)."""
        (self._emit or journal_emitter(self.config))(head_event(record))

    def finders(self) -> ExportFinders:
        """The face finders exports use: those given to the desk (a bare callable chooses the blur boxes and has
        no independent check: tests), else the shipped ones the shell provided (edge.footage.redact)."""
        if self._find_faces is None:
            self._find_faces = shipped_finders()
        if isinstance(self._find_faces, ExportFinders):
            return self._find_faces
        return ExportFinders(self._find_faces, None)

    # --- reading -------------------------------------------------------------------------------------------

    def evaluate(self, raw: bytes, now: datetime | None = None) -> Decision:
        """The decision a submission would get, with no side effects (nothing created or written)."""
        intake = parse_request(raw)
        store = RequestStore(self.state_dir, create=False)
        replay = False
        if intake.agency_id and intake.request_id and store.exists():
            replay = store.was_seen(intake.agency_id, intake.request_id) is not None
        active = store.active_holds(intake.agency_id, hold_time(self.state_dir, self.clock)) \
            if intake.agency_id and store.exists() else 0
        return decide(intake, self.policy, self._clips_for(intake, create=False), [], now or self.clock.now(),
                      replay=replay, active_holds=active)

    def load(self, request: str) -> tuple[StoredRequest, Intake]:
        stored = self.store.get(request)
        return stored, parse_request(stored.raw)

    def current(self, request: str, now: datetime | None = None) -> tuple[StoredRequest, Intake, Decision]:
        stored, intake = self.load(request)
        if stored.decision == "deny":
            # A denial at intake is final: a later clock or policy never revives it (the agency sends a new one).
            reasons = tuple(Reason(r["code"], r["detail"]) for r in stored.reasons)
            return stored, intake, Decision(stored.request_id, "deny", reasons, policy_hash=self.policy.hash)
        decision = decide(
            intake, self.policy, self._clips_for(intake), self.store.owner_actions(request), now or self.clock.now()
        )
        return stored, intake, decision

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
        clips = self._clips_for(intake)
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
    ) -> Decision:
        self.sweep()
        _stored, intake, decision = self.current(request)
        if decision.decision not in ("owner_review", "release"):
            raise RequestError(
                f"request {request} cannot be approved: the decision is {decision.decision} "
                f"({', '.join(decision.codes)})"
            )
        assert intake.document is not None
        full = decide(intake, self.policy, self._clips_for(intake), [], self.clock.now())
        in_scope = {s.clip_id for s in full.segments}
        for clip in clips or ():
            if clip not in in_scope:
                raise RequestError(f"clip {clip!r} is not in request {request}'s scope: an approval may narrow it, "
                                   "never widen it")
        for camera in cameras or ():
            if camera not in intake.document.scope.cameras:
                raise RequestError(f"camera {camera!r} is not in request {request}'s scope")
        for kind in data or ():
            if kind not in full.data:
                raise RequestError(f"data kind {kind!r} is not released by request {request} (allowed: "
                                   f"{', '.join(full.data) or 'none'})")
        # What this approval releases, resolved now and recorded: exactly these parts of exactly these clips
        # (with the sha256 the owner was shown); a clip that finishes or is recovered later needs a new approval.
        shown = [s for s in full.segments if (clips is None or s.clip_id in clips)
                 and (cameras is None or s.camera in cameras)]
        unhashed = sorted({s.clip_id for s in shown if not s.sha256})
        if unhashed:
            raise RequestError(f"clip {unhashed[0]} has no recorded sha256, so an approval cannot be bound to it "
                               f"(check it with `doorbell-edge clips show {unhashed[0]}`); narrow with --clips")
        approved = {s.clip_id for s in shown}
        for clip in unblur:
            if clip not in approved:
                raise RequestError(f"--unblur {clip!r}: that clip is not part of this approval")
        unverified = "UNVERIFIED_WARRANT" in decision.codes
        if attest_original and not unverified:
            raise RequestError("--attest-original is only for a warrant or court order without a trusted court "
                               "signature")
        body: dict[str, Any] = {
            "clips": sorted(approved),
            "shown": [s.to_dict() for s in shown],
            "cameras": sorted(cameras) if cameras is not None else None,
            "data": sorted(data) if data is not None else None,
            "unblur": sorted(unblur),
            "attest_original": attest_original,
            "by": self.actor,
        }
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
        if self.audit.torn():
            log.warning("%s: the last audit record is torn; lapses and hold expiries are recorded after "
                        "`doorbell-edge audit repair`", self.audit.path)
            return []
        self.recover_exports()
        now = self.clock.now()
        done: list[str] = []
        valid = timedelta(hours=self.policy.rules.approval_valid_hours)
        for item in self.store.all():
            actions = self.store.actions(item.id)
            noted = {d.get("approval") for _, k, _, d in actions if k == "expiry"}
            for action in self.store.owner_actions(item.id):
                if action.kind != "approve" or action.used or action.seq in noted:
                    continue
                if now >= action.at + valid:
                    self.audit.append("expiry", request=item.id, approval=action.seq,
                                      lapsed_at=rfc3339(action.at + valid))
                    self.store.add_action(item.id, "expiry", now, {"approval": action.seq})
                    self._publish(item.id, "approval_lapsed")
                    done.append(f"{item.id}: approval {action.seq} lapsed")
        held = {h["request"] for h in self.store.holds()}
        for item in self.store.all():
            if item.decision == "hold" and item.id not in held:
                # Submitted, but killed before its hold was placed: place it now (still within the 90 days).
                _stored, intake, decision = self.current(item.id)
                if decision.decision == "hold":
                    log.warning("placing the preservation hold of %s that an interrupted submit left out", item.id)
                    self._hold(item.id, intake, decision, renewal=0)
                    done.append(f"{item.id}: hold placed")
        # The one expiry sweep (judged at the hold time: frozen during a clock-jump grace period, docs/time.md);
        # then each request's hold that expired, there or in an earlier sweep, is audited once.
        self.holds.expire_holds()
        expired = {h.id for h in self.holds.holds() if h.expired is not None}
        for hold in self.store.holds():
            if hold["expired_at"] is None and hold["hold_id"] in expired:
                self.audit.append("hold_expired", request=hold["request"], hold=hold["hold_id"], until=hold["until"])
                self.store.expire_hold(hold["hold_id"], now)
                self._publish(hold["request"], "hold_expired", hold=hold["hold_id"])
                done.append(f"{hold['request']}: hold {hold['hold_id']} expired")
        return done

    # --- exports -------------------------------------------------------------------------------------------

    def exports_dir(self) -> Path:
        return self.state_dir / "footage" / "exports"

    def export(self, request: str, out_dir: Path | None = None, include_untrusted: bool = False,
               keep: Box | None = None) -> ExportResult:
        """Audit the start, build in a private temp dir, audit completion, record completion and the approval's
        use in one transaction, then rename into place (a crash after the completion record is rolled forward
        by recover_exports(), never retried into a second bundle). `keep`: the owner's stricter mode, everything
        outside that region of every frame pixelated. After redaction an independent check detector scans every
        frame: a face it finds refuses the export (audited as export_refused; the approval stays unused)."""
        with self._export_lock():
            self._recover_exports()
            return self._export(request, out_dir, include_untrusted, keep)

    @contextlib.contextmanager
    def _export_lock(self) -> Iterator[None]:
        """One export at a time per device: an approval is used once, and leftovers are only swept when idle."""
        folder = self.state_dir / "footage"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(folder / "export.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise RequestError("another export is running; try again when it has finished") from exc
            yield
        finally:
            os.close(fd)

    def recover_exports(self) -> list[str]:
        """Finish exports that a crash interrupted after their completion was audited (see _recover_exports);
        skipped while an export runs (it recovers first itself)."""
        if not (self.state_dir / "footage").exists():
            return []
        try:
            with self._export_lock():
                return self._recover_exports()
        except (RequestError, OSError):  # busy, or a read-only state dir: nothing can be finished now anyway
            return []
        except StorageError as exc:  # a bundle that cannot be moved into place yet: said, retried next time
            log.error("%s", exc)
            return []

    def _recover_exports(self) -> list[str]:
        """The audit's export_complete record is the commit point of an export: once it is written, the store is
        brought up to it (completed, approval used) and the sealed bundle, left as a hidden `.NAME.part` beside
        its destination (or, by older versions, in .partial), is renamed into place; before it, the attempt never
        happened as far as the approval is concerned (its remains are removed by _clean_partials). A bundle that
        cannot be moved is one StorageError naming both paths, never a raw OSError."""
        if not self.store.exists():
            return []
        unfinished = {e["id"]: e for e in self.store.exports() if e["completed_at"] is None}
        partial_root = self.exports_dir() / ".partial"
        if not unfinished and not partial_root.exists():
            return []
        done: list[str] = []
        for record in self.audit.records():
            if record.get("kind") != "export_complete":
                continue
            data = record["data"]
            export_id, final, digest = str(data.get("export")), Path(str(data.get("path"))), str(data.get("sha256"))
            row = unfinished.get(export_id)
            if row is not None:
                self.store.finish_export(export_id, row["request"], row["approval_seq"], self.clock.now(), final,
                                         digest)
                log.warning("export %s of %s: completion recorded after a crash (its approval is used)", export_id,
                            row["request"])
                done.append(f"{row['request']}: export {export_id} recorded as complete")
            beside, legacy = bundle_part(final), partial_root / export_id / (final.name + ".part")
            try:
                if not final.exists() and (beside.is_file() or legacy.is_file()):
                    part = beside if beside.is_file() else legacy
                    if exporting.fmt.sha256_file(part) == digest:
                        if part == legacy:  # an older version's part, maybe on another file system: copy beside
                            write_durably(beside, legacy.read_bytes())
                        os.replace(beside, final)
                        fsync_dir(final.parent)
                        log.warning("export %s: bundle moved into place after a crash: %s", export_id, final)
                        done.append(f"export {export_id}: bundle {final} moved into place")
                    else:
                        log.error("export %s: the sealed bundle left by a crash (%s) does not match its audited "
                                  "sha256; not used (the approval stays used)", export_id, part)
                elif row is not None and not final.exists():
                    log.error("export %s: audited as complete but its bundle %s is gone", export_id, final)
            except OSError as exc:
                raise StorageError(
                    f"export {export_id} is complete (its approval is used) but its sealed bundle cannot be moved "
                    f"into place at {final}: {exc.strerror or exc}; it is kept at "
                    f"{beside if beside.exists() else legacy}. Make {final.parent} writable (or mount it again) and "
                    "run the command again: the bundle is moved first"
                ) from exc
            if (partial_root / export_id).exists():
                shutil.rmtree(partial_root / export_id, ignore_errors=True)
        return done

    def _export(self, request: str, out_dir: Path | None, include_untrusted: bool = False,
                keep: Box | None = None) -> ExportResult:
        self.sweep()
        stored, intake, decision = self.current(request)
        if decision.decision != "release":
            raise RequestError(
                f"request {request} is not released (decision {decision.decision}: {', '.join(decision.codes)}); "
                "nothing leaves the device"
            )
        assert intake.document is not None
        self._approval_audited(request, decision)
        doc = intake.document
        agency = self.policy.rules.agencies[doc.agency.id]
        needs_faces = any(k in decision.data for k in ("video", "snapshots")) and any(
            s.clip_id not in decision.unblur for s in decision.segments
        )
        redactor = self._redactor(keep) if needs_faces else None
        key = device_key(self.state_dir)
        final_dir = Path(out_dir) if out_dir else self.exports_dir()
        partial_root = self.exports_dir() / ".partial"
        export_id = "ex-" + secrets.token_hex(4)
        self.audit.append(
            "export_start", request=request, export=export_id, approval=decision.approval_seq,
            clips=[s.to_dict() for s in decision.segments], data=list(decision.data), unblur=sorted(decision.unblur),
            **({"include_untrusted_time": True} if include_untrusted else dict[str, Any]()),  # owner's choice
            **({"keep_region": list(keep)} if keep is not None else dict[str, Any]()),  # owner's stricter mode
            **({"redaction": {"find": redactor.names[0], "check": redactor.names[1]}} if redactor
               else dict[str, Any]()),
        )
        self.store.start_export(export_id, request, decision.approval_seq, self.clock.now())
        crash_point("export:after-audit-start")
        self._publish(request, "export_started", decision, export=export_id)
        committing = False
        try:
            final_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            partial_root.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._clean_partials(partial_root)
            work = partial_root / export_id
            work.mkdir(mode=0o700)
            try:
                files, notes = exporting.build_files(decision, self.clip_source(), redactor, work / "media",
                                                      include_untrusted=include_untrusted)
            except FaceLeak as leak:
                # Refused, not crashed: recorded, the remains removed, the approval left unused for a retry.
                self.audit.append("export_refused", request=request, export=export_id, reason="face_after_redaction",
                                  clip=leak.clip, file=leak.kind, frame=leak.frame, boxes=[list(b) for b in leak.boxes],
                                  check=redactor.names[1] if redactor else None)
                shutil.rmtree(work, ignore_errors=True)
                self._publish(request, "export_refused", decision, export=export_id)
                log.error("export %s of %s refused: a face was still found after redaction", export_id, request)
                raise
            manifest = exporting.build_manifest(
                export_id=export_id,
                created=self.clock.now(),
                device_id=self.config.device.id,
                device_public=public_key_b64(key),
                request={
                    "id": request,
                    "agency": doc.agency.id,
                    "request_id": doc.request_id,
                    "legal_basis": doc.legal_basis,
                    "case_number": doc.case_number,
                    "document_sha256": stored.sha256,
                    "cameras": list(doc.scope.cameras),
                    "windows": [{"start": rfc3339(w.start), "end": rfc3339(w.end)} for w in doc.scope.windows],
                },
                decision=decision,
                approval=self._approval_summary(request, decision),
                files=files,
                notes=notes,
            )
            final = final_dir / f"{request}-{export_id}.bundle"
            # The sealed bundle is written beside its destination (the same file system, e.g. a USB stick) so the
            # rename after the commit point cannot fail across devices; a full or read-only destination fails
            # here, before the commit, with the approval still unused. `destination` tells _clean_partials where
            # the remains of a crash before the commit are.
            write_durably(work / "destination", str(final).encode())
            temp = bundle_part(final)
            # Streamed: the files are read from `work` in chunks, tarred and age-encrypted into temp (bounded memory).
            digest, size = exporting.seal_bundle_file(temp, manifest, files, key, agency.encryption_key)
            crash_point("export:before-complete")
            committing = True  # from here on the audit may hold the commit: the sealed bundle is kept
            self.audit.append("export_complete", request=request, export=export_id, sha256=digest, size=size,
                              path=str(final), files=[{"path": f["path"], "sha256": f["sha256"]}
                                                      for f in manifest["files"]])
            crash_point("export:after-audit-complete")
            self.store.finish_export(export_id, request, decision.approval_seq, self.clock.now(), final, digest)
            crash_point("export:after-store-complete")
            os.replace(temp, final)
            fsync_dir(final_dir)
            crash_point("export:after-rename")
            shutil.rmtree(work, ignore_errors=True)
        except OSError as exc:
            if not committing:
                with contextlib.suppress(OSError, NameError):
                    temp.unlink(missing_ok=True)  # before the commit: nothing of it may stay at the destination
                raise StorageError(f"export {export_id} of {request} failed (nothing was released; the approval "
                                   f"is unused): {exc}") from exc
            raise StorageError(
                f"export {export_id} of {request} is complete (its approval is used) but its bundle could not be "
                f"moved into place at {final}: {exc.strerror or exc}; it is kept at {temp} and moved into place by "
                "the next footage command once that works"
            ) from exc
        self._publish(request, "exported", decision, export=export_id)
        log.info("export %s of %s written: %s", export_id, request, final)
        return ExportResult(final, digest, export_id, manifest)

    def _redactor(self, keep: Box | None) -> Redactor:
        try:
            return Redactor.of(self.finders(), keep=keep)
        except Exception as exc:
            raise RequestError(f"cannot blur faces, so nothing is exported: {exc}") from exc

    def _approval_audited(self, request: str, decision: Decision) -> None:
        """The approval an export rests on must be the owner's: its `owner_approve` audit record, with the same
        clips and hashes, must be in the log (issue 12: a row inserted straight into requests.sqlite3 was exported).
        Each store approval needs its own record: the n-th of identical approvals needs n matching records."""
        if decision.approval_seq is None:
            return  # an auto-released verified warrant: the decision record is its authority
        actions = [(seq, data) for seq, kind, _, data in self.store.actions(request) if kind == "approve"]
        body = next((data for seq, data in actions if seq == decision.approval_seq), None)
        if body is not None:
            twins = sum(1 for seq, data in actions if data == body and seq <= decision.approval_seq)
            audited = sum(1 for r in self.audit.records()
                          if r.get("kind") == "owner_approve" and isinstance(r.get("data"), dict)
                          and r["data"].get("request") == request
                          and all(r["data"].get(k) == v for k, v in body.items()))
            if audited >= twins:
                return
        self.audit.append("export_refused", request=request, reason="approval_not_audited",
                          approval=decision.approval_seq)
        self._publish(request, "export_refused", decision)
        log.error("export of %s refused: approval %s has no matching owner_approve audit record", request,
                  decision.approval_seq)
        raise RequestError(
            f"request {request}: approval {decision.approval_seq} in the request store has no matching owner_approve "
            "record in the audit log (missing, or its clips/hashes differ: inserted into the store or edited), so "
            "nothing is exported; approve again with `doorbell-edge requests approve`, and run `doorbell-edge audit "
            "verify`")

    def _approval_summary(self, request: str, decision: Decision) -> dict[str, Any] | None:
        if decision.approval_seq is None:
            return None
        for seq, kind, at, data in self.store.actions(request):
            if seq == decision.approval_seq and kind == "approve":
                return {"seq": seq, "at": rfc3339(at), "attest_original": bool(data.get("attest_original")),
                        "unblurred": sorted(decision.unblur)}
        return None

    @staticmethod
    def _clean_partials(root: Path) -> None:
        # Leftovers of a killed export: never a bundle (bundles appear only by rename), removed on retry.
        for stale in root.iterdir():
            log.warning("removing the remains of an interrupted export: %s", stale)
            with contextlib.suppress(OSError, ValueError):
                beside = bundle_part(Path((stale / "destination").read_text()))
                try:
                    beside.unlink(missing_ok=True)
                except OSError as exc:  # a stick pulled out or read-only: say where the sealed remains are
                    log.warning("cannot remove %s, the unreleased remains of an interrupted export (%s): delete it",
                                beside, exc.strerror or exc)
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)

    # --- reporting -----------------------------------------------------------------------------------------

    def verify_audit(self) -> tuple[bool, str]:
        """The chain check, plus the cross-check both ways with the request store (edge.footage.audit)."""
        from edge.footage.audit import verify_with_store

        return verify_with_store(self.audit, RequestStore(self.state_dir, create=False))


    def summary(self, request: str) -> dict[str, Any]:
        stored, intake, decision = self.current(request)
        doc = intake.document
        return {
            "id": stored.id,
            "received_at": rfc3339(stored.received_at),
            "agency": stored.agency_id,
            "request_id": stored.request_id,
            "legal_basis": stored.basis,
            "case_number": doc.case_number if doc else None,
            "document": doc.model_dump(mode="json", exclude={"signatures"}) if doc else None,
            "document_problems": list(intake.problems),
            "document_sha256": stored.sha256,
            "decision_at_intake": {"decision": stored.decision, "reasons": stored.reasons},
            "now": decision.to_dict(),
            "owner_actions": [
                {"seq": s, "kind": k, "at": rfc3339(a), **d} for s, k, a, d in self.store.actions(request)
            ],
            "exports": self.store.exports(request),
            "holds": self.store.holds(request),
        }

    def rows(self) -> list[dict[str, Any]]:
        """`requests list`: each request with its current decision and its state (see state())."""
        out = []
        exported = {e["request"] for e in self.store.exports() if e["completed_at"]}
        for item in self.store.all():
            _, _, decision = self.current(item.id)
            out.append({"id": item.id, "received_at": rfc3339(item.received_at), "agency": item.agency_id,
                        "request_id": item.request_id, "basis": item.basis, "state": self._state(item, exported,
                                                                                                  decision),
                        "decision": decision.decision, "codes": list(decision.codes)})
        return out

    def _owner_denied(self, request: str) -> bool:
        """The owner's last word, in the order the actions were written (never by wall time), is a denial."""
        owner = [a for a in self.store.owner_actions(request) if a.kind in ("approve", "deny")]
        return bool(owner) and max(owner, key=lambda a: a.seq).kind == "deny"

    def _state(self, item: StoredRequest, exported: set[str], decision: Decision) -> str:
        """Where a request stands, one word: waiting (for the owner's decision: the only state counted as pending),
        approved (released, not yet exported), exported, held, hold_expired, denied (at intake or by the owner),
        expired (the document's validity ran out before anything was released); hold_released: the owner lifted the
        hold."""
        if item.decision == "deny":
            return "denied"
        if item.id in exported:
            return "exported"
        holds = self.store.holds(item.id)
        if holds or item.decision == "hold":
            if holds and all(h["expired_at"] for h in holds):
                lifted = any(kind == "release_hold" for _, kind, _, _ in self.store.actions(item.id))
                return "hold_released" if lifted else "hold_expired"
            return "held"
        if self._owner_denied(item.id):
            return "denied"
        if decision.decision == "deny":
            return "expired" if "EXPIRED" in decision.codes else "denied"
        if decision.decision == "release":
            return "approved"
        return "waiting"

    def _outcome(self, item: StoredRequest, exported: set[str]) -> str:
        """How a request ended up, for the report: deny, release (something left), hold, or where it stands."""
        if item.decision == "deny":
            return "deny"
        if item.id in exported:
            return "release"
        if self.store.holds(item.id):
            return "hold"
        if self._owner_denied(item.id):
            return "deny"
        return self.current(item.id)[2].decision

    def report(self, since: datetime | None = None) -> dict[str, Any]:
        """The transparency report: counts by basis and outcome, exigent releases, holds, UNRATIFIED.
        `by_decision` counts outcomes: deny (at intake or by the owner), release (an export completed), hold,
        and owner_review / release for requests still waiting on the owner or on an export."""
        items = self.store.all(since) if self.store.exists() else []
        by_basis: Counter[str] = Counter()
        by_decision: Counter[str] = Counter()
        pairs: Counter[str] = Counter()
        exported_requests = {e["request"] for e in self.store.exports() if e["completed_at"]}
        exigent_released = unratified = 0
        for item in items:
            outcome = self._outcome(item, exported_requests)
            basis = item.basis or "unreadable"
            by_basis[basis] += 1
            by_decision[outcome] += 1
            pairs[f"{basis}/{outcome}"] += 1
            if basis == "exigent" and item.id in exported_requests:
                exigent_released += 1
                ratified = any(k == "ratify" for _, k, _, _ in self.store.actions(item.id))
                unratified += 0 if ratified else 1
        ids = {i.id for i in items}
        holds = [h for h in self.store.holds() if h["request"] in ids]
        now = self.clock.now()
        return {
            "since": rfc3339(since) if since else None,
            "generated_at": rfc3339(now),
            "requests": len(items),
            "by_basis": dict(sorted(by_basis.items())),
            "by_decision": dict(sorted(by_decision.items())),
            "by_basis_and_decision": dict(sorted(pairs.items())),
            "exports": sum(1 for e in self.store.exports() if e["completed_at"] and e["request"] in ids),
            "exigent_releases": exigent_released,
            "unratified": unratified,
            "holds": len(holds),
            "holds_active": sum(1 for h in holds if h["expired_at"] is None),
        }


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
