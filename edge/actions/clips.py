"""The owner's clips: list them, show one (hash check, snapshots, the holds that keep it; read-only), and copy one
out of the store (audited before it leaves, hash-checked, private)."""

from __future__ import annotations

import logging
import os
import shutil
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from edge.clock import Clock
from edge.errors import StorageError
from edge.layout import StateLayout
from edge.recording.store import ClipRef, ClipStore, Hold, Snapshot, sha256_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipDetail:
    clip: ClipRef
    sha256_ok: bool  # the file exists and matches the sha256 recorded when it was finished
    snapshots: tuple[Snapshot, ...]
    holds: tuple[Hold, ...]  # the active holds that keep it


@dataclass(frozen=True)
class Copied:
    clip: ClipRef
    dest: Path


def open_store(state_dir: Path, clock: Clock) -> ClipStore:
    """The clip store under `state_dir`; StorageError when nothing was ever recorded there."""
    if not StateLayout.of(state_dir).clip_index.exists():
        raise StorageError(f"no clip store in {state_dir} (nothing recorded yet, or the wrong storage.state_dir)")
    return ClipStore(state_dir, clock)


def list_clips(store: ClipStore, camera: str | None = None, since: datetime | None = None,
               until: datetime | None = None) -> list[ClipRef]:
    """Finished clips ending after `since` and starting before `until` (either open), oldest first."""
    return store.list(camera, since, until)


def show_clip(store: ClipStore, clip_id: str) -> ClipDetail:
    """One clip with its hash check, snapshots and the active holds covering it; writes nothing."""
    ref = store.get(clip_id)
    holds = tuple(h for h in store.holds() if h.active and covers(h, ref))
    return ClipDetail(ref, store.verify(ref.id), tuple(store.snapshots(ref.id)), holds)


def playable(store: ClipStore, clip_id: str) -> ClipRef:
    """A clip to play in place (the owner's page): its record, its file present; no hash check (a player asks
    for many ranges of one clip), nothing written. StorageError when unknown or its file is gone."""
    ref = store.get(clip_id)
    if not ref.path.is_file():
        raise StorageError(f"clip {ref.id}: its file {ref.path.name} is missing")
    return ref


def event_snapshot(store: ClipStore, event_id: str) -> Snapshot:
    """The snapshot taken for one event (StorageError when none was kept)."""
    for snap in store.snapshots():
        if snap.event_id == event_id and snap.path.is_file():
            return snap
    raise StorageError(f"no snapshot kept for event {event_id}")


def covers(hold: Hold, ref: ClipRef) -> bool:
    if ref.id in hold.clip_ids:
        return True
    if hold.window is None or (hold.cameras is not None and ref.camera not in hold.cameras):
        return False
    return bool(ref.start < hold.window[1] and ref.end > hold.window[0])


def copy_clip(store: ClipStore, clip_id: str, dest: Path, clock: Clock, *, force: bool = False) -> Copied:
    """The owner's own copy: `dest` is a file, or a folder to copy into. The audit log records the copy before the
    first byte leaves (and its failure after, if it fails); the copy is 0600 and checked against the sha256."""
    ref = store.get(clip_id)
    dest = dest / ref.path.name if dest.is_dir() else dest
    if dest.exists() and not force:
        raise StorageError(f"{dest} exists; use --force to overwrite it")
    if not dest.parent.is_dir():
        raise StorageError(f"destination folder {dest.parent} does not exist")
    if not store.verify(ref.id):
        raise StorageError(f"clip {ref.id} does not match its recorded sha256; not copying a damaged file")
    # Footage leaving the store is audited before it leaves, like a footage-request export: no record, no copy.
    from edge.footage.audit import AuditLog

    audit = AuditLog(store.state_dir, clock)
    audit.append("owner_copy", clip=ref.id, camera=ref.camera, sha256=ref.sha256, dest=str(dest.resolve()))
    try:
        _copy_private(ref, dest)
    except StorageError as failure:
        # The record above says a copy was made; say that it was not, so the log tells what left the store.
        try:
            audit.append("owner_copy_failed", clip=ref.id, dest=str(dest.resolve()), error=str(failure))
        except Exception as exc:  # the copy's own error is the one to report
            log.error("cannot record the failed copy of %s in the audit log: %s", ref.id, exc)
        raise
    log.info("owner copied clip %s (sha256 %s) to %s", ref.id, ref.sha256, dest)
    return Copied(ref, dest)


def _copy_private(ref: ClipRef, dest: Path) -> None:
    tmp = dest.with_name(f".{dest.name}.partial")
    try:
        # Private like the store (0600, whatever the umask): footage is not for every account on the machine; the
        # owner can chmod the copy.
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out, open(ref.path, "rb") as src:
            os.fchmod(out.fileno(), 0o600)
            shutil.copyfileobj(src, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        if sha256_file(tmp) != ref.sha256:
            raise StorageError(f"the copy of {ref.id} at {tmp} does not match the clip's sha256")
        os.replace(tmp, dest)
    except OSError as exc:
        raise StorageError(f"cannot copy clip {ref.id} to {dest}: {exc}") from exc
    finally:
        # Quietly: a cleanup error (the name taken by a folder) must not hide the copy's own error.
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
