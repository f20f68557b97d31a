"""A recording daemon in miniature for the SIGKILL test: records the real video in a loop until killed."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from edge.clock import SystemClock
from edge.events.bus import Event, EventBus
from edge.recording.recorder import build
from edge.types import Frame
from tests.recording.helpers import make_config, video_frames


def main(state_dir: Path, shared_data: Path, frames_limit: int) -> None:
    config = make_config(state_dir, pre_roll_s=1.0, post_roll_s=1.0, queue_size=64)
    bus = EventBus()
    recording = build(config, bus, SystemClock())
    bus.subscribe(recording.on_event)
    recording.start()
    images = list(video_frames(shared_data, 100))
    seq = 0
    print("started", flush=True)
    while frames_limit <= 0 or seq < frames_limit:
        image = images[seq % len(images)]
        frame = Frame("front", seq, datetime.now(UTC), time.monotonic(), image)
        if seq == 30:
            bus.publish(Event("motion_start", "front", frame.ts))
        recording.on_frame(frame)
        seq += 1
        time.sleep(0.01)
    recording.recorders["front"].wait_idle(30)
    bus.publish(Event("motion_end", "front", datetime.now(UTC)))
    for _ in range(200):  # post-roll
        recording.on_frame(Frame("front", seq, datetime.now(UTC), time.monotonic(), images[seq % len(images)]))
        seq += 1
        time.sleep(0.01)
    recording.stop()
    print("stopped", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))
