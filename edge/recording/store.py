"""The clip store: clip files under <state_dir>/clips, their SQLite index and legal holds."""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from edge.clock import Clock, rfc3339
from edge.diskfaults import connect_readonly, is_read_only
from edge.errors import StorageError
from edge.fsutil import fsync_dir
from edge.permissions import PRIVATE_FILE, private_dir, private_file
from edge.recording.codec import (
    CodecChoice,
    EncodedFrame,
    RawStreamWriter,
    codec_by_name,
    frame_offsets_us,
    frames_in_stream,
    from_us,
    last_duration_us,
    probe,
    read_sidecar,
    remux,
    sidecar_header,
    to_us,
)
from edge.recording.retention import Deletion, RetentionPolicy, StoredClip, clip_class, plan

log = logging.getLogger(__name__)

CLIPS_DIR = "clips"
INDEX_NAME = "clips.sqlite3"
LOCK_NAME = "clips.lock"
QUARANTINE_DIR = "quarantine"  # <state_dir>/quarantine/<when>/: files recovery did not know, kept, never deleted
FOOTAGE_DB = Path("footage") / "requests.sqlite3"  # the request store: the record of preservation holds
_RAW = ".raw.part"
_SIDECAR = ".frames.part"
_TMP = ".tmp"


class UnknownClip(StorageError, KeyError):
    """No finished clip has this id."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown clip"


class UnknownHold(StorageError, KeyError):
    """No hold has this id."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown hold"


@dataclass(frozen=True)
class ClipRef:
    """A finished clip. `end` is the end of its last frame; `held` is true while an active hold covers it."""

    id: str
    camera: str
    start: datetime
    end: datetime
    path: Path
    sha256: str
    size: int
    events: tuple[str, ...]
    truncated: bool
    held: bool
    klass: str = "motion"
    frames: int = 0
    mime: str = "video/mp4"
    trusted: bool = True  # False: recorded while the wall clock was not trusted (docs/time.md)
    age_from: datetime | None = None  # an untrusted clip is aged from here (when the time became known)


@dataclass(frozen=True)
class Hold:
    """A legal hold: explicit clips and/or a time window (on some cameras, or all), kept until `until`."""

    id: str
    created: datetime
    until: datetime
    reason: str
    reference: str
    clip_ids: tuple[str, ...]
    cameras: tuple[str, ...] | None  # None: every camera (window holds only)
    window: tuple[datetime, datetime] | None
    released: datetime | None
    expired: datetime | None
    active: bool


@dataclass(frozen=True)
class Snapshot:
    """The JPEG taken for one event, stored beside its clip and deleted with it."""

    event_id: str
    clip_id: str
    camera: str
    ts: datetime
    path: Path
    sha256: str
    size: int


@dataclass(frozen=True)
class RecoveryReport:
    recovered: tuple[str, ...]  # partial clips made playable and marked truncated
    removed: tuple[str, ...]  # partial clips with nothing playable, or index rows whose file was gone
    orphans: tuple[Path, ...]  # files the index did not know and recovery could not rebuild: moved to quarantine
    rebuilt: tuple[str, ...] = ()  # clips the index did not know, indexed again from their files
    index_problem: str | None = None  # the index was unreadable (kept aside, see index_kept) or empty beside clips
    index_kept: Path | None = None  # where an unreadable index was moved
    holds_restored: tuple[str, ...] = ()  # holds re-created from the request store for rebuilt clips
    quarantine: Path | None = None  # the folder the orphans were moved to

    @property
    def problem(self) -> bool:
        """True when the owner must hear of it: the index was lost or damaged, or files went to quarantine."""
        return bool(self.index_problem or self.orphans or self.rebuilt)


@dataclass(frozen=True)
class RetentionReport:
    deleted: tuple[Deletion, ...]
    shortfall_bytes: int
    paused: bool = False  # a clock-jump grace period: nothing was deleted (docs/time.md)


class TimeGuard(Protocol):
    """What the store asks about time (edge.service.timesync): when holds are judged, and whether retention may
    delete now."""

    def hold_time(self) -> datetime: ...
    def retention(self) -> tuple[bool, bool, datetime]: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS clips (
    id TEXT PRIMARY KEY,
    camera TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('recording', 'complete')),
    start_us INTEGER NOT NULL,
    end_us INTEGER NOT NULL,
    path TEXT NOT NULL,
    codec TEXT NOT NULL,
    sha256 TEXT,
    size INTEGER NOT NULL DEFAULT 0,
    frames INTEGER NOT NULL DEFAULT 0,
    truncated INTEGER NOT NULL DEFAULT 0,
    klass TEXT NOT NULL DEFAULT 'motion',
    created_us INTEGER NOT NULL,
    trusted INTEGER NOT NULL DEFAULT 1,
    age_from_us INTEGER
);
CREATE INDEX IF NOT EXISTS clips_by_time ON clips (camera, start_us);
CREATE TABLE IF NOT EXISTS clip_frames (
    clip_id TEXT NOT NULL REFERENCES clips (id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    ts_us INTEGER NOT NULL,
    PRIMARY KEY (clip_id, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS clip_events (
    clip_id TEXT NOT NULL REFERENCES clips (id) ON DELETE CASCADE,
    event_id TEXT NOT NULL,
    type TEXT NOT NULL,
    ts_us INTEGER NOT NULL,
    PRIMARY KEY (clip_id, event_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS snapshots (
    event_id TEXT PRIMARY KEY,
    clip_id TEXT NOT NULL REFERENCES clips (id) ON DELETE CASCADE,
    camera TEXT NOT NULL,
    ts_us INTEGER NOT NULL,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS holds (
    id TEXT PRIMARY KEY,
    created_us INTEGER NOT NULL,
    until_us INTEGER NOT NULL,
    reason TEXT NOT NULL,
    reference TEXT NOT NULL,
    all_cameras INTEGER NOT NULL,
    window_start_us INTEGER,
    window_end_us INTEGER,
    released_us INTEGER,
    expired_us INTEGER
);
-- No foreign key to clips: a hold's history outlives the clips it once covered.
CREATE TABLE IF NOT EXISTS hold_clips (hold_id TEXT NOT NULL, clip_id TEXT NOT NULL, PRIMARY KEY (hold_id, clip_id));
CREATE INDEX IF NOT EXISTS hold_clips_by_clip ON hold_clips (clip_id);
CREATE TABLE IF NOT EXISTS hold_cameras (hold_id TEXT NOT NULL, camera TEXT NOT NULL, PRIMARY KEY (hold_id, camera));
"""

# A clip is held while any unreleased hold with a future `until` names it or has a window it overlaps
# (on its camera); computed at query time, so a window hold also covers clips recorded after it was made.
_HELD = """(
    EXISTS (SELECT 1 FROM hold_clips hc JOIN holds h ON h.id = hc.hold_id
            WHERE hc.clip_id = c.id AND h.released_us IS NULL AND h.until_us > :now)
    OR EXISTS (SELECT 1 FROM holds h
               WHERE h.window_start_us IS NOT NULL AND h.released_us IS NULL AND h.until_us > :now
                 AND c.start_us < h.window_end_us AND c.end_us > h.window_start_us
                 AND (h.all_cameras = 1 OR EXISTS (SELECT 1 FROM hold_cameras x
                                                   WHERE x.hold_id = h.id AND x.camera = c.camera)))
)"""

_CLIP_COLUMNS = (
    "c.id, c.camera, c.start_us, c.end_us, c.path, c.sha256, c.size, c.truncated, c.klass, c.frames, c.codec, "
    "c.trusted, c.age_from_us, "
    f"{_HELD} AS held, "
    "(SELECT group_concat(event_id, ' ') FROM (SELECT event_id FROM clip_events e WHERE e.clip_id = c.id "
    "ORDER BY ts_us, event_id)) AS events"
)


class ClipStore:
    """Clip files and their index. Safe to use from several threads and processes (SQLite WAL, one
    connection per call); only the process holding the writer lock (the recorder) records, recovers or
    applies retention."""

    def __init__(self, state_dir: Path, clock: Clock, time_guard: TimeGuard | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.root = self.state_dir / CLIPS_DIR
        self.clock = clock
        if time_guard is None:
            from edge.service.timesync import FileTimeGuard

            time_guard = FileTimeGuard(self.state_dir, clock)
        self.time_guard = time_guard  # when holds are judged and whether retention may delete (docs/time.md)
        self._db_path = self.state_dir / INDEX_NAME
        # On a read-only mount the store only reads (`clips list` still works); nothing records.
        self.readonly = is_read_only(self.state_dir)
        # An unreadable index (a corrupt header) does not stop the daemon: recover() moves it aside.
        self.index_problem: str | None = None
        if self.readonly:
            log.error("clip store %s is on a read-only file system: reading only, nothing is recorded", self.root)
            return
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            private_dir(self.root)  # footage: the service user's alone (edge/permissions.py)
        except OSError as exc:
            raise StorageError(f"cannot create clip directory {self.root}: {exc}") from exc
        self._open_index()

    def _open_index(self) -> None:
        try:
            private_file(self._db_path)  # 0600 before SQLite makes it (its -wal/-shm copy the mode)
            db = sqlite3.connect(self._db_path, timeout=30, isolation_level=None)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(_SCHEMA)
                _migrate(db)
            finally:
                db.close()
        except sqlite3.DatabaseError as exc:
            if not _is_corrupt(exc):
                raise StorageError(f"cannot open clip index {self._db_path}: {exc}") from exc
            self.index_problem = f"clip index {self._db_path} is unreadable: {exc}"
            log.error("%s; the recorder keeps it aside and rebuilds the index from the clip files", self.index_problem)

    # -- plumbing --------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            if self.readonly:
                db = connect_readonly(self._db_path)
            else:
                db = sqlite3.connect(self._db_path, timeout=30, isolation_level=None)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open clip index {self._db_path}: {exc}") from exc
        try:
            if not self.readonly:
                db.execute("PRAGMA foreign_keys=ON")
                db.execute("PRAGMA synchronous=FULL")
            yield db
        except sqlite3.Error as exc:
            hint = " (the daemon moves an unreadable index aside at its next start)" if _is_corrupt(exc) else ""
            raise StorageError(f"clip index {self._db_path}: {exc}{hint}") from exc
        finally:
            db.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _now_us(self) -> int:
        return to_us(self.clock.now())

    def _hold_now_us(self) -> int:
        """The time holds are judged at: the wall clock, except during a clock-jump grace period (docs/time.md)."""
        return to_us(self.time_guard.hold_time())

    def _abs(self, rel: str) -> Path:
        path = (self.state_dir / rel).resolve()
        # Never act on anything outside clips/ (the audit log lives beside it).
        if not path.is_relative_to(self.root.resolve()):
            raise StorageError(f"index path {rel!r} points outside {self.root}")
        return path

    def _rel(self, path: Path) -> str:
        return str(path.relative_to(self.state_dir))

    def writer_lock(self) -> WriterLock:
        """The lock the one recording process holds (recording, recovery and retention need it)."""
        return WriterLock(self.state_dir / LOCK_NAME)

    # -- reading ---------------------------------------------------------------------------------------------

    def list(
        self, camera: str | None = None, start: datetime | None = None, end: datetime | None = None
    ) -> builtins.list[ClipRef]:
        """Finished clips overlapping [start, end) (either bound may be open), oldest first."""
        where = ["c.status = 'complete'"]
        args: dict[str, Any] = {"now": self._hold_now_us()}
        if camera is not None:
            where.append("c.camera = :camera")
            args["camera"] = camera
        if start is not None:
            where.append("c.end_us > :start")
            args["start"] = to_us(start)
        if end is not None:
            where.append("c.start_us < :end")
            args["end"] = to_us(end)
        sql = f"SELECT {_CLIP_COLUMNS} FROM clips c WHERE {' AND '.join(where)} ORDER BY c.start_us, c.id"
        with self._connect() as db:
            return [self._ref(row) for row in db.execute(sql, args)]

    def get(self, clip_id: str) -> ClipRef:
        with self._connect() as db:
            row = db.execute(
                f"SELECT {_CLIP_COLUMNS}, c.status FROM clips c WHERE c.id = :id",
                {"id": clip_id, "now": self._hold_now_us()},
            ).fetchone()
        if row is None:
            raise UnknownClip(f"no clip with id {clip_id!r}")
        if row[-1] != "complete":
            raise UnknownClip(f"clip {clip_id!r} is still being recorded")
        return self._ref(row[:-1])

    def _ref(self, row: Sequence[Any]) -> ClipRef:
        cid, camera, start_us, end_us, rel, sha, size, truncated, klass, frames, codec, trusted, age_us = row[:13]
        held, events = row[13:]
        return ClipRef(
            id=cid,
            camera=camera,
            start=from_us(start_us),
            end=from_us(end_us),
            path=self._abs(rel),
            sha256=sha or "",
            size=int(size),
            events=tuple(events.split(" ")) if events else (),
            truncated=bool(truncated),
            held=bool(held),
            klass=klass,
            frames=int(frames),
            mime=codec_by_name(codec).mime,
            trusted=bool(trusted),
            age_from=from_us(age_us) if age_us is not None else None,
        )

    def frame_times(self, clip_id: str) -> builtins.list[datetime]:
        """The capture time (aware UTC) of every frame of a finished clip, in order."""
        self.get(clip_id)
        with self._connect() as db:
            rows = db.execute("SELECT ts_us FROM clip_frames WHERE clip_id = ? ORDER BY idx", (clip_id,))
            return [from_us(ts) for (ts,) in rows]

    def verify(self, clip_id: str) -> bool:
        """True when the clip's file exists and its sha256 matches the index."""
        ref = self.get(clip_id)
        try:
            return sha256_file(ref.path) == ref.sha256
        except FileNotFoundError:
            return False

    def snapshots(self, clip_id: str | None = None) -> builtins.list[Snapshot]:
        sql = "SELECT event_id, clip_id, camera, ts_us, path, sha256, size FROM snapshots"
        args: tuple[Any, ...] = ()
        if clip_id is not None:
            sql += " WHERE clip_id = ?"
            args = (clip_id,)
        with self._connect() as db:
            rows = db.execute(sql + " ORDER BY ts_us, event_id", args).fetchall()
        return [Snapshot(e, c, cam, from_us(ts), self._abs(p), sha, size) for e, c, cam, ts, p, sha, size in rows]

    def usage_bytes(self) -> int:
        """Bytes used by finished clips and snapshots."""
        with self._connect() as db:
            clips = db.execute("SELECT coalesce(sum(size), 0) FROM clips WHERE status = 'complete'").fetchone()[0]
            snaps = db.execute("SELECT coalesce(sum(size), 0) FROM snapshots").fetchone()[0]
        return int(clips) + int(snaps)

    # -- legal holds -----------------------------------------------------------------------------------------

    def hold(
        self,
        *,
        clip_ids: builtins.list[str] | None = None,
        cameras: builtins.list[str] | None = None,
        window: tuple[datetime, datetime] | None = None,
        until: datetime,
        reason: str,
        reference: str,
    ) -> str:
        """Keep clips from deletion until `until`: the listed clips, and/or every clip (on `cameras`, default
        all) overlapping `window`, including clips recorded later inside it. Returns the hold id."""
        now = self.clock.now()
        if until.tzinfo is None:
            raise StorageError("hold 'until' must be a timezone-aware datetime")
        if until <= now:
            raise StorageError(f"hold 'until' {rfc3339(until)} is not in the future (now {rfc3339(now)})")
        if not reason or not reason.strip():
            raise StorageError("a hold needs a reason")
        if not reference or not reference.strip():
            raise StorageError("a hold needs a reference (warrant or case number)")
        if not clip_ids and window is None:
            raise StorageError("a hold needs clip_ids, a window, or both")
        if cameras is not None and window is None:
            raise StorageError("cameras only narrow a window hold; give a window")
        if cameras is not None and not cameras:
            raise StorageError("cameras is empty; leave it out to cover every camera")
        if window is not None:
            if window[0].tzinfo is None or window[1].tzinfo is None:
                raise StorageError("hold window bounds must be timezone-aware datetimes")
            if window[0] >= window[1]:
                raise StorageError(f"hold window start {rfc3339(window[0])} is not before its end")
        hold_id = "hold-" + secrets.token_hex(8)
        with self._write() as db:
            for cid in clip_ids or []:
                if db.execute("SELECT 1 FROM clips WHERE id = ?", (cid,)).fetchone() is None:
                    raise UnknownClip(f"cannot hold unknown clip {cid!r}")
            db.execute(
                "INSERT INTO holds (id, created_us, until_us, reason, reference, all_cameras, window_start_us, "
                "window_end_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    hold_id,
                    to_us(now),
                    to_us(until),
                    reason,
                    reference,
                    int(cameras is None),
                    to_us(window[0]) if window else None,
                    to_us(window[1]) if window else None,
                ),
            )
            db.executemany(
                "INSERT INTO hold_clips VALUES (?, ?)", [(hold_id, c) for c in dict.fromkeys(clip_ids or [])]
            )
            db.executemany(
                "INSERT INTO hold_cameras VALUES (?, ?)", [(hold_id, c) for c in dict.fromkeys(cameras or [])]
            )
        log.info("hold %s placed until %s (reference %s)", hold_id, rfc3339(until), reference)
        return hold_id

    def release(self, hold_id: str) -> None:
        with self._write() as db:
            row = db.execute("SELECT released_us FROM holds WHERE id = ?", (hold_id,)).fetchone()
            if row is None:
                raise UnknownHold(f"no hold with id {hold_id!r}")
            if row[0] is None:
                db.execute("UPDATE holds SET released_us = ? WHERE id = ?", (self._now_us(), hold_id))
        log.info("hold %s released", hold_id)

    def holds(self) -> builtins.list[Hold]:
        now = self._hold_now_us()
        with self._connect() as db:
            rows = db.execute(
                "SELECT id, created_us, until_us, reason, reference, all_cameras, window_start_us, window_end_us, "
                "released_us, expired_us FROM holds ORDER BY created_us, id"
            ).fetchall()
            clips = db.execute("SELECT hold_id, clip_id FROM hold_clips ORDER BY clip_id").fetchall()
            cams = db.execute("SELECT hold_id, camera FROM hold_cameras ORDER BY camera").fetchall()
        out = []
        for hid, created, until, reason, ref, all_cams, ws, we, released, expired in rows:
            out.append(
                Hold(
                    id=hid,
                    created=from_us(created),
                    until=from_us(until),
                    reason=reason,
                    reference=ref,
                    clip_ids=tuple(c for h, c in clips if h == hid),
                    cameras=None if all_cams else tuple(c for h, c in cams if h == hid),
                    window=(from_us(ws), from_us(we)) if ws is not None else None,
                    released=from_us(released) if released is not None else None,
                    expired=from_us(expired) if expired is not None else None,
                    active=released is None and until > now,
                )
            )
        return out

    def expire_holds(self) -> builtins.list[str]:
        """Mark holds whose `until` has passed as expired; returns their ids. During a clock-jump grace period
        holds are judged at the frozen pre-jump time, so none expires (docs/time.md)."""
        now = self._hold_now_us()
        with self._write() as db:
            ids = [
                r[0]
                for r in db.execute(
                    "SELECT id FROM holds WHERE released_us IS NULL AND expired_us IS NULL AND until_us <= ? "
                    "ORDER BY id",
                    (now,),
                )
            ]
            db.executemany("UPDATE holds SET expired_us = ? WHERE id = ?", [(now, i) for i in ids])
        for hid in ids:
            log.info("hold %s expired", hid)
        return ids

    # -- recording -------------------------------------------------------------------------------------------

    def begin(
        self, camera: str, start: datetime, codec: CodecChoice, width: int, height: int, trusted: bool = True
    ) -> ClipWriter:
        """Start a clip whose first frame is captured at `start`; nothing is listed until finish(). `trusted`
        False: the wall clock was not trusted when it was recorded (docs/time.md)."""
        clip_id = f"{start.strftime('%Y%m%dT%H%M%S')}Z-{camera}-{secrets.token_hex(3)}"
        folder = self.root / camera / start.strftime("%Y-%m-%d")
        try:
            private_dir(folder)
        except OSError as exc:
            raise StorageError(f"cannot create {folder}: {exc}") from exc
        final = folder / f"{clip_id}{codec.suffix}"
        start_us = to_us(start)
        with self._write() as db:
            db.execute(
                "INSERT INTO clips (id, camera, status, start_us, end_us, path, codec, created_us, trusted) "
                "VALUES (?, ?, 'recording', ?, ?, ?, ?, ?, ?)",
                (clip_id, camera, start_us, start_us, self._rel(final), codec.name, self._now_us(), int(trusted)),
            )
        try:
            raw = RawStreamWriter(_part(final, _RAW), _part(final, _SIDECAR), codec, width, height)
        except OSError as exc:
            raise StorageError(f"cannot create clip {clip_id}: {exc}") from exc
        return ClipWriter(self, clip_id, camera, final, codec, raw, trusted)

    def _mark_untrusted(self, clip_id: str) -> None:
        with self._write() as db:
            db.execute("UPDATE clips SET trusted = 0 WHERE id = ?", (clip_id,))

    def _finish(self, writer: ClipWriter, truncated: bool) -> ClipRef | None:
        return self._finalize(writer.id, writer.final, writer.codec, truncated)

    def _finalize(self, clip_id: str, final: Path, codec: CodecChoice, truncated: bool) -> ClipRef | None:
        """Remux the parts into the final file (temp name, fsync, rename), then index its frames; a clip
        with no usable frame is removed. Returns None when nothing was kept."""
        raw, side, tmp = _part(final, _RAW), _part(final, _SIDECAR), _part(final, _TMP)
        frames = read_sidecar(side) if side.exists() else []
        if truncated and frames and raw.exists():
            listed = len(frames)
            frames = frames_in_stream(raw, frames, codec)
            if len(frames) < listed:
                missing = listed - len(frames)
                log.warning("clip %s: %d listed frames missing from the stream (power cut?)", clip_id, missing)
        first_key = next((i for i, f in enumerate(frames) if f.keyframe), None)
        if first_key is None:
            log.warning("clip %s has no complete keyframe; removing it", clip_id)
            self._drop(clip_id, [raw, side, tmp, final])
            return None
        tmp.unlink(missing_ok=True)
        try:
            remux(raw, frames, tmp, codec)
            kept = frames[first_key:]
            if truncated:
                # After a crash, only keep what decodes: a damaged tail is cut at the last decodable frame.
                decodable = probe(tmp)[0]
                if decodable < len(kept):
                    log.warning("clip %s: %d of %d frames decode; keeping those", clip_id, decodable, len(kept))
                    if decodable == 0:
                        raise StorageError(f"clip {clip_id}: no frame decodes")
                    frames = frames[: first_key + decodable]
                    kept = frames[first_key:]
                    remux(raw, frames, tmp, codec)
                    if probe(tmp)[0] != len(kept):
                        raise StorageError(f"clip {clip_id}: still not decodable after cutting the tail")
            digest, size = sha256_file(tmp), tmp.stat().st_size
            os.chmod(tmp, PRIVATE_FILE)  # the muxer created it under the umask
            os.replace(tmp, final)
            fsync_dir(final.parent)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StorageError(f"cannot write clip {clip_id}: {exc}") from exc
        ts = [f.ts_us for f in kept]
        end_us = ts[-1] + last_duration_us(ts)
        with self._write() as db:
            db.execute("DELETE FROM clip_frames WHERE clip_id = ?", (clip_id,))
            db.executemany(
                "INSERT INTO clip_frames (clip_id, idx, ts_us) VALUES (?, ?, ?)",
                [(clip_id, i, t) for i, t in enumerate(ts)],
            )
            db.execute(
                "UPDATE clips SET status = 'complete', start_us = ?, end_us = ?, sha256 = ?, size = ?, frames = ?, "
                "truncated = ? WHERE id = ?",
                (ts[0], end_us, digest, size, len(ts), int(truncated or first_key > 0), clip_id),
            )
        raw.unlink(missing_ok=True)
        side.unlink(missing_ok=True)
        log.info("clip %s stored: %d frames, %d bytes%s", clip_id, len(ts), size, " (truncated)" if truncated else "")
        return self.get(clip_id)

    def _drop(self, clip_id: str, paths: Sequence[Path]) -> None:
        snaps = [s.path for s in self.snapshots(clip_id)]
        with self._write() as db:
            db.execute("DELETE FROM clips WHERE id = ?", (clip_id,))
        for path in [*paths, *snaps]:
            path.unlink(missing_ok=True)

    def _add_event(self, clip_id: str, event_id: str, event_type: str, ts: datetime) -> None:
        with self._write() as db:
            db.execute(
                "INSERT OR IGNORE INTO clip_events (clip_id, event_id, type, ts_us) VALUES (?, ?, ?, ?)",
                (clip_id, event_id, event_type, to_us(ts)),
            )
            types = [r[0] for r in db.execute("SELECT type FROM clip_events WHERE clip_id = ?", (clip_id,))]
            db.execute("UPDATE clips SET klass = ? WHERE id = ?", (clip_class(types), clip_id))

    def _add_snapshot(self, clip_id: str, camera: str, final: Path, event_id: str, ts: datetime, jpeg: bytes) -> Path:
        path = final.with_name(f"{final.stem}.{_safe(event_id)}.jpg")
        tmp = _part(path, _TMP)
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE), "wb") as handle:
            handle.write(jpeg)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO snapshots (event_id, clip_id, camera, ts_us, path, sha256, size) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (event_id, clip_id, camera, to_us(ts), self._rel(path), hashlib.sha256(jpeg).hexdigest(), len(jpeg)),
            )
        return path

    # -- recovery --------------------------------------------------------------------------------------------

    def recover(self) -> RecoveryReport:
        """Make the index and the disk agree after a crash (call with the writer lock held, before recording).

        Partial clips are remuxed from their complete frames and marked truncated (or removed when nothing is
        playable); index rows whose file is gone are removed. Nothing is ever deleted because the index does
        not know it: an unreadable index is moved aside (kept) and a fresh one started; finished clips the
        index does not know are indexed again from their files (probed), their snapshots with them, and the
        preservation holds the request store records for them are placed again; any other unknown file is
        moved to <state_dir>/quarantine/<when>/ for the owner to look at."""
        if self.readonly:
            raise StorageError(f"clip store {self.root} is on a read-only file system: nothing can be recovered")
        index_problem, kept = self._reset_unreadable_index()
        recovered: list[str] = []
        removed: list[str] = []
        with self._connect() as db:
            rows = db.execute("SELECT id, status, path, codec FROM clips ORDER BY start_us").fetchall()
            had_holds = db.execute("SELECT count(*) FROM holds").fetchone()[0] > 0
        stamp = self.clock.now().strftime("%Y%m%dT%H%M%SZ")
        quarantine = self.state_dir / QUARANTINE_DIR / f"clips-{stamp}"
        orphans: list[Path] = []
        known: set[Path] = set()
        for clip_id, status, rel, codec_name in rows:
            final = self._abs(rel)
            if status == "recording":
                side = _part(final, _SIDECAR)
                try:
                    codec = codec_by_name(sidecar_header(side)[0]) if side.exists() else codec_by_name(codec_name)
                    ref = self._finalize(clip_id, final, codec, truncated=True)
                except Exception as exc:  # one broken clip must not stop the daemon from starting
                    log.error("clip %s cannot be recovered (%s); its parts go to %s", clip_id, exc, quarantine)
                    parts = [final, _part(final, _RAW), side, _part(final, _TMP)]
                    orphans.extend(self._quarantine([x for x in parts if x.exists()], quarantine))
                    self._drop(clip_id, [])
                    ref = None
                if ref is None:
                    removed.append(clip_id)
                    continue
                recovered.append(clip_id)
                log.warning("clip %s recovered after an interrupted recording (truncated)", clip_id)
            elif not final.exists():
                log.error("clip %s is indexed but its file %s is missing; removing the entry", clip_id, final)
                self._drop(clip_id, [])
                removed.append(clip_id)
                continue
            known.add(final)
        known.update(s.path for s in self.snapshots())
        unknown = [p for p in sorted(self.root.rglob("*")) if p.is_file() and p.resolve() not in known]
        if not rows and not had_holds and unknown and index_problem is None:
            index_problem = (f"clip index {self._db_path} is empty but {len(unknown)} file(s) are in {self.root} "
                             "(deleted or zeroed?)")
            log.error("%s: rebuilding it from the clip files, deleting nothing", index_problem)
        rebuilt: list[str] = []
        for path in unknown:
            clip_id = self._rebuild_clip(path)
            if clip_id is not None:
                rebuilt.append(clip_id)
                known.add(path.resolve())
        rebuilt_snaps = {p for p in unknown if p.resolve() not in known and self._rebuild_snapshot(p)}
        strays = [p for p in unknown if p.resolve() not in known and p not in rebuilt_snaps]
        orphans.extend(self._quarantine(strays, quarantine))
        restored = self._restore_holds(rebuilt) if rebuilt else ()
        for path in orphans:
            log.warning("%s was not in the clip index and could not be indexed: kept in quarantine", path)
        return RecoveryReport(
            tuple(recovered), tuple(removed), tuple(orphans), tuple(rebuilt), index_problem, kept, restored,
            quarantine if orphans else None,
        )

    def _reset_unreadable_index(self) -> tuple[str | None, Path | None]:
        """An index SQLite cannot read (a corrupt header or pages) is renamed aside, with its -wal and -shm,
        and a fresh one created; returns (problem, where the bad one went)."""
        problem = self.index_problem
        if problem is None and self._db_path.exists():
            try:
                db = sqlite3.connect(self._db_path, timeout=30, isolation_level=None)
                try:
                    result = db.execute("PRAGMA quick_check").fetchone()
                finally:
                    db.close()
                if result is None or result[0] != "ok":
                    problem = f"clip index {self._db_path} is damaged: {result[0] if result else 'no answer'}"
            except sqlite3.DatabaseError as exc:
                if not _is_corrupt(exc):
                    raise StorageError(f"cannot check clip index {self._db_path}: {exc}") from exc
                problem = f"clip index {self._db_path} is unreadable: {exc}"
        if problem is None:
            return None, None
        kept = self._db_path.with_name(f"{INDEX_NAME}.unreadable-{self.clock.now().strftime('%Y%m%dT%H%M%SZ')}")
        try:
            for suffix in ("", "-wal", "-shm"):
                part = Path(f"{self._db_path}{suffix}")
                if part.exists():
                    os.replace(part, Path(f"{kept}{suffix}"))
            fsync_dir(self.state_dir)
        except OSError as exc:
            raise StorageError(f"cannot move the unreadable clip index aside: {exc}") from exc
        log.error("%s: kept as %s; starting a fresh index and rebuilding it from the clip files", problem, kept)
        self.index_problem = None
        self._open_index()
        if self.index_problem is not None:
            raise StorageError(f"a fresh clip index cannot be created: {self.index_problem}")
        return problem, kept

    def _rebuild_clip(self, path: Path) -> str | None:
        """Index a finished clip file again: camera and start from its name, frame times from its stream.
        Rebuilt clips get the class kept longest ("ring"; their events are lost). None when `path` is not one."""
        match = _CLIP_NAME.fullmatch(path.name)
        if match is None or path.parent.parent.parent != self.root:
            return None
        clip_id, stamp, camera, suffix = match["id"], match["stamp"], match["camera"], match["suffix"]
        if camera != path.parent.parent.name:
            return None
        codec = next((c for c in _CODEC_NAMES if codec_by_name(c).suffix == suffix), None)
        if codec is None:
            return None
        try:
            offsets, tagged_us = frame_offsets_us(path)
            digest, size = sha256_file(path), path.stat().st_size
        except (StorageError, OSError) as exc:
            log.error("clip file %s cannot be read (%s); not indexed", path, exc)
            return None
        if not offsets:
            return None
        start_us = to_us(datetime.strptime(stamp, "%Y%m%dT%H%M%S").replace(tzinfo=UTC))
        exact = tagged_us is not None and start_us <= tagged_us < start_us + 1_000_000  # the tag agrees with the name
        if exact:
            assert tagged_us is not None
            start_us = tagged_us
        ts = [start_us + o for o in offsets]
        end_us = ts[-1] + last_duration_us(ts)
        # Its times are reconstructed, so the clip is marked untrusted-time (exported only when the owner includes
        # such clips). It is aged from now, the rebuild, when the clock is trusted (never from its own stamps or
        # the file's mtime, which a wrong clock may have written: a clip is never deleted earlier than it would
        # have been), else from the first trusted time, like any untrusted clip (settle_untrusted_ages).
        _allowed, clock_trusted, now = self.time_guard.retention()
        age_from = to_us(now) if clock_trusted else None
        with self._write() as db:
            if db.execute("SELECT 1 FROM clips WHERE id = ?", (clip_id,)).fetchone() is not None:
                return None
            db.execute(
                "INSERT INTO clips (id, camera, status, start_us, end_us, path, codec, sha256, size, frames, "
                "truncated, klass, created_us, trusted, age_from_us) "
                "VALUES (?, ?, 'complete', ?, ?, ?, ?, ?, ?, ?, 0, 'ring', ?, 0, ?)",
                (clip_id, camera, ts[0], end_us, self._rel(path), codec, digest, size, len(ts), self._now_us(),
                 age_from),
            )
            db.executemany(
                "INSERT INTO clip_frames (clip_id, idx, ts_us) VALUES (?, ?, ?)",
                [(clip_id, i, t) for i, t in enumerate(ts)],
            )
        log.warning("clip %s was not in the index: indexed again from %s (%d frames; start %s, untrusted time, "
                    "events unknown)", clip_id, path, len(ts), "to the microsecond" if exact else "to the second")
        return str(clip_id)

    def _rebuild_snapshot(self, path: Path) -> bool:
        """Index a snapshot `<clip file stem>.<event>.jpg` again beside its (known) clip."""
        if path.suffix != ".jpg" or path.name.count(".") < 2:
            return False
        stem, event = path.name[: -len(".jpg")].rsplit(".", 1)
        with self._connect() as db:
            rows = db.execute("SELECT id, camera, start_us, path FROM clips WHERE status = 'complete'").fetchall()
        clip = next((r for r in rows if Path(r[3]).stem == stem and self._abs(r[3]).parent == path.parent), None)
        if clip is None:
            return False
        data = path.read_bytes()
        with self._write() as db:
            db.execute(
                "INSERT OR IGNORE INTO snapshots (event_id, clip_id, camera, ts_us, path, sha256, size) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (event, clip[0], clip[1], clip[2], self._rel(path), hashlib.sha256(data).hexdigest(), len(data)),
            )
        return True

    def _restore_holds(self, clip_ids: Sequence[str]) -> tuple[str, ...]:
        """Place again the unexpired preservation holds the request store records for these clips: a lost
        index must not lift a legal hold. Read-only; nothing happens when there is no request store."""
        path = self.state_dir / FOOTAGE_DB
        if not path.exists():
            return ()
        try:
            db = connect_readonly(path)
            try:
                query = "SELECT request, hold_id, until, clips FROM holds WHERE expired_at IS NULL"
                rows = db.execute(query).fetchall()
            finally:
                db.close()
        except sqlite3.Error as exc:
            log.error("cannot read the holds in %s (%s): rebuilt clips have no hold until it is readable", path, exc)
            return ()
        wanted = set(clip_ids)
        restored: list[str] = []
        now = self._now_us()
        for request, hold_id, until, clips_json in rows:
            try:
                held = [str(c) for c in json.loads(clips_json)]
                until_us = to_us(datetime.fromisoformat(str(until).replace("Z", "+00:00")))
            except (ValueError, TypeError) as exc:
                log.error("hold %s in %s is unreadable (%s); not restored", hold_id, path, exc)
                continue
            if until_us <= now or not wanted.intersection(held):
                continue
            with self._write() as db:
                if db.execute("SELECT 1 FROM holds WHERE id = ?", (hold_id,)).fetchone() is not None:
                    continue
                db.execute(
                    "INSERT INTO holds (id, created_us, until_us, reason, reference, all_cameras) "
                    "VALUES (?, ?, ?, ?, ?, 1)",
                    (hold_id, now, until_us, "preservation request (restored after the clip index was rebuilt)",
                     str(request)),
                )
                db.executemany("INSERT OR IGNORE INTO hold_clips VALUES (?, ?)", [(hold_id, c) for c in held])
            log.warning("hold %s (request %s) placed again on its clips after the index rebuild", hold_id, request)
            restored.append(str(hold_id))
        return tuple(restored)

    def _quarantine(self, paths: Sequence[Path], folder: Path) -> builtins.list[Path]:
        """Move files out of clips/ into `folder`, keeping their relative paths (a rename: no space needed)."""
        moved = []
        for path in paths:
            target = folder / path.relative_to(self.root)
            try:
                private_dir(target.parent)
                os.replace(path, target)
                fsync_dir(target.parent)
            except OSError as exc:
                log.error("cannot move %s to quarantine (%s); left where it is", path, exc)
                continue
            moved.append(path)
        return moved

    # -- retention -------------------------------------------------------------------------------------------

    def retention_candidates(self) -> builtins.list[StoredClip]:
        return [
            StoredClip(c.id, c.start, c.end, c.klass, c.size + self._snap_bytes(c.id), c.held, c.trusted, c.age_from)
            for c in self.list()
        ]

    def settle_untrusted_ages(self, now: datetime) -> int:
        """Clips recorded while the clock was not trusted are aged from the first trusted time after them
        (`now`, called once the clock is trusted), never from their own (possibly 1970) stamps."""
        with self._write() as db:
            cur = db.execute(
                "UPDATE clips SET age_from_us = ? WHERE trusted = 0 AND age_from_us IS NULL AND status = 'complete'",
                (to_us(now),),
            )
            count = cur.rowcount
        if count:
            log.info("%d clips recorded while the clock was untrusted are aged from %s", count, rfc3339(now))
        return int(count)

    def _snap_bytes(self, clip_id: str) -> int:
        with self._connect() as db:
            return int(
                db.execute("SELECT coalesce(sum(size), 0) FROM snapshots WHERE clip_id = ?", (clip_id,)).fetchone()[0]
            )

    def apply_retention(self, policy: RetentionPolicy, free_bytes: int) -> RetentionReport:
        """Delete what retention.plan() chooses (re-checking each clip's holds as it goes); nothing during a
        clock-jump grace period (docs/time.md)."""
        allowed, trusted, now = self.time_guard.retention()
        if trusted:
            self.settle_untrusted_ages(now)
        if not allowed:
            log.info("retention paused: the clock jumped and has not yet been stable long enough (docs/time.md)")
            return RetentionReport((), 0, paused=True)
        result = plan(self.retention_candidates(), policy, now, free_bytes)
        deleted = tuple(d for d in result.deletions if self.delete(d.clip_id, d.reason))
        return RetentionReport(deleted, result.shortfall_bytes)

    def delete(self, clip_id: str, reason: str) -> bool:
        """Delete a finished clip and its snapshots unless a hold covers it now; True when deleted."""
        hold_now = self._hold_now_us()
        with self._write() as db:
            row = db.execute(
                f"SELECT c.path, {_HELD} FROM clips c WHERE c.id = :id AND c.status = 'complete'",
                {"id": clip_id, "now": hold_now},
            ).fetchone()
            if row is None or row[1]:
                return False
            snaps = [r[0] for r in db.execute("SELECT path FROM snapshots WHERE clip_id = ?", (clip_id,))]
            db.execute("DELETE FROM clips WHERE id = ?", (clip_id,))
        for rel in [row[0], *snaps]:
            self._abs(rel).unlink(missing_ok=True)
        log.info("clip %s deleted (%s)", clip_id, reason)
        return True


class ClipWriter:
    """One clip being recorded: append frames, note events and snapshots, then finish()."""

    def __init__(
        self,
        store: ClipStore,
        clip_id: str,
        camera: str,
        final: Path,
        codec: CodecChoice,
        raw: RawStreamWriter,
        trusted: bool = True,
    ) -> None:
        self.store = store
        self.trusted = trusted
        self.id = clip_id
        self.camera = camera
        self.final = final
        self.codec = codec
        self._raw = raw
        self.first_ts: datetime | None = None
        self.last_ts: datetime | None = None
        self.event_ids: set[str] = set()
        self.event_types: list[str] = []

    @property
    def frames(self) -> int:
        return self._raw.frames

    def write(self, frame: EncodedFrame) -> None:
        try:
            self._raw.write(frame)
        except OSError as exc:
            raise StorageError(f"clip {self.id}: cannot write frame: {exc}") from exc
        if self.first_ts is None:
            self.first_ts = frame.ts
        self.last_ts = frame.ts

    def mark_untrusted(self) -> None:
        """A frame of this clip was stamped while the wall clock was not trusted."""
        if self.trusted:
            self.trusted = False
            self.store._mark_untrusted(self.id)

    def add_event(self, event_id: str, event_type: str, ts: datetime) -> None:
        if event_id not in self.event_ids:
            self.event_ids.add(event_id)
            self.event_types.append(event_type)
            self.store._add_event(self.id, event_id, event_type, ts)

    def add_snapshot(self, event_id: str, ts: datetime, jpeg: bytes) -> Path:
        try:
            return self.store._add_snapshot(self.id, self.camera, self.final, event_id, ts, jpeg)
        except OSError as exc:
            raise StorageError(f"clip {self.id}: cannot write snapshot for event {event_id}: {exc}") from exc

    def finish(self, truncated: bool = False) -> ClipRef | None:
        """Close, remux, fsync, rename and index; None when the clip had no playable frame."""
        self._raw.close()
        return self.store._finish(self, truncated)

    def abandon(self) -> None:
        """Stop writing and leave the parts for recover() (used when the disk refuses even the remux)."""
        self._raw.close()


class WriterLock:
    """An exclusive flock: only one process records into a state directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise StorageError(f"another recorder is using {self.path.parent} (lock {self.path} is held)") from exc
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _migrate(db: sqlite3.Connection) -> None:
    """Columns added since the first index format; an old index file gains them (its clips count as trusted)."""
    have = {row[1] for row in db.execute("PRAGMA table_info(clips)")}
    if "trusted" not in have:
        db.execute("ALTER TABLE clips ADD COLUMN trusted INTEGER NOT NULL DEFAULT 1")
    if "age_from_us" not in have:
        db.execute("ALTER TABLE clips ADD COLUMN age_from_us INTEGER")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _part(final: Path, suffix: str) -> Path:
    return final.with_name(final.name + suffix)


# A finished clip's file name, as begin() makes it: <start>Z-<camera>-<6 hex><suffix>.
_CLIP_NAME = re.compile(r"(?P<id>(?P<stamp>\d{8}T\d{6})Z-(?P<camera>.+)-[0-9a-f]{6})(?P<suffix>\.mp4|\.webm)")
_CODEC_NAMES = ("h264", "vp9", "vp8")


def _is_corrupt(exc: BaseException) -> bool:
    """SQLite says the file is not a database or is malformed (not: busy, locked, read-only)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB) or (
        type(exc) is sqlite3.DatabaseError and ("not a database" in str(exc) or "malformed" in str(exc))
    )


def _safe(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in text)[:80]
