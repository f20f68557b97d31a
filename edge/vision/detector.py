"""BlazeFace full-range face detection: letterboxed 192x192 input, SSD anchor decoding, weighted NMS."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from edge.vision.runtime import Model

INPUT = 192
_GRID = 48  # one anchor per cell of a 48x48 grid (stride 4), fixed anchor size 1.0
_ANCHORS = np.stack(np.meshgrid((np.arange(_GRID) + 0.5) / _GRID, (np.arange(_GRID) + 0.5) / _GRID), -1).reshape(-1, 2)

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True, eq=False)
class Detection:
    """A face in image pixels: box corners, score, and BlazeFace's 6 keypoints (x, y).

    Keypoints: 0 right eye, 1 left eye (the subject's), 2 nose tip, 3 mouth, 4 right ear, 5 left ear.
    """

    x0: float
    y0: float
    x1: float
    y1: float
    score: float
    keypoints: F32  # (6, 2)

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def box(self) -> tuple[float, float, float, float]:
        return (self.x0, self.y0, self.x1, self.y1)


def scale_detection(det: Detection, sx: float, sy: float) -> Detection:
    """The same detection in an image scaled by (sx, sy), e.g. from the analysis to the main stream."""
    kps = (det.keypoints * np.array([sx, sy], np.float32)).astype(np.float32)
    return Detection(det.x0 * sx, det.y0 * sy, det.x1 * sx, det.y1 * sy, det.score, kps)


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def letterbox(image_bgr: npt.NDArray[Any]) -> tuple[npt.NDArray[Any], float, float, float]:
    """Scale the longer side to 192 and centre on black: (RGB uint8 192x192, scale, pad_x, pad_y)."""
    h, w = image_bgr.shape[:2]
    scale = INPUT / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    src = image_bgr
    while src.shape[1] * 0.5 >= nw and src.shape[0] * 0.5 >= nh:
        src = cv2.pyrDown(src)  # anti-aliased halving; INTER_AREA costs ~1 ms on a 640x480 frame
    small = cv2.resize(src, (nw, nh), interpolation=cv2.INTER_LINEAR)
    px, py = (INPUT - nw) // 2, (INPUT - nh) // 2
    canvas = np.zeros((INPUT, INPUT, 3), np.uint8)
    canvas[py : py + nh, px : px + nw] = small
    return cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB), scale, float(px), float(py)


def to_float(canvas_rgb: npt.NDArray[Any]) -> F32:
    """The float model input for a letterboxed canvas: RGB in [-1, 1], batch of one."""
    return (canvas_rgb.astype(np.float32) * (2.0 / 255.0) - 1.0)[None]


class FaceDetector:
    """Finds faces in one BGR frame with the shipped BlazeFace full-range model."""

    def __init__(self, model: Model, score_threshold: float = 0.5, nms_iou: float = 0.3) -> None:
        self.model = model
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self._lut = model.pixel_lut(2.0 / 255.0, -1.0)

    def detect(self, image_bgr: npt.NDArray[Any]) -> list[Detection]:
        canvas, scale, px, py = letterbox(image_bgr)
        regress, logits = self.model.run(cv2.LUT(canvas, self._lut)[None], raw=True)
        lq = self.model.output_quantization(1)
        if lq is not None:  # 2,304 logits are cheap to dequantize; regressor rows only once selected
            logits = (logits.astype(np.float32) - lq[1]) * np.float32(lq[0])
        return decode(
            regress[0],
            logits[0, :, 0],
            scale,
            px,
            py,
            self.score_threshold,
            self.nms_iou,
            self.model.output_quantization(0),
        )


def decode(
    regress: npt.NDArray[Any],
    logits: npt.NDArray[Any],
    scale: float,
    px: float,
    py: float,
    score_threshold: float,
    nms_iou: float,
    regress_quantization: tuple[float, int] | None = None,
) -> list[Detection]:
    # threshold in logit space: the sigmoid is only needed for the few candidates
    keep = np.flatnonzero(logits >= np.log(score_threshold / (1.0 - score_threshold)))
    if keep.size == 0:
        return []
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits[keep].astype(np.float64), -100.0, 100.0)))
    raw = regress[keep].astype(np.float64)
    if regress_quantization is not None:
        raw = (raw - regress_quantization[1]) * regress_quantization[0]
    raw /= INPUT
    anchors = _ANCHORS[keep]
    cx, cy = raw[:, 0] + anchors[:, 0], raw[:, 1] + anchors[:, 1]
    w, h = raw[:, 2], raw[:, 3]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    kps = raw[:, 4:16].reshape(-1, 6, 2) + anchors[:, None, :]
    # letterbox space (0..1 of 192 px) -> image pixels
    boxes = (boxes * INPUT - np.array([px, py, px, py])) / scale
    kps = (kps * INPUT - np.array([px, py])) / scale
    return _weighted_nms(boxes, kps, scores, nms_iou)


def _weighted_nms(
    boxes: npt.NDArray[np.float64], kps: npt.NDArray[np.float64], scores: npt.NDArray[Any], threshold: float
) -> list[Detection]:
    """MediaPipe-style blending: overlapping candidates are averaged by score instead of dropped."""
    order = np.argsort(-scores, kind="stable")
    boxes, kps, scores = boxes[order], kps[order], scores[order]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    left = np.ones(len(boxes), bool)
    out: list[Detection] = []
    for best in range(len(boxes)):
        if not left[best]:
            continue
        b = boxes[best]
        ix = np.clip(np.minimum(b[2], boxes[:, 2]) - np.maximum(b[0], boxes[:, 0]), 0, None)
        iy = np.clip(np.minimum(b[3], boxes[:, 3]) - np.maximum(b[1], boxes[:, 1]), 0, None)
        inter = ix * iy
        union = area[best] + area - inter
        group = left & (inter > threshold * np.where(union > 0, union, np.inf))
        group[best] = True
        left &= ~group
        w = scores[group].astype(np.float64)
        w /= w.sum()
        box = (boxes[group] * w[:, None]).sum(0)
        kp = (kps[group] * w[:, None, None]).sum(0)
        out.append(
            Detection(
                float(box[0]), float(box[1]), float(box[2]), float(box[3]), float(scores[best]), kp.astype(np.float32)
            )
        )
    return out
