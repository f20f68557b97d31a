"""Camera sources over real video files, the demo scene, and the reconnect path of the camera stage."""

from __future__ import annotations

import itertools
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edge.camera.base import REGISTRY, make_source
from edge.camera.demo import LOOP_S, DemoSource, pose_at
from edge.camera.opencv import OpenCVSource, describe
from edge.camera.stage import CameraStage
from edge.clock import SystemClock
from edge.config import CameraConfig
from edge.errors import SourceError
from edge.types import Frame


def manifest_videos(shared_data: Path) -> list[dict]:
    manifest = json.loads((shared_data / "manifest.json").read_text())
    return [f for f in manifest["files"] if f["path"].startswith("video/") and "frames" in f]


def test_opencv_reads_every_frame_of_the_real_videos(shared_data: Path) -> None:
    videos = manifest_videos(shared_data)
    assert len(videos) >= 4
    for entry in videos:
        source = OpenCVSource(CameraConfig(source="opencv", url=str(shared_data / entry["path"])))
        source.open()
        count = 0
        shape = None
        while (got := source.read()) is not None:
            main, _ = got
            shape = main.shape
            count += 1
        source.close()
        assert count == entry["frames"], entry["path"]
        assert shape == (entry["height"], entry["width"], 3), entry["path"]


def run_stage(config: CameraConfig, source, until: int, timeout: float = 30.0) -> tuple[list[Frame], list, CameraStage]:
    frames: list[Frame] = []
    reports: list = []
    done = threading.Event()

    def emit(frame: Frame) -> None:
        frames.append(frame)
        if len(frames) >= until:
            done.set()

    stage = CameraStage(
        "cam",
        config,
        source,
        emit,
        SystemClock(),
        beat=lambda: None,
        report=lambda what, details: reports.append((what, details)),
    )
    stage.start()
    deadline = time.monotonic() + timeout
    while not (done.is_set() or stage.ended.is_set()) and time.monotonic() < deadline:
        time.sleep(0.02)
    stage.stop()
    stage.join(5)
    return frames, reports, stage


def test_stage_over_a_real_file_counts_frames_and_timestamps_increase(shared_data: Path) -> None:
    path = shared_data / "video" / "intel_face-demographics-walking.gif"
    config = CameraConfig(source="opencv", url=str(path), fps=60, width=480, height=270, analysis_width=160)
    frames, reports, stage = run_stage(config, make_source("cam", config), until=10_000)
    assert stage.ended.is_set()
    assert len(frames) == 35
    assert [f.seq for f in frames] == list(range(1, 36))
    assert all(b.ts > a.ts for a, b in itertools.pairwise(frames))
    assert all(b.mono >= a.mono for a, b in itertools.pairwise(frames))
    assert frames[0].analysis.shape[1] == 160
    assert reports[-1][0] == "camera_ended"


def test_looping_file_keeps_going(shared_data: Path) -> None:
    path = shared_data / "video" / "intel_face-demographics-walking.gif"
    config = CameraConfig(source="opencv", url=str(path), loop=True, fps=60, width=480, height=270)
    frames, _, _stage = run_stage(config, make_source("cam", config), until=80)
    assert len(frames) >= 80
    assert np.array_equal(frames[0].image, frames[35].image)  # the 36th frame is the first again


class FlakySource:
    """Delivers frames, then fails mid-run, refuses to reopen twice, then works again."""

    paced = False

    def __init__(self) -> None:
        self.opens = 0
        self.reads = 0
        self.open_failures_left = 0

    def open(self) -> None:
        self.opens += 1
        if self.open_failures_left > 0:
            self.open_failures_left -= 1
            raise SourceError("device busy")

    def read(self):
        self.reads += 1
        if self.reads == 5:
            self.open_failures_left = 2
            raise SourceError("lost the camera")
        return np.full((64, 64, 3), self.reads % 255, np.uint8), None

    def close(self) -> None:
        pass


def test_a_source_failing_mid_run_reconnects_with_back_off_and_reports() -> None:
    config = CameraConfig(source="demo", width=64, height=64, fps=60, reconnect_initial_s=0.05, reconnect_max_s=0.2)
    source = FlakySource()
    frames, reports, stage = run_stage(config, source, until=12)
    assert len(frames) >= 12
    assert source.opens == 4  # first open, two refusals, then back
    kinds = [what for what, _ in reports]
    assert kinds[:2] == ["camera_lost", "camera_restored"]
    assert "lost the camera" in reports[0][1]["error"]
    assert stage.reconnects == 1
    assert stage.thread.is_alive() is False


def test_missing_file_is_a_clear_error() -> None:
    source = OpenCVSource(CameraConfig(source="opencv", url="/nonexistent/clip.mp4"))
    with pytest.raises(SourceError, match=r"video file not found: /nonexistent/clip\.mp4"):
        source.open()


def test_stream_credentials_are_hidden_in_logs() -> None:
    assert describe("rtsp://admin:secret@10.0.0.5/stream") == "rtsp://***@10.0.0.5/stream"
    assert describe(0) == "0"


def test_demo_scene_has_a_visitor_who_comes_pauses_and_leaves() -> None:
    source = DemoSource(CameraConfig(fps=10))
    source.open()
    empty = source.render(1.0)
    visiting = source.render(10.0)
    assert empty.shape == (480, 640, 3)
    assert np.abs(visiting.astype(int) - empty.astype(int)).mean() > 10
    visible = [pose_at(t / 10).visible for t in range(int(LOOP_S * 10))]
    # One visit per loop: absent, present, absent.
    changes = sum(1 for a, b in itertools.pairwise(visible) if a != b)
    assert changes == 2
    assert pose_at(1.0) == pose_at(1.0 + LOOP_S)


def test_registry_has_every_backend() -> None:
    assert set(REGISTRY) == {"demo", "opencv", "picamera2"}
