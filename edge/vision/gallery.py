"""Enrolled people on disk: consent record, enrolment photos and templates, files mode 0600.

Layout: <state_dir>/faces/<slug>/person.json, templates.npy, photos/<n>.<ext>.  Nothing about
people who are not enrolled is ever written here.  `forget` removes the person's whole folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge.errors import StorageError

F32 = npt.NDArray[np.float32]


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
    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir / "faces"

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
        d = self._dir(name)
        if d.exists():
            shutil.rmtree(d)
        _private_dir(d)
        _private_dir(d / "photos")
        for i, (suffix, blob) in enumerate(photos):
            _write_private(d / "photos" / f"{i:03d}{suffix}", blob)
        buf = _npy_bytes(templates.astype(np.float32))
        _write_private(d / "templates.npy", buf)
        person = Person(
            name,
            consent_by.strip(),
            consent_date.isoformat(),
            (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            len(photos),
            embedder,
        )
        _write_private(d / "person.json", json.dumps(asdict(person), indent=2).encode())
        return person

    def people(self) -> list[Person]:
        if not self.root.is_dir():
            return []
        out = []
        for pj in sorted(self.root.glob("*/person.json")):
            try:
                out.append(Person(**json.loads(pj.read_text())))
            except (OSError, ValueError, TypeError) as exc:
                raise StorageError(f"{pj}: unreadable: {exc}") from exc
        return out

    def templates(self) -> dict[str, F32]:
        out: dict[str, F32] = {}
        for p in self.people():
            out[p.name] = np.load(self._dir(p.name) / "templates.npy").astype(np.float32)
        return out

    def photos(self, name: str) -> list[Path]:
        return sorted((self._dir(name) / "photos").glob("*"))

    def forget(self, name: str) -> bool:
        """Delete the person's consent record, photos and templates; True if they were enrolled."""
        d = self._dir(name)
        if not d.exists():
            return False
        shutil.rmtree(d)
        return True

    def stamp(self) -> float:
        """Changes whenever someone is enrolled or forgotten (for reloading in a running daemon)."""
        if not self.root.is_dir():
            return 0.0
        stamps = [self.root.stat().st_mtime_ns] + [p.stat().st_mtime_ns for p in self.root.glob("*/person.json")]
        return float(max(stamps))


def _npy_bytes(arr: npt.NDArray[np.float32]) -> bytes:
    import io

    b = io.BytesIO()
    np.save(b, arr)
    return b.getvalue()
