"""The event journal as the device's history on real SQLite files: kept after delivery, aged with an injected clock
(never by a clock that is not synchronised), capped in size, never losing what a consumer still waits for."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge.clock import FakeClock
from edge.events.bus import Event
from edge.events.guard import EventRejected
from edge.events.journal import MQTT, EventJournal, HistoryBounds, QueueBounds

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DAY = 86400.0


def ev(kind: str, ts: datetime, **fields: object) -> Event:
    defaults: dict[str, dict[str, object]] = {"ring": {"source": "button"}, "system": {"status": "started"},
                                              "face": {"result": "unknown", "visit_id": "visit-1"}}
    return Event(kind, "front_door", ts, {**defaults.get(kind, {}), **fields})


def journal(path: Path, clock: FakeClock, **history: float) -> EventJournal:
    return EventJournal(path, queues={MQTT: QueueBounds(max_events=50, max_age_s=3600.0)},
                        history=HistoryBounds(**history), clock=clock)  # type: ignore[arg-type]


def test_a_delivered_event_stays_in_the_history(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    with journal(tmp_path / "events.sqlite3", clock) as j:
        ring = j.record(ev("ring", T0))
        motion = j.record(ev("motion_start", T0))
        assert j.delivered(MQTT, [ring.seq or 0]) == 1
        assert [p.seq for p in j.pending(MQTT)] == [motion.seq]
        rows = j.history()
    assert [(r.seq, r.type, r.waiting_for) for r in rows] == [(1, "ring", ()), (2, "motion_start", (MQTT,))]
    assert rows[0].ts == T0 and '"source":"button"' in rows[0].payload


def test_retention_ages_the_history_by_the_injected_clock(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    with journal(tmp_path / "events.sqlite3", clock, keep_days=1) as j:
        old = j.record(ev("ring", T0))
        waiting = j.record(ev("face", T0))  # the broker never acknowledges this one
        young = j.record(ev("ring", T0 + timedelta(hours=12)))
        j.delivered(MQTT, [old.seq or 0, young.seq or 0])
        clock.advance(DAY - 1)
        assert j.expire() == 0
        clock.advance(2)
        assert j.expire() == 1  # the delivered ring of T0; the face still waits for the broker, so it stays
        assert [r.seq for r in j.history()] == [waiting.seq, young.seq]
        j.delivered(MQTT, [waiting.seq or 0])
        assert j.expire() == 1
        clock.advance(DAY / 2)
        assert j.expire() == 1
        assert j.history() == []
        # numbering goes on: an emptied history never reuses a seq
        assert j.record(ev("ring", clock.now())).seq == 4


def test_recording_ages_the_history_without_a_publisher(tmp_path: Path) -> None:
    # MQTT off: nobody calls prune() or expire(); recording itself ages the history (at most once a minute).
    clock = FakeClock(T0)
    with journal(tmp_path / "events.sqlite3", clock, keep_days=1) as j:
        first = j.record(ev("ring", T0))
        j.delivered(MQTT, [first.seq or 0])
        clock.advance(DAY + 61)
        j.record(ev("ring", clock.now()))
        assert [r.seq for r in j.history()] == [2]


def test_a_clock_that_is_not_synchronised_ages_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edge.events.journal")
    clock = FakeClock(T0, synced=False)
    with journal(tmp_path / "events.sqlite3", clock, keep_days=1) as j:
        first = j.record(ev("ring", T0))
        j.delivered(MQTT, [first.seq or 0])
        clock.step(365 * DAY)  # a bad RTC a year ahead
        assert j.expire() == 0
        assert [r.seq for r in j.history()] == [1]
        clock.synced = True
        assert j.expire() == 1
    assert "not synchronised" in caplog.text


def test_the_size_cap_keeps_the_newest_and_spares_what_waits(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    with journal(tmp_path / "events.sqlite3", clock, max_events=100) as j:
        first = j.record(ev("footage_request", T0, request="fr-1", state="received"))  # stays waiting
        for _ in range(149):
            stamped = j.record(ev("ring", T0))
            j.delivered(MQTT, [stamped.seq or 0])
        seqs = [r.seq for r in j.history(limit=1000)]
    assert seqs == [first.seq, *range(51, 151)]


def test_an_event_the_queue_dropped_stays_in_the_history_marked_undelivered(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    with EventJournal(tmp_path / "events.sqlite3", queues={MQTT: QueueBounds(max_events=10, reserved_events=2)},
                      clock=clock) as j:
        for i in range(12):
            j.record(ev("motion_start" if i < 2 else "ring", T0))
        rows = j.history(limit=100)
        assert j.stats(MQTT).waiting == 10 and j.drops(MQTT) == {("size", "motion_start"): 2}
    assert len(rows) == 12
    assert [dict(r.undelivered) for r in rows[:3]] == [{MQTT: "size"}, {MQTT: "size"}, {}]
    assert rows[0].waiting_for == () and rows[2].waiting_for == (MQTT,)


def test_history_windows_types_and_the_newest_n(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    with journal(tmp_path / "events.sqlite3", clock) as j:
        for hour in range(48):
            j.record(ev("ring" if hour % 3 == 0 else "motion_start", T0 + timedelta(hours=hour)))
        day_two = j.history(since=T0 + timedelta(days=1), until=T0 + timedelta(days=2), limit=1000)
        rings = j.history(types=["ring"], limit=1000)
        newest = j.history(limit=5, newest=True)
        first = j.history(limit=5)
    assert [r.seq for r in day_two] == list(range(25, 49))
    assert {r.type for r in rings} == {"ring"} and len(rings) == 16
    assert [r.seq for r in newest] == [44, 45, 46, 47, 48]
    assert [r.seq for r in first] == [1, 2, 3, 4, 5]


def test_a_strangers_embedding_never_reaches_the_history(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    with journal(tmp_path / "events.sqlite3", clock) as j:
        with pytest.raises(EventRejected, match="face data"):
            j.record(ev("face", T0, embedding=[0.1] * 128))
        with pytest.raises(EventRejected, match="embedding"):
            j.record(ev("person", T0, values=[0.5] * 128))
        j.record(ev("face", T0))  # an unknown face: a short-lived visit id, nothing else
        rows = j.history()
    assert [r.seq for r in rows] == [1]
    assert "embedding" not in rows[0].payload and '"visit_id":"visit-1"' in rows[0].payload
    with (tmp_path / "events.sqlite3").open("rb") as f:
        assert b"embedding" not in f.read()
