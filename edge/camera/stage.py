"""The camera stage: reads a source, reconnects with back-off, and emits timed, rotated, masked frames."""

from __future__ import annotations

import logging
from collections.abc import Callable

import cv2

from edge.camera.base import FrameSource
from edge.camera.masks import apply_masks
from edge.clock import CaptureClock, Clock
from edge.config import CameraConfig
from edge.errors import SourceError
from edge.queues import Closed
from edge.stage import StageLoop
from edge.types import Frame, Image

log = logging.getLogger(__name__)

Picture = tuple[Image, Image | None]  # (main, lores) as a source reads them

_ROTATE = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}


def prepare(image: Image, config: CameraConfig) -> Image:
    """Rotation, then privacy masks: nothing downstream (analysis, recording, snapshots) sees masked areas."""
    if config.rotate:
        image = cv2.rotate(image, _ROTATE[config.rotate])
    return apply_masks(image, config.privacy_masks)


def lores_for(image: Image, config: CameraConfig) -> Image:
    h, w = image.shape[:2]
    if w <= config.analysis_width:
        return image
    height = max(1, round(h * config.analysis_width / w))
    return cv2.resize(image, (config.analysis_width, height), interpolation=cv2.INTER_AREA)


class CameraStage:
    """One thread per camera. `emit(frame)` must not block (it feeds drop-oldest queues).

    The stage loop pulls the next picture from `_next`, which also opens the source and reconnects it with
    back-off (reporting `camera_lost` / `camera_restored`); the end of a finite source ends the stage."""

    def __init__(
        self,
        name: str,
        config: CameraConfig,
        source: FrameSource,
        emit: Callable[[Frame], None],
        clock: Clock,
        beat: Callable[[], None],
        report: Callable[[str, dict[str, object]], None],
        step_s: float = 2.0,
    ) -> None:
        self.name = name
        self.config = config
        self.source = source
        self.emit = emit
        self.clock = clock
        self.report = report  # (what, details) -> a `system` event
        self.frames = 0
        self.reconnects = 0
        self._open = False
        self._lost = False
        self._delay = config.reconnect_initial_s
        self._retry_at: float | None = None  # monotonic time of the next attempt to open the source
        self._next_due = 0.0
        self.loop: StageLoop[Picture] = StageLoop(f"camera:{name}", self._next, self._step, beat, on_end=self._close)
        self.thread = self.loop.thread
        self.stop_event = self.loop.stop_event
        self.ended = self.loop.ended
        # Capture times: monotonic time anchored to the wall clock, never clamped or squeezed; a wall-clock
        # step re-anchors (the recorder sees the step in frame.ts - frame.mono and ends its clip there).
        self.capture_clock = CaptureClock(clock, step_s)

    def start(self) -> None:
        self.loop.start()

    def stop(self) -> None:
        self.loop.stop()

    def join(self, timeout: float) -> None:
        self.loop.join(timeout)

    def _next(self, timeout: float) -> Picture | None:
        """The next (main, lores) picture; None while connecting, backing off or waiting for the frame's turn;
        Closed at the end of a finite source."""
        if not self._open and not self._connect(timeout):
            return None
        if not self.source.paced:
            wait = self._next_due - self.clock.monotonic()
            if wait > 0:
                self.stop_event.wait(min(wait, timeout))
                return None
            period = 1.0 / self.config.fps
            self._next_due = max(self._next_due + period, self.clock.monotonic() - period)
        try:
            got = self.source.read()
        except SourceError as exc:
            log.warning("camera %s: %s; reconnecting in %.1f s", self.name, exc, self._delay)
            self.report("camera_lost", {"error": str(exc)})
            self._lost = True
            self._close()
            self._back_off()
            return None
        if got is None:
            self.report("camera_ended", {"frames": self.frames})
            raise Closed
        return got

    def _connect(self, timeout: float) -> bool:
        """Try to open the source when its back-off has passed; True once it is open."""
        if self._retry_at is not None:
            left = self._retry_at - self.clock.monotonic()
            if left > 0:
                self.stop_event.wait(min(left, timeout))
                return False
        try:
            self.source.open()
        except SourceError as exc:
            log.warning("camera %s: %s; retrying in %.1f s", self.name, exc, self._delay)
            if not self._lost:
                self.report("camera_lost", {"error": str(exc)})
                self._lost = True
            self._back_off()
            return False
        self._open = True
        self._retry_at = None
        self._next_due = self.clock.monotonic()
        if self._lost:
            self.reconnects += 1
            log.info("camera %s: reconnected", self.name)
            self.report("camera_restored", {"reconnects": self.reconnects})
            self._lost = False
        return True

    def _back_off(self) -> None:
        self._retry_at = self.clock.monotonic() + self._delay
        self._delay = min(self._delay * 2, self.config.reconnect_max_s)

    def _close(self) -> None:
        if self._open:
            self._open = False
            self.source.close()

    def _step(self, picture: Picture | None) -> None:
        if picture is None:
            return
        main, lores = picture
        stamp = self.capture_clock.stamp()
        if stamp.step:
            log.warning("camera %s: the wall clock stepped %+.3f s; frame times re-anchored", self.name, stamp.step)
        image = prepare(main, self.config)
        analysis = prepare(lores, self.config) if lores is not None else lores_for(image, self.config)
        self.frames += 1
        self.emit(Frame(self.name, self.frames, stamp.ts, stamp.mono, image, analysis))
