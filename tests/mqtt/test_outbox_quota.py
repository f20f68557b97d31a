"""The outbox's reserved quota: footage_request and system events are never evicted by other kinds' volume."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.config import Config
from edge.events.bus import Event
from edge.mqtt.outbox import RESERVED_KINDS, Outbox, OutboxBounds, bounds_for

T0 = datetime(2026, 1, 1, tzinfo=UTC)
FIELDS: dict[str, dict[str, object]] = {
    "ring": {"source": "button"},
    "system": {"status": "camera_lost"},
    "face": {"result": "unknown", "visit_id": "visit1"},
    "footage_request": {"request": "fr-1", "state": "received"},
}


def ev(kind: str) -> Event:
    return Event(kind, "front_door", T0, FIELDS.get(kind, {}))


def test_a_flood_of_rings_and_motion_never_evicts_footage_or_system_events(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite3", OutboxBounds(max_events=50, reserved_events=10)) as outbox:
        reserved = [outbox.record(ev(k)).id for k in ("footage_request", "system", "footage_request", "system")]
        for i in range(2000):  # the broker is away: nothing is acknowledged
            outbox.record(ev(("ring", "motion_start", "face", "motion_end")[i % 4]))
        waiting = outbox.pending(limit=1000)
        drops = outbox.drops()
    assert [p.id for p in waiting if p.type in RESERVED_KINDS] == reserved
    assert len(waiting) == 50
    assert not {t for (_, t) in drops} & set(RESERVED_KINDS), drops
    # the others share what the reserved kinds do not use, and among them rings and faces outlast motion
    assert sum(drops.values()) == 2000 + 4 - 50
    assert {p.type for p in waiting} == {"footage_request", "system", "ring", "face"}


def test_reserved_kinds_beyond_their_quota_drop_their_own_oldest_system_first(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite3", OutboxBounds(max_events=20, reserved_events=5)) as outbox:
        rings = [outbox.record(ev("ring")).id for _ in range(15)]
        first = [outbox.record(ev(k)).id for k in ("footage_request", "system", "system", "footage_request")]
        # 19 waiting; four more reserved events make 23: the reserved kinds now hold 8 of their 5
        later = [outbox.record(ev("footage_request")).id for _ in range(4)]
        waiting = outbox.pending(limit=1000)
        drops = outbox.drops()
    kept = [p.id for p in waiting]
    # the rings hold 15 of the 15 slots left to them: the overflow came from the reserved kinds' own volume...
    assert kept[:15] == rings
    # ...and took the system events first, then the oldest footage request
    assert drops == {("size", "system"): 2, ("size", "footage_request"): 1}
    assert kept[15:] == [first[3], *later]


def test_reserved_kinds_take_their_room_back_from_the_others(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite3", OutboxBounds(max_events=10, reserved_events=4)) as outbox:
        for _ in range(10):
            outbox.record(ev("ring"))  # the others may use the reserved room while it is free
        assert outbox.stats().waiting == 10
        requests = [outbox.record(ev("footage_request")).id for _ in range(4)]
        waiting = outbox.pending(limit=1000)
    assert [p.type for p in waiting].count("ring") == 6
    assert [p.id for p in waiting if p.type == "footage_request"] == requests


def test_bounds_come_from_the_config(tmp_path: Path) -> None:
    config = Config(storage={"state_dir": tmp_path},
                    mqtt={"outbox_max_events": 300, "outbox_reserved_events": 30, "outbox_max_age_h": 1})
    assert bounds_for(config) == OutboxBounds(max_events=300, max_age_s=3600.0, reserved_events=30)
    assert Config().mqtt.outbox_reserved_events == 1000


KINDS = ["motion_start", "motion_end", "person", "ring", "face", "system", "footage_request"]


@given(kinds=st.lists(st.sampled_from(KINDS), min_size=1, max_size=80), bound=st.integers(10, 20),
       quota=st.integers(1, 25))
@settings(max_examples=60, deadline=None)
def test_a_reserved_event_goes_only_when_its_own_kinds_are_over_quota(
        tmp_path_factory: pytest.TempPathFactory, kinds: list[str], bound: int, quota: int) -> None:
    path = tmp_path_factory.mktemp("quota") / "o.sqlite3"
    with Outbox(path, OutboxBounds(max_events=bound, reserved_events=quota)) as outbox:
        for kind in kinds:
            before = {p.seq: p.type for p in outbox.pending(limit=1000)}
            outbox.record(ev(kind))
            after = {p.seq: p.type for p in outbox.pending(limit=1000)}
            assert len(after) <= bound
            reserved_after = sum(t in RESERVED_KINDS for t in after.values())
            for seq in set(before) - set(after):
                if before[seq] in RESERVED_KINDS:
                    # dropped for its own kinds' volume: they still fill their whole quota
                    assert reserved_after >= min(quota, bound)
                else:
                    # another kind is only dropped while the others hold more than the room left to them
                    assert len(after) - reserved_after >= bound - min(quota, bound)
