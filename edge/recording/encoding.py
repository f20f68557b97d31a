"""Frames to what is stored: the storage privacy mask (grown by its margin) and the video encoder, made at the
frames' size."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edge.camera.masks import blacken, storage_mask
from edge.config import CameraConfig, RecordingConfig
from edge.recording.codec import CodecChoice, FrameEncoder, choose_codec, make_encoder
from edge.types import Image

EncoderFactory = Callable[[CodecChoice, int, int, float, float, str], FrameEncoder]


class StorageEncoder:
    """One camera's encoder for stored footage and the mask applied before it."""

    def __init__(self, camera_config: CameraConfig, config: RecordingConfig,
                 factory: EncoderFactory = make_encoder) -> None:
        self.camera_config = camera_config
        self.config = config
        self._factory = factory
        self._codec = choose_codec(config.codec)
        self._mask: np.ndarray | None = None
        self.encoder: FrameEncoder | None = None

    def masked(self, image: Image) -> Image:
        """The frame with the privacy masks blacked out. Applied here even though the camera stage masks at the
        source: nothing unmasked may be stored."""
        height, width = image.shape[:2]
        if not self.camera_config.privacy_masks:
            return image
        if self._mask is None or self._mask.shape != (height, width):
            margin = self.config.mask_margin_px
            self._mask = storage_mask(self.camera_config.privacy_masks, height, width, margin) > 0
        return blacken(image, self._mask)

    def fits(self, image: Image) -> bool:
        """True when there is an encoder for frames of this size."""
        height, width = image.shape[:2]
        return self.encoder is not None and (self.encoder.width, self.encoder.height) == (width, height)

    def make(self, image: Image) -> FrameEncoder:
        """A new encoder for frames of this size (the old one closed)."""
        self.close()
        height, width = image.shape[:2]
        self.encoder = self._factory(self._codec, width, height, self.camera_config.fps,
                                     self.config.keyframe_interval_s, self.config.quality)
        return self.encoder

    def request_keyframe(self) -> None:
        if self.encoder is not None:
            self.encoder.request_keyframe()

    def close(self) -> None:
        if self.encoder is not None:
            self.encoder.close()
            self.encoder = None
