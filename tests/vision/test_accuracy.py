"""Accuracy regressions with the shipped models on ../shared/data (no timing assertions)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge.vision.detector import iou
from edge.vision.engine import FaceEngine
from edge.vision.eval import evaluate_detect, evaluate_lfw, list_images


def test_lfw_300_pairs_int8(data: Path, engine_int8: FaceEngine) -> None:
    r = evaluate_lfw(data / "lfw", engine_int8.detector, engine_int8.embed_face, limit_pairs=300)
    assert r.pairs == 300
    assert r.accuracy_mean >= 0.975, r
    assert r.detector_hit_rate >= 0.99, r


def test_detector_recall_and_false_positives(data: Path, engine_int8: FaceEngine) -> None:
    r = evaluate_detect(engine_int8.detector, list_images(data / "gallery"), list_images(data / "negatives"))
    assert r.recall >= 0.95, r
    assert r.false_positives_per_100 <= 2.0, r


def test_int8_detections_match_float(data: Path, engine_int8: FaceEngine, engine_float: FaceEngine) -> None:
    """Every clear float detection (score >= 0.6) has an int8 twin; boxes agree on average (IoU >= 0.85).

    Faces scored within a hair of the 0.5 threshold may flip either way (one face in the group photo
    scores 0.505 float, 0.477 int8), so only clear ones are required to match.
    """
    ious = []
    extra = 0
    for p in list_images(data / "gallery"):
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        q, f = engine_int8.detect(img), engine_float.detect(img)
        for d in f:
            if d.score >= 0.6:
                ious.append(max((iou(d.box, e.box) for e in q), default=0.0))
        extra += sum(max((iou(e.box, d.box) for d in f), default=0.0) < 0.5 and e.score >= 0.6 for e in q)
    assert len(ious) >= 30
    assert min(ious) >= 0.5, "a clear float detection has no int8 counterpart"
    assert extra == 0, "the int8 detector clearly found faces the float one did not"
    assert float(np.mean(ious)) >= 0.85, ious
    assert sum(i < 0.85 for i in ious) <= 1, sorted(ious)[:3]
