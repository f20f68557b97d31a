"""Recovery after a crash or a lost index: partial clips finished, the index rebuilt from the clip files, strays
quarantined; nothing is ever deleted because the index does not know it."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from edge.errors import StorageError
from edge.fsutil import fsync_dir
from edge.permissions import private_dir
from edge.recording.codec import codec_by_name, frame_offsets_us, last_duration_us
from edge.recording.rawstream import sidecar_header, to_us
from edge.recording.writer import RAW, SIDECAR, TMP, finalize, part, sha256_file

if TYPE_CHECKING:
    from edge.recording.store import ClipStore

log = logging.getLogger(__name__)

# A finished clip's file name, as begin() makes it: <start>Z-<camera>-<6 hex><suffix>.
_CLIP_NAME = re.compile(r"(?P<id>(?P<stamp>\d{8}T\d{6})Z-(?P<camera>.+)-[0-9a-f]{6})(?P<suffix>\.mp4|\.webm)")
_CODEC_NAMES = ("h264", "vp9", "vp8")


@dataclass(frozen=True)
class RecoveryReport:
    recovered: tuple[str, ...]  # partial clips made playable and marked truncated
    removed: tuple[str, ...]  # partial clips with nothing playable, or index rows whose file was gone
    orphans: tuple[Path, ...]  # files the index did not know and recovery could not rebuild: moved to quarantine
    rebuilt: tuple[str, ...] = ()  # clips the index did not know, indexed again from their files
    index_problem: str | None = None  # the index was unreadable (kept aside, see index_kept) or empty beside clips
    index_kept: Path | None = None  # where an unreadable index was moved
    holds_restored: tuple[str, ...] = ()  # holds in force on rebuilt clips (the hold store kept them: holds.py)
    quarantine: Path | None = None  # the folder the orphans were moved to

    @property
    def problem(self) -> bool:
        """True when the owner must hear of it: the index was lost or damaged, or files went to quarantine."""
        return bool(self.index_problem or self.orphans or self.rebuilt)


def recover(store: ClipStore) -> RecoveryReport:
    """Make the index and the disk agree after a crash (call with the writer lock held, before recording).

    Partial clips are remuxed from their complete frames and marked truncated (or removed when nothing is
    playable); index rows whose file is gone are removed. Nothing is ever deleted because the index does
    not know it: an unreadable index is moved aside (kept) and a fresh one started; finished clips the
    index does not know are indexed again from their files (probed), their snapshots with them (the holds on
    them are in the hold store, which the index's loss does not touch); any other unknown file is moved to
    <state_dir>/quarantine/<when>/ for the owner to look at."""
    if store.readonly:
        raise StorageError(f"clip store {store.root} is on a read-only file system: nothing can be recovered")
    index_problem, kept = _reset_unreadable_index(store)
    rows = store.clip_rows()
    stamp = store.clock.now().strftime("%Y%m%dT%H%M%SZ")
    quarantine = store.paths.quarantine / f"clips-{stamp}"
    recovered, removed, orphans, known = _finish_partials(store, rows, quarantine)
    known.update(s.path for s in store.snapshots())
    unknown = [p for p in sorted(store.root.rglob("*")) if p.is_file() and p.resolve() not in known]
    if not rows and unknown and index_problem is None:
        index_problem = (f"clip index {store.index.path} is empty but {len(unknown)} file(s) are in {store.root} "
                         "(deleted or zeroed?)")
        log.error("%s: rebuilding it from the clip files, deleting nothing", index_problem)
    rebuilt: list[str] = []
    for path in unknown:
        clip_id = _rebuild_clip(store, path)
        if clip_id is not None:
            rebuilt.append(clip_id)
            known.add(path.resolve())
    rebuilt_snaps = {p for p in unknown if p.resolve() not in known and _rebuild_snapshot(store, p)}
    strays = [p for p in unknown if p.resolve() not in known and p not in rebuilt_snaps]
    orphans.extend(_quarantine(store, strays, quarantine))
    for path in orphans:
        log.warning("%s was not in the clip index and could not be indexed: kept in quarantine", path)
    return RecoveryReport(
        tuple(recovered), tuple(removed), tuple(orphans), tuple(rebuilt), index_problem, kept,
        _holds_on(store, rebuilt), quarantine if orphans else None,
    )


def _finish_partials(
    store: ClipStore, rows: Sequence[tuple[str, str, str, str]], quarantine: Path
) -> tuple[list[str], list[str], list[Path], set[Path]]:
    """Finish the clips a crash left being recorded and forget rows whose file is gone: (recovered, removed,
    quarantined parts, the files the index knows)."""
    recovered: list[str] = []
    removed: list[str] = []
    orphans: list[Path] = []
    known: set[Path] = set()
    for clip_id, status, rel, codec_name in rows:
        final = store.abs_path(rel)
        if status == "recording":
            side = part(final, SIDECAR)
            try:
                codec = codec_by_name(sidecar_header(side)[0]) if side.exists() else codec_by_name(codec_name)
                ref = finalize(store, clip_id, final, codec, truncated=True)
            except Exception as exc:  # one broken clip must not stop the daemon from starting
                log.error("clip %s cannot be recovered (%s); its parts go to %s", clip_id, exc, quarantine)
                parts = [final, part(final, RAW), side, part(final, TMP)]
                orphans.extend(_quarantine(store, [x for x in parts if x.exists()], quarantine))
                store.drop(clip_id, [])
                ref = None
            if ref is None:
                removed.append(clip_id)
                continue
            recovered.append(clip_id)
            log.warning("clip %s recovered after an interrupted recording (truncated)", clip_id)
        elif not final.exists():
            log.error("clip %s is indexed but its file %s is missing; removing the entry", clip_id, final)
            store.drop(clip_id, [])
            removed.append(clip_id)
            continue
        known.add(final)
    return recovered, removed, orphans, known


def _holds_on(store: ClipStore, clip_ids: Sequence[str]) -> tuple[str, ...]:
    """The holds in force that name these (rebuilt) clips: the hold store kept them through the index's loss."""
    wanted = set(clip_ids)
    if not wanted:
        return ()
    try:
        holds = store.holds()
    except StorageError as exc:  # the clips are rebuilt all the same; retention deletes nothing meanwhile
        log.error("the holds on clips indexed again cannot be listed: %s", exc)
        return ()
    held = tuple(h.id for h in holds if h.active and wanted.intersection(h.clip_ids))
    for hold_id in held:
        log.warning("hold %s is in force on clips indexed again after the index was lost", hold_id)
    return held


def _reset_unreadable_index(store: ClipStore) -> tuple[str | None, Path | None]:
    """An index SQLite cannot read (a corrupt header or pages) is renamed aside, with its -wal and -shm,
    and a fresh one created; returns (problem, where the bad one went)."""
    from edge.sqlitetx import is_corrupt, set_aside

    path = store.index.path
    problem = store.index_problem
    if problem is None and path.exists():
        try:
            db = sqlite3.connect(path, timeout=30, isolation_level=None)
            try:
                result = db.execute("PRAGMA quick_check").fetchone()
            finally:
                db.close()
            if result is None or result[0] != "ok":
                problem = f"clip index {path} is damaged: {result[0] if result else 'no answer'}"
        except sqlite3.DatabaseError as exc:
            if not is_corrupt(exc):
                raise StorageError(f"cannot check clip index {path}: {exc}") from exc
            problem = f"clip index {path} is unreadable: {exc}"
    if problem is None:
        return None, None
    try:
        kept = set_aside(path, store.clock.now())
    except OSError as exc:
        raise StorageError(f"cannot move the unreadable clip index aside: {exc}") from exc
    log.error("%s: kept as %s; starting a fresh index and rebuilding it from the clip files", problem, kept)
    store.index.problem = None
    store.index.open()
    if store.index_problem is not None:
        raise StorageError(f"a fresh clip index cannot be created: {store.index_problem}")
    return problem, kept


def _rebuild_clip(store: ClipStore, path: Path) -> str | None:
    """Index a finished clip file again: camera and start from its name, frame times from its stream.
    Rebuilt clips get the class kept longest ("ring"; their events are lost). None when `path` is not one."""
    match = _CLIP_NAME.fullmatch(path.name)
    if match is None or path.parent.parent.parent != store.root:
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
    # Its times are reconstructed, so the clip is marked untrusted-time (exported only when the owner includes
    # such clips). It is aged from now, the rebuild, when the clock is trusted (never from its own stamps or
    # the file's mtime, which a wrong clock may have written: a clip is never deleted earlier than it would
    # have been), else from the first trusted time, like any untrusted clip (settle_untrusted_ages).
    _allowed, clock_trusted, now = store.time_guard.retention()
    age_from = to_us(now) if clock_trusted else None
    if not store.add_rebuilt(clip_id, camera, path, codec, ts, ts[-1] + last_duration_us(ts), digest, size,
                             age_from):
        return None
    log.warning("clip %s was not in the index: indexed again from %s (%d frames; start %s, untrusted time, "
                "events unknown)", clip_id, path, len(ts), "to the microsecond" if exact else "to the second")
    return str(clip_id)


def _rebuild_snapshot(store: ClipStore, path: Path) -> bool:
    """Index a snapshot `<clip file stem>.<event>.jpg` again beside its (known) clip."""
    if path.suffix != ".jpg" or path.name.count(".") < 2:
        return False
    stem, event = path.name[: -len(".jpg")].rsplit(".", 1)
    clip = next((c for c in store.list() if c.path.stem == stem and c.path.parent == path.parent), None)
    if clip is None:
        return False
    data = path.read_bytes()
    store.add_snapshot(event, clip.id, clip.camera, clip.start, path, hashlib.sha256(data).hexdigest(), len(data),
                       replace=False)
    return True


def _quarantine(store: ClipStore, paths: Sequence[Path], folder: Path) -> list[Path]:
    """Move files out of clips/ into `folder`, keeping their relative paths (a rename: no space needed)."""
    moved = []
    for path in paths:
        target = folder / path.relative_to(store.root)
        try:
            private_dir(target.parent)
            os.replace(path, target)
            fsync_dir(target.parent)
        except OSError as exc:
            log.error("cannot move %s to quarantine (%s); left where it is", path, exc)
            continue
        moved.append(path)
    return moved
