"""Frozen values passed between pipeline stages."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy.typing as npt

# uint8 pixels by convention; typed loosely because OpenCV returns its own MatLike alias.
Image = npt.NDArray[Any]


@dataclass(frozen=True, eq=False)
class Frame:
    """One captured frame.

    `image` is the main (recording) stream as BGR uint8 HxWx3; `lores` is the optional low-resolution
    analysis stream (BGR); `ts` is the aware UTC capture time, `mono` the monotonic capture time.
    """

    camera: str
    seq: int
    ts: datetime
    mono: float
    image: Image
    lores: Image | None = None

    @property
    def analysis(self) -> Image:
        return self.lores if self.lores is not None else self.image


@dataclass(frozen=True)
class MotionResult:
    """The motion gate's verdict on one frame: the changed share of the watched area and its boxes."""

    moving: bool
    score: float  # changed pixels / watched pixels, 0..1
    boxes: tuple[tuple[int, int, int, int], ...] = field(default=())  # x, y, w, h in analysis pixels


@dataclass(frozen=True, eq=False)
class MotionFrame:
    """A frame that passed the motion gate, on its way to inference."""

    frame: Frame
    motion: MotionResult
