"""The face stage reports its smoothed inference time to the daemon's state summary (MQTT .../state)."""

from __future__ import annotations

import io
import time
from pathlib import Path

from edge.app import App
from edge.config import Config


def test_inference_ms_reaches_the_state_summary(tmp_path: Path) -> None:
    config = Config.model_validate(
        {
            "cameras": {"front_door": {"source": "demo", "fps": 30}},
            "storage": {"state_dir": str(tmp_path)},
            "mqtt": {"enabled": False},
            "recording": {"enabled": False},
        }
    )
    app = App(config, stdout=io.StringIO(), environ={}).build()
    assert app.state()["inference_ms"] is None  # nothing analysed yet
    app.start()
    try:
        deadline = time.monotonic() + 20
        while app.state()["inference_ms"] is None and time.monotonic() < deadline:
            time.sleep(0.1)
        value = app.state()["inference_ms"]
    finally:
        app.stop()
    assert isinstance(value, float) and 0 < value < 10_000
