"""Face redaction on real photos and a real recorded clip: after blurring, the shipped detector finds no face
and the embedder cannot tie what is left to the person."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge.clipstore import ClipStore, write_test_clip
from edge.clock import FakeClock
from edge.config import FacesConfig
from edge.encoder import decode_frames
from edge.footage.export import verify_bundle
from edge.footage.keys import device_key, public_key_b64
from edge.footage.redact import blur_boxes, default_find_faces
from edge.footage.service import FootageDesk

from .factory import AGENCY_BOX, NOW, config, document, signed

PHOTOS = ["face_recognition/examples/obama.jpg", "face_recognition/examples/two_people.jpg",
          "face_recognition/examples/biden.jpg", "facenet_pytorch/multiface.jpg"]


def test_blur_touches_only_the_boxes() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    out = blur_boxes(image, [(40, 40, 20, 20), (150, 110, 40, 40), (0, 0, 0, 5)])
    mask = np.zeros((120, 160), bool)
    mask[35:65, 35:65] = True  # box plus 25 % margin
    mask[100:120, 140:160] = True  # clipped at the border
    assert np.array_equal(out[~mask], image[~mask])
    assert out[40:60, 40:60].std() < 0.5 * image[40:60, 40:60].std()
    assert image is not out


@pytest.fixture(scope="module")
def engine() -> Any:
    from edge.vision.engine import FaceEngine

    return FaceEngine.load("int8", 1)


@pytest.mark.parametrize("name", PHOTOS)
def test_real_faces_are_unrecognisable_after_blurring(shared_data: Path, engine: Any, name: str) -> None:
    image = cv2.imread(str(shared_data / "gallery" / name))
    assert image is not None
    find_faces = default_find_faces()
    found = engine.detect(image)
    assert found and find_faces(image)
    blurred = blur_boxes(image, find_faces(image))
    assert engine.detect(blurred) == []
    unknown = FacesConfig().unknown_distance
    for det in found:
        distance = float(np.linalg.norm(engine.embed_face(image, det) - engine.embed_face(blurred, det)))
        assert distance > unknown, (name, distance)


def test_export_with_the_shipped_detector_leaves_no_face(shared_data: Path, engine: Any, tmp_path: Path) -> None:
    photo = cv2.imread(str(shared_data / "gallery" / "face_recognition/examples/two_people.jpg"))
    photo = cv2.resize(photo, (480, 282))
    assert len(engine.detect(photo)) == 2
    clock = FakeClock(NOW)
    store = ClipStore(tmp_path, clock)
    start = NOW - timedelta(days=2, minutes=20)
    frames = [np.roll(photo, i, axis=1) for i in range(8)]
    clip = write_test_clip(store, "front_door", start, frames, 10.0)
    desk = FootageDesk(config(tmp_path), clock, clips=store, emit=lambda event: None)  # the real detector
    request, _ = desk.submit(signed(document("warrant", scope={**document()["scope"], "data": ["video",
                                                                                              "snapshots"]})))
    desk.approve(request)
    check = verify_bundle(desk.export(request).path.read_bytes(), AGENCY_BOX, public_key_b64(device_key(tmp_path)))
    assert check.ok and check.manifest is not None
    assert {f["clip"] for f in check.manifest["files"]} == {clip.id}
    for entry in check.manifest["files"]:
        path = tmp_path / Path(entry["path"]).name
        path.write_bytes(check.files[entry["path"]])
        images = [img for _, img in decode_frames(path)] if entry["kind"] == "video" else [cv2.imread(str(path))]
        assert len(images) == entry["frames"]
        for image in images:
            assert engine.detect(image) == [], entry["path"]
