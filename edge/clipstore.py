"""The clip store: clip files under <state_dir>/clips, their SQLite index and legal holds."""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import hashlib
import logging
import os
import secrets
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from edge.clock import Clock, rfc3339
from edge.encoder import (
    CodecChoice,
    EncodedFrame,
    RawStreamWriter,
    choose_codec,
    codec_by_name,
    frames_in_stream,
    from_us,
    last_duration_us,
    make_encoder,
    probe,
    read_sidecar,
    remux,
    sidecar_header,
    to_us,
)
from edge.errors import StorageError
from edge.fsutil import fsync_dir
from edge.retention import Deletion, RetentionPolicy, StoredClip, clip_class, plan

log = logging.getLogger(__name__)

CLIPS_DIR = "clips"
INDEX_NAME = "clips.sqlite3"
LOCK_NAME = "clips.lock"
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
    orphans: tuple[Path, ...]  # files on disk the index did not know, deleted


@dataclass(frozen=True)
class RetentionReport:
    deleted: tuple[Deletion, ...]
    shortfall_bytes: int


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
    created_us INTEGER NOT NULL
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
    f"{_HELD} AS held, "
    "(SELECT group_concat(event_id, ' ') FROM (SELECT event_id FROM clip_events e WHERE e.clip_id = c.id "
    "ORDER BY ts_us, event_id)) AS events"
)


class ClipStore:
    """Clip files and their index. Safe to use from several threads and processes (SQLite WAL, one
    connection per call); only the process holding the writer lock (the recorder) records, recovers or
    applies retention."""

    def __init__(self, state_dir: Path, clock: Clock) -> None:
        self.state_dir = Path(state_dir)
        self.root = self.state_dir / CLIPS_DIR
        self.clock = clock
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create clip directory {self.root}: {exc}") from exc
        self._db_path = self.state_dir / INDEX_NAME
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)

    # -- plumbing --------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            db = sqlite3.connect(self._db_path, timeout=30, isolation_level=None)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open clip index {self._db_path}: {exc}") from exc
        try:
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA synchronous=FULL")
            yield db
        except sqlite3.Error as exc:
            raise StorageError(f"clip index {self._db_path}: {exc}") from exc
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
        args: dict[str, Any] = {"now": self._now_us()}
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
                {"id": clip_id, "now": self._now_us()},
            ).fetchone()
        if row is None:
            raise UnknownClip(f"no clip with id {clip_id!r}")
        if row[-1] != "complete":
            raise UnknownClip(f"clip {clip_id!r} is still being recorded")
        return self._ref(row[:-1])

    def _ref(self, row: Sequence[Any]) -> ClipRef:
        cid, camera, start_us, end_us, rel, sha, size, truncated, klass, frames, codec, held, events = row
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
        now = self._now_us()
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
        """Mark holds whose `until` has passed as expired; returns their ids."""
        now = self._now_us()
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

    def begin(self, camera: str, start: datetime, codec: CodecChoice, width: int, height: int) -> ClipWriter:
        """Start a clip whose first frame is captured at `start`; nothing is listed until finish()."""
        clip_id = f"{start.strftime('%Y%m%dT%H%M%S')}Z-{camera}-{secrets.token_hex(3)}"
        folder = self.root / camera / start.strftime("%Y-%m-%d")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create {folder}: {exc}") from exc
        final = folder / f"{clip_id}{codec.suffix}"
        start_us = to_us(start)
        with self._write() as db:
            db.execute(
                "INSERT INTO clips (id, camera, status, start_us, end_us, path, codec, created_us) "
                "VALUES (?, ?, 'recording', ?, ?, ?, ?, ?)",
                (clip_id, camera, start_us, start_us, self._rel(final), codec.name, self._now_us()),
            )
        try:
            raw = RawStreamWriter(_part(final, _RAW), _part(final, _SIDECAR), codec, width, height)
        except OSError as exc:
            raise StorageError(f"cannot create clip {clip_id}: {exc}") from exc
        return ClipWriter(self, clip_id, camera, final, codec, raw)

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
        with open(tmp, "wb") as handle:
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
        """Make the index and the disk agree after a crash (call with the writer lock held, before recording):
        partial clips are remuxed from their complete frames and marked truncated, or removed when nothing is
        playable; index rows whose file is gone are removed; files the index does not know are deleted."""
        recovered: list[str] = []
        removed: list[str] = []
        with self._connect() as db:
            rows = db.execute("SELECT id, status, path, codec FROM clips ORDER BY start_us").fetchall()
        known: set[Path] = set()
        for clip_id, status, rel, codec_name in rows:
            final = self._abs(rel)
            if status == "recording":
                side = _part(final, _SIDECAR)
                try:
                    codec = codec_by_name(sidecar_header(side)[0]) if side.exists() else codec_by_name(codec_name)
                    ref = self._finalize(clip_id, final, codec, truncated=True)
                except Exception as exc:  # one broken clip must not stop the daemon from starting
                    log.error("clip %s cannot be recovered (%s); removing it", clip_id, exc)
                    self._drop(clip_id, [final, _part(final, _RAW), side, _part(final, _TMP)])
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
        orphans = []
        for path in sorted(self.root.rglob("*")):
            if path.is_file() and path.resolve() not in known:
                log.warning("removing %s: not in the clip index", path)
                path.unlink()
                orphans.append(path)
        return RecoveryReport(tuple(recovered), tuple(removed), tuple(orphans))

    # -- retention -------------------------------------------------------------------------------------------

    def retention_candidates(self) -> builtins.list[StoredClip]:
        return [StoredClip(c.id, c.start, c.end, c.klass, c.size + self._snap_bytes(c.id), c.held) for c in self.list()]

    def _snap_bytes(self, clip_id: str) -> int:
        with self._connect() as db:
            return int(
                db.execute("SELECT coalesce(sum(size), 0) FROM snapshots WHERE clip_id = ?", (clip_id,)).fetchone()[0]
            )

    def apply_retention(self, policy: RetentionPolicy, free_bytes: int) -> RetentionReport:
        """Delete what retention.plan() chooses (re-checking each clip's holds as it goes)."""
        result = plan(self.retention_candidates(), policy, self.clock.now(), free_bytes)
        deleted = tuple(d for d in result.deletions if self.delete(d.clip_id, d.reason))
        return RetentionReport(deleted, result.shortfall_bytes)

    def delete(self, clip_id: str, reason: str) -> bool:
        """Delete a finished clip and its snapshots unless a hold covers it now; True when deleted."""
        with self._write() as db:
            row = db.execute(
                f"SELECT c.path, {_HELD} FROM clips c WHERE c.id = :id AND c.status = 'complete'",
                {"id": clip_id, "now": self._now_us()},
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
        self, store: ClipStore, clip_id: str, camera: str, final: Path, codec: CodecChoice, raw: RawStreamWriter
    ) -> None:
        self.store = store
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


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _part(final: Path, suffix: str) -> Path:
    return final.with_name(final.name + suffix)


def _safe(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in text)[:80]


def write_test_clip(
    store: ClipStore,
    camera: str,
    start: datetime,
    frames: builtins.list[np.ndarray],
    fps: float,
    events: Sequence[tuple[str, str]] = (),
) -> ClipRef:
    """Record a real clip (encoded through the project's encoder) from BGR frames, frame i at start + i/fps.
    `events` are (event_id, type) pairs attached at `start`. For tests of modules built on the store."""
    if not frames:
        raise StorageError("write_test_clip needs at least one frame")
    height, width = frames[0].shape[:2]
    codec = choose_codec("auto")
    encoder = make_encoder(codec, width, height, fps, 1.0, "medium")
    writer = store.begin(camera, start, codec, width, height)
    try:
        for i, image in enumerate(frames):
            ts = start + timedelta(seconds=i / fps)
            for packet in encoder.encode(image, ts, float(i) / fps):
                writer.write(packet)
        for event_id, event_type in events:
            writer.add_event(event_id, event_type, start)
    finally:
        encoder.close()
    ref = writer.finish()
    if ref is None:
        raise StorageError("write_test_clip produced no playable frame")
    return ref
