"""Detection -> 150x150 face chip with dlib's chip geometry (padding 0.25), via the 468-point face mesh.

dlib cuts its chips from five landmarks (both corners of each eye and the base of the nose) mapped
by a least-squares similarity transform onto fixed template positions.  Those five points are
taken here from MediaPipe's face mesh, which runs on a square, eye-levelled crop around the
BlazeFace box (1.5x the box, as MediaPipe does).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from edge.vision.detector import Detection
from edge.vision.runtime import Model, PixelMap

CHIP = 150
PADDING = 0.25
MESH_INPUT = 192
ROI_SCALE = 1.5

# dlib's five-point template (x, y in 0..1 of the unpadded face), in the 5-point model's order:
# left-eye outer, left-eye inner, right-eye outer, right-eye inner (image left/right), nose base.
_TEMPLATE = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ]
)
# the face-mesh vertices at those five places (image-right eye outer/inner, image-left outer/inner, nose base)
MESH_POINTS = (263, 362, 33, 133, 2)

F32 = npt.NDArray[np.float32]


def chip_template(size: int = CHIP, padding: float = PADDING) -> npt.NDArray[np.float64]:
    return (padding + _TEMPLATE) / (2 * padding + 1) * size


def similarity(src: npt.NDArray[np.float64], dst: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src points onto dst: 2x3.

    Umeyama's estimate in the closed form 2-D allows (no SVD): with both point sets centred, the best
    rotation-and-scale is the complex number sum(conj(s) * d) / sum(|s|^2), i.e. cos and sin times the
    scale are a / var and b / var with a = sum(s . d) and b = sum(s x d).
    """
    ms, md = src.mean(0), dst.mean(0)
    s, d = src - ms, dst - md
    var = float(np.einsum("ij,ij->", s, s))
    if var > 0:
        a = float(np.einsum("ij,ij->", s, d))
        b = float(np.dot(s[:, 0], d[:, 1]) - np.dot(s[:, 1], d[:, 0]))
        c, k = a / var, b / var
    else:  # every src point the same: no rotation or scale to fit
        c, k = 1.0, 0.0
    m = np.empty((2, 3))
    m[0, 0], m[0, 1], m[1, 0], m[1, 1] = c, -k, k, c
    m[:, 2] = md - m[:, :2] @ ms
    return m


class _Warper:
    """Bilinear affine crops of a BGR image as RGB: the same pixels as cv2.warpAffine then BGR->RGB, faster.

    OpenCV's bilinear warp has a SIMD path for 4 channels, not for 3.  So only the source region the
    crop samples (its bounding box plus a 2 px margin) is widened to BGRA, in place inside a
    frame-sized buffer kept between calls, and the buffer is warped with the unchanged transform: the
    samples never leave the fresh region, and the alpha is dropped again in the swap to RGB.  When
    that region is many times the crop (a small crop of a large face) the plain 3-channel warp is
    cheaper and is used instead.
    """

    def __init__(self) -> None:
        self._bgra = np.empty((0, 0, 4), np.uint8)

    def __call__(
        self, image_bgr: npt.NDArray[Any], m: npt.NDArray[np.float64], size: int, dst: npt.NDArray[Any] | None = None
    ) -> npt.NDArray[Any]:
        h, w = image_bgr.shape[:2]
        inv = cv2.invertAffineTransform(m)
        corners = inv[:, :2] @ np.array([[0, size, 0, size], [0, 0, size, size]]) + inv[:, 2:]
        x0, y0 = (max(math.floor(v) - 2, 0) for v in corners.min(1))
        x1, y1 = (math.ceil(v) + 3 for v in corners.max(1))
        x1, y1 = min(x1, w), min(y1, h)
        flags = cv2.INTER_LINEAR
        if x1 <= x0 or y1 <= y0 or (x1 - x0) * (y1 - y0) > 8 * size * size or image_bgr.shape[2:] != (3,):
            crop = cv2.warpAffine(image_bgr, m, (size, size), flags=flags, borderMode=cv2.BORDER_CONSTANT)
            return cv2.cvtColor(crop, cv2.COLOR_BGR2RGB, dst=dst)
        if self._bgra.shape[:2] != (h, w):
            self._bgra = np.empty((h, w, 4), np.uint8)
        region = self._bgra[y0:y1, x0:x1]
        cv2.cvtColor(image_bgr[y0:y1, x0:x1], cv2.COLOR_BGR2BGRA, dst=region)
        crop = cv2.warpAffine(self._bgra, m, (size, size), flags=flags, borderMode=cv2.BORDER_CONSTANT)
        return cv2.cvtColor(crop, cv2.COLOR_BGRA2RGB, dst=dst)


def _to_unit(crop_rgb: npt.NDArray[Any]) -> F32:
    return (crop_rgb.astype(np.float32) * (1.0 / 255.0))[None]


def _unit_pixels() -> F32:
    """_to_unit's value for each of the 256 pixel values (float32 arithmetic, as on a whole crop)."""
    return np.arange(256, dtype=np.uint8).astype(np.float32) * (1.0 / 255.0)


def mesh_roi(det: Detection) -> npt.NDArray[np.float64]:
    """2x3 affine from image pixels to the 192x192 mesh input: square, 1.5x the box, eyes level."""
    (rx, ry), (lx, ly) = det.keypoints[0], det.keypoints[1]
    angle = math.atan2(float(ly - ry), float(lx - rx))
    cx, cy = (det.x0 + det.x1) / 2, (det.y0 + det.y1) / 2
    side = max(det.width, det.height) * ROI_SCALE
    k = MESH_INPUT / side
    c, s = math.cos(-angle) * k, math.sin(-angle) * k
    # rotate by -angle about the box centre, scale to 192, centre in the crop
    return np.array([[c, -s, MESH_INPUT / 2 - (c * cx - s * cy)], [s, c, MESH_INPUT / 2 - (s * cx + c * cy)]])


class Aligner:
    """Cuts dlib-geometry chips for the embedder (RGB uint8, 150x150).

    Without a template the chip comes from the five dlib points alone.  With `template` (468 x 2: where
    each mesh vertex lands, on average, in a dlib chip; tools/build_models.py measures it by mapping
    the mesh through the five-point transform) all 468 vertices are fitted at once: the same
    geometry on average, with far less landmark noise (LFW: 99.0% vs 98.7% with the int8 models).
    """

    def __init__(self, mesh: Model, template: npt.NDArray[np.float64] | None = None) -> None:
        self.mesh = mesh
        if template is not None and template.shape != (468, 2):
            raise ValueError("a chip template holds 468 (x, y) points")
        self.template = template
        # A real Model is fed in place through a pixel table: the float32 values of mesh_input() for
        # every pixel value, quantized as Model.run would for an int8 mesh, so either kind of mesh gets
        # bit for bit what run(mesh_input()) feeds it.  A stand-in (anything with run(), such as a
        # calibration recorder) is called with the float tensor itself.
        self._pixels = PixelMap(mesh.quantize_input(_unit_pixels())) if isinstance(mesh, Model) else None
        self._rgb = np.empty((MESH_INPUT, MESH_INPUT, 3), np.uint8)
        self._warp = _Warper()

    def _mesh_crop(self, image_bgr: npt.NDArray[Any], m: npt.NDArray[np.float64]) -> npt.NDArray[Any]:
        """The 192x192 RGB crop under the ROI transform m (a buffer reused by the next call)."""
        return self._warp(image_bgr, m, MESH_INPUT, self._rgb)

    def mesh_input(self, image_bgr: npt.NDArray[Any], det: Detection) -> F32:
        """The float mesh input for a face: RGB in [0, 1], batch of one (the reference form of the input)."""
        return _to_unit(self._mesh_crop(image_bgr, mesh_roi(det)))

    def landmarks(self, image_bgr: npt.NDArray[Any], det: Detection) -> npt.NDArray[np.float64]:
        """The 468 mesh points in image pixels (x, y)."""
        m = mesh_roi(det)
        if self._pixels is None:
            out = self.mesh.run(_to_unit(self._mesh_crop(image_bgr, m)))[0]
        else:
            rgb = self._mesh_crop(image_bgr, m)
            pixels = self._pixels
            self.mesh.invoke_with(lambda view: pixels(rgb, view))
            out = self.mesh.output(0)
        pts = out.reshape(-1, 3)[:, :2].astype(np.float64)
        inv = cv2.invertAffineTransform(m)
        return pts @ inv[:, :2].T + inv[:, 2]

    def transform(self, image_bgr: npt.NDArray[Any], det: Detection) -> npt.NDArray[np.float64]:
        """2x3 similarity from image pixels to chip pixels."""
        pts = self.landmarks(image_bgr, det)
        if self.template is None:
            return similarity(pts[list(MESH_POINTS)], chip_template())
        return similarity(pts, self.template)

    def chip(self, image_bgr: npt.NDArray[Any], det: Detection) -> npt.NDArray[Any]:
        """The 150x150 RGB uint8 chip (a new array)."""
        return self._warp(image_bgr, self.transform(image_bgr, det), CHIP)


def dlib_chip_points(aligner: Aligner, image_bgr: npt.NDArray[Any], det: Detection) -> npt.NDArray[np.float64]:
    """The 468 mesh points mapped into the chip by dlib's five-point transform (to build a template)."""
    pts = aligner.landmarks(image_bgr, det)
    m = similarity(pts[list(MESH_POINTS)], chip_template())
    return pts @ m[:, :2].T + m[:, 2]


def load_template(path: Path) -> npt.NDArray[np.float64] | None:
    """The shipped chip template (JSON: size, padding, points), None when the file is absent."""
    if not path.is_file():
        return None
    doc = json.loads(path.read_text())
    if doc.get("size") != CHIP or doc.get("padding") != PADDING:
        raise ValueError(f"{path.name}: template for a different chip geometry")
    return np.asarray(doc["points"], dtype=np.float64)
