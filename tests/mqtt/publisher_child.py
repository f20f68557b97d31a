"""A publishing daemon in its own process for the SIGKILL test: records `count` events, publishes until killed."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from edge.clock import SystemClock
from edge.config import Config
from edge.events.bus import Event, EventBus
from edge.mqtt.service import build


def main(state_dir: str, port: int, count: int, interval: float) -> None:
    config = Config.model_validate(
        {"device": {"id": "testbell"}, "storage": {"state_dir": state_dir},
         "mqtt": {"host": "127.0.0.1", "port": port, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5}}
    )
    clock = SystemClock()
    bus = EventBus()
    service = build(config, bus, clock, dict)
    service.start()
    types = ["motion_start", "ring", "motion_end"]
    for i in range(count):
        kind = types[i % len(types)]
        fields = {"source": "button"} if kind == "ring" else {}
        bus.publish(Event(kind, "front_door", clock.now(), fields))
        time.sleep(interval)
    print("recorded", flush=True)
    while True:  # until SIGKILL
        time.sleep(1)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
