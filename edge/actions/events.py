"""Reading the device's own event history (the event journal): one day or N events at a time, with filters, each
event with the clips and snapshots the recorder kept for it."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta, tzinfo
from pathlib import Path
from typing import Any

from edge.clock import Clock
from edge.config import Config
from edge.errors import EdgeError
from edge.events.bus import EVENT_TYPES
from edge.events.journal import CONSUMERS
from edge.events.journal_files import read_only_history
from edge.events.journal_schema import Stored, read_history
from edge.layout import StateLayout

DAY = timedelta(days=1)
DEFAULT_LIMIT = 1000
FIRST_DAY = date.min + DAY  # a day whose midnights, in any time zone, are datetimes
LAST_DAY = date.max - DAY


@dataclass(frozen=True)
class HistoryEvent:
    """An event as the journal keeps it: its wire form, where it stands for each consumer, and (when asked for)
    the clips that recorded it and its snapshots."""

    seq: int
    id: str
    type: str
    camera: str | None
    ts: datetime
    wire: Mapping[str, Any]  # the JSON sent on MQTT's .../events
    delivery: Mapping[str, str]  # consumer -> "waiting", "delivered" or "dropped (<reason> limit)"
    clips: tuple[str, ...] = ()
    snapshots: tuple[Path, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The wire form plus `delivery` per consumer (what `events list --json` prints)."""
        return {**self.wire, "delivery": dict(self.delivery)}


@dataclass(frozen=True)
class EventPage:
    """What one read returned. `newest`: the last N events of any age (then `since` is None); otherwise the first
    ones of [since, until). `more`: events beyond `limit` were left out. `found`: the journal file exists."""

    events: tuple[HistoryEvent, ...]
    since: datetime | None
    until: datetime | None
    newest: bool
    more: bool
    limit: int
    journal: Path
    found: bool = True


def read_events(config: Config, clock: Clock, *, since: datetime | None = None, until: datetime | None = None,
                types: Sequence[str] = (), limit: int | None = None, footage: bool = False) -> EventPage:
    """Events in seq order. Without `since` but with `limit`: the newest `limit` events (before `until`, if
    given). Otherwise the first `limit` (default DEFAULT_LIMIT) events from `since` (default: one day before
    `until`, or before now) until `until`. `footage`: look up each event's clips and snapshots too."""
    for bound, name in ((since, "since"), (until, "until")):
        if bound is not None and bound.tzinfo is None:
            raise EdgeError(f"events: {name} {bound.isoformat()} has no time zone")
    unknown = sorted(set(types) - set(EVENT_TYPES))
    if unknown:
        raise EdgeError(f"events: unknown event type {', '.join(unknown)} (known: {', '.join(EVENT_TYPES)})")
    if limit is not None and limit < 1:
        raise EdgeError(f"events: limit must be at least 1, not {limit}")
    newest = since is None and limit is not None
    if not newest and since is None:
        since = (until or clock.now()) - DAY
    count = limit or DEFAULT_LIMIT
    path, db = read_only_history(config)
    if db is None:
        return EventPage((), since, until, newest, False, count, path, found=False)
    try:
        rows = read_history(db, since, until, types, count + 1, newest=newest)
    finally:
        db.close()
    more = len(rows) > count
    rows = rows[1:] if more and newest else rows[:count]
    events = [history_event(row) for row in rows]
    if footage:
        events = with_footage(config, clock, events)
    return EventPage(tuple(events), since, until, newest, more, count, path)


def read_day(config: Config, clock: Clock, day: date, *, zone: tzinfo | None = None, types: Sequence[str] = (),
             limit: int = DEFAULT_LIMIT, footage: bool = True) -> EventPage:
    """One calendar day's events (midnight to midnight in `zone`, default the device's local zone), with their
    clips and snapshots: the owner's page shows a day at a time; `more` says the day holds over `limit`."""
    if not FIRST_DAY <= day <= LAST_DAY:
        # date.min / date.max are dates, but a day's bounds (the next midnight, the UTC offset, the journal's
        # microseconds since 1970) step outside what datetime can hold
        raise EdgeError(f"events: {day.isoformat()} is outside the days the device can show "
                        f"({FIRST_DAY.isoformat()} to {LAST_DAY.isoformat()})")
    start = datetime.combine(day, time(0), zone) if zone is not None else datetime.combine(day, time(0)).astimezone()
    end = datetime.combine(day + DAY, time(0), zone) if zone is not None else \
        datetime.combine(day + DAY, time(0)).astimezone()
    return read_events(config, clock, since=start, until=end, types=types, limit=limit, footage=footage)


def history_event(row: Stored) -> HistoryEvent:
    wire: dict[str, Any] = json.loads(row.payload)
    delivery = {c: ("waiting" if c in row.waiting_for else f"dropped ({row.undelivered[c]} limit)"
                    if c in row.undelivered else "delivered") for c in CONSUMERS}
    return HistoryEvent(row.seq, row.id, row.type, wire.get("camera"), row.ts, wire, delivery)


def with_footage(config: Config, clock: Clock, events: list[HistoryEvent]) -> list[HistoryEvent]:
    """Each event with the ids of the clips that recorded it and the paths of its snapshots (none without a clip
    store). The clip store is only read."""
    from edge.recording.store import ClipStore

    if not events or not StateLayout.of(config.state_dir).clip_index.exists():
        return events
    store = ClipStore(config.state_dir, clock)
    # A clip that recorded an event overlaps its time: the clips overlapping the events' span are enough.
    stamps = [e.ts for e in events]
    refs = store.list(None, min(stamps), max(stamps) + timedelta(microseconds=1))
    clips: dict[str, list[str]] = {}
    snaps: dict[str, list[Path]] = {}
    for ref in refs:
        for event_id in ref.events:
            clips.setdefault(event_id, []).append(ref.id)
        for snap in store.snapshots(ref.id):
            snaps.setdefault(snap.event_id, []).append(snap.path)
    return [replace(e, clips=tuple(clips.get(e.id, ())), snapshots=tuple(snaps.get(e.id, ()))) for e in events]
