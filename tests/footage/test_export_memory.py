"""An export streams a clip frame by frame: decoding, blurring and re-encoding never hold the clip in memory."""

from __future__ import annotations

import tracemalloc
from datetime import timedelta
from pathlib import Path

import numpy as np

from edge.clock import FakeClock
from edge.footage.exporter import build_files
from edge.footage.policy import Decision, Segment
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
