"""An export, audit first: one at a time, committed by its export_complete record, recovered after a crash."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.clock import rfc3339
from edge.crashpoints import crash_point
from edge.errors import RequestError, StorageError
from edge.footage import exporter as exporting
from edge.footage.approval import approval_audited, approval_summary
from edge.footage.keys import device_key, public_key_b64
from edge.footage.policy import Decision
from edge.footage.redact import Box, ExportFinders, FaceLeak, FindFaces, Redactor, shipped_finders
from edge.footage.request import FootageRequest
from edge.footage.store import StoredRequest
from edge.fsutil import fsync_dir
from edge.layout import StateLayout

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from edge.footage.desk import FootageDesk

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class _Run:
    """One export attempt: its ids, where it is built and where its bundle goes."""

    request: str
    export_id: str
    decision: Decision
    work: Path
    final: Path

    @property
    def temp(self) -> Path:
        return bundle_part(self.final)


class ExportRunner:
    """The desk's exports: the audited transaction around the bundle exporter.py builds and seals."""

    def __init__(self, desk: FootageDesk, find_faces: FindFaces | ExportFinders | None = None) -> None:
        self.desk = desk
        self._find_faces = find_faces

    @property
    def paths(self) -> StateLayout:
        return StateLayout.of(self.desk.state_dir)

    def exports_dir(self) -> Path:
        return self.paths.footage_exports

    def finders(self) -> ExportFinders:
        """The face finders exports use: those given to the desk (a bare callable chooses the blur boxes and has
        no independent check: tests), else the shipped ones the shell provided (edge.footage.redact)."""
        if self._find_faces is None:
            self._find_faces = shipped_finders()
        if isinstance(self._find_faces, ExportFinders):
            return self._find_faces
        return ExportFinders(self._find_faces, None)

    def export(self, request: str, out_dir: Path | None = None, include_untrusted: bool = False,
               keep: Box | None = None) -> ExportResult:
        """Audit the start, build in a private temp dir, audit completion, record completion and the approval's
        use in one transaction, then rename into place (a crash after the completion record is rolled forward
        by recover(), never retried into a second bundle). `keep`: the owner's stricter mode, everything
        outside that region of every frame pixelated. After redaction an independent check detector scans every
        frame: a face it finds refuses the export (audited as export_refused; the approval stays unused)."""
        with self._lock():
            self._recover()
            return self._export(request, out_dir, include_untrusted, keep)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """One export at a time per device: an approval is used once, and leftovers are only swept when idle."""
        self.paths.footage.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.paths.export_lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise RequestError("another export is running; try again when it has finished") from exc
            yield
        finally:
            os.close(fd)

    def recover(self) -> list[str]:
        """Finish exports that a crash interrupted after their completion was audited (see _recover); skipped
        while an export runs (it recovers first itself)."""
        if not self.paths.footage.exists():
            return []
        try:
            with self._lock():
                return self._recover()
        except (RequestError, OSError):  # busy, or a read-only state dir: nothing can be finished now anyway
            return []
        except StorageError as exc:  # a bundle that cannot be moved into place yet: said, retried next time
            log.error("%s", exc)
            return []

    def _recover(self) -> list[str]:
        """The audit's export_complete record is the commit point of an export: once it is written, the store is
        brought up to it (completed, approval used) and the sealed bundle, left as a hidden `.NAME.part` beside
        its destination (or, by older versions, in .partial), is renamed into place; before it, the attempt never
        happened as far as the approval is concerned (its remains are removed by _clean_partials). A bundle that
        cannot be moved is one StorageError naming both paths, never a raw OSError."""
        store = self.desk.store
        if not store.exists():
            return []
        unfinished = {e["id"]: e for e in store.exports() if e["completed_at"] is None}
        partial_root = self.paths.exports_partial
        if not unfinished and not partial_root.exists():
            return []
        done: list[str] = []
        for record in self.desk.audit.records():
            if record.get("kind") != "export_complete":
                continue
            data = record["data"]
            export_id, final, digest = str(data.get("export")), Path(str(data.get("path"))), str(data.get("sha256"))
            row = unfinished.get(export_id)
            if row is not None:
                store.finish_export(export_id, row["request"], row["approval_seq"], self.desk.clock.now(), final,
                                    digest)
                log.warning("export %s of %s: completion recorded after a crash (its approval is used)", export_id,
                            row["request"])
                done.append(f"{row['request']}: export {export_id} recorded as complete")
            done.extend(self._move_sealed(export_id, final, digest, partial_root, unfinished=row is not None))
            if (partial_root / export_id).exists():
                shutil.rmtree(partial_root / export_id, ignore_errors=True)
        return done

    @staticmethod
    def _move_sealed(export_id: str, final: Path, digest: str, partial_root: Path, *, unfinished: bool) -> list[str]:
        """Rename a committed export's sealed bundle into place, if it is still beside it (or in .partial)."""
        beside, legacy = bundle_part(final), partial_root / export_id / (final.name + ".part")
        try:
            if not final.exists() and (beside.is_file() or legacy.is_file()):
                part = beside if beside.is_file() else legacy
                if exporting.fmt.sha256_file(part) != digest:
                    log.error("export %s: the sealed bundle left by a crash (%s) does not match its audited "
                              "sha256; not used (the approval stays used)", export_id, part)
                    return []
                if part == legacy:  # an older version's part, maybe on another file system: copy beside
                    write_durably(beside, legacy.read_bytes())
                os.replace(beside, final)
                fsync_dir(final.parent)
                log.warning("export %s: bundle moved into place after a crash: %s", export_id, final)
                return [f"export {export_id}: bundle {final} moved into place"]
            if unfinished and not final.exists():
                log.error("export %s: audited as complete but its bundle %s is gone", export_id, final)
        except OSError as exc:
            raise StorageError(
                f"export {export_id} is complete (its approval is used) but its sealed bundle cannot be moved "
                f"into place at {final}: {exc.strerror or exc}; it is kept at "
                f"{beside if beside.exists() else legacy}. Make {final.parent} writable (or mount it again) and "
                "run the command again: the bundle is moved first"
            ) from exc
        return []

    def _export(self, request: str, out_dir: Path | None, include_untrusted: bool = False,
                keep: Box | None = None) -> ExportResult:
        desk = self.desk
        desk.sweep()
        stored, intake, decision = desk.current(request)
        if decision.decision != "release":
            raise RequestError(
                f"request {request} is not released (decision {decision.decision}: {', '.join(decision.codes)}); "
                "nothing leaves the device"
            )
        assert intake.document is not None
        self._check_approval(request, decision)
        doc = intake.document
        agency = desk.policy.rules.agencies[doc.agency.id]
        needs_faces = any(k in decision.data for k in ("video", "snapshots")) and any(
            s.clip_id not in decision.unblur for s in decision.segments
        )
        redactor = self._redactor(keep) if needs_faces else None
        key = device_key(desk.state_dir)
        final_dir = Path(out_dir) if out_dir else self.exports_dir()
        partial_root = self.paths.exports_partial
        export_id = "ex-" + secrets.token_hex(4)
        run = _Run(request, export_id, decision, partial_root / export_id, final_dir / f"{request}-{export_id}.bundle")
        self._audit_start(run, include_untrusted, keep, redactor)
        committing = False
        try:
            final_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            partial_root.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._clean_partials(partial_root)
            run.work.mkdir(mode=0o700)
            files, notes = self._build(run, redactor, include_untrusted)
            manifest = self._manifest(run, stored, doc, key, files, notes)
            # The sealed bundle is written beside its destination (the same file system, e.g. a USB stick) so the
            # rename after the commit point cannot fail across devices; a full or read-only destination fails
            # here, before the commit, with the approval still unused. `destination` tells _clean_partials where
            # the remains of a crash before the commit are.
            write_durably(run.work / "destination", str(run.final).encode())
            # Streamed: the files are read from `work` in chunks, tarred and age-encrypted into temp (bounded memory).
            digest, size = exporting.seal_bundle_file(run.temp, manifest, files, key, agency.encryption_key)
            crash_point("export:before-complete")
            committing = True  # from here on the audit may hold the commit: the sealed bundle is kept
            self._commit(run, manifest, digest, size)
        except OSError as exc:
            raise self._failure(run, committing, exc) from exc
        desk._publish(request, "exported", decision, export=export_id)
        log.info("export %s of %s written: %s", export_id, request, run.final)
        return ExportResult(run.final, digest, export_id, manifest)

    def _check_approval(self, request: str, decision: Decision) -> None:
        """Refuse (audited) an export whose approval has no matching owner_approve record in the log."""
        desk = self.desk
        if approval_audited(desk.store, desk.audit, request, decision):
            return
        desk.audit.append("export_refused", request=request, reason="approval_not_audited",
                          approval=decision.approval_seq)
        desk._publish(request, "export_refused", decision)
        log.error("export of %s refused: approval %s has no matching owner_approve audit record", request,
                  decision.approval_seq)
        raise RequestError(
            f"request {request}: approval {decision.approval_seq} in the request store has no matching owner_approve "
            "record in the audit log (missing, or its clips/hashes differ: inserted into the store or edited), so "
            "nothing is exported; approve again with `doorbell-edge requests approve`, and run `doorbell-edge audit "
            "verify`")

    def _audit_start(self, run: _Run, include_untrusted: bool, keep: Box | None, redactor: Redactor | None) -> None:
        decision = run.decision
        self.desk.audit.append(
            "export_start", request=run.request, export=run.export_id, approval=decision.approval_seq,
            clips=[s.to_dict() for s in decision.segments], data=list(decision.data), unblur=sorted(decision.unblur),
            **({"include_untrusted_time": True} if include_untrusted else dict[str, Any]()),  # owner's choice
            **({"keep_region": list(keep)} if keep is not None else dict[str, Any]()),  # owner's stricter mode
            **({"redaction": {"find": redactor.names[0], "check": redactor.names[1]}} if redactor
               else dict[str, Any]()),
        )
        self.desk.store.start_export(run.export_id, run.request, decision.approval_seq, self.desk.clock.now())
        crash_point("export:after-audit-start")
        self.desk._publish(run.request, "export_started", decision, export=run.export_id)

    def _build(self, run: _Run, redactor: Redactor | None,
               include_untrusted: bool) -> tuple[list[exporting.ExportFile], list[str]]:
        try:
            return exporting.build_files(run.decision, self.desk.clip_source(), redactor, run.work / "media",
                                         include_untrusted=include_untrusted)
        except FaceLeak as leak:
            # Refused, not crashed: recorded, the remains removed, the approval left unused for a retry.
            self.desk.audit.append("export_refused", request=run.request, export=run.export_id,
                                   reason="face_after_redaction", clip=leak.clip, file=leak.kind, frame=leak.frame,
                                   boxes=[list(b) for b in leak.boxes], check=redactor.names[1] if redactor else None)
            shutil.rmtree(run.work, ignore_errors=True)
            self.desk._publish(run.request, "export_refused", run.decision, export=run.export_id)
            log.error("export %s of %s refused: a face was still found after redaction", run.export_id, run.request)
            raise

    def _manifest(self, run: _Run, stored: StoredRequest, doc: FootageRequest, key: Ed25519PrivateKey,
                  files: list[exporting.ExportFile], notes: list[str]) -> dict[str, Any]:
        return exporting.build_manifest(
            export_id=run.export_id,
            created=self.desk.clock.now(),
            device_id=self.desk.config.device.id,
            device_public=public_key_b64(key),
            request={
                "id": run.request,
                "agency": doc.agency.id,
                "request_id": doc.request_id,
                "legal_basis": doc.legal_basis,
                "case_number": doc.case_number,
                "document_sha256": stored.sha256,
                "cameras": list(doc.scope.cameras),
                "windows": [{"start": rfc3339(w.start), "end": rfc3339(w.end)} for w in doc.scope.windows],
            },
            decision=run.decision,
            approval=approval_summary(self.desk.store, run.request, run.decision),
            files=files,
            notes=notes,
        )

    def _commit(self, run: _Run, manifest: dict[str, Any], digest: str, size: int) -> None:
        """The export_complete record is the commit point; the store and the rename follow it."""
        desk = self.desk
        desk.audit.append("export_complete", request=run.request, export=run.export_id, sha256=digest, size=size,
                          path=str(run.final), files=[{"path": f["path"], "sha256": f["sha256"]}
                                                      for f in manifest["files"]],
                          notes=list(manifest.get("notes") or []))  # what was left out, and why (the page shows it)
        crash_point("export:after-audit-complete")
        desk.store.finish_export(run.export_id, run.request, run.decision.approval_seq, desk.clock.now(), run.final,
                                 digest)
        crash_point("export:after-store-complete")
        os.replace(run.temp, run.final)
        fsync_dir(run.final.parent)
        crash_point("export:after-rename")
        shutil.rmtree(run.work, ignore_errors=True)

    @staticmethod
    def _failure(run: _Run, committing: bool, exc: OSError) -> StorageError:
        if not committing:
            with contextlib.suppress(OSError):
                run.temp.unlink(missing_ok=True)  # before the commit: nothing of it may stay at the destination
            return StorageError(f"export {run.export_id} of {run.request} failed (nothing was released; the "
                                f"approval is unused): {exc}")
        return StorageError(
            f"export {run.export_id} of {run.request} is complete (its approval is used) but its bundle could not be "
            f"moved into place at {run.final}: {exc.strerror or exc}; it is kept at {run.temp} and moved into place "
            "by the next footage command once that works"
        )

    def _redactor(self, keep: Box | None) -> Redactor:
        try:
            return Redactor.of(self.finders(), keep=keep)
        except Exception as exc:
            raise RequestError(f"cannot blur faces, so nothing is exported: {exc}") from exc

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
