"""Face chip -> 128-d embedding with dlib's ResNet (TFLite, int8 or float); Euclidean distance as dlib uses."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from edge.vision.runtime import Model

DIM = 128
F32 = npt.NDArray[np.float32]


class Embedder:
    """Runs the embedder on 150x150 RGB uint8 chips (normalisation is folded into the model)."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self._lut = model.pixel_lut(1.0, 0.0)

    def embed(self, chip_rgb: npt.NDArray[Any]) -> F32:
        (out,) = self.model.run(cv2.LUT(chip_rgb, self._lut)[None])
        return out[0].astype(np.float32)


def distance(a: F32, b: F32) -> float:
    return float(np.linalg.norm(a - b))
