"""Real clips for tests of modules built on the clip store (encoded through the project's own encoder)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import numpy as np

from edge.errors import StorageError
from edge.recording.codec import choose_codec, make_encoder
from edge.recording.store import ClipRef, ClipStore


def write_test_clip(
    store: ClipStore,
    camera: str,
    start: datetime,
    frames: list[np.ndarray],
    fps: float,
    events: Sequence[tuple[str, str]] = (),
) -> ClipRef:
    """Record a real clip (encoded through the project's encoder) from BGR frames, frame i at start + i/fps.
    `events` are (event_id, type) pairs attached at `start`. For tests of modules built on the store."""
    if not frames:
        raise StorageError("write_test_clip needs at least one frame")
    height, width = frames[0].shape[:2]
    codec = choose_codec("auto")
    encoder = make_encoder(codec, width, height, fps, 1.0, "medium")
    writer = store.begin(camera, start, codec, width, height)
    try:
        for i, image in enumerate(frames):
            ts = start + timedelta(seconds=i / fps)
            for packet in encoder.encode(image, ts, float(i) / fps):
                writer.write(packet)
        for event_id, event_type in events:
            writer.add_event(event_id, event_type, start)
    finally:
        encoder.close()
    ref = writer.finish()
    if ref is None:
        raise StorageError("write_test_clip produced no playable frame")
    return ref
