"""A stand-in for picamera2.Picamera2 with the calls our backend makes, returning arrays of the real shapes.

Real picamera2: create_video_configuration(main={"size", "format"}, lores={...}, controls={...}) returns a
configuration dict; configure(); start(); capture_array(stream) gives "RGB888" as HxWx3 (BGR byte order)
and "YUV420" as a (H*3/2)xW plane stack; stop(); close().
"""

from __future__ import annotations

from typing import Any, ClassVar

import cv2
import numpy as np


class Picamera2:
    instances: ClassVar[list[Picamera2]] = []
    fail_after: int | None = None  # capture_array raises after this many main captures

    def __init__(self, camera_num: int = 0) -> None:
        self.config: dict[str, Any] | None = None
        self.started = False
        self.closed = False
        self.captures = 0
        Picamera2.instances.append(self)

    def create_video_configuration(
        self, main: dict | None = None, lores: dict | None = None, controls: dict | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        return {
            "use_case": "video",
            "main": dict(main or {}),
            "lores": dict(lores) if lores else None,
            "controls": dict(controls or {}),
            **kwargs,
        }

    def configure(self, config: dict[str, Any]) -> None:
        if config["lores"] is not None:
            lw, lh = config["lores"]["size"]
            if lw % 2 or lh % 2:
                raise RuntimeError("lores size must be even")
        self.config = config

    def start(self) -> None:
        if self.config is None:
            raise RuntimeError("Camera must be configured before starting")
        self.started = True

    def capture_array(self, name: str = "main") -> np.ndarray:
        if not self.started:
            raise RuntimeError("Camera not started")
        assert self.config is not None
        if name == "main":
            self.captures += 1
            if Picamera2.fail_after is not None and self.captures > Picamera2.fail_after:
                raise RuntimeError("Camera frontend has timed out!")
            w, h = self.config["main"]["size"]
            img = np.zeros((h, w, 3), np.uint8)
            cv2.circle(img, ((self.captures * 7) % w, h // 2), h // 6, (0, 255, 0), -1)
            return img
        if name == "lores":
            w, h = self.config["lores"]["size"]
            bgr = np.full((h, w, 3), 128, np.uint8)
            return cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)
        raise KeyError(name)

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        self.closed = True
