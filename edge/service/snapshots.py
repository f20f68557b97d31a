"""The newest frame of each camera, kept by reference, as JPEG on request (MQTT snapshots)."""

from __future__ import annotations

from edge.errors import StorageError
from edge.recording.codec import encode_jpeg
from edge.types import Frame

SNAPSHOT_JPEG_QUALITY = 85


class LatestFrames:
    """Nothing to start or stop: frames arrive through `on_frame` (already masked) and are only referenced."""

    def __init__(self, default_camera: str) -> None:
        self.default_camera = default_camera
        self._latest: dict[str, Frame] = {}

    def start(self) -> None:
        pass

    def stop(self) -> None:
        self._latest.clear()

    def on_frame(self, frame: Frame) -> None:
        self._latest[frame.camera] = frame  # a reference only; frames are immutable

    def jpeg(self, camera: str | None = None) -> bytes | None:
        """The newest frame of a camera (default: the doorbell's) as JPEG; privacy masks are already applied."""
        frame = self._latest.get(camera or self.default_camera)
        if frame is None:
            return None
        try:
            return encode_jpeg(frame.image, SNAPSHOT_JPEG_QUALITY)
        except StorageError:
            return None

