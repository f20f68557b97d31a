"""The Pi path: picamera2's H.264 encoder behind the recorder's encoder interface, masked in pre_callback."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from edge.clock import FakeClock
from edge.events.bus import Event
from edge.recording.codec import decode_frames, probe
from edge.recording.recorder import Recording, picamera2_encoder_factory
from edge.recording.store import ClipStore
from tests.fakes import picamera2 as fake_picamera2
from tests.recording.helpers import (
    CHANNEL_TOLERANCE,
    FPS,
    LUMA_TOLERANCE,
    MASK,
    T0,
    frame_at,
    make_config,
    video_frames,
    worst_inside,
)


def test_pi_encoder_records_masked_clips(shared_data: Path, state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_picamera2.install(monkeypatch)
    camera = fake_picamera2.Picamera2(frames=video_frames(shared_data, 150), fps=FPS)
    config = make_config(state_dir, masks=[MASK], pre_roll_s=1.0, post_roll_s=1.0)
    clock = FakeClock(T0)
    store = ClipStore(state_dir, clock)
    factory = picamera2_encoder_factory(lambda: camera, config.cameras["front"], config.recording, clock)
    recording = Recording(config, store, None, clock, lambda: 10**12, {"front": factory})
    recorder = recording.recorders["front"]
    for i in range(150):
        image = camera.capture_array("main")
        if i > 0:  # the encoder (and its pre_callback) is attached on the first frame the recorder sees
            # What capture_array returns (the analysis path) is masked too: pre_callback painted the buffer.
            assert worst_inside(image, [MASK]) == (0, 0)
        frame = frame_at(i, image)
        if i == 50:
            recorder.handle_event(Event("ring", "front", frame.ts))
        recorder.handle_frame(frame)
    recorder.close()

    assert camera.pre_callback is None and camera.encoders == []  # the adapter cleaned up after itself
    (clip,) = store.list()
    assert clip.mime == "video/mp4" and store.verify(clip.id)
    count, _ = probe(clip.path)
    assert count == clip.frames == len(store.frame_times(clip.id))
    # ring at 2.0 s: from the keyframe at or before 1.0 s to 3.0 s
    assert 0.5 <= (clip.start - T0).total_seconds() <= 1.0
    assert abs((clip.end - T0).total_seconds() - 3.0) < 2 / FPS
    for _, image in decode_frames(clip.path):
        luma, channel = worst_inside(image, [MASK])
        assert luma <= LUMA_TOLERANCE and channel <= CHANNEL_TOLERANCE


def test_pi_encoder_needs_an_open_camera(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_picamera2.install(monkeypatch)
    config = make_config(state_dir)
    factory = picamera2_encoder_factory(lambda: None, config.cameras["front"], config.recording, FakeClock(T0))
    from edge.errors import StorageError
    from edge.recording.codec import choose_codec

    with pytest.raises(StorageError, match="Pi camera is not open"):
        factory(choose_codec("auto"), 640, 360, FPS, 0.5, "medium")


def test_pi_encoder_follows_a_reopened_camera(
    shared_data: Path, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_picamera2.install(monkeypatch)
    frames = video_frames(shared_data, 120)
    cameras = [fake_picamera2.Picamera2(frames=frames, fps=FPS)]
    config = make_config(state_dir, masks=[MASK], pre_roll_s=0.5, post_roll_s=0.5)
    clock = FakeClock(T0)
    store = ClipStore(state_dir, clock)
    factory = picamera2_encoder_factory(lambda: cameras[-1], config.cameras["front"], config.recording, clock)
    recording = Recording(config, store, None, clock, lambda: 10**12, {"front": factory})
    recorder = recording.recorders["front"]
    for i in range(120):
        if i == 60:  # the source lost the camera and opened it again: a new Picamera2 object
            cameras.append(fake_picamera2.Picamera2(frames=frames, fps=FPS))
        frame = frame_at(i, cameras[-1].capture_array("main"))
        if i == 20:
            recorder.handle_event(Event("motion_start", "front", frame.ts))
        if i == 100:
            recorder.handle_event(Event("motion_end", "front", frame.ts))
        recorder.handle_frame(frame)
        clock.advance(1 / FPS)
    recorder.close()
    old, new = cameras
    assert old.pre_callback is None and old.encoders == [] and new.pre_callback is None and new.encoders == []
    (clip,) = store.list()
    times = store.frame_times(clip.id)
    assert all(b > a for a, b in itertools.pairwise(times))
    count, _ = probe(clip.path)
    assert count == clip.frames and clip.frames > 80
    for _, image in decode_frames(clip.path):
        luma, channel = worst_inside(image, [MASK])
        assert luma <= LUMA_TOLERANCE and channel <= CHANNEL_TOLERANCE
