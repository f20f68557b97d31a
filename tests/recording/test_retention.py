"""Retention selection as a pure function: a table of cases and properties over random stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.recording.retention import RetentionPolicy, StoredClip, clip_class, plan

NOW = datetime(2026, 6, 1, tzinfo=UTC)
DAYS = {"motion": 7, "person": 30, "ring": 60}


def clip(cid: str, age_days: float, klass: str = "motion", size: int = 100, held: bool = False) -> StoredClip:
    end = NOW - timedelta(days=age_days)
    return StoredClip(cid, end - timedelta(seconds=10), end, klass, size, held)


def policy(max_bytes: int | None = None, min_free: int = 0) -> RetentionPolicy:
    return RetentionPolicy(days=DAYS, max_bytes=max_bytes, min_free_bytes=min_free)


@pytest.mark.parametrize(
    ("clips", "pol", "free", "deleted", "shortfall"),
    [
        ([], policy(), 0, [], 0),
        ([clip("a", 6.9)], policy(), 0, [], 0),
        ([clip("a", 7)], policy(), 0, [("a", "expired")], 0),  # exactly at the limit: gone
        ([clip("a", 8, "person"), clip("b", 31, "person")], policy(), 0, [("b", "expired")], 0),
        ([clip("a", 59, "ring"), clip("b", 61, "ring")], policy(), 0, [("b", "expired")], 0),
        ([clip("a", 100, held=True)], policy(), 0, [], 0),  # held: kept past retention
        # cap 250 over three 100-byte clips: the oldest unheld one goes
        ([clip("a", 3), clip("b", 2), clip("c", 1)], policy(max_bytes=250), 0, [("a", "usage_cap")], 0),
        ([clip("a", 3, held=True), clip("b", 2), clip("c", 1)], policy(max_bytes=250), 0, [("b", "usage_cap")], 0),
        # only held clips left and still over the cap: report the shortfall
        ([clip("a", 3, held=True), clip("b", 2, held=True)], policy(max_bytes=150), 0, [], 50),
        # free space: delete oldest until 300 bytes are free
        (
            [clip("a", 3), clip("b", 2), clip("c", 1)],
            policy(min_free=300),
            120,
            [("a", "low_disk"), ("b", "low_disk")],
            0,
        ),
        ([clip("a", 3, held=True)], policy(min_free=300), 120, [], 180),
        # expired clips count towards free space first
        ([clip("a", 10), clip("b", 1)], policy(min_free=200), 100, [("a", "expired")], 0),
    ],
)
def test_plan_table(clips, pol, free, deleted, shortfall) -> None:
    result = plan(clips, pol, NOW, free)
    assert [(d.clip_id, d.reason) for d in result.deletions] == deleted
    assert result.shortfall_bytes == shortfall


def test_clip_class_takes_the_most_important_event() -> None:
    assert clip_class([]) == "motion"
    assert clip_class(["motion_start", "motion_end"]) == "motion"
    assert clip_class(["motion_start", "face"]) == "person"
    assert clip_class(["person", "ring", "motion_start"]) == "ring"


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="unknown retention class 'cat'"):
        plan([clip("a", 1, "cat")], policy(), NOW, 0)
    with pytest.raises(ValueError, match="aware"):
        plan([], policy(), datetime(2026, 1, 1), 0)


clips_strategy = st.lists(
    st.builds(
        clip,
        cid=st.uuids().map(str),
        age_days=st.floats(0, 120),
        klass=st.sampled_from(list(DAYS)),
        size=st.integers(1, 1000),
        held=st.booleans(),
    ),
    max_size=30,
    unique_by=lambda c: c.id,
)


@given(clips_strategy, st.one_of(st.none(), st.integers(0, 20_000)), st.integers(0, 20_000), st.integers(0, 20_000))
def test_plan_properties(clips, max_bytes, min_free, free) -> None:
    result = plan(clips, policy(max_bytes, min_free), NOW, free)
    deleted = {d.clip_id for d in result.deletions}
    by_id = {c.id: c for c in clips}
    assert len(deleted) == len(result.deletions)
    # Held clips are never chosen; every expired unheld clip is.
    assert not any(by_id[i].held for i in deleted)
    for c in clips:
        if not c.held and c.end + timedelta(days=DAYS[c.klass]) <= NOW:
            assert c.id in deleted
    kept = [c for c in clips if c.id not in deleted]
    used = sum(c.size for c in kept)
    freed = free + sum(by_id[i].size for i in deleted)
    missing = max(0, (used - max_bytes) if max_bytes is not None else 0, min_free - freed)
    assert result.shortfall_bytes == missing
    if missing:  # only held clips (or nothing) left to give
        assert all(c.held for c in kept if c.end + timedelta(days=DAYS[c.klass]) > NOW)
    # Space-driven deletions go oldest first: no kept unheld clip is older than a deleted one.
    space = [by_id[d.clip_id] for d in result.deletions if d.reason != "expired"]
    if space:
        newest_deleted = max(c.start for c in space)
        assert all(c.held or c.start >= newest_deleted for c in kept)
