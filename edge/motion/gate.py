"""The motion gate: cheap luma differencing against a running background, inside zones, outside masks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from edge.camera.masks import Polygon, watched_area
from edge.config import MotionConfig
from edge.types import Image, MotionResult


@dataclass
class MotionState:
    """What the gate remembers between frames: the float background and the watched-area mask."""

    background: np.ndarray | None = None
    watch: np.ndarray | None = None  # uint8 mask of pixels that count


def luma(image: Image, width: int) -> np.ndarray:
    """Downscale to `width` (keeping aspect) and take the luma plane; BGR or single-channel input."""
    h, w = image.shape[:2]
    if w != width:
        height = max(1, round(h * width / w))
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    if image.ndim == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return image


def score_motion(
    state: MotionState,
    image: Image,
    config: MotionConfig,
    analysis_width: int,
    zones: Sequence[Polygon] = (),
    masks: Sequence[Polygon] = (),
) -> MotionResult:
    """Compare a frame with the background, update the background, and say whether enough changed.

    The first frame only seeds the background and reports no motion.
    """
    gray: np.ndarray = luma(image, analysis_width)
    if config.blur > 1:
        gray = cv2.GaussianBlur(gray, (config.blur, config.blur), 0)
    if state.watch is None or state.watch.shape != gray.shape:
        state.watch = watched_area(gray.shape[0], gray.shape[1], zones, masks)
        state.background = None
    if state.background is None:
        state.background = gray.astype(np.float32)
        return MotionResult(moving=False, score=0.0)
    diff = cv2.absdiff(gray, cv2.convertScaleAbs(state.background))
    changed = (diff >= config.threshold) & (state.watch > 0)
    watched = int(np.count_nonzero(state.watch))
    score = float(np.count_nonzero(changed)) / watched if watched else 0.0
    cv2.accumulateWeighted(gray, state.background, config.background_alpha)
    moving = score >= config.min_area
    boxes: tuple[tuple[int, int, int, int], ...] = ()
    if moving:
        binary: np.ndarray = changed.astype(np.uint8) * 255
        binary = cv2.dilate(binary, np.ones((3, 3), np.uint8), iterations=2)
        contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        rects = [cv2.boundingRect(c) for c in contours]
        rects.sort(key=lambda b: -b[2] * b[3])
        boxes = tuple((int(x), int(y), int(w), int(h)) for x, y, w, h in rects[:8])
    return MotionResult(moving=moving, score=score, boxes=boxes)


@dataclass
class MotionTracker:
    """Turns per-frame verdicts into motion_start / motion_end transitions (end after a quiet spell)."""

    end_after_s: float
    active: bool = False
    last_motion: float = 0.0

    def update(self, moving: bool, mono: float) -> str | None:
        if moving:
            self.last_motion = mono
            if not self.active:
                self.active = True
                return "motion_start"
            return None
        if self.active and mono - self.last_motion >= self.end_after_s:
            self.active = False
            return "motion_end"
        return None
