"""The footage audit log: append-only, hash-chained JSON lines, fsync'd before the step they record."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rfc8785

from edge import layout
from edge.clock import Clock, rfc3339
from edge.crashpoints import crash_point
from edge.diskfaults import SpaceReserve, with_reserve
from edge.errors import StorageError
from edge.fsutil import fsync_dir
from edge.layout import StateLayout

log = logging.getLogger(__name__)

GENESIS = "0" * 64
LOG_NAME = layout.AUDIT_LOG  # edge.layout's names, kept for the code and tests that import them here
HEAD_NAME = layout.AUDIT_HEAD
KINDS = frozenset(
    {
        "intake",  # a document arrived (its sha256, size, claimed agency and id)
        "decision",  # what the policy decided, with every reason
        "owner_approve",
        "owner_deny",
        "attestation",  # the owner checked the paper original of an unverified warrant
        "unblur",  # the owner released a clip without face blurring
        "ratify",  # an emergency release confirmed by a warrant or case reference
        "export_start",
        "export_complete",
        "export_refused",  # the check detector still found a face after redaction: nothing left the device
        "hold",
        "hold_renew",
        "hold_expired",
        "hold_release",  # the owner lifted a preservation hold (`requests release-hold`)
        "expiry",  # an approval lapsed unused
        "notification",
        "owner_copy",  # the owner copied a clip out of the store (`clips copy`): before the copy is made
        "owner_copy_failed",  # that copy then failed (the error): no file was left at the destination
        # faces: the person's random id (never their name), the consent's dates, by whom (docs/faces.md)
        "face_enrol",  # someone was enrolled (or photos added)
        "face_consent",  # an enrolled person's consent was recorded anew (renewed): before the record changes
        "face_forget",  # an enrolled person was forgotten (before their templates, chips and consent go)
        "repair",  # a torn last record (a power cut mid-append) was moved aside into a kept file
        # the owner's page (edge/web): who got in, who did not, and the account changes
        "web_setup",  # the owner account was created with a one-time setup code
        "web_login",
        "web_login_failed",
        "web_lockout",  # a client reached the failed-login limit and must wait
        "web_logout",
        "web_password",  # a password was changed (every session of that user ended)
        "web_user",  # the owner added or removed a viewer
        "web_refused",  # a decision from the page was refused (request changed, no confirmation, out of scope)
        "web_clip_viewed",  # a clip was played on the page: who, which clip (once per session and clip)
        "web_reset",  # web.db was lost or damaged (kept aside when damaged): the page's accounts start again
    }
)


def _read_only_fs(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _canonical(record: dict[str, Any]) -> bytes:
    return bytes(rfc8785.dumps(record))


def record_hash(record: dict[str, Any]) -> str:
    """The hash a record carries: sha256 of its canonical JSON without the `hash` member."""
    return hashlib.sha256(_canonical({k: v for k, v in record.items() if k != "hash"})).hexdigest()


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    records: int
    bad_record: int | None = None  # 1-based sequence number of the first bad record
    problem: str = ""

    def message(self, path: Path) -> str:
        if self.ok:
            return f"{path}: {self.records} record(s), chain intact"
        return f"{path}: record {self.bad_record}: {self.problem}"


class AuditLog:
    """One writer at a time (flock); each append is written and fsync'd before append() returns."""

    def __init__(self, state_dir: Path, clock: Clock,
                 on_append: Callable[[dict[str, Any]], object] | None = None) -> None:
        paths = StateLayout.of(state_dir)
        self.dir = paths.audit
        self.path = paths.audit_log
        self.head_path = paths.audit_head
        self.lock_path = paths.audit_lock
        self.clock = clock
        self.reserve = SpaceReserve(Path(state_dir))  # released when the disk is full (edge.diskfaults)
        # Told of every record once it is on disk: the footage desk publishes the new head (the witness, see
        # docs/footage-requests.md) through the event bus; a failure there never undoes the record.
        self.on_append = on_append

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StorageError(f"cannot open the audit log in {self.dir}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _last(self) -> tuple[int, str]:
        """(seq, hash) of the last complete record; refuses to extend a damaged tail."""
        try:
            if not self.path.exists() or self.path.stat().st_size == 0:
                return 0, GENESIS
            with self.path.open("rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                chunk, pos = b"", size
                while pos > 0:
                    step = min(65536, pos)
                    pos -= step
                    fh.seek(pos)
                    chunk = fh.read(step) + chunk
                    if chunk.count(b"\n") >= 2 or pos == 0:
                        break
        except OSError as exc:
            raise StorageError(f"cannot append to the audit log {self.path}: {exc}") from exc
        if not chunk.endswith(b"\n"):
            raise TornTailError(f"{self.path}: the last record is incomplete (torn); run `doorbell-edge audit repair`")
        last = chunk[:-1].rsplit(b"\n", 1)[-1]
        try:
            record = json.loads(last)
            return int(record["seq"]), str(record["hash"])
        except (ValueError, KeyError, TypeError) as exc:
            raise TornTailError(
                f"{self.path}: the last record is unreadable (torn); run `doorbell-edge audit repair`"
            ) from exc

    def append(self, kind: str, *, repair_torn: str | None = None, **data: Any) -> dict[str, Any]:
        """Write one record and fsync it; only then may the step it records take effect.

        A torn last record refuses the append (StorageError naming `audit repair`), except when `repair_torn`
        names who asks (a denial: a torn tail must never block a refusal): then the tail is repaired first,
        exactly as `doorbell-edge audit repair` does it (kept, logged, recorded)."""
        if kind not in KINDS:
            raise ValueError(f"unknown audit record kind {kind!r}")
        with self._locked():
            if repair_torn is not None:
                self._repair_locked(repair_torn)
            return self._append_locked(kind, data)

    def _append_locked(self, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        seq, prev = self._last()
        record: dict[str, Any] = {
            "seq": seq + 1,
            "ts": rfc3339(self.clock.now()),
            "kind": kind,
            "data": data,
            "prev": prev,
        }
        record["hash"] = record_hash(record)
        line = _canonical(record) + b"\n"
        created = not self.path.exists()

        def write_line() -> None:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                start = os.fstat(fd).st_size
                try:
                    # one write: a killed process leaves the whole line or none of it
                    if os.write(fd, line) != len(line):
                        raise OSError(errno.ENOSPC, "short write (disk full)", str(self.path))
                    os.fsync(fd)
                except OSError:
                    os.ftruncate(fd, start)  # a full disk must not leave a torn line behind
                    raise
            finally:
                os.close(fd)

        try:
            # A full disk releases the space reserve and retries once: the record still lands before its step.
            with_reserve(self.reserve, f"the audit log ({kind} record)", write_line)
            if created:
                fsync_dir(self.dir)
            with_reserve(self.reserve, "the audit log's head file",
                         lambda: self._write_head(record["seq"], record["hash"]))
        except OSError as exc:
            raise StorageError(f"cannot append to the audit log {self.path}: {exc}") from exc
        log.info("audit %s #%s %s", kind, record["seq"], data.get("request", ""))
        if self.on_append is not None:
            try:
                self.on_append(record)
            except Exception:
                log.exception("audit record %s is written, but publishing the new head failed", record["seq"])
        return record

    def _write_head(self, seq: int, digest: str) -> None:
        tmp = self.head_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps({"seq": seq, "hash": digest}).encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.head_path)
        fsync_dir(self.dir)

    def records(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_bytes().splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def head(self) -> tuple[int, str]:
        with self._locked():
            return self._last()

    def verify(self) -> VerifyResult:
        return verify_log(self.path, self.head_path)

    def check_access(self) -> None:
        """StorageError when the log exists but this process cannot read and append to it (for example files
        a root-run command left behind): the daemon warns instead of failing at the next step it must audit."""
        from edge.service.owner import describe

        for path, mode in ((self.dir, os.R_OK | os.W_OK | os.X_OK), (self.path, os.R_OK | os.W_OK),
                           (self.head_path, os.R_OK | os.W_OK), (self.lock_path, os.R_OK | os.W_OK)):
            if os.path.lexists(path) and not os.access(path, mode):
                if os.access(path, mode & ~os.W_OK) and _read_only_fs(path):  # not an ownership problem
                    raise StorageError(f"cannot append to the audit log: {path} is on a read-only file system "
                                       "(it can still be read)")
                raise StorageError(f"cannot read and append to the audit log: {path} is {describe(path)}")
            if path == self.dir and not os.path.isdir(path):
                if os.path.lexists(self.dir.parent) and not os.access(self.dir.parent, os.X_OK):
                    raise StorageError(f"cannot reach the audit log: {self.dir.parent} is {describe(self.dir.parent)}")
                return  # no audit log yet: the first record creates it

    # --- a torn tail ---------------------------------------------------------------------------------------

    def torn(self) -> bool:
        """True when the last record is incomplete or unreadable, so appends are refused until a repair."""
        try:
            self._last()
        except TornTailError:
            return True
        return False

    def repair(self, by: str) -> dict[str, Any] | None:
        """`doorbell-edge audit repair`: move a torn last record aside and record that; None when nothing was
        torn. Damage that is not a torn tail (an edited, removed or reordered record) is refused, not repaired."""
        with self._locked():
            return self._repair_locked(by)

    def _repair_locked(self, by: str) -> dict[str, Any] | None:
        torn = find_torn_tail(self.path, self.head_path)
        if torn is None:
            return self._record_kept_files(by)
        digest = hashlib.sha256(torn.data).hexdigest()
        kept = self.dir / f"{LOG_NAME}.torn-{torn.records + 1}-{digest[:12]}"
        try:
            # Kept for inspection first (fsync'd), then cut from the log: the bytes are never just dropped.
            fd = os.open(kept, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, torn.data)
                os.fsync(fd)
            finally:
                os.close(fd)
            fsync_dir(self.dir)
            crash_point("audit-repair:after-keep")
            fd = os.open(self.path, os.O_WRONLY)
            try:
                os.ftruncate(fd, torn.offset)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise StorageError(f"cannot repair the audit log {self.path}: {exc}") from exc
        crash_point("audit-repair:after-truncate")
        log.warning("audit log %s: torn last record (%d bytes after record %d) moved to %s", self.path,
                    len(torn.data), torn.records, kept)
        return self._append_locked("repair", _repair_data(kept, torn.data, torn.records, by))

    def _record_kept_files(self, by: str) -> dict[str, Any] | None:
        """A repair killed between cutting the tail and recording it left a kept file no record names: record
        it now, so no repair is ever silent."""
        kept = sorted(self.dir.glob(f"{LOG_NAME}.torn-*"))
        if not kept:
            return None
        named = {r["data"].get("kept") for r in self.records() if r.get("kind") == "repair"}
        record = None
        for path in kept:
            if path.name not in named:
                data = path.read_bytes()
                after = int(path.name.split(".torn-", 1)[1].split("-", 1)[0]) - 1
                log.warning("audit log %s: recording an earlier repair that was interrupted: %s", self.path, path)
                record = self._append_locked("repair", _repair_data(path, data, after, by))
        return record


class TornTailError(StorageError):
    """The audit log's last record is incomplete or unreadable (a power cut mid-append): nothing more is
    appended until `doorbell-edge audit repair` moves it aside."""


@dataclass(frozen=True)
class TornTail:
    offset: int  # the file offset where the intact chain ends
    records: int  # the intact records before it
    data: bytes  # the torn bytes


def _repair_data(kept: Path, data: bytes, after: int, by: str) -> dict[str, Any]:
    return {"kept": kept.name, "torn_bytes": len(data), "torn_sha256": hashlib.sha256(data).hexdigest(),
            "after_record": after, "by": by}


def find_torn_tail(path: Path, head_path: Path | None = None) -> TornTail | None:
    """The torn last record, if that is the only damage; None when the chain is intact. Raises StorageError for
    damage that is not a torn append (a later line follows the bad one, or the last line is well-formed JSON that
    does not verify, or the head file says the record had once been complete)."""
    result = verify_log(path)
    if result.ok:
        return None
    data = path.read_bytes()
    lines = data.split(b"\n")
    offset = sum(len(line) + 1 for line in lines[: result.records])
    rest = data[offset:]
    refuse = f"{result.message(path)}; not a torn last record, so not repaired (keep the log as evidence)"
    if b"\n" in rest[:-1]:
        raise StorageError(refuse)
    if rest.endswith(b"\n"):
        with contextlib.suppress(ValueError):
            if isinstance(json.loads(rest), dict):
                raise StorageError(refuse)
    if head_path is not None and head_path.exists():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            if int(json.loads(head_path.read_bytes())["seq"]) > result.records:
                raise StorageError(f"{path}: record {result.records + 1} was complete once (the head file says "
                                   "so): it was damaged later, not torn while written; not repaired")
    return TornTail(offset, result.records, rest)


def verify_log(path: Path, head_path: Path | None = None) -> VerifyResult:
    """Check the whole chain; name the first record that was edited, removed, reordered or cut off."""
    if not path.exists():
        return VerifyResult(True, 0) if head_path is None or not head_path.exists() else VerifyResult(
            False, 0, 1, "the audit log is missing but its head file exists"
        )
    data = path.read_bytes()
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    prev, count = GENESIS, 0
    for index, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except ValueError:
            return VerifyResult(False, count, index, "not valid JSON (edited or damaged)")
        if not isinstance(record, dict) or not {"seq", "ts", "kind", "data", "prev", "hash"} <= record.keys():
            return VerifyResult(False, count, index, "fields missing (edited or damaged)")
        if record["seq"] != index:
            found = f"found record {record['seq']!r} where record {index} belongs (removed or reordered)"
            return VerifyResult(False, count, index, found)
        if record["hash"] != record_hash(record):
            return VerifyResult(False, count, index, "contents do not match its hash (edited)")
        try:
            canonical = _canonical(record)
        except Exception:
            canonical = b""
        if canonical != line:
            return VerifyResult(False, count, index, "not in canonical form (edited)")
        if record["prev"] != prev:
            gap = f"does not follow record {index - 1} (removed, reordered or edited)"
            return VerifyResult(False, count, index, gap)
        prev, count = record["hash"], index
    if tail:
        return VerifyResult(False, count, count + 1, "incomplete last line (truncated)")
    if head_path is not None:
        problem = _check_head(head_path, lines, count)
        if problem:
            bad, text = problem
            return VerifyResult(False, count, bad, text)
    return VerifyResult(True, count)


def _check_head(head_path: Path, lines: list[bytes], count: int) -> tuple[int, str] | None:
    if not head_path.exists():
        # The head is written right after each record; only a crash during the very first append lacks it.
        return None if count <= 1 else (count, "the head file is missing (log replaced?)")
    try:
        head = json.loads(head_path.read_bytes())
        seq, digest = int(head["seq"]), str(head["hash"])
    except (ValueError, KeyError, TypeError):
        return (count + 1, "the head file is unreadable")
    if seq > count:
        return (count + 1, f"missing: the log ends at record {count} but {seq} were written (truncated)")
    if seq < count - 1:
        return (seq + 1, f"the head file says the log ended at record {seq} (records appended behind its back)")
    if seq >= 1 and json.loads(lines[seq - 1])["hash"] != digest:
        return (seq, "does not match the hash the head file recorded (rewritten)")
    return None


# --- anchoring: a head witnessed elsewhere -------------------------------------------------------------------


def parse_head(text: str) -> tuple[int, str]:
    """`SEQ:HASH` as `audit verify --against` takes it: the record number and its hash (64 hex digits, or the
    base64 of the 32 bytes as a checkpoint's second line carries it). ValueError naming what is wrong."""
    seq_text, sep, digest = text.strip().partition(":")
    if not sep or not seq_text.strip().isdigit():
        raise ValueError(f"{text!r} is not SEQ:HASH (a record number, a colon, its hash)")
    return int(seq_text), normalise_hash(digest.strip())


def normalise_hash(digest: str) -> str:
    """A record hash as the log writes it (64 lower-case hex digits), from hex or base64."""
    if len(digest) == 64 and all(c in "0123456789abcdefABCDEF" for c in digest):
        return digest.lower()
    import base64
    import binascii

    try:
        raw = base64.b64decode(digest, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise ValueError(f"{digest!r} is not a record hash (64 hex digits or the base64 of 32 bytes)")
    return raw.hex()


def check_against(path: Path, seq: int, digest: str) -> VerifyResult:
    """The log checked against a head witnessed earlier (a signed checkpoint, the retained MQTT head, a copy
    in Home Assistant's history): its chain is intact, it holds record `seq` and that record has hash `digest`.
    A log cut back and re-headed, or a state dir restored from an older copy, is shorter or differs there."""
    result = verify_log(path)
    if not result.ok:
        return result
    if seq > result.records:
        return VerifyResult(False, result.records, seq, f"missing: the log ends at record {result.records}, but "
                            f"a head witnessed earlier says record {seq} existed (cut off or rolled back)")
    if seq >= 1:
        line = path.read_bytes().split(b"\n")[seq - 1]
        found = str(json.loads(line)["hash"])
        if found != digest:
            return VerifyResult(False, result.records, seq, f"its hash {found[:16]}... is not the hash "
                                f"{digest[:16]}... a head witnessed earlier gives it (rewritten or replaced)")
    return VerifyResult(True, result.records)
