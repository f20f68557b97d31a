"""The motion stage: scores each analysis frame, emits motion_start/motion_end, forwards moving frames."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from edge.clock import Clock
from edge.config import CameraConfig, MotionConfig
from edge.events.bus import Event
from edge.motion.gate import MotionState, MotionTracker, score_motion
from edge.queues import DropOldestQueue
from edge.stage import StageLoop
from edge.types import Frame, MotionFrame

log = logging.getLogger(__name__)


class MotionStage:
    def __init__(
        self,
        camera: str,
        camera_config: CameraConfig,
        config: MotionConfig,
        queue: DropOldestQueue[Frame],
        publish: Callable[[Event], object],
        forward: Callable[[MotionFrame], None],
        clock: Clock,
        beat: Callable[[], None],
    ) -> None:
        self.camera = camera
        self.camera_config = camera_config
        self.config = config
        self.queue = queue
        self.publish = publish
        self.forward = forward
        self.clock = clock
        self.state = MotionState()
        self.tracker = MotionTracker(config.end_after_s)
        self.peak_score = 0.0
        self.frames_in = 0
        self.frames_moving = 0
        # Ends once the camera side closed the queue and every frame in it was scored.
        self.loop = StageLoop(f"motion:{camera}", queue.get, self._step, beat, on_end=self._close_period)

    @property
    def active(self) -> bool:
        return self.tracker.active

    def start(self) -> None:
        self.loop.start()

    def stop(self) -> None:
        self.queue.close()

    def join(self, timeout: float) -> None:
        self.loop.join(timeout)

    def _step(self, frame: Frame | None) -> None:
        if frame is None:
            self._transition(False, self.clock.monotonic(), None)
            return
        self.frames_in += 1
        result = score_motion(
            self.state,
            frame.analysis,
            self.config,
            self.camera_config.analysis_width,
            self.camera_config.motion_zones,
            self.camera_config.privacy_masks,
        )
        self._transition(result.moving, frame.mono, frame, result.score)
        if result.moving:
            self.frames_moving += 1
            self.forward(MotionFrame(frame, result))

    def _close_period(self) -> None:
        if self.tracker.active:  # close an open motion period on shutdown so consumers see its end
            self.tracker.active = False
            self._emit("motion_end", self.clock.now(), {"peak_score": round(self.peak_score, 4), "reason": "shutdown"})

    def _transition(self, moving: bool, mono: float, frame: Frame | None, score: float = 0.0) -> None:
        if moving:
            self.peak_score = max(self.peak_score, score)
        change = self.tracker.update(moving, mono)
        ts = frame.ts if frame is not None else self.clock.now()
        if change == "motion_start":
            self.peak_score = score
            self._emit("motion_start", ts, {"score": round(score, 4)})
        elif change == "motion_end":
            self._emit("motion_end", ts, {"peak_score": round(self.peak_score, 4)})

    def _emit(self, kind: str, ts: datetime, fields: dict[str, object]) -> None:
        self.publish(Event(kind, self.camera, ts, fields))
