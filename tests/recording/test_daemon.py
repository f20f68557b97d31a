"""The whole daemon over a real video (still -> real footage -> still): the motion gate's events make one clip."""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta
from pathlib import Path

import av
import numpy as np

from edge.app import App
from edge.clock import SystemClock
from edge.config import Config
from edge.recording.codec import probe
from edge.recording.store import ClipStore
from tests.recording.helpers import video_frames

PRE, POST = 1.0, 1.0


def _doorstep_video(shared_data: Path, path: Path) -> None:
    """A derived file in tmp: 60 still frames, 120 frames of the real clip, 240 still frames (paced at 60 fps)."""
    frames = list(video_frames(shared_data, 120))
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=30)
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        stream.codec_context.options = {"qscale": "2"}
        for image in [frames[0]] * 60 + frames + [frames[-1]] * 240:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def test_daemon_records_pre_roll_activity_and_post_roll(shared_data: Path, state_dir: Path, tmp_path: Path) -> None:
    video = tmp_path / "doorstep.mp4"
    _doorstep_video(shared_data, video)
    config = Config.model_validate(
        {
            "cameras": {"front": {"source": "opencv", "url": str(video), "width": 640, "height": 360, "fps": 60}},
            "storage": {"state_dir": str(state_dir)},
            "mqtt": {"enabled": False},
            "motion": {"end_after_s": 1.0},
            "recording": {"pre_roll_s": PRE, "post_roll_s": POST, "queue_size": 128},
        }
    )
    stdout = io.StringIO()
    app = App(config, stdout=stdout, environ={}).build()
    app.start()
    try:
        app.wait(60)  # returns when the file source ends
    finally:
        app.stop()

    events = [json.loads(line) for line in stdout.getvalue().splitlines()]
    motion = [e for e in events if e["type"] in ("motion_start", "motion_end") and e.get("reason") != "shutdown"]
    assert [e["type"] for e in motion][:2] == ["motion_start", "motion_end"], events
    started = datetime.fromisoformat(motion[0]["ts"])
    ended = datetime.fromisoformat(motion[1]["ts"])

    store = ClipStore(state_dir, SystemClock())
    clips = store.list()
    assert len(clips) == 1, clips
    clip = clips[0]
    assert {motion[0]["id"], motion[1]["id"]} <= set(clip.events)
    assert abs(clip.start - (started - timedelta(seconds=PRE))) <= timedelta(seconds=0.5)
    assert abs(clip.end - (ended + timedelta(seconds=POST))) <= timedelta(seconds=0.5)
    count, seconds = probe(clip.path)
    assert count == clip.frames and abs(seconds - (clip.end - clip.start).total_seconds()) < 0.05
    assert store.verify(clip.id)
    # The index and the disk agree: the clip and its snapshots, nothing else.
    indexed = {clip.path} | {snap.path for snap in store.snapshots()}
    assert {p for p in store.root.rglob("*") if p.is_file()} == indexed
    assert len(store.snapshots(clip.id)) >= 1
