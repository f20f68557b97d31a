"""Privacy masks and motion zones: normalised polygons rasterised onto any image size; built and applied only here."""

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
    return blacken(image, _cached_inside(_freeze(polygons), image.shape[0], image.shape[1]))


@lru_cache(maxsize=64)
def _cached_inside(polygons: tuple[tuple[tuple[float, float], ...], ...], height: int, width: int) -> np.ndarray:
    """The polygons' pixels as a boolean index, made once per size (not per frame)."""
    inside = _cached_mask(polygons, height, width) > 0
    inside.setflags(write=False)
    return inside


def blacken(image: Image, inside: np.ndarray) -> Image:
    """A copy of `image` black wherever the boolean `inside` is True (the input is never modified)."""
    out = image.copy()
    out[inside] = 0
    return out


def storage_mask(polygons: Sequence[Polygon], height: int, width: int, margin_px: int) -> np.ndarray:
    """The privacy mask for stored footage: the configured polygons grown by `margin_px`, so the ringing of
    a lossy codec at the mask's edge lands in the margin, never inside the polygon itself."""
    mask = polygon_mask(polygons, height, width)
    if margin_px > 0 and mask.any():
        size = 2 * margin_px + 1
        mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size)))
    return mask


def watched_area(height: int, width: int, zones: Sequence[Polygon], masks: Sequence[Polygon]) -> np.ndarray:
    """Pixels that count for motion: inside a zone (or everywhere without zones), never inside a mask."""
    watch = polygon_mask(zones, height, width) if zones else np.full((height, width), 255, np.uint8)
    if masks:
        watch[polygon_mask(masks, height, width) > 0] = 0
    return watch


def _freeze(polygons: Sequence[Polygon]) -> tuple[tuple[tuple[float, float], ...], ...]:
    return tuple(tuple((float(p[0]), float(p[1])) for p in poly) for poly in polygons)
