"""What the clip store hands out: finished clips, snapshots, the retention report, its errors and time guard."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from edge.errors import StorageError
from edge.recording.retention import Deletion


class UnknownClip(StorageError, KeyError):
    """No finished clip has this id."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown clip"


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
class RetentionReport:
    deleted: tuple[Deletion, ...]
    shortfall_bytes: int
    paused: bool = False  # a clock-jump grace period: nothing was deleted (docs/time.md)


class TimeGuard(Protocol):
    """What the store asks about time (edge.service.timesync): when holds are judged, and whether retention may
    delete now."""

    def hold_time(self) -> datetime: ...
    def retention(self) -> tuple[bool, bool, datetime]: ...
