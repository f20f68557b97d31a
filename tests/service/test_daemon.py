"""The daemon as users run it: demo source, JSON lines on stdout, sd_notify, watchdog, ring, SIGTERM."""

from __future__ import annotations

import io
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edge.app import App
from edge.camera import base as camera_base
from edge.config import CameraConfig, Config
from edge.service.control import send_command

REPO = Path(__file__).resolve().parents[2]


def daemon_env(state_dir: Path, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOORBELL_EDGE_")}
    env.update(DOORBELL_EDGE_STATE_DIR=str(state_dir), HOME=str(home), PYTHONUNBUFFERED="1")
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def read_lines_until(proc: subprocess.Popen, predicate, timeout: float) -> list[dict]:
    events: list[dict] = []
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    buffer = b""
    while time.monotonic() < deadline:
        if not sel.select(timeout=0.5):
            continue
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            break
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            events.append(json.loads(line))  # every stdout line must be one JSON event
            if predicate(events[-1]):
                return events
    return events


@pytest.mark.slow
def test_default_run_prints_motion_events_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    """The README's run command: no config file, no camera, no broker needed."""
    state = tmp_path / "state"
    # Built-in defaults, except that the broker is pointed at a free port where nothing listens: the daemon
    # must run with no broker (and must not leave retained messages on this machine's own broker).
    config = tmp_path / "nobroker.yaml"
    config.write_text(f"mqtt:\n  host: 127.0.0.1\n  port: {free_port()}\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge", "run", "--config", str(config)],
        cwd=REPO,
        env=daemon_env(state, tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        events = read_lines_until(proc, lambda e: e["type"] == "motion_start", timeout=30)
        assert next(e["type"] for e in events) == "system"
        assert events[-1]["type"] == "motion_start", f"no motion within 30 s: {events}"
        assert events[-1]["camera"] == "front_door"
        seqs = [e["seq"] for e in events]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)

        reply = send_command(state, {"cmd": "ring"})
        assert reply["ok"] is True
        rings = read_lines_until(proc, lambda e: e["type"] == "ring", timeout=10)
        assert rings[-1]["type"] == "ring" and rings[-1]["id"] == reply["event_id"]
        assert rings[-1]["source"] == "cli"

        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
        elapsed = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0
    assert elapsed < 5.0, f"SIGTERM took {elapsed:.1f} s"
    assert not (state / "control.sock").exists()


def test_ring_command_without_a_daemon_says_so(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "edge", "ring"],
        cwd=REPO,
        env=daemon_env(tmp_path, tmp_path),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert "the daemon is not running" in proc.stderr


def test_bad_config_exits_78_before_starting(tmp_path: Path) -> None:
    bad = tmp_path / "c.yaml"
    bad.write_text("cameras:\n  front:\n    source: webcam\n")
    proc = subprocess.run(
        [sys.executable, "-m", "edge", "run", "--config", str(bad)],
        cwd=REPO,
        env=daemon_env(tmp_path, tmp_path),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 78
    assert proc.stderr.startswith(f"{bad}:3:5: cameras.front.source: ")
    assert proc.stdout == ""


class HangingSource:
    """A camera whose driver hangs after a few frames (as a wedged USB camera does)."""

    paced = False
    release = threading.Event()

    def open(self) -> None:
        self.reads = 0

    def read(self):
        self.reads += 1
        if self.reads > 20:
            HangingSource.release.wait(30)
        return np.zeros((64, 64, 3), np.uint8), None

    def close(self) -> None:
        pass


def test_sd_notify_ready_and_watchdog_stop_when_a_stage_stalls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sock_path = tmp_path / "notify.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(sock_path))
    server.settimeout(0.2)
    received: list[tuple[float, str]] = []
    stop = threading.Event()

    def collect() -> None:
        while not stop.is_set():
            try:
                data = server.recv(4096).decode()
            except TimeoutError:
                continue
            received.append((time.monotonic(), data))

    collector = threading.Thread(target=collect, daemon=True)
    collector.start()
    monkeypatch.setitem(camera_base.REGISTRY, "demo", lambda name, config: HangingSource())
    config = Config(
        cameras={"porch": CameraConfig(source="demo", width=64, height=64, fps=40, analysis_width=64)},
        storage={"state_dir": tmp_path / "state"},
        pipeline={"stall_after_s": 0.6},
        mqtt={"enabled": False},
    )
    app = App(config, stdout=io.StringIO(), environ={"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "200000"})
    app.build().start()
    try:
        deadline = time.monotonic() + 10
        while not app.health.stalled() and time.monotonic() < deadline:
            time.sleep(0.05)
        stalled_at = time.monotonic()
        assert app.health.stalled() == ["camera:porch"]
        assert {"camera:porch", "motion:porch", "recorder:porch"} <= set(app.health.stages())
        time.sleep(1.0)
    finally:
        HangingSource.release.set()
        app.stop()
        stop.set()
        collector.join(2)
        server.close()
    messages = [m for _, m in received]
    assert any("READY=1" in m.splitlines() for m in messages)
    feeds = [t for t, m in received if m == "WATCHDOG=1"]
    assert len([t for t in feeds if t < stalled_at]) >= 2, "the watchdog was fed while healthy"
    assert not [t for t in feeds if t > stalled_at + 0.15], "the watchdog was fed while a stage was stalled"
    assert any("STALLED: camera:porch" in m for m in messages)
    assert any(m == "STOPPING=1" for m in messages)
