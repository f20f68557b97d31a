"""The face gallery's folders on disk, written all-or-nothing: one writer at a time (a lock on the faces folder
itself), a person's folder staged and renamed into place, a forgotten one renamed aside and then deleted, and what
a crash left finished or undone when the gallery is opened. Files mode 0600, folders 0700."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.crashpoints import crash_point
from edge.errors import StorageError
from edge.fsutil import fsync_dir, replace_private

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
STAGING = ".staging-"  # an enrolment being written: <STAGING><slug>-<token>
TRASH = ".trash-"  # a forgotten or replaced enrolment being deleted: <TRASH><slug>-<token>


def private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


class GalleryFolders:
    """Enrol and forget are all-or-nothing: an enrolment is staged in `.staging-<slug>-<token>` and renamed into
    place (a replaced person is first moved to `.trash-<slug>-<token>`), a forget renames the folder to a trash
    name before deleting it. Opening a gallery finishes what a crash left: an incomplete staging is removed, a
    complete one whose old folder was already moved aside is put in place, and trash is deleted."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @contextlib.contextmanager
    def _locked(self, *, blocking: bool = True) -> Iterator[bool]:
        """The gallery's writer lock (enrol, forget, recovery); yields False when not blocking and it is busy.
        The lock is on the faces folder itself, so a forget leaves no file behind, not even a lock file."""
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
                got = True
            except BlockingIOError:
                got = False
            yield got
        finally:
            os.close(fd)

    def recover(self, *, blocking: bool = True) -> list[str]:
        """Finish or undo what an interrupted enrol or forget left (see the class docstring); what was done."""
        if not any(e.startswith((STAGING, TRASH)) for e in _entries(self.root)):
            return []
        try:
            with self._locked(blocking=blocking) as got:
                return self._recover_locked() if got else []
        except OSError as exc:  # a read-only or unreadable state dir: readers still read what is committed
            log.warning("cannot recover the face gallery %s: %s", self.root, exc)
            return []

    def _recover_locked(self) -> list[str]:
        done: list[str] = []
        entries = _entries(self.root)
        for entry in sorted(e for e in entries if e.startswith(STAGING)):
            staged, slug = self.root / entry, _slug_of(entry, STAGING)
            final = self.root / slug
            replaced = any(_slug_of(e, TRASH) == slug for e in entries if e.startswith(TRASH))
            if (staged / "person.json").is_file() and replaced and not final.exists():
                # Killed between moving the old enrolment aside and renaming the new one in: roll forward.
                os.rename(staged, final)
                fsync_dir(self.root)
                done.append(f"{slug}: interrupted enrolment completed")
            else:
                _remove_tree(staged)
                done.append(f"{slug}: interrupted enrolment removed")
        for entry in sorted(e for e in _entries(self.root) if e.startswith(TRASH)):
            _remove_tree(self.root / entry)
            done.append(f"{_slug_of(entry, TRASH)}: leftovers of a forget or replacement deleted")
        for line in done:
            log.warning("face gallery %s: %s", self.root, line)
        return done

    def _commit_locked(self, slug: str, record: dict[str, Any], blobs: list[bytes], templates: F32) -> None:
        """Write a person's folder in full, replacing what was there: all-or-nothing (see the class docstring)."""
        final = self.root / slug
        # Everything is written into a staging folder first (person.json last), then renamed into place:
        # a crash at any point leaves either the old enrolment or the new one, never a mix or an orphan.
        staged = self.root / f"{STAGING}{slug}-{secrets.token_hex(4)}"
        private_dir(staged)
        private_dir(staged / "photos")
        for i, blob in enumerate(blobs):
            replace_private(staged / "photos" / f"{i:03d}.jpg", blob)
        crash_point("enroll:photos-written")
        replace_private(staged / "templates.npy", _npy_bytes(templates.astype(np.float32)))
        replace_private(staged / "person.json", json.dumps(record, indent=2).encode())
        fsync_dir(staged / "photos")
        fsync_dir(staged)
        crash_point("enroll:staged")
        trash = None
        if final.exists():
            trash = self.root / f"{TRASH}{slug}-{secrets.token_hex(4)}"
            os.rename(final, trash)
            crash_point("enroll:old-moved-aside")
        os.rename(staged, final)
        fsync_dir(self.root)
        crash_point("enroll:renamed")
        if trash is not None:
            _remove_tree(trash)

    def _rewrite_locked(self, folder: Path, record: dict[str, Any]) -> None:
        """Write the person's record anew with their photos and templates as they are (all-or-nothing)."""
        blobs = [p.read_bytes() for p in sorted((folder / "photos").glob("*"))]
        self._commit_locked(folder.name, record, blobs, self._load_templates(folder))

    def _load_templates(self, folder: Path) -> F32:
        path = folder / "templates.npy"
        try:
            return np.load(path).astype(np.float32)
        except OSError as exc:
            raise StorageError(f"cannot read the face gallery: {path}: {why_unreadable(path, exc)}") from exc
        except ValueError as exc:  # damaged: np.load names what it could not parse
            raise StorageError(f"face gallery: {path}: unreadable: {exc}") from exc

    def _trash_locked(self, folder: Path) -> None:
        """Forget a folder: the rename is the commit point, from then on the person is not enrolled, and whatever
        of it a crash leaves behind is deleted when the gallery is next opened."""
        trash = self.root / f"{TRASH}{folder.name}-{secrets.token_hex(4)}"
        os.rename(folder, trash)
        fsync_dir(self.root)
        crash_point("forget:renamed")
        _remove_tree(trash)


def why_unreadable(path: Path, exc: OSError) -> str:
    """'Permission denied (owned by root, mode 0700)': who owns what could not be read."""
    from edge.service.owner import describe

    return f"{exc.strerror or exc} ({describe(path)})" if isinstance(exc, PermissionError) else str(exc.strerror or exc)


def _entries(root: Path) -> list[str]:
    try:
        return os.listdir(root)
    except OSError:
        return []


def _slug_of(entry: str, prefix: str) -> str:
    """The slug in `<prefix><slug>-<8 hex>`."""
    return entry[len(prefix):].rsplit("-", 1)[0]


def _remove_tree(path: Path) -> None:
    """Delete a folder file by file (a crash part-way leaves a trash or staging folder that recovery finishes)."""
    for sub in sorted(path.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if sub.is_dir() and not sub.is_symlink():
            sub.rmdir()
        else:
            sub.unlink()
            crash_point("gallery:removing")
    path.rmdir()
    fsync_dir(path.parent)


def _npy_bytes(arr: npt.NDArray[np.float32]) -> bytes:
    import io

    b = io.BytesIO()
    np.save(b, arr)
    return b.getvalue()
