"""SIGKILL in the middle of a clip, then a restart: the index and the disk agree and every clip plays to its end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from edge.clock import SystemClock
from edge.recording.codec import probe
from edge.recording.store import ClipStore

REPO = Path(__file__).resolve().parents[2]


def _child(state_dir: Path, shared_data: Path, frames: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.recording.crash_child", str(state_dir), str(shared_data), str(frames)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def _sidecar_frames(state_dir: Path) -> int:
    parts = list((state_dir / "clips").rglob("*.frames.part"))
    return max((p.read_text().count("\n") - 1 for p in parts), default=0)


def _assert_consistent(store: ClipStore) -> None:
    clips = store.list()
    indexed = {c.path for c in clips} | {s.path for s in store.snapshots()}
    on_disk = {p for p in store.root.rglob("*") if p.is_file()}
    assert on_disk == indexed, f"disk and index differ: {sorted(map(str, on_disk ^ indexed))}"
    for clip in clips:
        assert store.verify(clip.id), clip.id
        count, _ = probe(clip.path)
        assert count == clip.frames == len(store.frame_times(clip.id)), clip.id


def test_sigkill_mid_clip_then_restart(shared_data: Path, tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    child = _child(state_dir, shared_data, 0)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "started"
        deadline = time.monotonic() + 60
        while _sidecar_frames(state_dir) < 150:  # well into the clip (pre-roll + 50 frames of motion at least)
            assert child.poll() is None, "the recording child died on its own"
            assert time.monotonic() < deadline, "the child never got far enough into a clip"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(10)
    assert child.returncode == -signal.SIGKILL

    store = ClipStore(state_dir, SystemClock())
    assert store.list() == []  # the clip was never finished...
    assert list(store.root.rglob("*.raw.part"))  # ...and its parts are on disk
    report = store.recover()
    assert len(report.recovered) == 1 and not report.removed
    (clip,) = store.list()
    assert clip.truncated and clip.frames >= 150
    _assert_consistent(store)

    # The restarted daemon records normally next to the recovered clip (its start() runs recovery too).
    child = _child(state_dir, shared_data, 60)
    out, _ = child.communicate(timeout=120)
    assert child.returncode == 0 and out.split() == ["started", "stopped"]
    clips = store.list()
    assert len(clips) == 2 and clips[0].id == clip.id and not clips[1].truncated
    _assert_consistent(store)
