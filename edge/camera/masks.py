"""Privacy masks and motion zones: normalised polygons rasterised onto images of any size."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import cv2
import numpy as np

from edge.types import Image

Polygon = Sequence[Sequence[float]]


def polygon_mask(polygons: Sequence[Polygon], height: int, width: int) -> np.ndarray:
    """A uint8 mask (255 inside any polygon) for an image of the given size."""
    return _cached_mask(_freeze(polygons), height, width).copy()


@lru_cache(maxsize=64)
def _cached_mask(polygons: tuple[tuple[tuple[float, float], ...], ...], height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=np.uint8)
    for polygon in polygons:
        # Scale to the pixel grid so the polygon covers the same region at any resolution; the far edge
        # maps to the last pixel so a polygon touching 1.0 covers the border too.
        pts = np.array([[round(x * (width - 1)), round(y * (height - 1))] for x, y in polygon], dtype=np.int32)
        cv2.fillPoly(mask, [pts], 255)
        cv2.polylines(mask, [pts], isClosed=True, color=255, thickness=1)
    mask.setflags(write=False)
    return mask


def apply_masks(image: Image, polygons: Sequence[Polygon]) -> Image:
    """A copy of `image` black inside every privacy polygon (the input is never modified)."""
    if not polygons:
        return image
    mask = _cached_mask(_freeze(polygons), image.shape[0], image.shape[1])
    out = image.copy()
    out[mask > 0] = 0
    return out


def _freeze(polygons: Sequence[Polygon]) -> tuple[tuple[tuple[float, float], ...], ...]:
    return tuple(tuple((float(p[0]), float(p[1])) for p in poly) for poly in polygons)
