"""The daemon over a clip index that was deleted or corrupted: it starts, keeps every clip file, reports it over
MQTT, and rings and events still go through."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from edge.app import App
from edge.clock import SystemClock
from edge.config import CameraConfig, Config
from edge.recording.store import INDEX_NAME, ClipStore
from tests.clips import write_test_clip
from tests.mqtt.broker import Broker
from tests.mqtt.conftest import Subscriber, wait_until


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "broker").start()
    yield b
    b.stop()


def _files(root: Path) -> dict[str, str]:
    files = (p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.mark.parametrize("how", ["deleted", "header"])
def test_daemon_starts_over_a_lost_index_keeps_every_clip_and_says_so(tmp_path: Path, broker: Broker,
                                                                      how: str) -> None:
    state = tmp_path / "state"
    store = ClipStore(state, SystemClock())
    start = datetime.now(UTC) - timedelta(days=2)
    for i in range(3):
        frames = [np.full((120, 160, 3), (40 * i + 9 * k) % 256, np.uint8) for k in range(10)]
        write_test_clip(store, "porch", start + timedelta(minutes=i), frames, fps=10, events=[(f"r{i}", "ring")])
    before = _files(store.root)
    index = state / INDEX_NAME
    for suffix in ("-wal", "-shm"):
        Path(f"{index}{suffix}").unlink(missing_ok=True)
    if how == "deleted":
        index.unlink()
    else:
        index.write_bytes(b"\x00garbage header" * 7 + index.read_bytes()[105:])

    config = Config(
        device={"id": "lostbell", "name": "Lost Bell"},
        cameras={"porch": CameraConfig(source="demo", width=160, height=120, fps=10, analysis_width=64)},
        storage={"state_dir": state},
        mqtt={"host": "127.0.0.1", "port": broker.port, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5},
        faces={"enabled": False},
        output={"stdout_events": False},
    )
    prefix = "doorbell-edge/lostbell"
    sub = Subscriber(broker.port, [f"{prefix}/events"], client_id="lost-sub")
    app = App(config, stdout=io.StringIO(), environ={}).build()
    app.start()  # a bad index must not keep the daemon down
    try:
        ring = app.ring("porch", "button")
        wait_until(lambda: any(e["id"] == ring.id for e in sub.json_on(f"{prefix}/events")), what="the ring")
        events = sub.json_on(f"{prefix}/events")
        (report,) = [e for e in events if e.get("status") == "clip_index_recovered"]
        assert report["rebuilt"] == 3 and report["error"]
        assert (report["index_kept"] is not None) == (how == "header")
        assert app.state()["storage_problem"]
        frames = app.state()["cameras"]["porch"]["frames"]
        wait_until(lambda: app.state()["cameras"]["porch"]["frames"] > frames + 5, what="frames to keep flowing")
    finally:
        app.stop()
        sub.close()
    after = _files(state / "clips")
    assert {k: v for k, v in after.items() if k in before} == before  # count and sha256 of every clip file
    assert len(ClipStore(state, SystemClock()).list()) >= 3
