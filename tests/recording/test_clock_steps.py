"""Trusted time while recording: a wall-clock step ends the clip, frames keep true (anchored) times, footage
recorded while the clock was not trusted is marked and left out of exports unless the owner includes it."""

from __future__ import annotations

import itertools
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

from edge.clock import CaptureClock, FakeClock
from edge.events.bus import Event
from edge.footage.exporter import build_files, covered_range, select_frames
from edge.footage.policy import Decision, Segment
from edge.recording.codec import probe
from edge.recording.recorder import Recording, time_keeper
from edge.recording.store import ClipStore
from edge.types import Frame
from tests.clips import write_test_clip
from tests.recording.helpers import FPS, T0, make_config, video_frames

STEP = -3600.0


def _no_faces(_image: Any) -> list[Any]:
    return []


def test_capture_clock_never_squeezes_and_reanchors_on_a_step() -> None:
    clock = FakeClock(T0)
    capture = CaptureClock(clock, step_s=2.0)
    first = capture.stamp()
    clock.advance(0.04)
    clock.step(0.5)  # small drift (an NTP slew): the anchored time keeps counting monotonic time
    second = capture.stamp()
    assert second.ts - first.ts == timedelta(seconds=0.04) and second.step == 0.0
    clock.advance(0.04)
    clock.step(STEP)
    third = capture.stamp()
    assert third.step == STEP + 0.5
    assert third.ts == clock.now()  # re-anchored to the wall clock, not clamped to previous + 1 us
    clock.advance(0.04)
    assert capture.stamp().ts - third.ts == timedelta(seconds=0.04)


def test_select_frames_compares_every_frame_time_with_the_window() -> None:
    # Unsorted times (a clip recorded by an older version across a step): bisecting picked frames outside.
    times = [T0 + timedelta(seconds=s) for s in (0.0, 0.1, 0.2, -3600.0, -3599.9, 0.25, 0.3, 5.0)]
    picked = select_frames(times, T0 + timedelta(seconds=0.1), T0 + timedelta(seconds=0.3))
    assert picked == [1, 2, 5]
    segment = Segment("front", T0, T0 + timedelta(seconds=1), "c")
    assert covered_range(times, picked, segment) == (times[1], times[6])


def test_clock_stepped_back_mid_recording(shared_data: Path, state_dir: Path) -> None:
    clock = FakeClock(T0)
    events: list[Event] = []
    config = make_config(state_dir, pre_roll_s=1.0, post_roll_s=2.0)
    keeper = time_keeper(config, clock, events.append)
    keeper.check()
    store = ClipStore(state_dir, clock, keeper)
    recording = Recording(config, store, events.append, clock, free_bytes=lambda: 10**12, time_keeper=keeper)
    recorder = recording.recorders["front"]
    images = list(video_frames(shared_data, 100))
    capture = CaptureClock(clock)

    def feed(count: int) -> None:
        for _ in range(count):
            stamp = capture.stamp()
            index = recorder.stats.frames
            recorder.handle_frame(Frame("front", index, stamp.ts, stamp.mono, images[index % len(images)]))
            clock.advance(1 / FPS)

    feed(25)
    recorder.handle_event(Event("motion_start", "front", clock.now()))
    feed(50)  # 2 s of activity, then the wall clock steps back an hour mid-recording
    step_at = clock.now()
    clock.step(STEP)
    feed(50)
    recorder.handle_event(Event("motion_end", "front", clock.now()))
    feed(75)
    recorder.close()

    clips = store.list()
    assert len(clips) == 2, [c.id for c in clips]
    after, before = clips  # listed by start time: the post-step clip carries the earlier (stepped) times
    assert before.start >= T0 and before.end <= step_at + timedelta(seconds=1 / FPS)
    assert after.start >= step_at + timedelta(seconds=STEP) and after.end < T0
    frame_step = timedelta(seconds=1 / FPS)
    for clip in (before, after):
        times = store.frame_times(clip.id)
        assert probe(clip.path)[0] == len(times) == clip.frames
        gaps = {round((b - a) / frame_step, 3) for a, b in itertools.pairwise(times)}
        assert gaps == {1.0}, f"clip {clip.id}: frame times squeezed or out of order: {gaps}"
    # The clip before the step keeps its true times; the one after was recorded behind the high-water mark.
    assert before.trusted and not after.trusted
    statuses = [e.fields.get("status") for e in events if e.type == "system"]
    assert "clock_step" in statuses and "clock_jump" in statuses
    step_event = next(e for e in events if e.fields.get("status") == "clock_step")
    assert abs(step_event.fields["seconds"] - STEP) < 0.1

    # A 1 s warrant inside either clip exports at most 1 s of frames; the untrusted one only when the owner asks.
    window_a = (T0 + timedelta(seconds=1.5), T0 + timedelta(seconds=2.5))
    window_b = (after.start + timedelta(seconds=0.5), after.start + timedelta(seconds=1.5))
    decision = Decision(
        "REQ",
        "release",
        (),
        (Segment("front", *window_a, before.id), Segment("front", *window_b, after.id)),
        ("video",),
    )
    files, notes = build_files(decision, store, _no_faces, state_dir / "work")
    assert [f.clip for f in files] == [before.id]
    assert files[0].frames <= FPS * 1.0 and files[0].end - files[0].start <= timedelta(seconds=1)
    assert any(after.id in n and "not trusted" in n for n in notes)
    files, notes = build_files(decision, store, _no_faces, state_dir / "work2", include_untrusted=True)
    assert sorted(f.clip or "" for f in files) == sorted([before.id, after.id])
    for item in files:
        assert 0 < item.frames <= FPS * 1.0 and item.end - item.start <= timedelta(seconds=1)


def test_clips_list_marks_untrusted_time(shared_data: Path, state_dir: Path, capsys: Any) -> None:
    from edge.cli import main

    clock = FakeClock(T0)
    store = ClipStore(state_dir, clock)
    images = list(video_frames(shared_data, 10))
    trusted = write_test_clip(store, "front", T0, images, FPS)
    untrusted = write_test_clip(store, "front", T0 + timedelta(seconds=5), images, FPS)
    with sqlite3.connect(state_dir / "clips.sqlite3") as db:
        db.execute("UPDATE clips SET trusted = 0 WHERE id = ?", (untrusted.id,))
    assert main(["clips", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "untrusted-time" in next(line for line in lines if line.startswith(untrusted.id))
    assert "untrusted-time" not in next(line for line in lines if line.startswith(trusted.id))
    assert main(["clips", "show", untrusted.id]) == 0
    assert "UNTRUSTED TIME" in capsys.readouterr().out


def test_an_old_index_without_the_time_columns_still_opens(state_dir: Path) -> None:
    with sqlite3.connect(state_dir / "clips.sqlite3") as db:
        db.execute(
            "CREATE TABLE clips (id TEXT PRIMARY KEY, camera TEXT NOT NULL, status TEXT NOT NULL, start_us INTEGER "
            "NOT NULL, end_us INTEGER NOT NULL, path TEXT NOT NULL, codec TEXT NOT NULL, sha256 TEXT, size INTEGER "
            "NOT NULL DEFAULT 0, frames INTEGER NOT NULL DEFAULT 0, truncated INTEGER NOT NULL DEFAULT 0, klass TEXT "
            "NOT NULL DEFAULT 'motion', created_us INTEGER NOT NULL)"
        )
        db.execute(
            "INSERT INTO clips VALUES ('old', 'front', 'complete', 1, 2, 'clips/front/old.mp4', 'h264', '', 0, 1, 0, "
            "'motion', 1)"
        )
    store = ClipStore(state_dir, FakeClock(T0))
    (ref,) = store.list()
    assert ref.id == "old" and ref.trusted and ref.age_from is None
