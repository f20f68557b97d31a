"""Face redaction for exports: an injected find_faces(image) and an irreversible pixelate-and-blur of each box."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import cv2
import numpy as np

from edge.errors import ModelError
from edge.types import Image

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]  # x, y, w, h in image pixels
FindFaces = Callable[[Image], Sequence[Box]]

MARGIN = 0.25  # grow each box so hair, ears and chin go too
BLOCKS = 3  # a face becomes at most 3x3 flat tiles: nothing left to detect or recognise
REDACT_SCORE = 0.3  # below the recognition pipeline's detector score: redaction favours recall


def blur_boxes(image: Image, boxes: Sequence[Box]) -> Image:
    """A copy of `image` with every box (plus a margin) pixelated to BLOCKS tiles and then blurred."""
    out = image.copy()
    height, width = out.shape[:2]
    for x, y, w, h in boxes:
        if w <= 0 or h <= 0:
            continue
        mx, my = int(w * MARGIN), int(h * MARGIN)
        x0, y0 = max(0, int(x) - mx), max(0, int(y) - my)
        x1, y1 = min(width, int(x + w) + mx), min(height, int(y + h) + my)
        if x1 <= x0 or y1 <= y0:
            continue
        region = out[y0:y1, x0:x1]
        tiny = cv2.resize(region, (min(BLOCKS, x1 - x0), min(BLOCKS, y1 - y0)), interpolation=cv2.INTER_AREA)
        flat = cv2.resize(tiny, (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST)
        k = max(3, (min(x1 - x0, y1 - y0) // 4) | 1)
        out[y0:y1, x0:x1] = cv2.GaussianBlur(flat, (k, k), 0)
    return out


def default_find_faces(score_threshold: float = REDACT_SCORE) -> FindFaces:
    """The vision package's shipped detector as a find_faces callable, tuned for recall (a blurred patch of
    wall costs nothing; a missed face costs privacy). ModelError when it cannot run: exports then refuse to
    go ahead rather than ship unblurred faces."""
    try:
        from edge.vision import runtime
        from edge.vision.detector import FaceDetector
        from edge.vision.engine import FILES
    except ImportError as exc:  # pragma: no cover - the vision package ships with the project
        raise ModelError(f"face detector unavailable: {exc}") from exc
    detector = FaceDetector(runtime.load(FILES["int8"]["detector"], 1), score_threshold=score_threshold)

    def find_faces(image: Image) -> list[Box]:
        return [
            (int(np.floor(d.x0)), int(np.floor(d.y0)), int(np.ceil(d.width)), int(np.ceil(d.height)))
            for d in detector.detect(image)
        ]

    return find_faces
