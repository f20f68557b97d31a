"""Pure face matching: quality gates, two distance thresholds, and a vote across the frames of one visit."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

UNKNOWN = "unknown"

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Thresholds:
    """Distances (Euclidean, dlib's scale): <= recognise names a person, > unknown is a stranger,
    anything between is too close to call and casts no vote."""

    recognise: float = 0.55
    unknown: float = 0.62
    min_face_px: int = 40
    min_sharpness: float = 15.0
    vote_frames: int = 3
    vote_min: int = 2


@dataclass(frozen=True)
class Match:
    """One face compared with the gallery: the nearest person and the verdict for this frame."""

    name: str  # an enrolled name, UNKNOWN, or "" when undecided
    nearest: str | None
    distance: float


def sharpness(chip_rgb: npt.NDArray[Any]) -> float:
    """Variance of the Laplacian of the chip's grey levels (low means blurred)."""
    grey = cv2.cvtColor(chip_rgb, cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_32F).var())


def passes_quality(face_px: float, chip_sharpness: float, th: Thresholds) -> bool:
    return face_px >= th.min_face_px and chip_sharpness >= th.min_sharpness


def match(embedding: F32, templates: dict[str, F32], th: Thresholds) -> Match:
    """`templates` maps each enrolled name to an (n, 128) array of that person's embeddings."""
    best_name, best = None, float("inf")
    for name, embs in templates.items():
        if len(embs) == 0:
            continue
        d = float(np.min(np.linalg.norm(embs - embedding[None, :], axis=1)))
        if d < best:
            best_name, best = name, d
    if best_name is not None and best <= th.recognise:
        return Match(best_name, best_name, best)
    if best_name is None or best > th.unknown:
        return Match(UNKNOWN, best_name, best)
    return Match("", best_name, best)


@dataclass
class Vote:
    """The votes of one visit (one track): a name is emitted once vote_min of the frames agree."""

    th: Thresholds
    names: list[str] = field(default_factory=list)
    decided: str | None = None

    def add(self, m: Match) -> str | None:
        """Record one frame's verdict; returns the visit's decision the first time there is one."""
        if self.decided is not None:
            return None
        self.names.append(m.name)
        counts = Counter(n for n in self.names if n)
        if counts:
            name, n = counts.most_common(1)[0]
            if n >= self.th.vote_min:
                self.decided = name
                return name
        if len(self.names) >= 2 * self.th.vote_frames:
            # a long visit without agreement: settle for unknown rather than never answering
            self.decided = UNKNOWN
            return UNKNOWN
        return None
