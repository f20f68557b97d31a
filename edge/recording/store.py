"""The clip store: clip files under <state_dir>/clips, their SQLite index and the queries on it."""

from __future__ import annotations

import builtins
import contextlib
import logging
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge import layout
from edge.clock import Clock, rfc3339
from edge.diskfaults import is_read_only
from edge.errors import StorageError
from edge.layout import StateLayout
from edge.permissions import private_dir
from edge.recording.codec import CodecChoice, codec_by_name
from edge.recording.holds import Hold, HoldStore, UnknownHold, held_sql
from edge.recording.index import HOLDS_AS, IndexFile
from edge.recording.rawstream import from_us, to_us
from edge.recording.refs import ClipRef, RetentionReport, Snapshot, TimeGuard, UnknownClip
from edge.recording.retention import RetentionPolicy, clip_class
from edge.recording.writer import ClipWriter, WriterLock, begin_clip, sha256_file

if TYPE_CHECKING:
    from edge.recording.recovery import RecoveryReport

__all__ = ["ClipRef", "ClipStore", "ClipWriter", "Hold", "RetentionReport", "Snapshot", "TimeGuard", "UnknownClip",
           "UnknownHold", "WriterLock", "sha256_file"]  # the names users of the store import from here

log = logging.getLogger(__name__)

INDEX_NAME = layout.CLIP_INDEX  # these two: edge.layout's names, kept for the code and tests that import them here
QUARANTINE_DIR = layout.QUARANTINE_DIR
_HELD = held_sql(HOLDS_AS)

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
    applies retention. Holds are kept by the hold store (edge.recording.holds), attached to every query."""

    def __init__(self, state_dir: Path, clock: Clock, time_guard: TimeGuard | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.paths = StateLayout.of(self.state_dir)
        self.root = self.paths.clips
        self.clock = clock
        if time_guard is None:
            from edge.service.timesync import FileTimeGuard

            time_guard = FileTimeGuard(self.state_dir, clock)
        self.time_guard = time_guard  # when holds are judged and whether retention may delete (docs/time.md)
        self.readonly = _prepare(self.state_dir, self.root)
        # Its first open moves the holds older versions kept in the index and the request store.
        self.hold_store = HoldStore(self.state_dir, clock, time_guard, readonly=self.readonly)
        if self.hold_store.move_problem is not None:  # the daemon runs on; nothing is deleted until it is moved
            log.error("%s", self.hold_store.move_problem)
        # An unreadable index (a corrupt header) does not stop the daemon: recover() moves it aside. Nor does an
        # unreadable hold file: every clip counts as held until it can be read (edge.recording.index).
        self.index = IndexFile(self.paths.clip_index, self.hold_store, self.state_dir, self.readonly, clock.now)
        if not self.readonly:
            self.index.open()

    # -- plumbing (the file itself is edge.recording.index's) ---------------------------------------------------

    @property
    def index_problem(self) -> str | None:
        """Why the index cannot be read (the daemon's recovery moves it aside), or None."""
        return self.index.problem

    def _connect(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return self.index.connect()

    def _write(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """One write transaction, with the write locks of the index and the hold file: no hold crosses a delete."""
        return self.index.write()

    def _hold_now_us(self) -> int:
        """The time holds are judged at: the wall clock, except during a clock-jump grace period (docs/time.md)."""
        return to_us(self.time_guard.hold_time())

    def abs_path(self, rel: str) -> Path:
        """The file an index path names; never anything outside clips/ (the audit log lives beside it)."""
        path = (self.state_dir / rel).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise StorageError(f"index path {rel!r} points outside {self.root}")
        return path

    def rel_path(self, path: Path) -> str:
        return str(path.relative_to(self.state_dir))

    def writer_lock(self) -> WriterLock:
        """The lock the one recording process holds (recording, recovery and retention need it)."""
        return WriterLock(self.paths.clip_lock)

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
            id=cid, camera=camera, start=from_us(start_us), end=from_us(end_us), path=self.abs_path(rel),
            sha256=sha or "", size=int(size), events=tuple(events.split(" ")) if events else (),
            truncated=bool(truncated), held=bool(held), klass=klass, frames=int(frames),
            mime=codec_by_name(codec).mime, trusted=bool(trusted),
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
        with contextlib.suppress(FileNotFoundError):
            return sha256_file(ref.path) == ref.sha256
        return False

    def snapshots(self, clip_id: str | None = None) -> builtins.list[Snapshot]:
        sql = "SELECT event_id, clip_id, camera, ts_us, path, sha256, size FROM snapshots"
        args: tuple[Any, ...] = ()
        if clip_id is not None:
            sql += " WHERE clip_id = ?"
            args = (clip_id,)
        with self._connect() as db:
            rows = db.execute(sql + " ORDER BY ts_us, event_id", args).fetchall()
        return [Snapshot(e, c, cam, from_us(ts), self.abs_path(p), sha, size) for e, c, cam, ts, p, sha, size in rows]

    def usage_bytes(self) -> int:
        """Bytes used by finished clips and snapshots."""
        with self._connect() as db:
            return int(db.execute("SELECT (SELECT coalesce(sum(size), 0) FROM clips WHERE status = 'complete') + "
                                  "(SELECT coalesce(sum(size), 0) FROM snapshots)").fetchone()[0])

    # -- legal holds (kept by the hold store) ----------------------------------------------------------------

    def hold(self, *, clip_ids: builtins.list[str] | None = None, cameras: builtins.list[str] | None = None,
             window: tuple[datetime, datetime] | None = None, until: datetime, reason: str, reference: str) -> str:
        """Keep clips from deletion until `until`: the listed clips, and/or every clip (on `cameras`, default
        all) overlapping `window`, including clips recorded later inside it. Returns the hold id."""
        with self._write() as db:  # the clips are checked and held in one transaction: none is deleted between
            problem = self.index.unreadable_holds(db)
            if problem is not None:
                raise StorageError(f"no hold can be placed: {problem}")
            for cid in clip_ids or []:
                if db.execute("SELECT 1 FROM clips WHERE id = ?", (cid,)).fetchone() is None:
                    raise UnknownClip(f"cannot hold unknown clip {cid!r}")
            return self.hold_store.place(clip_ids=clip_ids, cameras=cameras, window=window, until=until,
                                         reason=reason, reference=reference, within=(db, HOLDS_AS))

    def release(self, hold_id: str) -> None:
        self.hold_store.release(hold_id)

    def holds(self) -> builtins.list[Hold]:
        return self.hold_store.holds()

    def holds_problem(self) -> str | None:
        """Why the legal holds cannot be read now (retention then deletes nothing), or None (HoldStore.problem)."""
        return self.hold_store.problem()

    def expire_holds(self) -> builtins.list[str]:
        """The hold store's one expiry sweep (see HoldStore.expire_holds)."""
        return self.hold_store.expire_holds()

    # -- recording: what a ClipWriter and recovery change in the index ----------------------------------------

    def begin(
        self, camera: str, start: datetime, codec: CodecChoice, width: int, height: int, trusted: bool = True
    ) -> ClipWriter:
        """Start a clip whose first frame is captured at `start`; nothing is listed until finish(). `trusted`
        False: the wall clock was not trusted when it was recorded (docs/time.md)."""
        return begin_clip(self, camera, start, codec, width, height, trusted)

    def add_recording(self, clip_id: str, camera: str, start: datetime, final: Path, codec: str, trusted: bool) -> None:
        """Index a clip being recorded (listed once complete() runs; recovery finishes it after a crash)."""
        start_us = to_us(start)
        with self._write() as db:
            db.execute(
                "INSERT INTO clips (id, camera, status, start_us, end_us, path, codec, created_us, trusted) "
                "VALUES (?, ?, 'recording', ?, ?, ?, ?, ?, ?)",
                (clip_id, camera, start_us, start_us, self.rel_path(final), codec, to_us(self.clock.now()),
                 int(trusted)),
            )

    def add_rebuilt(self, clip_id: str, camera: str, final: Path, codec: str, ts_us: Sequence[int], end_us: int,
                    sha256: str, size: int, age_from_us: int | None) -> bool:
        """Index a finished clip file again after the index lost it: class "ring", untrusted time (recovery)."""
        with self._write() as db:
            if db.execute("SELECT 1 FROM clips WHERE id = ?", (clip_id,)).fetchone() is not None:
                return False
            db.execute(
                "INSERT INTO clips (id, camera, status, start_us, end_us, path, codec, sha256, size, frames, "
                "truncated, klass, created_us, trusted, age_from_us) "
                "VALUES (?, ?, 'complete', ?, ?, ?, ?, ?, ?, ?, 0, 'ring', ?, 0, ?)",
                (clip_id, camera, ts_us[0], end_us, self.rel_path(final), codec, sha256, size, len(ts_us),
                 to_us(self.clock.now()), age_from_us),
            )
            db.executemany("INSERT INTO clip_frames (clip_id, idx, ts_us) VALUES (?, ?, ?)",
                           [(clip_id, i, t) for i, t in enumerate(ts_us)])
        return True

    def complete(self, clip_id: str, ts_us: Sequence[int], end_us: int, sha256: str, size: int,
                 truncated: bool) -> ClipRef:
        """The clip's final file is in place: index its frames and list it."""
        with self._write() as db:
            db.execute("DELETE FROM clip_frames WHERE clip_id = ?", (clip_id,))
            db.executemany("INSERT INTO clip_frames (clip_id, idx, ts_us) VALUES (?, ?, ?)",
                           [(clip_id, i, t) for i, t in enumerate(ts_us)])
            db.execute(
                "UPDATE clips SET status = 'complete', start_us = ?, end_us = ?, sha256 = ?, size = ?, frames = ?, "
                "truncated = ? WHERE id = ?",
                (ts_us[0], end_us, sha256, size, len(ts_us), int(truncated), clip_id),
            )
        return self.get(clip_id)

    def clip_rows(self) -> builtins.list[tuple[str, str, str, str]]:
        """(id, status, path, codec) of every indexed clip, finished or not, by start (for recovery)."""
        with self._connect() as db:
            return [tuple(r) for r in db.execute(  # type: ignore[misc]
                "SELECT id, status, path, codec FROM clips ORDER BY start_us")]

    def drop(self, clip_id: str, paths: Sequence[Path]) -> None:
        """Remove a clip from the index and delete `paths` and its snapshots (nothing playable was kept)."""
        snaps = [s.path for s in self.snapshots(clip_id)]
        with self._write() as db:
            db.execute("DELETE FROM clips WHERE id = ?", (clip_id,))
        for path in [*paths, *snaps]:
            path.unlink(missing_ok=True)

    def mark_untrusted(self, clip_id: str) -> None:
        with self._write() as db:
            db.execute("UPDATE clips SET trusted = 0 WHERE id = ?", (clip_id,))

    def add_event(self, clip_id: str, event_id: str, event_type: str, ts: datetime) -> None:
        """Note an event in a clip; its class (what retention keeps longest) follows its events."""
        with self._write() as db:
            db.execute(
                "INSERT OR IGNORE INTO clip_events (clip_id, event_id, type, ts_us) VALUES (?, ?, ?, ?)",
                (clip_id, event_id, event_type, to_us(ts)),
            )
            types = [r[0] for r in db.execute("SELECT type FROM clip_events WHERE clip_id = ?", (clip_id,))]
            db.execute("UPDATE clips SET klass = ? WHERE id = ?", (clip_class(types), clip_id))

    def add_snapshot(self, event_id: str, clip_id: str, camera: str, ts: datetime, path: Path, sha256: str,
                     size: int, *, replace: bool = True) -> None:
        """Index a snapshot file already written beside its clip."""
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        with self._write() as db:
            db.execute(
                f"{verb} INTO snapshots (event_id, clip_id, camera, ts_us, path, sha256, size) VALUES (?, ?, ?, ?, ?, "
                "?, ?)",
                (event_id, clip_id, camera, to_us(ts), self.rel_path(path), sha256, size),
            )

    def recover(self) -> RecoveryReport:
        """Make the index and the disk agree after a crash (edge.recording.recovery; writer lock held)."""
        from edge.recording.recovery import recover

        return recover(self)

    # -- retention -------------------------------------------------------------------------------------------

    def apply_retention(self, policy: RetentionPolicy, free_bytes: int) -> RetentionReport:
        """Delete what retention chooses, holds re-checked per clip (edge.recording.sweeper.apply_retention)."""
        from edge.recording.sweeper import apply_retention

        return apply_retention(self, policy, free_bytes)

    def snapshot_bytes(self) -> dict[str, int]:
        """Bytes of snapshots per clip id."""
        with self._connect() as db:
            return {str(c): int(n) for c, n in db.execute("SELECT clip_id, sum(size) FROM snapshots GROUP BY clip_id")}

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
            self.abs_path(rel).unlink(missing_ok=True)
        log.info("clip %s deleted (%s)", clip_id, reason)
        return True


def _prepare(state_dir: Path, root: Path) -> bool:
    """Create the clips folder (private: the service user's alone, edge/permissions.py); True on a read-only mount,
    where the store only reads (`clips list` still works) and nothing records."""
    if is_read_only(state_dir):
        log.error("clip store %s is on a read-only file system: reading only, nothing is recorded", root)
        return True
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        private_dir(root)
    except OSError as exc:
        raise StorageError(f"cannot create clip directory {root}: {exc}") from exc
    return False
