"""The camera stage: reads a source, reconnects with back-off, and emits timed, rotated, masked frames."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import cv2

from edge.camera.base import FrameSource
from edge.camera.masks import apply_masks
from edge.clock import CaptureClock, Clock
from edge.config import CameraConfig
from edge.errors import SourceError
from edge.types import Frame, Image

log = logging.getLogger(__name__)

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
    """One thread per camera. `emit(frame)` must not block (it feeds drop-oldest queues)."""

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
        self.beat = beat
        self.report = report  # (what, details) -> a `system` event
        self.stop_event = threading.Event()
        self.ended = threading.Event()
        self.frames = 0
        self.reconnects = 0
        self.thread = threading.Thread(target=self.run, name=f"camera:{name}", daemon=True)
        # Capture times: monotonic time anchored to the wall clock, never clamped or squeezed; a wall-clock
        # step re-anchors (the recorder sees the step in frame.ts - frame.mono and ends its clip there).
        self.capture_clock = CaptureClock(clock, step_s)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)

    def _wait(self, seconds: float) -> bool:
        """Sleep in small steps, still beating; True if asked to stop."""
        deadline = self.clock.monotonic() + seconds
        while not self.stop_event.is_set():
            self.beat()
            left = deadline - self.clock.monotonic()
            if left <= 0:
                return False
            self.stop_event.wait(min(left, 0.5))
        return True

    def run(self) -> None:
        delay = self.config.reconnect_initial_s
        lost = False
        try:
            while not self.stop_event.is_set():
                try:
                    self.source.open()
                except SourceError as exc:
                    log.warning("camera %s: %s; retrying in %.1f s", self.name, exc, delay)
                    if not lost:
                        self.report("camera_lost", {"error": str(exc)})
                        lost = True
                    if self._wait(delay):
                        return
                    delay = min(delay * 2, self.config.reconnect_max_s)
                    continue
                if lost:
                    self.reconnects += 1
                    log.info("camera %s: reconnected", self.name)
                    self.report("camera_restored", {"reconnects": self.reconnects})
                    lost = False
                try:
                    if self._pump():
                        self.ended.set()
                        self.report("camera_ended", {"frames": self.frames})
                        return
                    delay = self.config.reconnect_initial_s
                except SourceError as exc:
                    log.warning("camera %s: %s; reconnecting in %.1f s", self.name, exc, delay)
                    self.report("camera_lost", {"error": str(exc)})
                    lost = True
                    if self._wait(delay):
                        return
                    delay = min(delay * 2, self.config.reconnect_max_s)
                finally:
                    self.source.close()
        finally:
            self.ended.set()

    def _pump(self) -> bool:
        """Read until stopped (False) or the end of a finite source (True); SourceError on failure."""
        period = 1.0 / self.config.fps
        next_due = self.clock.monotonic()
        while not self.stop_event.is_set():
            self.beat()
            if not self.source.paced:
                wait = next_due - self.clock.monotonic()
                if wait > 0 and self.stop_event.wait(wait):
                    return False
                next_due = max(next_due + period, self.clock.monotonic() - period)
            got = self.source.read()
            if got is None:
                return True
            main, lores = got
            stamp = self.capture_clock.stamp()
            if stamp.step:
                log.warning("camera %s: the wall clock stepped %+.3f s; frame times re-anchored", self.name, stamp.step)
            image = prepare(main, self.config)
            analysis = prepare(lores, self.config) if lores is not None else lores_for(image, self.config)
            self.frames += 1
            self.emit(Frame(self.name, self.frames, stamp.ts, stamp.mono, image, analysis))
        return False
