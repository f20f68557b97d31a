"""OpenCV backend: a V4L2 device index, an RTSP/HTTP stream, or a video file (optionally looped)."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2

from edge.config import CameraConfig
from edge.errors import SourceError
from edge.types import Image

log = logging.getLogger(__name__)


def describe(url: int | str) -> str:
    """The URL with any user:password@ part hidden, for logs."""
    text = str(url)
    if "://" in text and "@" in text.split("://", 1)[1]:
        scheme, rest = text.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return text


class OpenCVSource:
    def __init__(self, config: CameraConfig) -> None:
        if config.url is None:
            raise SourceError("opencv source needs a url")
        self.url: int | str = config.url
        self.loop = config.loop
        self.is_file = isinstance(self.url, str) and "://" not in self.url and not str(self.url).isdigit()
        # Live devices and streams block in read() until a frame arrives; files decode as fast as asked.
        self.paced = not self.is_file
        self.width = config.width
        self.height = config.height
        self._cap: cv2.VideoCapture | None = None
        self.file_fps: float | None = None

    def open(self) -> None:
        target: int | str = int(self.url) if str(self.url).isdigit() else self.url
        if self.is_file and not Path(str(target)).exists():
            raise SourceError(f"video file not found: {target}")
        cap = cv2.VideoCapture(target)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open {describe(self.url)}")
        if isinstance(target, int):
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.file_fps = fps if fps and fps > 0 else None
        self._cap = cap

    def read(self) -> tuple[Image, Image | None] | None:
        if self._cap is None:
            raise SourceError("source is not open")
        ok, frame = self._cap.read()
        if not ok or frame is None:
            if self.is_file:
                if not self.loop:
                    return None
                self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                ok, frame = self._cap.read()
                if not ok or frame is None:
                    raise SourceError(f"cannot rewind {describe(self.url)}")
            else:
                raise SourceError(f"lost {describe(self.url)}")
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        return frame, None

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
