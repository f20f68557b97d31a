"""Demo backend: a generated front-door scene in which a visitor walks up, pauses and leaves, on a loop.

The visitor is Grace Hopper's portrait that ships inside matplotlib (mpl-data/sample_data); nothing is
downloaded. The scene is a pure function of the frame index, so runs are reproducible.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np

from edge.config import CameraConfig
from edge.errors import SourceError
from edge.types import Image

# Timeline of one loop, in seconds.
EMPTY_BEFORE = 3.0
WALK_UP = 5.0
PAUSE = 6.0
LEAVE = 4.0
EMPTY_AFTER = 6.0
LOOP_S = EMPTY_BEFORE + WALK_UP + PAUSE + LEAVE + EMPTY_AFTER


def visitor_photo_path() -> Path:
    # Locate the package without importing it: importing matplotlib costs ~45 MB of RSS on a Pi.
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or spec.origin is None:
        raise SourceError("demo source: matplotlib is not installed (it ships the visitor photo)")
    path = Path(spec.origin).parent / "mpl-data" / "sample_data" / "grace_hopper.jpg"
    if not path.exists():
        raise SourceError(f"demo source: visitor photo missing from matplotlib ({path})")
    return path


@dataclass(frozen=True)
class Pose:
    """Where the visitor is: centre x (0..1 of width), height of the figure (0..1 of frame height)."""

    visible: bool
    cx: float = 0.5
    scale: float = 0.0


def pose_at(t: float) -> Pose:
    """The visitor's pose at time t seconds into the loop."""
    t = t % LOOP_S
    if t < EMPTY_BEFORE:
        return Pose(False)
    t -= EMPTY_BEFORE
    if t < WALK_UP:  # from the footpath at the right, growing as they approach the door
        k = t / WALK_UP
        return Pose(True, cx=0.95 - 0.45 * k, scale=0.35 + 0.5 * k)
    t -= WALK_UP
    if t < PAUSE:  # waiting at the door, swaying a little
        return Pose(True, cx=0.5 + 0.01 * np.sin(t * 2.0), scale=0.85)
    t -= PAUSE
    if t < LEAVE:  # turning away to the left, shrinking
        k = t / LEAVE
        return Pose(True, cx=0.5 - 0.55 * k, scale=0.85 - 0.45 * k)
    return Pose(False)


class DemoSource:
    paced = False

    def __init__(self, config: CameraConfig) -> None:
        self.width = config.width
        self.height = config.height
        self.fps = config.fps
        self.index = 0
        self._open = False
        self._rng = np.random.default_rng(7)

    @cached_property
    def background(self) -> Image:
        return draw_porch(self.width, self.height)

    @cached_property
    def sprite(self) -> tuple[Image, np.ndarray]:
        photo = cv2.imread(str(visitor_photo_path()), cv2.IMREAD_COLOR)
        if photo is None:
            raise SourceError("demo source: cannot decode the visitor photo")
        h, w = photo.shape[:2]
        alpha = np.zeros((h, w), np.float32)
        # Head and shoulders: an ellipse for the head over a wide rounded base for the body.
        cv2.ellipse(alpha, (w // 2, int(h * 0.42)), (int(w * 0.30), int(h * 0.40)), 0, 0, 360, 1.0, -1)
        cv2.ellipse(alpha, (w // 2, h), (int(w * 0.50), int(h * 0.38)), 0, 180, 360, 1.0, -1)
        alpha = cv2.GaussianBlur(alpha, (31, 31), 0)
        return photo, alpha

    def open(self) -> None:
        _ = self.background, self.sprite
        self._open = True

    def read(self) -> tuple[Image, Image | None] | None:
        if not self._open:
            raise SourceError("source is not open")
        frame = self.render(self.index / self.fps)
        self.index += 1
        return frame, None

    def render(self, t: float) -> Image:
        frame = self.background.copy()
        pose = pose_at(t)
        if pose.visible:
            photo, alpha = self.sprite
            target_h = max(8, int(self.height * pose.scale))
            target_w = max(8, int(photo.shape[1] * target_h / photo.shape[0]))
            sprite = cv2.resize(photo, (target_w, target_h), interpolation=cv2.INTER_AREA)
            a = cv2.resize(alpha, (target_w, target_h), interpolation=cv2.INTER_AREA)
            x0 = int(pose.cx * self.width - target_w / 2)
            y0 = self.height - target_h
            _blend(frame, sprite, a, x0, y0)
        # Sensor noise, std 2 (uniform on -3..3), added with saturation. Drawn as int8 straight away: a
        # float64 normal() frame and its float32 sums cost ~18 MB of short-lived memory per frame.
        noise = self._rng.integers(-3, 4, size=frame.shape, dtype=np.int8)
        return cv2.add(frame, noise, dtype=cv2.CV_8U)

    def close(self) -> None:
        self._open = False


def _blend(frame: Image, sprite: Image, alpha: np.ndarray, x0: int, y0: int) -> None:
    h, w = frame.shape[:2]
    sx0, sy0 = max(0, -x0), max(0, -y0)
    x1, y1 = min(w, x0 + sprite.shape[1]), min(h, y0 + sprite.shape[0])
    if x1 <= max(0, x0) or y1 <= max(0, y0):
        return
    region = frame[max(0, y0) : y1, max(0, x0) : x1]
    rh, rw = region.shape[:2]
    sp = np.ascontiguousarray(sprite[sy0 : sy0 + rh, sx0 : sx0 + rw])
    al = np.ascontiguousarray(alpha[sy0 : sy0 + rh, sx0 : sx0 + rw].reshape(rh, rw))
    region[:] = cv2.blendLinear(sp, np.ascontiguousarray(region), al, 1.0 - al)


def draw_porch(width: int, height: int) -> Image:
    """A simple porch: wall, door with frame and handle, a window, a step, a potted plant."""
    img = np.zeros((height, width, 3), np.uint8)
    img[:] = (150, 170, 190)  # warm wall (BGR)
    s = width / 640.0
    door = (int(250 * s), int(60 * height / 480), int(390 * s), height - int(40 * height / 480))
    cv2.rectangle(img, (door[0] - int(12 * s), door[1] - 12), (door[2] + int(12 * s), door[3]), (235, 235, 235), -1)
    cv2.rectangle(img, door[:2], door[2:], (40, 60, 120), -1)
    for i in range(3):  # panels
        y = door[1] + 20 + i * (door[3] - door[1] - 40) // 3
        cv2.rectangle(img, (door[0] + 15, y), (door[2] - 15, y + (door[3] - door[1] - 80) // 3), (35, 52, 105), 2)
    cv2.circle(img, (door[2] - int(20 * s), (door[1] + door[3]) // 2), max(3, int(6 * s)), (60, 190, 220), -1)
    cv2.rectangle(
        img, (int(60 * s), int(110 * height / 480)), (int(180 * s), int(230 * height / 480)), (200, 160, 120), -1
    )  # window
    cv2.line(img, (int(120 * s), int(110 * height / 480)), (int(120 * s), int(230 * height / 480)), (240, 240, 240), 3)
    cv2.rectangle(img, (0, height - int(40 * height / 480)), (width, height), (120, 120, 125), -1)  # step
    cv2.rectangle(
        img,
        (int(470 * s), height - int(110 * height / 480)),
        (int(530 * s), height - int(40 * height / 480)),
        (40, 80, 160),
        -1,
    )  # pot
    cv2.circle(img, (int(500 * s), height - int(130 * height / 480)), int(40 * s), (50, 130, 50), -1)  # plant
    cv2.putText(
        img,
        "42",
        (door[0] + int(50 * s), door[1] - 20 if door[1] > 30 else door[1] + 30),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.8 * s,
        (30, 30, 30),
        2,
    )
    return img
