"""picamera2 backend (Raspberry Pi): a main stream for recording and a lores stream for analysis.

picamera2 comes from apt (python3-picamera2) and is imported only when this backend is opened, so
nothing breaks where it is not installed.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

import cv2

from edge.config import CameraConfig
from edge.errors import SourceError
from edge.types import Image

log = logging.getLogger(__name__)


class Picamera2Source:
    paced = True  # capture_array blocks until the sensor delivers the next frame

    def __init__(self, config: CameraConfig) -> None:
        self.config = config
        self.camera: Any = None  # the Picamera2 object; the recorder may attach its H.264 encoder to it

    def open(self) -> None:
        try:
            module = importlib.import_module("picamera2")
        except ImportError as exc:
            raise SourceError(
                "source 'picamera2' needs the picamera2 package: on Raspberry Pi OS `sudo apt install "
                "python3-picamera2` and create the venv with --system-site-packages"
            ) from exc
        c = self.config
        lores_h = max(2, round(c.height * c.analysis_width / c.width) // 2 * 2)
        try:
            camera = module.Picamera2()
            video_config = camera.create_video_configuration(
                main={"size": (c.width, c.height), "format": "RGB888"},
                lores={"size": (c.analysis_width, lores_h), "format": "YUV420"},
                controls={"FrameRate": c.fps},
            )
            camera.configure(video_config)
            camera.start()
        except Exception as exc:  # libcamera raises a variety of errors when the sensor is missing
            raise SourceError(f"cannot start the Pi camera: {exc}") from exc
        self.camera = camera

    def read(self) -> tuple[Image, Image | None] | None:
        if self.camera is None:
            raise SourceError("source is not open")
        try:
            # picamera2's "RGB888" is BGR in memory order, which is what OpenCV expects.
            main = self.camera.capture_array("main")
            yuv = self.camera.capture_array("lores")
        except Exception as exc:
            raise SourceError(f"Pi camera stopped delivering frames: {exc}") from exc
        lores = cv2.cvtColor(yuv, cv2.COLOR_YUV2BGR_I420)
        return main, lores

    def close(self) -> None:
        if self.camera is not None:
            try:
                self.camera.stop()
                self.camera.close()
            finally:
                self.camera = None
