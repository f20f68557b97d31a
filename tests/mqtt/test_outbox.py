"""The outbox (the MQTT consumer of the event journal) on real SQLite files: durable seq, one transaction per
record, cross-process safety, drop policy."""

from __future__ import annotations

import json
import logging
import multiprocessing
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.clock import FakeClock
from edge.errors import StorageError
from edge.events.bus import Event, EventBus
from edge.events.guard import EventRejected
from edge.mqtt.outbox import KEEP, RESERVED_KINDS, Outbox, OutboxBounds, drop_class, emit
from tests.mqtt.conftest import make_config

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def ev(kind: str, **fields: object) -> Event:
    if kind == "ring":
        fields.setdefault("source", "button")
    return Event(kind, "front_door", T0, fields)


def test_seq_is_strictly_increasing_and_survives_restart(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    with Outbox(path) as outbox:
        seqs = [outbox.record(ev("ring")).seq for _ in range(5)]
        outbox.remove([1, 2, 3, 4, 5])
    assert seqs == [1, 2, 3, 4, 5]
    with Outbox(path) as outbox:  # a restart: numbering continues even though the table is empty
        assert outbox.record(ev("ring")).seq == 6
        assert outbox.stats().waiting == 1
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_record_stores_the_wire_form_with_original_ts(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite3") as outbox:
        stamped = outbox.record(ev("motion_start", score=0.5))
        (row,) = outbox.pending()
    body = json.loads(row.payload)
    assert body == {"v": 1, "id": stamped.id, "seq": 1, "type": "motion_start", "camera": "front_door",
                    "ts": "2026-01-01T00:00:00.000Z", "score": 0.5}
    assert row.ts == T0.timestamp()


def test_fed_marks_survive_a_restart_and_go_with_their_event(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    with Outbox(path) as outbox:
        a, b = outbox.record(ev("ring")), outbox.record(ev("ring"))
        outbox.mark_fed(a.id)
        outbox.mark_fed("not-in-the-outbox")  # nothing to mark: ignored
    with Outbox(path) as outbox:  # a restart before the broker acknowledged either
        assert [(r.id, r.fed) for r in outbox.pending()] == [(a.id, True), (b.id, False)]
        outbox.remove([a.seq])
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM waiting WHERE fed = 1").fetchone()[0] == 0


def test_bus_uses_outbox_as_journal(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite3") as outbox:
        bus = EventBus()
        bus.set_journal(outbox)
        seen: list[int | None] = []
        bus.subscribe(lambda e: seen.append(e.seq))
        bus.publish(ev("ring"))
        bus.publish(ev("ring"))
        assert seen == [1, 2] and [p.seq for p in outbox.pending()] == [1, 2]


def _append(path: str, n: int) -> None:
    with Outbox(Path(path)) as outbox:
        for _ in range(n):
            outbox.record(Event("ring", None, datetime.now(UTC), {"source": "cli"}))


def test_processes_appending_together_never_share_a_seq(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    Outbox(path).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append, args=(str(path), 40)) for _ in range(3)]
    for p in procs:
        p.start()
    _append(str(path), 40)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    with Outbox(path) as outbox:
        seqs = [p.seq for p in outbox.pending(limit=1000)]
    assert seqs == list(range(1, 161))


def test_emit_from_a_cli_process(tmp_path: Path) -> None:
    config = make_config(tmp_path / "state", 1883)
    first = emit(config, Event("footage_request", None, T0, {"request": "r-1", "state": "received"}))
    second = emit(config, ev("ring"))
    assert (first.seq, second.seq) == (1, 2)
    assert (tmp_path / "state" / "events.sqlite3").exists()


def test_size_bound_drops_motion_first_then_person_and_keeps_rings(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="edge.mqtt.outbox")
    with Outbox(tmp_path / "o.sqlite3", OutboxBounds(max_events=10)) as outbox:
        kinds = ["ring", "motion_start", "face", "person", "motion_end", "footage_request", "system"]
        for i in range(14):
            kind = kinds[i % len(kinds)]
            fields = {"result": "unknown", "visit_id": "visit1"} if kind == "face" else (
                {"status": "x"} if kind == "system" else {})
            outbox.record(ev(kind, **fields))
        kept = [p.type for p in outbox.pending(limit=100)]
        stats = outbox.stats()
        drops = outbox.drops()
    assert stats.waiting == 10 and stats.dropped == 4 and stats.last_seq == 14
    assert drops == {("size", "motion_start"): 2, ("size", "motion_end"): 2}
    assert kept.count("ring") == 2 and kept.count("face") == 2 and kept.count("footage_request") == 2
    assert "dropped motion_start event seq=2" in caplog.text


def test_size_bound_full_of_keepers_drops_the_oldest_keeper_loudly(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    with Outbox(tmp_path / "o.sqlite3", OutboxBounds(max_events=10)) as outbox:
        for _ in range(11):
            outbox.record(ev("ring"))
        assert [p.seq for p in outbox.pending(limit=100)] == list(range(2, 12))
    assert any(r.levelno == logging.ERROR and "dropped ring event seq=1" in r.getMessage() for r in caplog.records)


def test_age_bound_prunes_droppable_events_only(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    with Outbox(tmp_path / "o.sqlite3", OutboxBounds(max_events=100, max_age_s=3600), clock) as outbox:
        outbox.record(ev("motion_start"))
        outbox.record(ev("ring"))
        outbox.record(ev("system", status="started"))
        clock.advance(3599)
        assert outbox.prune() == 0
        clock.advance(2)
        assert outbox.prune() == 2
        assert [p.type for p in outbox.pending()] == ["ring"]
        assert outbox.drops() == {("age", "motion_start"): 1, ("age", "system"): 1}


def test_an_unsynchronised_clock_stepped_weeks_ahead_drops_no_waiting_event(tmp_path: Path) -> None:
    """A Pi boots with a wrong clock and steps +31 d: nothing waiting is aged out until the clock is synchronised."""
    clock = FakeClock(T0, synced=False)
    with Outbox(tmp_path / "o.sqlite3", OutboxBounds(max_events=100, max_age_s=3600), clock) as outbox:
        outbox.record(ev("motion_start"))
        outbox.record(ev("system", status="started"))
        clock.step(31 * 86400.0)
        assert outbox.prune() == 0
        assert [p.type for p in outbox.pending()] == ["motion_start", "system"]
        clock.synced = True
        assert outbox.prune() == 2


def test_drop_classes() -> None:
    assert drop_class("motion_start") < drop_class("person") < drop_class("ring") == KEEP
    assert drop_class("face") == drop_class("footage_request") == KEEP


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"result": "known", "person": "alice", "embedding": [0.1] * 128}, "face data"),
        ({"result": "known", "person": "alice", "bbox": [1, 2, 3, 4]}, "not allowed"),
        ({"result": "unknown", "visit_id": "v-1234", "crop": "..."}, "face data"),
        ({"result": "known"}, "enrolled person"),
        ({"result": "known", "person": "unknown"}, "enrolled person"),
        ({"result": "unknown", "visit_id": "v-1234", "person": "bob"}, "must not name"),
        ({"result": "unknown"}, "visit_id"),
        ({"result": "maybe"}, "'known' or 'unknown'"),
        ({"result": "known", "person": "alice", "confidence": 3}, "confidence"),
    ],
)
def test_face_events_never_carry_face_data(tmp_path: Path, fields: dict[str, object], message: str) -> None:
    with Outbox(tmp_path / "o.sqlite3") as outbox:
        with pytest.raises(EventRejected, match=message):
            outbox.record(Event("face", "front_door", T0, fields))
        assert outbox.stats().last_seq == 0  # nothing stored, no seq spent


@pytest.mark.parametrize(
    "fields",
    [{"image": "x"}, {"nested": {"embedding": [1.0]}}, {"values": [0.5] * 64}, {"raw": b"\xff\xd8"},
     {"score": float("nan")}, {"when": T0}],
)
def test_no_event_carries_images_embeddings_or_unencodable_fields(tmp_path: Path, fields: dict[str, object]) -> None:
    with Outbox(tmp_path / "o.sqlite3") as outbox, pytest.raises(EventRejected):
        outbox.record(Event("person", "front_door", T0, fields))


def test_unusable_state_dir_is_a_clear_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StorageError, match=r"event journal .*cannot open"):
        Outbox(blocker / "o.sqlite3")


KINDS = ["motion_start", "motion_end", "person", "system", "ring", "face", "footage_request"]


def _fields(kind: str) -> dict[str, object]:
    return {"ring": {"source": "button"}, "system": {"status": "x"},
            "face": {"result": "unknown", "visit_id": "visit1"}}.get(kind, {})


@given(kinds=st.lists(st.sampled_from(KINDS), min_size=1, max_size=60), bound=st.integers(10, 25),
       acks=st.lists(st.integers(1, 60), max_size=20))
@settings(max_examples=60, deadline=None)
def test_drop_policy_invariants(tmp_path_factory: pytest.TempPathFactory, kinds: list[str], bound: int,
                                acks: list[int]) -> None:
    path = tmp_path_factory.mktemp("prop") / "o.sqlite3"
    with Outbox(path, OutboxBounds(max_events=bound)) as outbox:
        for i, kind in enumerate(kinds, 1):
            before = {p.seq: p.type for p in outbox.pending(limit=1000)}
            stamped = outbox.record(ev(kind, **_fields(kind)))
            assert stamped.seq == i
            after = {p.seq: p.type for p in outbox.pending(limit=1000)}
            assert len(after) <= bound
            gone = set(before) - set(after)
            for seq in gone:
                # a keeper only goes when nothing droppable of its own pool was left to drop instead (the
                # reserved kinds, footage_request and system, are a pool of their own: see test_outbox_quota.py)
                pool = before[seq] in RESERVED_KINDS
                if drop_class(before[seq]) == KEEP:
                    assert all(drop_class(t) == KEEP for t in after.values() if (t in RESERVED_KINDS) == pool)
            if i in acks:
                outbox.remove([i])
        stats = outbox.stats()
        removed = len({a for a in acks if a <= len(kinds)})
        assert stats.last_seq == len(kinds)
        assert stats.waiting + stats.dropped <= len(kinds)
        assert stats.waiting + stats.dropped + removed >= len(kinds)
        seqs = [p.seq for p in outbox.pending(limit=1000)]
        assert seqs == sorted(seqs)
