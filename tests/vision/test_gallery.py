"""Enrolment, recognition of the enrolled person, strangers stay unknown, and forget purges everything."""

from __future__ import annotations

import os
import stat
from datetime import date
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.vision import recognise as R
from edge.vision.engine import FaceEngine
from edge.vision.gallery import Gallery

EX = Path("gallery") / "face_recognition" / "examples"


def _faces(engine: FaceEngine, path: Path) -> list[np.ndarray]:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, path
    return [engine.embed_face(img, d) for d in engine.detect(img)]


def _enroll_obama(engine: FaceEngine, data: Path, state: Path) -> Gallery:
    photos, templates = [], []
    for p in sorted((data / EX / "knn_examples" / "train" / "obama").glob("*.jpg")):
        (emb,) = _faces(engine, p)
        photos.append((p.suffix, p.read_bytes()))
        templates.append(emb)
    g = Gallery(state)
    g.enroll("Barack Obama", photos, np.stack(templates), "Barack Obama", date(2026, 11, 27), engine.embedder_file)
    return g


def test_obama_recognised_biden_unknown(data: Path, engine_int8: FaceEngine, tmp_path: Path) -> None:
    g = _enroll_obama(engine_int8, data, tmp_path)
    templates = g.templates()
    th = R.Thresholds()
    others = [
        "obama-240p.jpg",
        "obama-480p.jpg",
        "obama-720p.jpg",
        "obama-1080p.jpg",
        "obama_small.jpg",
        "knn_examples/test/obama1.jpg",
    ]
    for name in others:
        (emb,) = _faces(engine_int8, data / EX / name)
        assert R.match(emb, templates, th).name == "Barack Obama", name
    for p in [data / EX / "biden.jpg", *sorted((data / EX / "knn_examples" / "train" / "biden").glob("*.jpg"))]:
        (emb,) = _faces(engine_int8, p)
        assert R.match(emb, templates, th).name == R.UNKNOWN, p
    # a photo with both: one of each
    names = sorted(
        R.match(e, templates, th).name
        for e in _faces(engine_int8, data / EX / "knn_examples" / "test" / "obama_and_biden.jpg")
    )
    assert names == ["Barack Obama", R.UNKNOWN]


def test_gallery_files_are_private_and_forget_purges(data: Path, engine_int8: FaceEngine, tmp_path: Path) -> None:
    g = _enroll_obama(engine_int8, data, tmp_path)
    files = [p for p in (tmp_path / "faces").rglob("*")]
    assert any(p.suffix == ".jpg" for p in files) and any(p.name == "templates.npy" for p in files)
    for p in files:
        mode = stat.S_IMODE(os.stat(p).st_mode)
        assert mode == (0o700 if p.is_dir() else 0o600), (p, oct(mode))
    assert [p.name for p in g.people()] == ["Barack Obama"]
    assert g.forget("Barack Obama")
    left = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert left == []
    assert g.people() == [] and g.templates() == {}
    assert not g.forget("Barack Obama")


def test_enroll_requires_consent(tmp_path: Path) -> None:
    from edge.errors import StorageError

    with pytest.raises(StorageError):
        Gallery(tmp_path).enroll("X", [(".jpg", b"x")], np.zeros((1, 128), np.float32), " ", date(2026, 1, 1), "m")
