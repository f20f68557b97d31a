"""IoU tracking: one track per face across frames, new ids for new faces, tracks end after max_age_s."""

from __future__ import annotations

import numpy as np

from edge.vision.detector import Detection
from edge.vision.tracker import IouTracker


def _d(x: float, y: float, s: float = 50.0) -> Detection:
    return Detection(x, y, x + s, y + s, 0.9, np.zeros((6, 2), np.float32))


def test_follows_a_moving_face_and_separates_two() -> None:
    t = IouTracker(min_iou=0.3, max_age_s=1.0)
    (a,), _ = t.update([_d(100, 100)], 0.0)
    (b,), _ = t.update([_d(105, 102)], 0.1)
    assert a[0].id == b[0].id and b[0].hits == 2
    pairs, _ = t.update([_d(108, 104), _d(400, 100)], 0.2)
    ids = sorted(tr.id for tr, _ in pairs)
    assert len(set(ids)) == 2 and a[0].id in ids


def test_tracks_end_after_max_age() -> None:
    t = IouTracker(min_iou=0.3, max_age_s=1.0)
    t.update([_d(100, 100)], 0.0)
    assert t.expire(0.9) == []
    ended = t.expire(1.5)
    assert len(ended) == 1 and t.tracks == {}
    (p,), _ = t.update([_d(100, 100)], 1.6)
    assert p[0].id != ended[0].id  # a face after a gap is a new visit
