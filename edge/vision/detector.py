"""BlazeFace full-range face detection: letterboxed 192x192 input, SSD anchor decoding, weighted NMS."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from edge.vision.runtime import Model, PixelMap

INPUT = 192
_GRID = 48  # one anchor per cell of a 48x48 grid (stride 4), fixed anchor size 1.0
_ANCHORS = np.stack(np.meshgrid((np.arange(_GRID) + 0.5) / _GRID, (np.arange(_GRID) + 0.5) / _GRID), -1).reshape(-1, 2)
_ANCHORS_PX = _ANCHORS * INPUT

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


@dataclass(frozen=True)
class _Geometry:
    """Where a frame of one size lands on the 192x192 canvas: halvings first, then one resize."""

    halvings: int  # cv2.pyrDown steps (anti-aliased halving) before the resize
    nw: int
    nh: int
    px: int
    py: int
    scale: float


def _geometry(h: int, w: int) -> _Geometry:
    scale = INPUT / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    halvings = 0
    while w * 0.5 >= nw and h * 0.5 >= nh:  # pyrDown output: (w + 1) // 2 x (h + 1) // 2
        w, h = (w + 1) // 2, (h + 1) // 2
        halvings += 1
    return _Geometry(halvings, nw, nh, (INPUT - nw) // 2, (INPUT - nh) // 2, scale)


def _shrink(image_bgr: npt.NDArray[Any], g: _Geometry, dst: npt.NDArray[Any] | None = None) -> npt.NDArray[Any]:
    src = image_bgr
    for _ in range(g.halvings):
        src = cv2.pyrDown(src)  # anti-aliased halving; INTER_AREA costs ~1 ms on a 640x480 frame
    return cv2.resize(src, (g.nw, g.nh), dst=dst, interpolation=cv2.INTER_LINEAR)


def letterbox(image_bgr: npt.NDArray[Any]) -> tuple[npt.NDArray[Any], float, float, float]:
    """Scale the longer side to 192 and centre on black: (RGB uint8 192x192, scale, pad_x, pad_y).

    The reference form of what FaceDetector.detect writes into the model input (tools calibrate on it).
    """
    g = _geometry(*image_bgr.shape[:2])
    canvas = np.zeros((INPUT, INPUT, 3), np.uint8)
    canvas[g.py : g.py + g.nh, g.px : g.px + g.nw] = _shrink(image_bgr, g)
    return cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB), g.scale, float(g.px), float(g.py)


def to_float(canvas_rgb: npt.NDArray[Any]) -> F32:
    """The float model input for a letterboxed canvas: RGB in [-1, 1], batch of one."""
    return (canvas_rgb.astype(np.float32) * (2.0 / 255.0) - 1.0)[None]


def _logit_threshold(score_threshold: float, quantization: tuple[float, int] | None) -> np.float64:
    """The smallest stored logit that passes score_threshold: decode's float test, applied to every int8 value.

    A numpy float64, so float32 logits are compared in float64 as decode() compares them.
    """
    t = np.log(score_threshold / (1.0 - score_threshold))
    if quantization is None:
        return np.float64(t)
    values = np.arange(-128, 128)
    passing = values[(values.astype(np.float32) - quantization[1]) * np.float32(quantization[0]) >= t]
    return np.float64(passing[0]) if passing.size else np.float64(math.inf)


class FaceDetector:
    """Finds faces in one BGR frame with the shipped BlazeFace full-range model.

    Per frame: the anti-aliased shrink into a buffer kept per frame size, BGR->RGB into a second
    one, then one table pass straight into the interpreter's input tensor (padding rows and columns
    are set to the table's value for black).  The logits are tested as stored (an int8 threshold),
    and only the few rows that pass are dequantized and decoded.
    """

    def __init__(self, model: Model, score_threshold: float = 0.5, nms_iou: float = 0.3) -> None:
        self.model = model
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self._lut = model.pixel_lut(2.0 / 255.0, -1.0)
        self._pixels = PixelMap(self._lut)
        self._regress_q = model.output_quantization(0)
        self._logit_q = model.output_quantization(1)
        self._min_logit = _logit_threshold(score_threshold, self._logit_q)
        self._buffers: dict[tuple[int, int], tuple[_Geometry, npt.NDArray[Any], npt.NDArray[Any]]] = {}

    def _frame_buffers(self, h: int, w: int) -> tuple[_Geometry, npt.NDArray[Any], npt.NDArray[Any]]:
        got = self._buffers.get((h, w))
        if got is None:
            g = _geometry(h, w)
            got = (g, np.empty((g.nh, g.nw, 3), np.uint8), np.empty((g.nh, g.nw, 3), np.uint8))
            if len(self._buffers) >= 8:  # frame sizes are few (one per camera stream); photos vary
                self._buffers.clear()
            self._buffers[(h, w)] = got
        return got

    def detect(self, image_bgr: npt.NDArray[Any]) -> list[Detection]:
        h, w = image_bgr.shape[:2]
        g, small, rgb = self._frame_buffers(h, w)
        _shrink(image_bgr, g, small)
        cv2.cvtColor(small, cv2.COLOR_BGR2RGB, dst=rgb)
        self.model.invoke_with(lambda view: self._fill(view, g, rgb))
        logits = self.model.output(1, raw=True)[0, :, 0]
        keep = np.flatnonzero(logits >= self._min_logit)
        if keep.size == 0:
            return []
        rows = self.model.output(0, raw=True)[0, keep]
        return decode_rows(keep, rows, logits[keep], g.scale, g.px, g.py, self.nms_iou, self._regress_q, self._logit_q)

    def _fill(self, view: npt.NDArray[Any], g: _Geometry, rgb: npt.NDArray[Any]) -> None:
        black = self._lut[0]
        y1, x1 = g.py + g.nh, g.px + g.nw
        view[: g.py] = black
        view[y1:] = black
        view[g.py : y1, : g.px] = black
        view[g.py : y1, x1:] = black
        self._pixels(rgb, view[g.py : y1, g.px : x1])


def decode_rows(
    keep: npt.NDArray[np.intp],
    regress: npt.NDArray[Any],
    logits: npt.NDArray[Any],
    scale: float,
    px: float,
    py: float,
    nms_iou: float,
    regress_quantization: tuple[float, int] | None = None,
    logit_quantization: tuple[float, int] | None = None,
) -> list[Detection]:
    """decode() for the anchors `keep` only (already thresholded), with their regressor rows and logits as stored."""
    if logit_quantization is not None:
        logits = (logits.astype(np.float32) - logit_quantization[1]) * np.float32(logit_quantization[0])
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -100.0, 100.0)))
    if len(keep) <= _FEW:
        return _decode_few(keep, regress, scores, scale, px, py, nms_iou, regress_quantization)
    raw = regress.astype(np.float64)
    if regress_quantization is not None:
        raw = (raw - regress_quantization[1]) * regress_quantization[0]
    # 192-px canvas units: centre and keypoints are offsets from the anchor, then canvas -> image pixels
    pts = np.delete(raw, (2, 3), axis=1).reshape(-1, 7, 2)
    pts += _ANCHORS_PX[keep][:, None, :]
    pts -= (px, py)
    pts /= scale
    half = raw[:, 2:4] / (2.0 * scale)
    boxes = np.concatenate([pts[:, 0] - half, pts[:, 0] + half], 1)
    return _weighted_nms(boxes, pts[:, 1:], scores, nms_iou)


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
    """Detections from all 2,304 anchors: float logits (2304,), regressor rows (2304, 16) float or as stored."""
    # threshold in logit space: the sigmoid is only needed for the few candidates
    keep = np.flatnonzero(logits >= np.log(score_threshold / (1.0 - score_threshold)))
    if keep.size == 0:
        return []
    return decode_rows(keep, regress[keep], logits[keep], scale, px, py, nms_iou, regress_quantization)


_FEW = 4  # up to this many candidates (nearly every frame) plain Python floats beat numpy's per-call cost


def _decode_few(
    keep: npt.NDArray[np.intp],
    regress: npt.NDArray[Any],
    scores: npt.NDArray[np.float64],
    scale: float,
    px: float,
    py: float,
    nms_iou: float,
    regress_quantization: tuple[float, int] | None,
) -> list[Detection]:
    """decode_rows' geometry and weighted NMS for a few candidates, the same arithmetic on Python floats."""
    cands = []
    for row, (ax, ay) in zip(regress.tolist(), _ANCHORS_PX[keep].tolist(), strict=True):
        if regress_quantization is not None:
            s, z = regress_quantization
            row = [(v - z) * s for v in row]
        xs = [(row[i] + ax - px) / scale for i in (0, 4, 6, 8, 10, 12, 14)]
        ys = [(row[i] + ay - py) / scale for i in (1, 5, 7, 9, 11, 13, 15)]
        hw, hh = row[2] / (2.0 * scale), row[3] / (2.0 * scale)
        kps = [v for xy in zip(xs[1:], ys[1:], strict=True) for v in xy]
        cands.append([xs[0] - hw, ys[0] - hh, xs[0] + hw, ys[0] + hh, *kps])
    score = scores.tolist()
    left = sorted(range(len(cands)), key=lambda i: -score[i])  # stable, as argsort(kind="stable")
    out = []
    while left:
        best = left[0]
        b = cands[best]
        area = (b[2] - b[0]) * (b[3] - b[1])
        group: list[int] = []
        rest: list[int] = []
        for i in left:
            c = cands[i]
            inter = max(min(b[2], c[2]) - max(b[0], c[0]), 0.0) * max(min(b[3], c[3]) - max(b[1], c[1]), 0.0)
            union = area + (c[2] - c[0]) * (c[3] - c[1]) - inter
            (group if i == best or (union > 0 and inter > nms_iou * union) else rest).append(i)
        left = rest
        total = sum(score[i] for i in group)
        blend = [sum(score[i] * cands[i][j] for i in group) / total for j in range(16)]
        x0, y0, x1, y1 = blend[:4]
        out.append(Detection(x0, y0, x1, y1, score[best], np.array(blend[4:], np.float32).reshape(6, 2)))
    return out


def _weighted_nms(
    boxes: npt.NDArray[np.float64], kps: npt.NDArray[np.float64], scores: npt.NDArray[Any], threshold: float
) -> list[Detection]:
    """MediaPipe-style blending: overlapping candidates are averaged by score instead of dropped.

    Candidates in descending score order; each one still left takes every left candidate overlapping
    it by IoU > threshold (the overlaps are computed once, as a matrix) and becomes their
    score-weighted average.
    """
    n = len(boxes)
    if n == 1:
        return [_detection(boxes[0], kps[0], float(scores[0]))]
    order = np.argsort(-scores, kind="stable")
    rows = np.concatenate([boxes, kps.reshape(n, -1)], 1)[order]
    scores = scores[order]
    x0, y0, x1, y1 = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
    area = (x1 - x0) * (y1 - y0)
    ix = np.clip(np.minimum(x1[:, None], x1) - np.maximum(x0[:, None], x0), 0, None)
    iy = np.clip(np.minimum(y1[:, None], y1) - np.maximum(y0[:, None], y0), 0, None)
    inter = ix * iy
    union = area[:, None] + area - inter
    overlaps = inter > threshold * np.where(union > 0, union, np.inf)
    left = np.ones(n, bool)
    out: list[Detection] = []
    for best in range(n):
        if not left[best]:
            continue
        group = left & overlaps[best]
        group[best] = True
        left &= ~group
        w = scores[group]
        blend = w @ rows[group] / w.sum()
        out.append(_detection(blend[:4], blend[4:], float(scores[best])))
    return out


def _detection(box: npt.NDArray[np.float64], kps: npt.NDArray[np.float64], score: float) -> Detection:
    x0, y0, x1, y1 = box.tolist()
    return Detection(x0, y0, x1, y1, score, kps.astype(np.float32).reshape(6, 2))
