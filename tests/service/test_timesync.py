"""Clock jumps never delete footage or lapse a hold early: the grace period, the persisted high-water mark, and
clips recorded at a 1970 boot aged from when the time became known (docs/time.md)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from edge.clock import CaptureClock, FakeClock
from edge.events.bus import Event
from edge.recording.recorder import Recording, retention_policy, time_keeper
from edge.recording.store import ClipStore
from edge.service.timesync import PERSIST_EVERY_S, STATE_NAME, hold_time, load_state
from edge.types import Frame
from tests.clips import write_test_clip
from tests.recording.helpers import FPS, T0, make_config, video_frames

DAY = 86400.0
FREE = 10**12


def _jump_events(events: list[Event]) -> list[Event]:
    return [e for e in events if e.type == "system" and e.fields.get("status") == "clock_jump"]


@pytest.mark.parametrize("days", [31, 400])
def test_clock_jump_at_start_deletes_nothing_and_keeps_holds_until_the_grace_ends(
    shared_data: Path, state_dir: Path, days: int
) -> None:
    config = make_config(state_dir)  # motion clips are kept 7 days
    clock = FakeClock(T0)
    first = time_keeper(config, clock, lambda _e: None)
    first.check()
    store = ClipStore(state_dir, clock, first)
    images = list(video_frames(shared_data, 10))
    old = [write_test_clip(store, "front", T0 - timedelta(days=2, minutes=i), images, FPS) for i in range(3)]
    held = old[0]
    hold_id = store.hold(clip_ids=[held.id], until=T0 + timedelta(days=90), reason="preservation", reference="W-1")
    first.stop()  # the daemon stops; the device is off (or its clock is set wrong) for `days`
    assert load_state(state_dir) is not None and json.loads((state_dir / STATE_NAME).read_text())["wall"]

    clock.step(days * DAY)
    events: list[Event] = []
    keeper = time_keeper(config, clock, events.append)
    store = ClipStore(state_dir, clock, keeper)
    recording = Recording(config, store, events.append, clock, free_bytes=lambda: FREE, time_keeper=keeper)
    recording.start()  # recovery and the first retention sweep run here
    recording.stop()
    # During the grace period: every clip is still there, the hold is in force, and the owner was told.
    assert sorted(c.id for c in store.list()) == sorted(c.id for c in old)
    assert all(c.path.exists() for c in old)
    assert store.get(held.id).held
    assert store.expire_holds() == []
    assert [h.active for h in store.holds() if h.id == hold_id] == [True]
    assert store.apply_retention(retention_policy(config.retention), FREE).paused
    assert hold_time(state_dir, clock) < T0 + timedelta(days=1)  # the footage desk judges holds there too
    (told,) = _jump_events(events)
    assert told.fields["at_start"] is True and told.fields["seconds"] == pytest.approx(days * DAY, abs=1)

    # After 24 h of stable synchronised time, retention applies its normal rules.
    clock.advance(25 * 3600)
    keeper.check()
    assert any(e.fields.get("status") == "clock_grace_over" for e in events)
    expired_holds = store.expire_holds()
    report = store.apply_retention(retention_policy(config.retention), FREE)
    assert not report.paused
    left = {c.id for c in store.list()}
    if days == 31:
        assert expired_holds == [] and left == {held.id}  # the 90-day hold still protects its clip
    else:
        assert expired_holds == [hold_id] and left == set()  # the hold really ended: normal rules


def test_a_1970_boot_then_sync_deletes_nothing(shared_data: Path, state_dir: Path) -> None:
    config = make_config(state_dir, pre_roll_s=1.0, post_roll_s=1.0)
    clock = FakeClock(T0)
    first = time_keeper(config, clock, lambda _e: None)
    first.check()
    store = ClipStore(state_dir, clock, first)
    images = list(video_frames(shared_data, 60))
    earlier = write_test_clip(store, "front", T0 - timedelta(days=1), images[:10], FPS)
    first.stop()

    # The Pi boots without a real-time clock: 1970, not synchronised; the monotonic clock starts again.
    boot = FakeClock(datetime(1970, 1, 1, 0, 0, 30, tzinfo=UTC), synced=False)
    events: list[Event] = []
    keeper = time_keeper(config, boot, events.append)
    store = ClipStore(state_dir, boot, keeper)
    recording = Recording(config, store, events.append, boot, free_bytes=lambda: FREE, time_keeper=keeper)
    recording.start()
    recorder = recording.recorders["front"]
    capture = CaptureClock(boot)
    for index, image in enumerate(images):
        if index == 20:
            recorder.handle_event(Event("motion_start", "front", boot.now()))
        if index == 35:
            recorder.handle_event(Event("motion_end", "front", boot.now()))
        stamp = capture.stamp()
        recorder.handle_frame(Frame("front", index, stamp.ts, stamp.mono, image))
        boot.advance(1 / FPS)
    recording.stop()
    (booted,) = [c for c in store.list() if c.id != earlier.id]
    assert booted.start.year == 1970 and not booted.trusted

    # NTP answers: the clock steps to the real time and is synchronised. Nothing is deleted: not during the
    # grace period, and not after it either (the 1970 clip ages from when the time became known).
    boot.step((T0 + timedelta(hours=1) - boot.now()).total_seconds())
    boot.synced = True
    keeper.check()
    policy = retention_policy(config.retention)
    assert store.apply_retention(policy, FREE).paused
    boot.advance(25 * 3600)
    keeper.check()
    report = store.apply_retention(policy, FREE)
    assert not report.paused and report.deleted == ()
    assert {c.id for c in store.list()} == {earlier.id, booted.id}
    settled = store.get(booted.id)
    assert settled.age_from is not None and settled.age_from > T0
    assert len(_jump_events(events)) == 2  # the boot (back) and the sync (forward)
    # Aged from the sync: gone after its class's days, like any clip.
    boot.advance(config.retention.motion_days * DAY)
    keeper.check()
    store.apply_retention(policy, FREE)
    assert booted.id not in {c.id for c in store.list()}


def test_jump_in_a_running_daemon_and_a_damaged_state_file(state_dir: Path) -> None:
    config = make_config(state_dir)
    clock = FakeClock(T0)
    events: list[Event] = []
    keeper = time_keeper(config, clock, events.append)
    assert not keeper.check().in_grace
    clock.advance(60)
    clock.step(-240)  # under clock_jump_s (300): no grace, but frames behind the high-water mark are untrusted
    status = keeper.check()
    assert not status.in_grace and not status.trusted
    assert not keeper.frame_trusted(clock.now())
    clock.step(-3600)
    status = keeper.check()
    assert status.in_grace and status.jump_s == pytest.approx(-3600)
    assert _jump_events(events)[0].fields["at_start"] is False
    keeper.stop()

    (state_dir / STATE_NAME).write_text("{not json")
    restarted = time_keeper(config, clock, events.append)
    assert restarted.check().in_grace  # a damaged mark is treated as a jump: nothing is deleted
    assert load_state(state_dir) is not None and not load_state(state_dir).unreadable  # type: ignore[union-attr]


def test_an_unsynchronised_device_deletes_again_after_the_grace_period(
    state_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Offline (`clock_trust: sync`, never synchronised): one jump must not stop retention for ever, or the disk
    fills and recording pauses for good. The grace period ends after clock_grace_hours of stable time."""
    config = make_config(state_dir)
    clock = FakeClock(T0, synced=False)
    first = time_keeper(config, clock, lambda _e: None)
    first.check()
    store = ClipStore(state_dir, clock, first)
    images = [np.full((36, 64, 3), 20 * i, np.uint8) for i in range(5)]
    clip = write_test_clip(store, "front", T0 - timedelta(hours=1), images, FPS)
    first.stop()

    clock.advance(600)  # a 10-minute power cut: the restart counts as a jump (docs/time.md)
    events: list[Event] = []
    keeper = time_keeper(config, clock, events.append)
    store = ClipStore(state_dir, clock, keeper)
    policy = retention_policy(config.retention)
    no_room = 0  # the disk is full: low-disk retention must delete, once it may
    assert keeper.check().in_grace and store.apply_retention(policy, no_room).paused
    for _ in range(23 * 6):  # 23 h of checks, still unsynchronised
        clock.advance(600)
        keeper.check()
    assert keeper.check().in_grace and store.apply_retention(policy, no_room).paused
    clock.advance(1800)
    clock.step(400)  # another jump 23.5 h in: the count starts again
    assert keeper.check().in_grace
    assert keeper.state.grace_left_s == pytest.approx(config.retention.clock_grace_hours * 3600)
    for _ in range(24 * 6):
        clock.advance(600)
        keeper.check()
    caplog.set_level(logging.WARNING, logger="edge.service.timesync")
    clock.advance(600)
    status = keeper.check()
    assert not status.in_grace and not status.synced
    (over,) = [e for e in events if e.fields.get("status") == "clock_grace_over"]
    assert over.fields["synchronised"] is False
    assert "resume on an unsynchronised clock" in caplog.text
    report = store.apply_retention(policy, no_room)
    assert not report.paused and [d.clip_id for d in report.deleted] == [clip.id]
    assert not clip.path.exists()
    assert json.loads((state_dir / STATE_NAME).read_text())["grace_left_s"] == 0  # a restart stays out of grace


def test_an_unwritable_time_file_is_said_once(state_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A read-only or full state dir: `cannot write time.json` once at ERROR, not every 10 s; DEBUG until a
    write works again, which is said too."""
    config = make_config(state_dir)
    clock = FakeClock(T0)
    keeper = time_keeper(config, clock, lambda _e: None)
    keeper.check()
    blocker = state_dir / (STATE_NAME + ".tmp")
    blocker.mkdir()  # the temp file cannot be created: a real OSError (EISDIR), even as root
    caplog.set_level(logging.DEBUG, logger="edge.service.timesync")
    for _ in range(5):
        clock.advance(PERSIST_EVERY_S)
        keeper.check()
    failures = [r for r in caplog.records if "cannot write time.json" in r.getMessage()]
    assert [r.levelno for r in failures] == [logging.ERROR] + [logging.DEBUG] * 4
    blocker.rmdir()
    clock.advance(PERSIST_EVERY_S)
    keeper.check()
    assert "time.json is written again" in caplog.text
    assert load_state(state_dir).wall == clock.now()  # type: ignore[union-attr]
    caplog.clear()
    blocker.mkdir()
    clock.advance(PERSIST_EVERY_S)
    keeper.check()
    assert [r.levelno for r in caplog.records if "cannot write" in r.getMessage()] == [logging.ERROR]
