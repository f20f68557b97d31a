"""The daemon wired with MQTT: its events (system, ring) reach a real broker with discovery, state and availability."""

from __future__ import annotations

import io
from pathlib import Path

from edge.app import App
from edge.clock import SystemClock
from edge.config import CameraConfig, Config
from edge.events.bus import Event
from edge.mqtt.outbox import emit
from tests.mqtt.conftest import check_sequence, wait_until


def test_daemon_publishes_over_mqtt(tmp_path: Path, broker, subscribe) -> None:
    config = Config(
        device={"id": "appbell", "name": "App Bell"},
        cameras={"porch": CameraConfig(source="demo", width=160, height=120, fps=10, analysis_width=64)},
        storage={"state_dir": tmp_path / "state"},
        mqtt={"host": "127.0.0.1", "port": broker.port, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5},
        faces={"enabled": False},
        recording={"enabled": False},
        output={"stdout_events": False},
    )
    prefix = "doorbell-edge/appbell"
    sub = subscribe([f"{prefix}/#", "homeassistant/+/appbell/+/config"])
    app = App(config, stdout=io.StringIO(), environ={}).build()
    app.start()
    try:
        ring = app.ring("porch", "button")
        # a CLI process appends to the same outbox; the daemon publishes it with the next seq
        other = emit(config, Event("footage_request", None, SystemClock().now(), {"request": "fr-1"}))
        assert other.seq == (ring.seq or 0) + 1
        wait_until(lambda: any(e["seq"] == other.seq for e in sub.json_on(f"{prefix}/events")), what="events")
        events = sub.json_on(f"{prefix}/events")
        check_sequence(events, 1, other.seq or 0)
        assert events[0]["type"] == "system" and events[0]["status"] == "started"
        assert [e["event_type"] for e in sub.json_on(f"{prefix}/doorbell")] == ["ring"]
        wait_until(lambda: bool(sub.json_on(f"{prefix}/state")), what="state")
        assert set(sub.json_on(f"{prefix}/state")[-1]) >= {"motion", "occupancy", "fps", "outbox", "last_seq"}
        assert any(t.startswith("homeassistant/event/appbell/") for t, _, _ in sub.messages)
        assert sub.on(f"{prefix}/availability")[0] == b"online"
    finally:
        app.stop()
    wait_until(lambda: sub.on(f"{prefix}/availability")[-1:] == [b"offline"], what="offline after stop")
    stopping = [e for e in sub.json_on(f"{prefix}/events") if e.get("status") == "stopping"]
    assert stopping, "the stopping event drains before the daemon exits"
