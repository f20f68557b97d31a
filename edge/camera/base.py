"""The camera-source interface every backend implements, and the registry that picks one from config."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from edge.config import CameraConfig
from edge.types import Image


class FrameSource(Protocol):
    """A camera backend. `read()` returns (main, lores-or-None), or None at the end of a finite file.

    Backends raise SourceError when the device cannot be opened or stops delivering; the camera
    stage reconnects with back-off. `paced` says whether read() already waits for the next frame
    (live cameras) or returns as fast as it can decode (files, the demo), so the stage paces those.
    """

    paced: bool

    def open(self) -> None: ...
    def read(self) -> tuple[Image, Image | None] | None: ...
    def close(self) -> None: ...


SourceFactory = Callable[[str, CameraConfig], FrameSource]


def _opencv(name: str, config: CameraConfig) -> FrameSource:
    from edge.camera.opencv import OpenCVSource

    return OpenCVSource(config)


def _demo(name: str, config: CameraConfig) -> FrameSource:
    from edge.camera.demo import DemoSource

    return DemoSource(config)


def _picamera2(name: str, config: CameraConfig) -> FrameSource:
    from edge.camera.picamera2 import Picamera2Source

    return Picamera2Source(config)


REGISTRY: dict[str, SourceFactory] = {"opencv": _opencv, "demo": _demo, "picamera2": _picamera2}


def make_source(name: str, config: CameraConfig) -> FrameSource:
    return REGISTRY[config.source](name, config)
