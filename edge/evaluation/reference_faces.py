"""Reference face detectors for evaluation only, runnable in another Python (a venv with dlib) as a line server.

    OTHER_PYTHON -I edge/evaluation/reference_faces.py dlib-cnn|haar

It answers one JSON line on stdout first ({"ready": label} or {"error": text}), then for every line on stdin
naming a .npy file (an RGB uint8 image) one line {"boxes": [[x, y, w, h], ...]} (or {"error": text}). It
imports nothing from this project, so the other venv needs only face_recognition (dlib) or OpenCV 4.
Never used by the device: exports are redacted by edge.footage.redact.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

Box = list[int]
Detect = Callable[[Any], list[Box]]

DLIB_UPSAMPLE = 1  # the acceptance figure's setting: dlib's CNN detector with the image upsampled once
HAAR_CASCADES = ("haarcascade_frontalface_default.xml", "haarcascade_frontalface_alt2.xml",
                 "haarcascade_profileface.xml")


def dlib_cnn() -> tuple[str, Detect]:
    """dlib's MMOD CNN face detector through face_recognition, upsampled once."""
    try:
        import dlib  # type: ignore[import-not-found]
        import face_recognition  # type: ignore[import-not-found]
    except ImportError as exc:
        raise RuntimeError(f"face_recognition (dlib) is not installed in {sys.executable} ({exc}); make the venv "
                           "as docs/redaction-eval.md says") from exc

    def detect(rgb: Any) -> list[Box]:
        height, width = rgb.shape[:2]
        boxes = []
        for top, right, bottom, left in face_recognition.face_locations(rgb, DLIB_UPSAMPLE, model="cnn"):
            x0, y0, x1, y1 = max(0, left), max(0, top), min(width, right), min(height, bottom)
            if x1 > x0 and y1 > y0:
                boxes.append([int(x0), int(y0), int(x1 - x0), int(y1 - y0)])
        return boxes

    version = getattr(face_recognition, "__version__", "?")
    return f"dlib {dlib.__version__} CNN (mmod) via face_recognition {version}, upsampled {DLIB_UPSAMPLE}x", detect


def haar() -> tuple[str, Detect]:
    """OpenCV's Haar cascades (frontal x2, profile both ways): the weaker reference the issue was filed with."""
    import cv2  # type: ignore[import-not-found,unused-ignore]

    if not hasattr(cv2, "CascadeClassifier"):
        raise RuntimeError(f"OpenCV {cv2.__version__} has no Haar cascades (removed in OpenCV 5; use opencv<5)")
    root = str(getattr(getattr(cv2, "data", None), "haarcascades", ""))
    cascades = [cv2.CascadeClassifier(root + name) for name in HAAR_CASCADES]
    if any(c.empty() for c in cascades):
        raise RuntimeError(f"OpenCV {cv2.__version__}: Haar cascade files missing under {root!r}")
    frontal, profile = cascades[:2], cascades[2]

    def detect(rgb: Any) -> list[Box]:
        grey = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        width = grey.shape[1]
        found: list[Box] = []
        for cascade in frontal:
            found += [list(map(int, b)) for b in cascade.detectMultiScale(grey, 1.1, 5, minSize=(20, 20))]
        found += [list(map(int, b)) for b in profile.detectMultiScale(grey, 1.1, 5, minSize=(20, 20))]
        mirrored = profile.detectMultiScale(cv2.flip(grey, 1), 1.1, 5, minSize=(20, 20))
        found += [[int(width - x - w), int(y), int(w), int(h)] for x, y, w, h in mirrored]
        return _merge(found)

    return f"OpenCV {cv2.__version__} Haar cascades (frontal default + alt2, profile both ways)", detect


def _iou(a: Box, b: Box) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _merge(boxes: list[Box]) -> list[Box]:
    """One box per face when several cascades fire on it (the larger one kept)."""
    kept: list[Box] = []
    for box in sorted(boxes, key=lambda b: -b[2] * b[3]):
        if all(_iou(box, k) < 0.3 for k in kept):
            kept.append(box)
    return kept


MODELS: dict[str, Callable[[], tuple[str, Detect]]] = {"dlib-cnn": dlib_cnn, "haar": haar}


def serve(model: str) -> int:
    def say(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    try:
        import numpy as np

        label, detect = MODELS[model]()
    except Exception as exc:  # the parent turns this into one clear line naming the interpreter
        say({"error": f"{type(exc).__name__}: {exc}"})
        return 1
    say({"ready": label})
    for line in sys.stdin:
        path = line.strip()
        if not path:
            continue
        try:
            say({"boxes": detect(np.load(path))})
        except Exception as exc:
            say({"error": f"{path}: {type(exc).__name__}: {exc}"})
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in MODELS:
        sys.stderr.write(f"usage: python reference_faces.py {'|'.join(MODELS)}\n")
        sys.exit(2)
    sys.exit(serve(sys.argv[1]))
