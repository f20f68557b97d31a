"""Stage heartbeats: each stage beats while it is alive; the watchdog is fed only while all of them do."""

from __future__ import annotations

import threading
from collections.abc import Callable


class Health:
    def __init__(self, stall_after_s: float, monotonic: Callable[[], float]) -> None:
        self.stall_after_s = stall_after_s
        self._monotonic = monotonic
        self._beats: dict[str, float] = {}
        self._lock = threading.Lock()

    def register(self, stage: str) -> None:
        self.beat(stage)

    def beater(self, stage: str) -> Callable[[], None]:
        """Register `stage` and return the heartbeat its thread calls while it is alive."""
        self.register(stage)
        return lambda: self.beat(stage)

    def beat(self, stage: str) -> None:
        with self._lock:
            self._beats[stage] = self._monotonic()

    def stalled(self) -> list[str]:
        now = self._monotonic()
        with self._lock:
            return sorted(name for name, last in self._beats.items() if now - last > self.stall_after_s)

    def stages(self) -> list[str]:
        with self._lock:
            return sorted(self._beats)
