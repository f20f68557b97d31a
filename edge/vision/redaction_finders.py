"""The face finders exports redact with: BlazeFace over the frame and upscaled tiles, and an independent check.

The footage package defines what a finder is (edge.footage.redact.FindFaces: BGR frame -> boxes) and never
imports this module; the shell hands these in (edge/cli.py -> edge.footage.redact.provide_finders).

- find (chooses the blur boxes, built for recall): the shipped full-range BlazeFace (int8) at a low score, on
  the whole frame and on two levels of overlapping square tiles (sides 1x and 1/2 of the frame's shorter side),
  each tile letterboxed to the model's 192 px input: a face of 20 px in a 720p frame is ~11 px in a 360 px tile's
  canvas, where the model still finds it; on the whole frame it would be 3 px.
- check (scans the redacted frames, built for precision): MediaPipe's BlazeFace *back-camera* model
  (`face_detector_back.tflite`, 256x256 input, 896 anchors on 16x16 and 8x8 grids, trained separately for
  small, distant faces), float, on the frame and on tiles seen at a scale the finder does not use, each
  candidate confirmed in a close-up.
  See docs/footage-requests.md for what this independence is worth and what it is not.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from edge.vision import runtime
from edge.vision.detector import Detection, FaceDetector, _weighted_nms

Box = tuple[int, int, int, int]
Detect = Callable[[npt.NDArray[Any]], list[Detection]]

FIND_MODEL = "face_detector_int8.tflite"
CHECK_MODEL = "face_detector_back.tflite"
FIND_SCORE = 0.25  # recall: a pixelated patch of wall costs nothing, a missed face costs a bystander's privacy
CHECK_SCORE = 0.45  # a candidate for the check, then confirmed on a close-up of it (CONFIRM_SCORE)
CONFIRM_SCORE = 0.7  # precision: a check that fires on pixelated blocks or a shoulder would refuse good exports
FIND_TILES = (1.0, 0.5)  # tile sides as shares of the frame's shorter side
FIND_TILE_EVERY = 4  # tiles on every 4th frame (whole frame on all): each frame gets the tiles' finds of the
# frames up to 0.8 s before and after it (edge.footage.redact.CARRY_SECONDS), at 10 fps those of four tiled frames
CHECK_TILES = (1.0,)  # 256 px input on a tile of the shorter side: a scale between the finder's two tile levels
CHECK_OVERLAP = 0.2  # two such tiles across a 16:9 frame (three at 0.3); faces wider than the overlap: whole frame
THREADS = 2  # an export is a rare, owner-started job: it may use two cores (XNNPACK threads) to finish sooner
MIN_TILE = 128  # tiles smaller than this add nothing a frame this small does not already show the model


def tiles(width: int, height: int, size: int, overlap: float) -> list[Box]:
    """Square tiles of `size` covering the frame, overlapping by at least `overlap` (see edge.footage.redact)."""

    def starts(extent: int) -> list[int]:
        if extent <= size:
            return [0]
        step = max(1, int(size * (1.0 - overlap)))
        n = -(-(extent - size) // step) + 1
        return [round(i * (extent - size) / (n - 1)) for i in range(n)]

    tw, th = min(size, width), min(size, height)
    return [(x, y, tw, th) for y in starts(height) for x in starts(width)]


def to_box(det: Detection, dx: int = 0, dy: int = 0) -> Box:
    x0, y0 = math.floor(det.x0) + dx, math.floor(det.y0) + dy
    return x0, y0, max(1, math.ceil(det.x1) + dx - x0), max(1, math.ceil(det.y1) + dy - y0)


class TiledFinder:
    """A detector run on the whole frame and on overlapping square tiles (each letterboxed by the detector).

    `tile_every` n > 1: the tiles only on every n-th call (the first included), the whole frame on every call;
    for the finder, whose finds are carried to the frames around them (edge.footage.redact.CARRY_SECONDS)."""

    def __init__(self, detect: Detect, tile_shares: Sequence[float], overlap: float = 0.3,
                 tile_every: int = 1) -> None:
        self.detect = detect
        self.tile_shares = tuple(tile_shares)
        self.overlap = overlap
        self.tile_every = max(1, tile_every)
        self._calls = 0

    def __call__(self, image: npt.NDArray[Any]) -> list[Box]:
        height, width = image.shape[:2]
        boxes = [to_box(d) for d in self.detect(image)]
        self._calls += 1
        if (self._calls - 1) % self.tile_every:
            return boxes
        for share in self.tile_shares:
            size = round(min(height, width) * share)
            if size < MIN_TILE or (size >= width and size >= height):
                continue
            for x, y, w, h in tiles(width, height, size, self.overlap):
                boxes.extend(to_box(d, x, y) for d in self.detect(image[y : y + h, x : x + w]))
        return boxes


class ConfirmedFinder:
    """Candidates from a tiled finder, each kept only when the detector finds a face again at the same place in
    a close-up (the box and one box-size around it): the view in which the model sees a face at its best, so a
    face scores high there while texture that looked like a face at a coarse scale does not."""

    def __init__(self, candidates: TiledFinder, detector: SsdFaceDetector, confirm_score: float) -> None:
        self.candidates = candidates
        self.detector = detector
        self.confirm_score = confirm_score

    def __call__(self, image: npt.NDArray[Any]) -> list[Box]:
        height, width = image.shape[:2]
        out = []
        for x, y, w, h in distinct(self.candidates(image)):  # a face seen by the frame and tiles: confirmed once
            x0, y0, x1, y1 = max(0, x - w), max(0, y - h), min(width, x + 2 * w), min(height, y + 2 * h)
            if x1 - x0 < 8 or y1 - y0 < 8:
                continue
            cx, cy = x + w / 2 - x0, y + h / 2 - y0
            if any(d.score >= self.confirm_score and d.x0 <= cx <= d.x1 and d.y0 <= cy <= d.y1
                   for d in self.detector.detect(image[y0:y1, x0:x1])):
                out.append((x, y, w, h))
        return distinct(out)


def distinct(boxes: Sequence[Box], overlap: float = 0.5) -> list[Box]:
    """One box per face: a box overlapping an earlier kept one by more than `overlap` of the smaller is dropped
    (the frame and several tiles see the same face)."""
    kept: list[Box] = []
    for x, y, w, h in boxes:
        if not any(max(0, min(x + w, kx + kw) - max(x, kx)) * max(0, min(y + h, ky + kh) - max(y, ky))
                   > overlap * min(w * h, kw * kh) for kx, ky, kw, kh in kept):
            kept.append((x, y, w, h))
    return kept


def _ssd_anchors(input_size: int, strides: Sequence[int], per_cell: Sequence[int]) -> npt.NDArray[np.float64]:
    """MediaPipe's SSD anchor centres (fixed anchor size) in input pixels, in the model's output order."""
    rows = []
    for stride, count in zip(strides, per_cell, strict=True):
        cells = input_size // stride
        for cy in range(cells):
            for cx in range(cells):
                rows.extend([((cx + 0.5) * stride, (cy + 0.5) * stride)] * count)
    return np.array(rows, np.float64)


class SsdFaceDetector:
    """MediaPipe's 896-anchor BlazeFace variants (back camera 256 px, short range 128 px), float, letterboxed."""

    def __init__(self, model: runtime.Model, input_size: int, strides: Sequence[int], score_threshold: float,
                 nms_iou: float = 0.3) -> None:
        self.model = model
        self.size = input_size
        self.anchors = _ssd_anchors(input_size, strides, (2, 6))
        self.min_logit = math.log(score_threshold / (1.0 - score_threshold))
        self.nms_iou = nms_iou

    def detect(self, image_bgr: npt.NDArray[Any]) -> list[Detection]:
        h, w = image_bgr.shape[:2]
        scale = self.size / max(h, w)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        px, py = (self.size - nw) // 2, (self.size - nh) // 2
        canvas = np.zeros((self.size, self.size, 3), np.uint8)
        src = image_bgr
        while src.shape[0] >= 2 * nh and src.shape[1] >= 2 * nw:
            src = cv2.pyrDown(src)  # anti-aliased halving: INTER_AREA from 720p costs several times more
        canvas[py : py + nh, px : px + nw] = cv2.resize(src, (nw, nh), interpolation=cv2.INTER_LINEAR)
        rgb = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB).astype(np.float32) * (2.0 / 255.0) - 1.0
        regress, logits = self.model.run(rgb[None])
        logit = logits[0, :, 0].astype(np.float64)
        keep = np.flatnonzero(logit >= self.min_logit)
        if keep.size == 0:
            return []
        raw = regress[0, keep].astype(np.float64)
        scores = 1.0 / (1.0 + np.exp(-np.clip(logit[keep], -100.0, 100.0)))
        pts = np.delete(raw, (2, 3), axis=1).reshape(-1, 7, 2) + self.anchors[keep][:, None, :]
        pts = (pts - (px, py)) / scale
        half = raw[:, 2:4] / (2.0 * scale)
        boxes = np.concatenate([pts[:, 0] - half, pts[:, 0] + half], 1)
        return _weighted_nms(boxes, pts[:, 1:], scores, self.nms_iou)


def find_faces(threads: int = THREADS, models_dir: Path | None = None, score: float = FIND_SCORE) -> TiledFinder:
    """The finder that chooses blur boxes (see the module docstring)."""
    d = models_dir or runtime.MODELS_DIR
    detector = FaceDetector(runtime.load(d / FIND_MODEL, threads), score_threshold=score)
    return TiledFinder(detector.detect, FIND_TILES, tile_every=FIND_TILE_EVERY)


def check_faces(threads: int = THREADS, models_dir: Path | None = None, score: float = CHECK_SCORE,
                confirm: float = CONFIRM_SCORE) -> ConfirmedFinder:
    """The independent check run on every redacted frame (see the module docstring)."""
    d = models_dir or runtime.MODELS_DIR
    detector = SsdFaceDetector(runtime.load(d / CHECK_MODEL, threads), 256, (16, 32), min(score, confirm))
    candidates = SsdFaceDetector(detector.model, 256, (16, 32), score)
    return ConfirmedFinder(TiledFinder(candidates.detect, CHECK_TILES, CHECK_OVERLAP), detector, confirm)


NAMES = (
    f"BlazeFace full-range int8, score {FIND_SCORE}, frame + tiles {'/'.join(map(str, FIND_TILES))} "
    f"(tiles every {FIND_TILE_EVERY} frames)",
    f"BlazeFace back-camera float, score {CHECK_SCORE}, frame + tiles {'/'.join(map(str, CHECK_TILES))}, "
    f"confirmed at {CONFIRM_SCORE} in a close-up",
)
