"""picamera2's hardware H.264 encoder as a recording encoder (Raspberry Pi OS only; picamera2 imported lazily)."""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from edge.errors import StorageError
from edge.recording.codec import CodecChoice, EncodedFrame
from edge.types import Image

log = logging.getLogger(__name__)

PICAMERA2_H264 = CodecChoice("h264", "picamera2-h264", "h264", "mp4", ".mp4", "video/mp4")
_PI_BITS_PER_PIXEL = {"low": 0.05, "medium": 0.1, "high": 0.2}  # per pixel per frame


class Picamera2Encoder:
    """picamera2's H264Encoder on the camera's main stream (the Pi's hardware encoder).

    The privacy mask is painted into the main-stream buffer by the camera's `pre_callback`, which picamera2
    runs before it hands a request to any encoder (or to capture_array), so nothing unmasked is encoded.
    Encoded frames arrive on picamera2's thread through an `Output`; `encode()` hands over those that have
    arrived. The recorder's ring stands in for CircularOutput2 (it needs each frame, and its time, itself).
    When the source reopens the camera (a reconnect), the encoder moves to the new Picamera2 object.
    picamera2 is imported here, lazily: it exists only on Raspberry Pi OS.
    """

    codec = PICAMERA2_H264

    def __init__(
        self,
        get_camera: Callable[[], Any],
        mask: np.ndarray,
        fps: float,
        keyframe_interval_s: float,
        quality: str,
        now: Callable[[], datetime],
    ) -> None:
        self._picamera2 = importlib.import_module("picamera2")
        self._encoders = importlib.import_module("picamera2.encoders")
        self._outputs = importlib.import_module("picamera2.outputs")
        self.height, self.width = mask.shape[:2]
        self._inside = mask > 0
        self._gop = max(1, round(fps * keyframe_interval_s))
        self._bitrate = int(self.width * self.height * fps * _PI_BITS_PER_PIXEL[quality])
        self._get_camera = get_camera
        self._now = now
        self._lock = threading.Lock()
        self._ready: list[EncodedFrame] = []
        self._anchor: datetime | None = None
        self._camera: Any = None
        self._encoder: Any = None
        self._previous: Any = None
        camera = get_camera()
        if camera is None:
            raise StorageError("the Pi camera is not open; cannot attach the H.264 encoder")
        self._attach(camera)

    def _attach(self, camera: Any) -> None:
        inside = self._inside
        mapped_array = self._picamera2.MappedArray
        previous = getattr(camera, "pre_callback", None)

        def pre_callback(request: Any) -> None:
            with mapped_array(request, "main") as mapped:
                view = mapped.array[: inside.shape[0], : inside.shape[1]]  # rows may carry stride padding
                view[inside] = 0
            if previous is not None:
                previous(request)

        sink = self

        class _Sink(self._outputs.Output):  # type: ignore[misc, name-defined]
            def outputframe(
                self,
                frame: bytes,
                keyframe: bool = True,
                timestamp: int | None = None,
                packet: Any = None,
                audio: bool = False,
            ) -> None:
                if not audio:
                    sink._arrived(bytes(frame), bool(keyframe), timestamp)

        encoder = self._encoders.H264Encoder(bitrate=self._bitrate, repeat=True, iperiod=self._gop)
        camera.pre_callback = pre_callback
        try:
            camera.start_encoder(encoder, _Sink())
        except Exception as exc:
            camera.pre_callback = previous
            raise StorageError(f"cannot start the Pi camera's H.264 encoder: {exc}") from exc
        with self._lock:
            self._camera, self._encoder, self._previous, self._anchor = camera, encoder, previous, None

    def _arrived(self, data: bytes, keyframe: bool, timestamp_us: int | None) -> None:
        # picamera2 stamps frames in microseconds on the sensor's clock; anchor the first one to UTC now.
        now = self._now()
        with self._lock:
            if timestamp_us is None:
                ts = now
            else:
                if self._anchor is None:
                    self._anchor = now - timedelta(microseconds=timestamp_us)
                ts = self._anchor + timedelta(microseconds=timestamp_us)
            self._ready.append(EncodedFrame(data, keyframe, ts, 0.0))

    def encode(self, image: Image, ts: datetime, mono: float) -> list[EncodedFrame]:
        """The frames the hardware encoder has produced since the last call (`image` was masked upstream)."""
        camera = self._get_camera()
        if camera is not None and camera is not self._camera:
            log.info("the Pi camera was reopened; moving the H.264 encoder to it")
            self._detach()
            self._attach(camera)
        with self._lock:
            ready, self._ready = self._ready, []
        return ready

    def request_keyframe(self) -> None:
        """Not offered by picamera2's encoder: a clip waits for the next periodic keyframe instead."""

    def _detach(self) -> None:
        if self._camera is None:
            return
        try:
            self._camera.stop_encoder(self._encoder)
        except Exception:
            log.debug("stopping the Pi encoder failed", exc_info=True)
        self._camera.pre_callback = self._previous
        self._camera = None

    def close(self) -> None:
        self._detach()
