"""The redaction evaluation's reference face detectors: dlib (or Haar) in another Python over a pipe, or a weaker,
clearly labelled fallback in this process."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from edge.errors import EdgeError
from edge.types import Image

Box = tuple[int, int, int, int]  # x, y, w, h
SCRIPT = Path(__file__).with_name("reference_faces.py")


class Reference(Protocol):
    name: str
    independent: bool  # False: the same detector family as the redactor, so it cannot see what the redactor misses

    def detect(self, image: Image) -> list[Box]: ...
    def close(self) -> None: ...


class SubprocessReference:
    """A reference detector in another Python (a venv with face_recognition/dlib, or OpenCV 4 for Haar),
    running edge/evaluation/reference_faces.py as a line server; frames go over as .npy files."""

    independent = True

    def __init__(self, python: Path, model: str = "dlib-cnn") -> None:
        if not Path(python).is_file():
            raise EdgeError(f"--reference-python {python}: no such file (make it: docs/redaction-eval.md)")
        self._dir = Path(tempfile.mkdtemp(prefix="redaction-ref-"))
        self._count = 0
        try:
            self._proc = subprocess.Popen(
                [str(python), "-I", str(SCRIPT), model], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, text=True, bufsize=1,
            )
        except OSError as exc:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise EdgeError(f"--reference-python {python}: cannot run it: {exc}") from exc
        first = self._reply()
        if "ready" not in first:
            self.close()
            raise EdgeError(f"--reference-python {python}: reference {model} unavailable there: "
                            f"{first.get('error', first)}")
        self.name = f"{first['ready']} (in {python})"
        self._python = python

    def _reply(self) -> dict[str, Any]:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            return {"error": f"the reference process ended (exit status {self._proc.wait()})"}
        reply: dict[str, Any] = json.loads(line)
        return reply

    def detect(self, image: Image) -> list[Box]:
        path = self._dir / f"{self._count % 2}.npy"
        self._count += 1
        np.save(path, np.ascontiguousarray(image[:, :, ::-1]))  # the server takes RGB
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(f"{path}\n")
            self._proc.stdin.flush()
        except BrokenPipeError:
            pass  # _reply names the exit status
        reply = self._reply()
        if "boxes" not in reply:
            raise EdgeError(f"reference detector in {self._python}: {reply.get('error', reply)}")
        return [(int(x), int(y), int(w), int(h)) for x, y, w, h in reply["boxes"]]

    def close(self) -> None:
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        shutil.rmtree(self._dir, ignore_errors=True)


class InProcessReference:
    """A detect function in this process (Haar from edge/evaluation/reference_faces.py, or the shipped detector)."""

    def __init__(self, name: str, detect: Callable[[Image], list[Box]], independent: bool) -> None:
        self.name = name
        self.independent = independent
        self._detect = detect

    def detect(self, image: Image) -> list[Box]:
        return self._detect(image)

    def close(self) -> None:
        pass


FALLBACK_NOTE = "weaker fallback reference, not the acceptance reference (dlib CNN: --reference-python)"


def fallback_reference() -> Reference:
    """Without another Python: OpenCV's Haar cascades when this OpenCV has them (OpenCV < 5), else the shipped
    BlazeFace detector at a low score, which is NOT independent of the redactor: it only shows leaks the
    redactor's own family would see, plus unchanged pixels. Both are labelled as such in every report."""
    from edge.evaluation import reference_faces

    try:
        label, detect = reference_faces.haar()

        def haar_bgr(image: Image) -> list[Box]:
            return [(x, y, w, h) for x, y, w, h in detect(np.ascontiguousarray(image[:, :, ::-1]))]

        return InProcessReference(f"{label} [{FALLBACK_NOTE}]", haar_bgr, True)
    except RuntimeError:
        pass
    from edge.vision import runtime
    from edge.vision.detector import FaceDetector
    from edge.vision.engine import FILES

    detector = FaceDetector(runtime.load(runtime.MODELS_DIR / FILES["float"]["detector"], 1), score_threshold=0.5)

    def blazeface(image: Image) -> list[Box]:
        return [(int(d.x0), int(d.y0), round(d.width), round(d.height)) for d in detector.detect(image)]

    name = (f"shipped BlazeFace float, score 0.5 [{FALLBACK_NOTE}; this OpenCV {cv2.__version__} has no Haar "
            "cascades; NOT independent of the redactor]")
    return InProcessReference(name, blazeface, False)
