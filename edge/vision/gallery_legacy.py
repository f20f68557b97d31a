"""Galleries from older versions: whole enrolment photos (bystanders included) replaced by the chip of the enrolled
face (`faces migrate`, and the daemon at start), and templates computed again from such whole photos."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from edge.errors import StorageError

if TYPE_CHECKING:
    from edge.vision.engine import FaceEngine
    from edge.vision.gallery import Gallery

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]


def legacy_chipper(engine: FaceEngine, max_distance: float) -> Callable[[bytes, F32], npt.NDArray[np.uint8] | None]:
    """For `Gallery.migrate`: the chip of the face in a whole photo whose embedding is nearest the template
    enrolled from that photo (within `max_distance`), None when no face there is that close."""
    import cv2

    def chip_of(blob: bytes, template: F32) -> npt.NDArray[np.uint8] | None:
        img = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            return None
        best, best_d = None, max_distance
        for det in engine.detect(img):
            chip = engine.chip(img, det)
            d = float(np.linalg.norm(engine.embedder.embed(chip) - template))
            if d <= best_d:
                best, best_d = chip, d
        return best

    return chip_of


def embed_whole_photos(photos: list[Path], engine: FaceEngine) -> F32:
    """Templates from whole photos kept from before chips: the largest face of each, as it was enrolled."""
    import cv2

    out = []
    for p in photos:
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            continue
        dets = engine.detect(img)
        if dets:
            det = max(dets, key=lambda d: d.width * d.height)
            out.append(engine.embed_face(img, det))
    return np.stack(out) if out else np.zeros((0, 128), np.float32)


def migrate_at_start(gallery: Gallery, engine: FaceEngine, max_distance: float) -> None:
    """The daemon's start: whole photos an older version kept are replaced by chips; a gallery that cannot be
    written (read-only state dir) is left as it is, with a warning naming the command that does it later."""
    try:
        if gallery.whole_photos():
            gallery.migrate(legacy_chipper(engine, max_distance))
    except (OSError, StorageError) as exc:
        log.warning("face gallery %s keeps whole photos (could not migrate: %s); run "
                    "`doorbell-edge faces migrate`", gallery.root, exc)
