"""Shared helpers for the recording tests: the real video, a recorder driven frame by frame, mask checks."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.camera.masks import polygon_mask
from edge.clock import FakeClock
from edge.config import Config
from edge.recording.recorder import Recorder, Recording
from edge.recording.store import ClipStore
from edge.types import Frame

VIDEO = "video/face_recognition_short_hamilton_clip.mp4"  # 275 frames, 640x360
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
FPS = 25.0
# A neighbour's window, as a config polygon (normalised x, y).
MASK = [[0.1, 0.1], [0.5, 0.15], [0.45, 0.7], [0.12, 0.6]]
# Codec tolerance inside masks (8-px storage margin): BT.601 luma <= 6 and every BGR channel <= 16 of 255.
LUMA_TOLERANCE = 6
CHANNEL_TOLERANCE = 16


def video_frames(shared_data: Path, limit: int | None = None) -> Iterator[np.ndarray]:
    cap = cv2.VideoCapture(str(shared_data / VIDEO))
    assert cap.isOpened(), f"cannot open {shared_data / VIDEO}"
    count = 0
    try:
        while limit is None or count < limit:
            ok, image = cap.read()
            if not ok:
                break
            count += 1
            yield image
    finally:
        cap.release()


def make_config(state_dir: Path, masks: list[list[list[float]]] | None = None, **recording: Any) -> Config:
    return Config.model_validate(
        {
            "cameras": {"front": {"width": 640, "height": 360, "fps": FPS, "privacy_masks": masks or []}},
            "storage": {"state_dir": str(state_dir)},
            "recording": recording,
        }
    )


def make_recording(
    state_dir: Path, clock: FakeClock, events: list[Any] | None = None, free: Any = None, **kwargs: Any
) -> tuple[Recording, Recorder | None, ClipStore]:
    config = make_config(state_dir, **kwargs)
    store = ClipStore(state_dir, clock)
    publish = events.append if events is not None else None
    recording = Recording(config, store, publish, clock, free_bytes=free or (lambda: 10**12))
    return recording, recording.recorders.get("front"), store


def frame_at(index: int, image: np.ndarray, start: datetime = T0, fps: float = FPS) -> Frame:
    return Frame("front", index, start + timedelta(seconds=index / fps), index / fps, image)


def worst_inside(image: np.ndarray, polygons: list[list[list[float]]]) -> tuple[int, int]:
    """(max luma, max channel) of the pixels inside the polygons (the exact config polygons, no margin)."""
    inside = polygon_mask(polygons, image.shape[0], image.shape[1]) > 0
    luma = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return int(luma[inside].max()), int(image[inside].max())
