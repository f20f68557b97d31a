"""The face models wired together once: detector, aligner and embedder at a chosen precision and thread count."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from edge.vision import runtime
from edge.vision.align import Aligner, load_template
from edge.vision.detector import Detection, FaceDetector
from edge.vision.embedder import Embedder

Precision = Literal["int8", "float"]

FILES: dict[str, dict[str, str]] = {
    "int8": {"detector": "face_detector_int8.tflite", "embedder": "face_embedder_int8.tflite"},
    "float": {"detector": "face_detector_float.tflite", "embedder": "face_embedder_float.tflite"},
}
MESH = "face_mesh.tflite"
TEMPLATE = "face_chip_template.json"


@dataclass
class FaceEngine:
    detector: FaceDetector
    aligner: Aligner
    embedder: Embedder
    model: str
    embedder_file: str

    @classmethod
    def load(
        cls, model: Precision = "int8", threads: int = 2, detector_score: float = 0.5, models_dir: Path | None = None
    ) -> FaceEngine:
        d = models_dir or runtime.MODELS_DIR
        files = FILES[model]
        return cls(
            detector=FaceDetector(runtime.load(d / files["detector"], threads), score_threshold=detector_score),
            aligner=Aligner(runtime.load(d / MESH, threads), load_template(d / TEMPLATE)),
            embedder=Embedder(runtime.load(d / files["embedder"], threads)),
            model=model,
            embedder_file=files["embedder"],
        )

    def detect(self, image_bgr: npt.NDArray[Any]) -> list[Detection]:
        return self.detector.detect(image_bgr)

    def chip(self, image_bgr: npt.NDArray[Any], det: Detection) -> npt.NDArray[Any]:
        return self.aligner.chip(image_bgr, det)

    def embed_face(self, image_bgr: npt.NDArray[Any], det: Detection) -> npt.NDArray[np.float32]:
        return self.embedder.embed(self.aligner.chip(image_bgr, det))
