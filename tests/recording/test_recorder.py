"""The recorder over the real video: clip bounds, decodability, hashes, masks, snapshots, threads, disk-full pause."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.clock import FakeClock
from edge.events.bus import Event, EventBus
from edge.recording.codec import decode_frames, probe
from edge.recording.recorder import build
from tests.recording.helpers import (
    CHANNEL_TOLERANCE,
    FPS,
    LUMA_TOLERANCE,
    MASK,
    T0,
    frame_at,
    make_config,
    make_recording,
    video_frames,
    worst_inside,
)


def _drive(recorder, frames, events_at):
    """Feed frames in order; events_at maps a frame index to event types published just before it."""
    published = {}
    for i, image in enumerate(frames):
        frame = frame_at(i, image)
        for kind in events_at.get(i, ()):
            event = Event(kind, "front", frame.ts)
            published[kind] = event
            recorder.handle_event(event)
        recorder.handle_frame(frame)
    recorder.close()
    return published


def test_clip_covers_pre_roll_activity_and_post_roll(shared_data: Path, state_dir: Path) -> None:
    clock = FakeClock(T0)
    _, recorder, store = make_recording(state_dir, clock, pre_roll_s=2.0, post_roll_s=3.0)
    frames = list(video_frames(shared_data))
    assert len(frames) == 275
    # motion 4.0 s .. 6.0 s, a person at 5.0 s: expect [2.0 s, 9.0 s] of video.
    published = _drive(recorder, frames, {100: ["motion_start"], 125: ["person"], 150: ["motion_end"]})

    clips = store.list()
    assert len(clips) == 1
    clip = clips[0]
    expected_start = T0 + timedelta(seconds=2.0)
    expected_end = T0 + timedelta(seconds=9.0)
    assert timedelta(0) <= expected_start - clip.start <= timedelta(seconds=0.5)
    assert timedelta(0) <= clip.end - expected_end <= timedelta(seconds=0.5)
    assert set(clip.events) == {e.id for e in published.values()}
    assert clip.klass == "person" and not clip.truncated and not clip.held

    # The file decodes to its last frame, its length matches the index, and the hash matches.
    count, seconds = probe(clip.path)
    times = store.frame_times(clip.id)
    assert count == clip.frames == len(times)
    assert times[0] == clip.start and times[-1] < clip.end
    assert seconds == pytest.approx((clip.end - clip.start).total_seconds(), abs=0.05)
    assert store.verify(clip.id)
    # The stored frames are the source frames (masked: none here), in order and at their capture times.
    first_index = round((clip.start - T0).total_seconds() * FPS)
    decoded = [img for _, img in decode_frames(clip.path)]
    assert len(decoded) == count
    for k in (0, count // 2, count - 1):
        diff = np.abs(decoded[k].astype(int) - frames[first_index + k].astype(int)).mean()
        assert diff < 6, f"decoded frame {k} does not match source frame {first_index + k} (mean diff {diff:.1f})"
    assert [round((t - T0).total_seconds() * FPS) for t in times] == list(range(first_index, first_index + count))

    snaps = store.snapshots(clip.id)
    assert {s.event_id for s in snaps} == {published["motion_start"].id, published["person"].id}
    assert all(s.path.exists() and s.path.parent == clip.path.parent for s in snaps)


def test_every_stored_frame_and_snapshot_is_black_inside_the_masks(shared_data: Path, state_dir: Path) -> None:
    clock = FakeClock(T0)
    _, recorder, store = make_recording(state_dir, clock, masks=[MASK], quality="low", pre_roll_s=1.0)
    frames = list(video_frames(shared_data, 150))
    # The source content inside the mask is bright enough that a leak would show.
    assert max(worst_inside(f, [MASK])[0] for f in frames) > 100
    _drive(recorder, frames, {40: ["motion_start"], 60: ["face"], 80: ["ring"], 100: ["motion_end"]})

    clips = store.list()
    assert clips
    checked = 0
    for clip in clips:
        for _, image in decode_frames(clip.path):
            luma, channel = worst_inside(image, [MASK])
            assert luma <= LUMA_TOLERANCE and channel <= CHANNEL_TOLERANCE, (clip.id, luma, channel)
            checked += 1
    assert checked == sum(c.frames for c in clips)
    snaps = store.snapshots()
    assert len(snaps) == 3
    for snap in snaps:
        image = cv2.imread(str(snap.path))
        assert image is not None and image.shape == (360, 640, 3)
        luma, channel = worst_inside(image, [MASK])
        assert luma <= LUMA_TOLERANCE and channel <= CHANNEL_TOLERANCE, (snap.path.name, luma, channel)
    # Outside the mask the picture is still there.
    assert float(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).mean()) > 20


def test_activity_extends_the_clip_and_a_quiet_gap_splits_it(shared_data: Path, state_dir: Path) -> None:
    clock = FakeClock(T0)
    _, recorder, store = make_recording(state_dir, clock, pre_roll_s=1.0, post_roll_s=1.0)
    frames = list(video_frames(shared_data))
    # ring at 2 s and 2.8 s: one clip (the second extends the first); a ring at 8 s: a second clip.
    _drive(recorder, frames, {50: ["ring"], 70: ["ring"], 200: ["ring"]})
    clips = store.list()
    assert len(clips) == 2
    first, second = clips
    assert len(first.events) == 2 and len(second.events) == 1
    assert first.end - (T0 + timedelta(seconds=70 / FPS + 1.0)) < timedelta(seconds=0.1)
    assert first.end <= second.start
    assert all(c.klass == "ring" for c in clips)


def test_long_activity_rolls_over_without_a_gap(shared_data: Path, state_dir: Path) -> None:
    clock = FakeClock(T0)
    _, recorder, store = make_recording(state_dir, clock, pre_roll_s=0.0, max_clip_s=10.0)
    frames = list(video_frames(shared_data))
    _drive(recorder, frames, {0: ["motion_start"]})
    clips = store.list()
    assert len(clips) == 2
    assert clips[1].start == clips[0].end or clips[0].end - clips[1].start < timedelta(seconds=0.05)
    assert sum(c.frames for c in clips) == len(frames)
    assert clips[1].events == clips[0].events  # the motion that is still going on belongs to both


def test_threaded_path_with_the_bus(shared_data: Path, state_dir: Path) -> None:
    """The daemon's wiring: build(), start(), bus-subscribed on_event, on_frame from a camera thread."""
    clock = FakeClock(T0)
    bus = EventBus()
    config = make_config(state_dir, pre_roll_s=1.0, post_roll_s=1.0, queue_size=256)
    recording = build(config, bus, clock, free_bytes=lambda: 10**12)
    bus.subscribe(recording.on_event)
    seen: list[Event] = []
    bus.subscribe(seen.append)
    recording.start()
    try:
        recorder = recording.recorders["front"]
        for i, image in enumerate(video_frames(shared_data, 120)):
            frame = frame_at(i, image)
            if i == 50:
                recorder.wait_idle(10)  # the event is published after its frame was analysed
                bus.publish(Event("ring", "front", frame.ts))
                bus.publish(Event("ring", "side_gate", frame.ts))  # another camera's: ignored
            recording.on_frame(frame)
        assert recorder.wait_idle(30)
    finally:
        recording.stop()
    clips = recording.store.list()
    assert len(clips) == 1 and len(clips[0].events) == 1
    assert recording.recorders["front"].stats.dropped == 0
    assert recording.store.verify(clips[0].id)


def test_on_frame_never_blocks_and_counts_drops(shared_data: Path, state_dir: Path) -> None:
    clock = FakeClock(T0)
    _, recorder, _ = make_recording(state_dir, clock, queue_size=2)
    image = next(iter(video_frames(shared_data, 1)))
    # Not started: nothing drains the queue, so every put beyond two drops the oldest at once.
    for i in range(50):
        recorder.on_frame(frame_at(i, image))
    assert recorder.stats.dropped == 48


def test_disk_full_pauses_with_an_event_and_resumes(shared_data: Path, state_dir: Path) -> None:
    clock = FakeClock(T0)
    free = {"bytes": 10**12}
    events: list[Event] = []
    _, recorder, store = make_recording(
        state_dir, clock, events, free=lambda: free["bytes"], pre_roll_s=0.5, post_roll_s=0.5, disk_check_s=1.0
    )
    # Everything is under a legal hold, so retention cannot free space: recording must pause.
    store.hold(window=(T0, T0 + timedelta(hours=1)), until=T0 + timedelta(days=90), reason="case", reference="W-1")
    frames = list(video_frames(shared_data, 200))
    for i, image in enumerate(frames):
        frame = frame_at(i, image)
        if i == 20:
            recorder.handle_event(Event("ring", "front", frame.ts))
        if i == 40:
            free["bytes"] = 1024  # the disk fills up during the clip
        if i == 90:
            recorder.handle_event(Event("ring", "front", frame.ts))  # not recorded: paused
        if i == 120:
            free["bytes"] = 10**12
        if i == 160:
            recorder.handle_event(Event("ring", "front", frame.ts))
        recorder.handle_frame(frame)
        clock.advance(1 / FPS)
    recorder.close()
    statuses = [e.fields["status"] for e in events if e.type == "system"]
    assert statuses == ["recording_paused", "recording_resumed"]
    assert events[0].fields["reason"] == "disk_full"
    clips = store.list()
    assert len(clips) == 2  # the first one closed at the pause, the last one after resuming
    assert clips[0].end <= T0 + timedelta(seconds=42 / FPS)
    assert all(store.verify(c.id) and c.held for c in clips)


def test_recorder_keeps_up_in_real_time(shared_data: Path, state_dir: Path) -> None:
    """Not a timing assertion: a sanity check that nothing is dropped when frames arrive at camera pace."""
    clock = FakeClock(T0)
    recording, recorder, store = make_recording(state_dir, clock, queue_size=64)
    recording.lock.acquire()
    recorder.start()
    try:
        for i, image in enumerate(video_frames(shared_data, 60)):
            if i == 10:
                recorder.on_event(Event("motion_start", "front", frame_at(i, image).ts))
            recorder.on_frame(frame_at(i, image))
            time.sleep(0.005)
        assert recorder.wait_idle(30)
    finally:
        recorder.stop()
        recording.lock.release()
    assert recorder.stats.frames == 60
    assert store.list()[0].frames > 0


def test_activity_still_going_on_is_recorded_when_space_comes_back(shared_data: Path, state_dir: Path) -> None:
    clock = FakeClock(T0)
    free = {"bytes": 10**12}
    events: list[Event] = []
    _, recorder, store = make_recording(
        state_dir, clock, events, free=lambda: free["bytes"], pre_roll_s=0.5, post_roll_s=0.5, disk_check_s=1.0
    )
    store.hold(window=(T0, T0 + timedelta(hours=1)), until=T0 + timedelta(days=90), reason="case", reference="W-1")
    missed = None
    for i, image in enumerate(video_frames(shared_data, 200)):
        frame = frame_at(i, image)
        if i == 20:
            recorder.handle_event(Event("motion_start", "front", frame.ts))
        if i == 40:
            free["bytes"] = 1024
        if i == 60:
            missed = Event("person", "front", frame.ts)
            recorder.handle_event(missed)
        if i == 100:
            free["bytes"] = 10**12
        if i == 150:
            recorder.handle_event(Event("motion_end", "front", frame.ts))
        recorder.handle_frame(frame)
        clock.advance(1 / FPS)
    recorder.close()
    _, second = store.list()
    assert missed is not None and missed.id in second.events and second.klass == "person"
    resumed_at = T0 + timedelta(seconds=100 / FPS)
    assert resumed_at - timedelta(seconds=1.6) <= second.start <= resumed_at + timedelta(seconds=1.1)
    assert abs(second.end - (T0 + timedelta(seconds=150 / FPS + 0.5))) < timedelta(seconds=0.1)


def test_a_size_change_finishes_the_clip_and_restarts_the_encoder(shared_data: Path, state_dir: Path) -> None:
    clock = FakeClock(T0)
    _, recorder, store = make_recording(state_dir, clock, pre_roll_s=0.5)
    for i, image in enumerate(video_frames(shared_data, 80)):
        if i >= 40:  # the camera came back at a lower resolution
            image = cv2.resize(image, (320, 180))
        frame = frame_at(i, image)
        if i in (10, 50):
            recorder.handle_event(Event("motion_start", "front", frame.ts))
        recorder.handle_frame(frame)
    recorder.close()
    first, second = store.list()
    assert first.frames == 40 and probe(first.path)[0] == first.frames
    assert next(decode_frames(second.path))[1].shape == (180, 320, 3)
    assert second.start >= first.end


def test_recording_disabled_records_nothing_but_retention_still_runs(shared_data: Path, state_dir: Path) -> None:
    from edge.recording.store import ClipStore
    from tests.clips import write_test_clip

    clock = FakeClock(T0)
    old = write_test_clip(ClipStore(state_dir, clock), "front", T0, list(video_frames(shared_data, 5)), fps=FPS)
    clock.advance(timedelta(days=8).total_seconds())  # past motion_days (7)
    recording, _, store = make_recording(state_dir, clock, enabled=False)
    assert recording.recorders == {}
    recording.start()
    try:
        for i, image in enumerate(video_frames(shared_data, 10)):
            recording.on_frame(frame_at(i, image))
            recording.on_event(Event("ring", "front", frame_at(i, image).ts))
    finally:
        recording.stop()
    assert store.list() == [] and not old.path.exists()


def test_state_reports_a_plain_recording_flag_for_mqtt(shared_data: Path, state_dir: Path) -> None:
    clock = FakeClock(T0)
    recording, recorder, _ = make_recording(state_dir, clock)
    assert recording.state()["recording"] is False
    frames = list(video_frames(shared_data, 5))
    recorder.handle_frame(frame_at(0, frames[0]))
    recorder.handle_event(Event("ring", "front", frame_at(0, frames[0]).ts))
    recorder.handle_frame(frame_at(1, frames[1]))
    state = recording.state()
    assert state["recording"] is True and state["recorders"]["front"]["frames"] == 2
    recorder.close()


def test_only_one_recording_process_per_state_dir(state_dir: Path) -> None:
    from edge.errors import StorageError

    clock = FakeClock(T0)
    first, _, _ = make_recording(state_dir, clock)
    second, _, _ = make_recording(state_dir, clock)
    first.start()
    try:
        with pytest.raises(StorageError, match="another recorder"):
            second.start()
    finally:
        first.stop()
