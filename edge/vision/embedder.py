"""Face chip -> 128-d embedding with dlib's ResNet (TFLite, int8 or float); Euclidean distance as dlib uses."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from edge.vision.runtime import Model, PixelMap

DIM = 128
F32 = npt.NDArray[np.float32]


class Embedder:
    """Runs the embedder on 150x150 RGB uint8 chips (normalisation is folded into the model)."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self._pixels = PixelMap(model.pixel_lut(1.0, 0.0))

    def embed(self, chip_rgb: npt.NDArray[Any]) -> F32:
        pixels = self._pixels
        self.model.invoke_with(lambda view: pixels(chip_rgb, view))
        return self.model.output(0)[0].astype(np.float32)


def distance(a: F32, b: F32) -> float:
    return float(np.linalg.norm(a - b))
