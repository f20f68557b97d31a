"""Every feature is built the same way, (config, bus, clock, host) -> Feature, and App only wires and orders them."""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any

from edge.app import FEATURES, App
from edge.clock import Clock
from edge.config import Config
from edge.events.bus import Event, EventBus
from edge.stage import Feature, Host
from edge.types import Frame, MotionFrame


class Probe:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log
        self.frames = 0
        self.motion = threading.Event()
        self.events: list[str] = []

    def start(self) -> None:
        self.log.append(f"start {self.name}")

    def stop(self) -> None:
        self.log.append(f"stop {self.name}")

    def on_frame(self, frame: Frame) -> None:
        self.frames += 1

    def on_motion(self, item: MotionFrame) -> None:
        self.motion.set()

    def on_event(self, event: Event) -> None:
        self.events.append(event.type)


def test_features_join_the_flows_start_in_order_and_stop_in_reverse(tmp_path: Path) -> None:
    config = Config.model_validate({
        "cameras": {"porch": {"source": "demo", "fps": 30, "width": 160, "height": 120, "analysis_width": 160}},
        "storage": {"state_dir": str(tmp_path)},
        "mqtt": {"enabled": False},
        "faces": {"enabled": False},
        "recording": {"enabled": False},
    })
    log: list[str] = []
    probes = {name: Probe(name, log) for name in ("first", "second")}
    hosts: list[Host] = []

    def builder(name: str) -> Any:
        def build(cfg: Config, bus: EventBus, clock: Clock, host: Host) -> Feature | None:
            assert cfg is config
            hosts.append(host)
            probe = probes[name]
            return Feature(probe, on_frame=probe.on_frame, on_motion=probe.on_motion, on_event=probe.on_event,
                           state=lambda: {f"{name}_frames": probe.frames})
        return build

    def absent(cfg: Config, bus: EventBus, clock: Clock, host: Host) -> Feature | None:
        return None  # a feature that is off adds nothing

    app = App(config, stdout=io.StringIO(), environ={},
              features=(FEATURES[0], builder("first"), absent, builder("second"))).build()
    app.start()
    try:
        assert probes["first"].motion.wait(20) and probes["second"].motion.wait(20)  # the demo scene moves
        state = app.state()
        app.ring("porch", "test")
    finally:
        app.stop()
    assert state["first_frames"] > 0 and state["second_frames"] > 0
    assert "ring" in probes["first"].events and "ring" in probes["second"].events
    assert [line for line in log if line.startswith("start")] == ["start first", "start second"]
    assert [line for line in log if line.startswith("stop")] == ["stop second", "stop first"]
    assert "camera:porch" in hosts[0].health.stages() and "motion:porch" in hosts[0].health.stages()


def test_a_crashed_camera_stage_stops_the_daemon_with_a_failure_status(tmp_path: Path, monkeypatch: Any) -> None:
    """The end of a video file is a normal stop (0); a camera stage that crashed is not: exit 1, so systemd's
    Restart=on-failure starts the daemon again instead of leaving the doorbell dead with a clean exit."""
    monkeypatch.setattr(threading, "excepthook", lambda args: None)  # the stage's traceback is expected here
    config = Config.model_validate({
        "cameras": {"porch": {"source": "demo", "fps": 30, "width": 160, "height": 120, "analysis_width": 160}},
        "storage": {"state_dir": str(tmp_path)},
        "mqtt": {"enabled": False},
        "faces": {"enabled": False},
        "recording": {"enabled": False},
    })
    app = App(config, stdout=io.StringIO(), environ={}, features=()).build()
    stage = app.cameras["porch"]

    def broken(picture: Any) -> None:
        raise RuntimeError("camera stage bug")

    monkeypatch.setattr(stage.loop, "step", broken)
    app.start()
    try:
        app.wait(20)
    finally:
        app.stop()
    assert stage.ended.is_set() and isinstance(stage.loop.failed, RuntimeError)
    assert app.exit_status == 1
