"""IoU tracking of face boxes across frames: a track is one visit of one face."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from edge.vision.detector import Detection, iou


@dataclass
class Track:
    id: int
    box: tuple[float, float, float, float]
    first_mono: float
    last_mono: float
    hits: int = 1
    embedded: int = 0
    data: dict[str, object] = field(default_factory=dict)


class IouTracker:
    """Greedy best-IoU association; a track not seen for `max_age_s` ends."""

    def __init__(self, min_iou: float = 0.3, max_age_s: float = 2.0) -> None:
        self.min_iou = min_iou
        self.max_age_s = max_age_s
        self.tracks: dict[int, Track] = {}
        self._ids = itertools.count(1)

    def update(self, dets: list[Detection], mono: float) -> tuple[list[tuple[Track, Detection]], list[Track]]:
        """Associate detections with tracks; returns ([(track, detection)], [tracks that ended])."""
        pairs = sorted(
            ((iou(t.box, d.box), tid, di) for tid, t in self.tracks.items() for di, d in enumerate(dets)),
            reverse=True,
        )
        used_t: set[int] = set()
        used_d: set[int] = set()
        out: list[tuple[Track, Detection]] = []
        for score, tid, di in pairs:
            if score < self.min_iou or tid in used_t or di in used_d:
                continue
            t = self.tracks[tid]
            t.box, t.last_mono, t.hits = dets[di].box, mono, t.hits + 1
            used_t.add(tid)
            used_d.add(di)
            out.append((t, dets[di]))
        for di, d in enumerate(dets):
            if di not in used_d:
                t = Track(next(self._ids), d.box, mono, mono)
                self.tracks[t.id] = t
                out.append((t, d))
        ended = [t for t in self.tracks.values() if mono - t.last_mono > self.max_age_s]
        for t in ended:
            del self.tracks[t.id]
        return out, ended

    def expire(self, mono: float) -> list[Track]:
        """End tracks unseen for max_age_s (for frames with no detection pass)."""
        return self.update([], mono)[1]
