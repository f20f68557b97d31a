"""An export streams a clip frame by frame: decoding, blurring and re-encoding never hold the clip in memory."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from edge.clock import FakeClock
from edge.footage.exporter import build_files
from edge.footage.policy import Decision, Segment
from edge.footage.redact import Redactor
from edge.recording import codec as encoder
from edge.recording.codec import decode_frames
from edge.recording.store import ClipStore
from tests.clips import write_test_clip

from .factory import NOW

W, H, FPS, N = 320, 240, 10.0, 150  # 150 frames of 230 kB: 35 MB if a clip were decoded whole


def _frames() -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    base = rng.integers(0, 255, (H // 8, W // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    return [np.roll(base, 2 * i, axis=1) for i in range(N)]


def test_a_long_clip_is_exported_without_holding_its_frames(tmp_path: Path) -> None:
    store = ClipStore(tmp_path / "state", FakeClock(NOW))
    start = NOW - timedelta(hours=1)
    clip = write_test_clip(store, "front_door", start, _frames(), FPS)
    seen: list[int] = []

    def find_faces(image: np.ndarray) -> list[tuple[int, int, int, int]]:
        seen.append(int(image[0, 0, 0]))
        return [(10, 10, 40, 40)]

    segment = Segment("front_door", start + timedelta(seconds=2), start + timedelta(seconds=14), clip.id)
    decision = Decision("r-1", "release", (), (segment,), ("video", "snapshots"))
    tracemalloc.start()
    try:
        files, notes = build_files(decision, store, find_faces, tmp_path / "work")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert notes == []
    video, snapshot = files
    assert video.kind == "video" and video.frames == 120 and snapshot.kind == "snapshots"
    assert len(seen) == 120  # 120 video frames, each redacted once as it streams by; the snapshot is the first
    assert video.data is None and video.path is not None  # on disk, streamed into the bundle, never in memory
    assert sum(1 for _ in decode_frames(video.path)) == 120
    assert peak < 8 * 2**20, f"export peaked at {peak / 2**20:.1f} MB of Python/numpy allocations"


def test_the_carry_window_holds_no_decoded_frame(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 15: the redaction carry window (0.8 s each way: 17 frames seen for one emitted at 10 fps) held the
    decoded BGR frames, 25 MB at 1280x720. The export now decodes the clip twice, finding faces in the first pass
    and blurring in the second, so only boxes are held. The decoder's frames are made numpy copies here so that
    tracemalloc counts every frame anything keeps."""
    w, h, n = 640, 480, 40
    frame_bytes = w * h * 3
    rng = np.random.default_rng(7)
    base = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    store = ClipStore(tmp_path / "state", FakeClock(NOW))
    start = NOW - timedelta(hours=1)
    clip = write_test_clip(store, "front_door", start, [np.roll(base, 4 * i, axis=1) for i in range(n)], FPS)
    real_decode = encoder.decode_frames

    def decode_into_numpy(path: Path) -> Iterator[tuple[float, np.ndarray]]:
        for ts, image in real_decode(path):
            yield ts, np.array(image)  # a traced allocation, where PyAV's buffers are not

    monkeypatch.setattr(encoder, "decode_frames", decode_into_numpy)
    segment = Segment("front_door", start, start + timedelta(seconds=n / FPS), clip.id)
    decision = Decision("r-1", "release", (), (segment,), ("video",))
    redactor = Redactor(lambda image: [(100, 100, 60, 60)], carry_seconds=0.8)
    tracemalloc.start()
    try:
        files, _ = build_files(decision, store, redactor, tmp_path / "work")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert files[0].frames == n
    # in flight: the frame being decoded, the frame emitted and its redacted copy, the previous one (a window of
    # held frames would add 8 more: over 10 frames in all)
    assert peak < 6 * frame_bytes, f"export held {peak / frame_bytes:.1f} frames' worth of numpy allocations"
