"""Retention: the pure choice of which clips to delete (age per class, usage cap, free space; holds win)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

# A clip's class is its most important event: a ring outranks a person or face, which outranks motion.
CLASS_OF_EVENT = {
    "motion_start": "motion",
    "motion_end": "motion",
    "person": "person",
    "face": "person",
    "ring": "ring",
}
CLASS_RANK = {"motion": 0, "person": 1, "ring": 2}


def clip_class(event_types: Sequence[str]) -> str:
    """The retention class of a clip from the types of the events inside it ("motion" when none count)."""
    classes = [CLASS_OF_EVENT[t] for t in event_types if t in CLASS_OF_EVENT]
    return max(classes, key=CLASS_RANK.__getitem__, default="motion")


@dataclass(frozen=True)
class RetentionPolicy:
    days: Mapping[str, float]  # class -> days a clip is kept after it ends
    max_bytes: int | None  # cap on what the clip store may use; None = no cap
    min_free_bytes: int  # free space to keep on the file system


@dataclass(frozen=True)
class StoredClip:
    id: str
    start: datetime
    end: datetime
    klass: str
    size: int
    held: bool
    trusted: bool = True  # False: recorded while the wall clock was not trusted; its stamps may be 1970
    age_from: datetime | None = None  # an untrusted clip's age counts from here (the first trusted time after it)

    @property
    def aged_from(self) -> datetime | None:
        """When this clip's age starts: its end when its times are trusted, else `age_from`; None (not yet
        known, so it never expires by age and goes last for space) for an untrusted clip not yet settled."""
        if self.age_from is not None:
            return self.age_from
        return self.end if self.trusted else None


@dataclass(frozen=True)
class Deletion:
    clip_id: str
    reason: str  # "expired", "usage_cap" or "low_disk"


@dataclass(frozen=True)
class Plan:
    deletions: tuple[Deletion, ...]
    shortfall_bytes: int  # still missing to meet the cap and free-space target once every unheld clip is gone


def plan(clips: Sequence[StoredClip], policy: RetentionPolicy, now: datetime, free_bytes: int) -> Plan:
    """Which clips to delete, oldest first: every unheld clip past its class's age, then more unheld clips
    until the store is under its cap and the disk has its free space. Held clips are never chosen. A clip
    recorded while the clock was untrusted ages from when the time became known (docs/time.md), and until then
    never expires by age and goes last when space is needed."""
    if now.tzinfo is None:
        raise ValueError("retention needs an aware UTC 'now'")
    deletions: list[Deletion] = []
    kept: list[StoredClip] = []
    for clip in sorted(clips, key=lambda c: (c.aged_from is None, c.start if c.trusted else c.aged_from or now, c.id)):
        if clip.klass not in policy.days:
            raise ValueError(f"clip {clip.id} has unknown retention class {clip.klass!r}")
        aged_from = clip.aged_from
        expired = aged_from is not None and aged_from + timedelta(days=policy.days[clip.klass]) <= now
        if expired and not clip.held:
            deletions.append(Deletion(clip.id, "expired"))
            free_bytes += clip.size
        else:
            kept.append(clip)
    used = sum(c.size for c in kept)

    def missing() -> int:
        over_cap = used - policy.max_bytes if policy.max_bytes is not None else 0
        return max(0, over_cap, policy.min_free_bytes - free_bytes)

    for clip in kept:
        if missing() <= 0:
            break
        if clip.held:
            continue
        over_cap = policy.max_bytes is not None and used > policy.max_bytes
        deletions.append(Deletion(clip.id, "usage_cap" if over_cap else "low_disk"))
        used -= clip.size
        free_bytes += clip.size
    return Plan(tuple(deletions), missing())
