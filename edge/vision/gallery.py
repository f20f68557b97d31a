"""Enrolled people on disk: consent record, enrolment photos and templates, files mode 0600.

Layout: <state_dir>/faces/<slug>/person.json, templates.npy, photos/<n>.<ext>.  Nothing about
people who are not enrolled is ever written here.  `forget` removes the person's whole folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import secrets
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge.crashpoints import crash_point
from edge.errors import StorageError
from edge.fsutil import fsync_dir

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
STAGING = ".staging-"  # an enrolment being written: <STAGING><slug>-<token>
TRASH = ".trash-"  # a forgotten or replaced enrolment being deleted: <TRASH><slug>-<token>


@dataclass(frozen=True)
class Person:
    name: str
    consent_by: str
    consent_date: str  # ISO date
    enrolled_at: str  # RFC 3339 UTC
    photos: int
    embedder: str  # model file the templates were computed with


def _slug(name: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", name.strip().lower()).strip("-")
    if not s:
        raise StorageError(f"unusable name {name!r}")
    return s


def _write_private(path: Path, data: bytes) -> None:
    """Write atomically with mode 0600 from the start (no window where the file is world-readable)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


class Gallery:
    """Enrol and forget are all-or-nothing: an enrolment is staged in `.staging-<slug>-<token>` and renamed into
    place (a replaced person is first moved to `.trash-<slug>-<token>`), a forget renames the folder to a trash
    name before deleting it. Opening a gallery finishes what a crash left: an incomplete staging is removed, a
    complete one whose old folder was already moved aside is put in place, and trash is deleted."""

    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir / "faces"
        self.recover(blocking=False)

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

    def _dir(self, name: str) -> Path:
        return self.root / _slug(name)

    def enroll(
        self,
        name: str,
        photos: list[tuple[str, bytes]],
        templates: F32,
        consent_by: str,
        consent_date: date,
        embedder: str,
        now: datetime | None = None,
    ) -> Person:
        """Store (or replace) a person: consent, the photos (suffix, bytes) and one template per photo."""
        if not consent_by.strip():
            raise StorageError("enrolment needs a recorded consent (--consent-by)")
        if len(photos) != len(templates) or not photos:
            raise StorageError("one template per photo, at least one")
        _private_dir(self.root)
        slug = _slug(name)
        final = self.root / slug
        person = Person(
            name,
            consent_by.strip(),
            consent_date.isoformat(),
            (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            len(photos),
            embedder,
        )
        with self._locked():
            self._recover_locked()
            # Everything is written into a staging folder first (person.json last), then renamed into place:
            # a crash at any point leaves either the old enrolment or the new one, never a mix or an orphan.
            staged = self.root / f"{STAGING}{slug}-{secrets.token_hex(4)}"
            _private_dir(staged)
            _private_dir(staged / "photos")
            for i, (suffix, blob) in enumerate(photos):
                _write_private(staged / "photos" / f"{i:03d}{suffix}", blob)
            crash_point("enroll:photos-written")
            _write_private(staged / "templates.npy", _npy_bytes(templates.astype(np.float32)))
            _write_private(staged / "person.json", json.dumps(asdict(person), indent=2).encode())
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
        return person

    def people(self) -> list[Person]:
        """Everyone enrolled; a gallery this process cannot read is a StorageError, never an empty list."""
        try:
            entries = [e for e in os.listdir(self.root) if not e.startswith(".")]
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StorageError(f"cannot read the face gallery {self.root}: {_why(self.root, exc)}") from exc
        out = []
        for entry in sorted(entries, key=lambda e: e + "/"):  # the order glob("*/person.json") gave
            pj = self.root / entry / "person.json"
            try:
                text = pj.read_text()
            except (FileNotFoundError, NotADirectoryError):
                continue  # an enrolment cut short (person.json is written last) or a stray file
            except OSError as exc:
                raise StorageError(f"cannot read the face gallery: {pj}: {_why(pj.parent, exc)}") from exc
            try:
                out.append(Person(**json.loads(text)))
            except (ValueError, TypeError) as exc:
                raise StorageError(f"{pj}: unreadable: {exc}") from exc
        return out

    def templates(self) -> dict[str, F32]:
        out: dict[str, F32] = {}
        for p in self.people():
            path = self._dir(p.name) / "templates.npy"
            try:
                out[p.name] = np.load(path).astype(np.float32)
            except OSError as exc:
                raise StorageError(f"cannot read the face gallery: {path}: {_why(path, exc)}") from exc
        return out

    def photos(self, name: str) -> list[Path]:
        return sorted((self._dir(name) / "photos").glob("*"))

    def forget(self, name: str) -> bool:
        """Delete the person's consent record, photos and templates; True if they were enrolled."""
        d = self._dir(name)
        if not d.exists():
            return False
        with self._locked():
            self._recover_locked()
            if not d.exists():
                return False
            # The rename is the commit point: from then on the person is not enrolled, and whatever of the
            # folder a crash leaves behind is deleted when the gallery is next opened.
            trash = self.root / f"{TRASH}{d.name}-{secrets.token_hex(4)}"
            os.rename(d, trash)
            fsync_dir(self.root)
            crash_point("forget:renamed")
            _remove_tree(trash)
        return True

    def stamp(self) -> float:
        """Changes whenever someone is enrolled or forgotten (for reloading in a running daemon)."""
        try:
            if not self.root.is_dir():
                return 0.0
        except OSError as exc:  # the state dir itself cannot be entered
            raise StorageError(f"cannot read the face gallery {self.root}: {_why(self.root, exc)}") from exc
        stamps = [self.root.stat().st_mtime_ns] + [p.stat().st_mtime_ns for p in self.root.glob("*/person.json")]
        return float(max(stamps))


def _why(path: Path, exc: OSError) -> str:
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
