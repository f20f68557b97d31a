"""The picamera2 backend against a fake shaped like picamera2, and its lazy import."""

from __future__ import annotations

import sys

import pytest

from edge.camera.picamera2 import Picamera2Source
from edge.config import CameraConfig
from edge.errors import SourceError
from tests.fakes import picamera2 as fake


@pytest.fixture
def fake_picamera2(monkeypatch: pytest.MonkeyPatch):
    fake.Picamera2.instances.clear()
    fake.Picamera2.fail_after = None
    monkeypatch.setitem(sys.modules, "picamera2", fake)
    yield fake
    fake.Picamera2.fail_after = None  # other suites share this fake


def test_main_and_lores_streams(fake_picamera2) -> None:
    source = Picamera2Source(CameraConfig(source="picamera2", width=1280, height=720, analysis_width=320, fps=15))
    source.open()
    main, lores = source.read()
    cam = fake_picamera2.Picamera2.instances[0]
    assert cam.config["main"] == {"size": (1280, 720), "format": "RGB888"}
    assert cam.config["lores"]["size"] == (320, 180)
    assert cam.config["controls"] == {"FrameRate": 15}
    assert main.shape == (720, 1280, 3)
    assert lores.shape == (180, 320, 3)
    source.close()
    assert cam.closed


def test_capture_failure_becomes_a_source_error(fake_picamera2) -> None:
    fake_picamera2.Picamera2.fail_after = 1
    source = Picamera2Source(CameraConfig(source="picamera2"))
    source.open()
    source.read()
    with pytest.raises(SourceError, match="stopped delivering"):
        source.read()


def test_missing_picamera2_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", None)  # makes `import picamera2` raise ImportError
    with pytest.raises(SourceError, match="apt install python3-picamera2"):
        Picamera2Source(CameraConfig(source="picamera2")).open()
