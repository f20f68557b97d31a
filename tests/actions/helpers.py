"""A real clip with a snapshot for the action tests (encoded through the project's own encoder)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import cv2
import numpy as np

from edge.recording.codec import choose_codec, make_encoder
from edge.recording.store import ClipRef, ClipStore


def clip_with_snapshots(store: ClipStore, camera: str, start: datetime, events: Sequence[tuple[str, str]],
                        frames: int = 10, fps: float = 10.0) -> ClipRef:
    """`frames` grey frames from `start`; each (event_id, type) attached at `start` with a JPEG snapshot."""
    codec = choose_codec("auto")
    encoder = make_encoder(codec, 96, 64, fps, 1.0, "medium")
    writer = store.begin(camera, start, codec, 96, 64)
    try:
        for i in range(frames):
            image = np.full((64, 96, 3), 10 * i, np.uint8)
            for packet in encoder.encode(image, start + timedelta(seconds=i / fps), i / fps):
                writer.write(packet)
        for event_id, event_type in events:
            writer.add_event(event_id, event_type, start)
            ok, jpeg = cv2.imencode(".jpg", np.zeros((64, 96, 3), np.uint8))
            assert ok
            writer.add_snapshot(event_id, start, jpeg.tobytes())
    finally:
        encoder.close()
    ref = writer.finish()
    assert ref is not None
    return ref
