#!/usr/bin/env python3
"""Recording benchmark: CPU share and frame drops of analysis (the motion gate) without and with the recorder.

    python bench/recording.py [--seconds 15] [--fps 25] [--sizes 640x360,1280x720] [--json] [--data ../shared/data]

Frames of the real clip ../shared/data/video/face_recognition_short_hamilton_clip.mp4 (looped, resized) are
fed at camera pace by a camera thread into the daemon's drop-oldest queue; an analysis thread runs the motion
gate on them.  Modes, each in a fresh process (so peak RSS is per mode):
  analysis   the motion gate alone
  preroll    + the recorder encoding every frame into its pre-roll ring, no clip being written
  recording  + a clip being written the whole time (motion_start at the first frame, never ended)
Prints median and p90 of per-frame analysis CPU time and capture-to-analysed latency, the process CPU share
(1.0 = one core), analysis and recorder frame drops, and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.clock import SystemClock  # noqa: E402
from edge.config import Config  # noqa: E402
from edge.events.bus import Event, EventBus  # noqa: E402
from edge.motion.gate import MotionState, score_motion  # noqa: E402
from edge.queues import Closed, DropOldestQueue  # noqa: E402
from edge.recording.recorder import build  # noqa: E402
from edge.types import Frame  # noqa: E402

VIDEO = Path("video") / "face_recognition_short_hamilton_clip.mp4"
MODES = ("analysis", "preroll", "recording")


def stats(values: list[float]) -> dict[str, float]:
    a = np.asarray(values) if values else np.zeros(1)
    return {"median": round(float(np.median(a)), 3), "p90": round(float(np.percentile(a, 90)), 3)}


def load_frames(data: Path, width: int, height: int, limit: int = 50) -> list[np.ndarray]:
    """The first `limit` frames (2 s, plenty of motion), kept in memory and looped; counted in peak RSS."""
    cap = cv2.VideoCapture(str(data / VIDEO))
    frames = []
    while len(frames) < limit:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA))
    if not frames:
        raise SystemExit(f"cannot read {data / VIDEO}")
    return frames


def bench_config(width: int, height: int, fps: float) -> Config:
    """One camera, a fresh state dir, one clip for the whole run, no free-space floor."""
    state_dir = Path(tempfile.mkdtemp(prefix="bench-recording-"))
    return Config.model_validate({
        "cameras": {"front": {"width": width, "height": height, "fps": fps}},
        "storage": {"state_dir": str(state_dir)},
        "recording": {"max_clip_s": 3600},
        "retention": {"min_free_mb": 0},
    })


def run_mode(mode: str, data: Path, width: int, height: int, fps: float, seconds: float) -> dict[str, object]:
    frames = load_frames(data, width, height)
    config = bench_config(width, height, fps)
    clock = SystemClock()
    bus = EventBus()
    recording = None
    if mode != "analysis":
        recording = build(config, bus, clock)
        bus.subscribe(recording.on_event)
        recording.start()

    queue: DropOldestQueue[Frame] = DropOldestQueue(config.pipeline.queue_size)
    cpu_ms: list[float] = []
    latency_ms: list[float] = []
    analysed = [0]

    def analysis() -> None:
        motion = MotionState()
        while True:
            try:
                frame = queue.get(timeout=0.5)
            except Closed:
                return
            if frame is None:
                continue
            start = time.thread_time()
            score_motion(motion, frame.image, config.motion, config.cameras["front"].analysis_width)
            cpu_ms.append((time.thread_time() - start) * 1000)
            latency_ms.append((time.monotonic() - frame.mono) * 1000)
            analysed[0] += 1

    worker = threading.Thread(target=analysis, name="analysis")
    worker.start()
    total = int(seconds * fps)
    t0 = time.monotonic()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    for seq in range(total):
        deadline = t0 + seq / fps
        delay = deadline - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        frame = Frame("front", seq, datetime.now(UTC), time.monotonic(), frames[seq % len(frames)])
        if seq == 0 and mode == "recording":
            bus.publish(Event("motion_start", "front", frame.ts))
        queue.put(frame)
        if recording is not None:
            recording.on_frame(frame)
    wall = time.monotonic() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    queue.close()
    worker.join()
    recorder_dropped = 0
    clip_seconds = 0.0
    if recording is not None:
        recorder = recording.recorders["front"]
        recorder.wait_idle(30)
        recorder_dropped = recorder.stats.dropped
        recording.stop()
        clip_seconds = sum((c.end - c.start) / timedelta(seconds=1) for c in recording.store.list())
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return {
        "mode": mode,
        "size": f"{width}x{height}",
        "fps": fps,
        "frames": total,
        "analysis_cpu_ms": stats(cpu_ms),
        "analysis_latency_ms": stats(latency_ms),
        "cpu_share": round(cpu / wall, 3),
        "analysis_dropped": queue.dropped,
        "analysis_drop_pct": round(100 * queue.dropped / total, 2),
        "recorder_dropped": recorder_dropped,
        "clip_seconds": round(clip_seconds, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--sizes", default="640x360,1280x720")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--size", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.mode:  # one measurement, in this (fresh) process
        width, height = (int(v) for v in args.size.split("x"))
        print(json.dumps(run_mode(args.mode, args.data, width, height, args.fps, args.seconds)))
        return 0

    results = []
    for size in args.sizes.split(","):
        for mode in MODES:
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--mode",
                    mode,
                    "--size",
                    size,
                    "--fps",
                    str(args.fps),
                    "--seconds",
                    str(args.seconds),
                    "--data",
                    str(args.data),
                ],
                capture_output=True,
                text=True,
            )
            if out.returncode != 0:
                raise SystemExit(f"{mode} at {size} failed:\n{out.stderr}")
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{args.seconds:.0f} s per mode at {args.fps:g} fps, motion gate as the analysis stage, 2 cores")
    print(
        f"{'size':<10} {'mode':<10} {'cpu share':>9} {'an. cpu ms med/p90':>19} {'latency ms med/p90':>19} "
        f"{'an. drops':>10} {'rec drops':>9} {'clip s':>7} {'peak RSS MB':>11}"
    )
    for r in results:
        cpu, lat = r["analysis_cpu_ms"], r["analysis_latency_ms"]
        print(
            f"{r['size']:<10} {r['mode']:<10} {r['cpu_share']:>9.2f} {cpu['median']:>9.2f}/{cpu['p90']:<9.2f} "
            f"{lat['median']:>9.2f}/{lat['p90']:<9.2f} {r['analysis_dropped']:>4} ({r['analysis_drop_pct']:>4.1f}%)"
            f" {r['recorder_dropped']:>9} {r['clip_seconds']:>7.1f} {r['peak_rss_mb']:>11.1f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
