"""A stand-in for the face-mesh Model inside an Aligner that keeps every input tensor the aligner feeds it.

The build tool calibrates the int8 mesh on exactly these tensors; tests use it to check the aligner still
calls `run()` on an object that is not a runtime.Model.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge.vision import runtime


class RecordingMesh:
    def __init__(self, model: runtime.Model) -> None:
        self.model = model
        self.inputs: list[np.ndarray] = []

    def run(self, *arrays: np.ndarray, raw: bool = False) -> list[np.ndarray]:
        self.inputs.append(arrays[0].copy())
        return self.model.run(*arrays, raw=raw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)
