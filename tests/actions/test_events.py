"""edge.actions.events on a real journal and clip store: one day at a time (with each event's clips and snapshots),
the newest N, the first N of a window, filters, delivery after the broker's acknowledgement, retention by the
config's keep_days under an injected clock, and clear errors."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from edge.actions.events import read_day, read_events
from edge.clock import FakeClock
from edge.config import Config
from edge.errors import EdgeError
from edge.events.bus import Event
from edge.events.journal import MQTT
from edge.events.journal_files import open_journal
from edge.recording.store import ClipStore
from tests.actions.helpers import clip_with_snapshots

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def config(tmp_path: Path, **events: float) -> Config:
    return Config.model_validate({"storage": {"state_dir": str(tmp_path / "state")}, "events": events})


def ring(ts: datetime) -> Event:
    return Event("ring", "front_door", ts, {"source": "button"})


def motion(ts: datetime) -> Event:
    return Event("motion_start", "front_door", ts, {"score": 0.4})


def test_a_day_at_a_time_with_its_clips_and_snapshots(tmp_path: Path) -> None:
    cfg, clock = config(tmp_path), FakeClock(T0 + timedelta(days=2))
    with open_journal(cfg, clock) as journal:
        before = journal.record(ring(T0 - timedelta(hours=13)))  # 2026-02-28 23:00 UTC
        first = journal.record(ring(T0))
        moved = journal.record(motion(T0 + timedelta(seconds=1)))
        late = journal.record(ring(T0 + timedelta(hours=11, minutes=59)))
        after = journal.record(ring(T0 + timedelta(hours=12)))  # 2026-03-02 00:00 UTC
        journal.delivered(MQTT, [first.seq or 0, moved.seq or 0])  # the broker acknowledged these two
    clip = clip_with_snapshots(ClipStore(cfg.state_dir, clock), "front_door", T0, [(first.id, "ring")])

    page = read_day(cfg, clock, date(2026, 3, 1), zone=UTC)
    assert [e.id for e in page.events] == [first.id, moved.id, late.id] and not page.more
    assert (page.since, page.until) == (T0 - timedelta(hours=12), T0 + timedelta(hours=12))
    assert page.events[0].clips == (clip.id,) and len(page.events[0].snapshots) == 1
    assert page.events[0].snapshots[0].is_file()
    assert page.events[1].clips == () and page.events[1].snapshots == ()
    assert [e.delivery for e in page.events] == [{MQTT: "delivered"}, {MQTT: "delivered"}, {MQTT: "waiting"}]
    assert page.events[0].as_dict()["delivery"] == {MQTT: "delivered"}
    assert page.events[0].wire["source"] == "button" and page.events[0].camera == "front_door"

    assert [e.id for e in read_day(cfg, clock, date(2026, 3, 1), zone=UTC, types=["motion_start"]).events] == [
        moved.id]
    capped = read_day(cfg, clock, date(2026, 3, 1), zone=UTC, limit=2)
    assert [e.id for e in capped.events] == [first.id, moved.id] and capped.more
    assert [e.id for e in read_day(cfg, clock, date(2026, 2, 28), zone=UTC).events] == [before.id]
    assert [e.id for e in read_day(cfg, clock, date(2026, 3, 2), zone=UTC).events] == [after.id]


def test_the_newest_n_and_the_first_n_of_a_window(tmp_path: Path) -> None:
    cfg, clock = config(tmp_path), FakeClock(T0 + timedelta(hours=1))
    with open_journal(cfg, clock) as journal:
        seqs = [journal.record(ring(T0 - timedelta(days=3) + timedelta(hours=i))).seq for i in range(5)]
        recent = journal.record(ring(T0))
    newest = read_events(cfg, clock, limit=2)
    assert newest.newest and newest.more and [e.seq for e in newest.events] == [seqs[4], recent.seq]
    assert [e.seq for e in read_events(cfg, clock).events] == [recent.seq]  # default: the last day
    window = read_events(cfg, clock, since=T0 - timedelta(days=3), limit=3)
    assert [e.seq for e in window.events] == seqs[:3] and window.more and not window.newest
    older = read_events(cfg, clock, until=T0 - timedelta(days=3) + timedelta(hours=2), limit=10)
    assert [e.seq for e in older.events] == seqs[:2] and not older.more


def test_retention_follows_the_config_under_an_injected_clock(tmp_path: Path) -> None:
    cfg, clock = config(tmp_path, keep_days=1), FakeClock(T0)
    with open_journal(cfg, clock) as journal:
        old = journal.record(ring(T0))
        journal.delivered(MQTT, [old.seq or 0])
        clock.advance(86400 + 61)
        new = journal.record(ring(clock.now()))  # recording ages the history (MQTT may be off)
    assert [e.seq for e in read_events(cfg, clock, since=T0 - timedelta(days=1)).events] == [new.seq]


def test_nothing_recorded_and_bad_arguments(tmp_path: Path) -> None:
    cfg, clock = config(tmp_path), FakeClock(T0)
    page = read_events(cfg, clock)
    assert not page.found and page.events == () and page.journal == cfg.state_dir / "events.sqlite3"
    with pytest.raises(EdgeError, match="since 2026-03-01T12:00:00 has no time zone"):
        read_events(cfg, clock, since=T0.replace(tzinfo=None))
    with pytest.raises(EdgeError, match="unknown event type doorbell"):
        read_events(cfg, clock, types=["doorbell"])
    with pytest.raises(EdgeError, match="limit must be at least 1, not 0"):
        read_events(cfg, clock, limit=0)


def test_the_days_at_the_ends_of_the_calendar_are_refused_and_the_next_ones_read(tmp_path: Path) -> None:
    """date.min and date.max are dates, but their day's bounds are not datetimes (year 0, year 10000)."""
    cfg, clock = config(tmp_path), FakeClock(T0)
    with open_journal(cfg, clock) as journal:
        journal.record(ring(T0))
    for day in (date.min, date.max):
        with pytest.raises(EdgeError, match=f"{day.isoformat()} is outside the days the device can show"):
            read_day(cfg, clock, day)
    for day in (date.min + timedelta(days=1), date.max - timedelta(days=1)):
        assert read_day(cfg, clock, day).events == ()
        assert read_day(cfg, clock, day, zone=UTC).events == ()
