"""Disk space for recording: free space above retention's minimum (old clips swept when short) and the space
reserve for the event journal and the audit log; a camera's recording pauses and resumes on it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from edge.clock import Clock
from edge.diskfaults import SpaceReserve
from edge.events.bus import Event
from edge.recording.retention import RetentionPolicy
from edge.recording.store import ClipStore

log = logging.getLogger(__name__)

MiB = 1024 * 1024


class DiskGuard:
    """Whether one camera may record now; pause() and resume() say so as `system` events."""

    def __init__(
        self,
        camera: str,
        store: ClipStore,
        policy: RetentionPolicy,
        clock: Clock,
        publish: Callable[[Event], Any],
        free_bytes: Callable[[], int],
        check_every_s: float,
    ) -> None:
        self.camera = camera
        self.store = store
        self.policy = policy
        self.clock = clock
        self._publish = publish
        self.free_bytes = free_bytes
        self._every = check_every_s
        self._next = 0.0
        # Kept free for the event journal and the audit log: recording stops before it is touched.
        self._reserve = SpaceReserve(store.state_dir)
        self.paused = False

    def due(self) -> bool:
        """True once every check_every_s (monotonic): time for assess()."""
        now = self.clock.monotonic()
        if now < self._next:
            return False
        self._next = now + self._every
        return True

    def assess(self) -> tuple[str | None, int]:
        """(why recording cannot go on: "read_only" or "disk_full", else None; free bytes), sweeping old clips
        when short. Recording also stays paused while the space reserve is used up and there is no room to
        make it again."""
        if self.store.readonly:
            return "read_only", 0
        free = self.free_bytes()
        if free < self.policy.min_free_bytes:
            report = self.store.apply_retention(self.policy, free)
            if report.deleted:
                log.info("freed space: deleted %d clips", len(report.deleted))
            free = self.free_bytes()
        if free < self.policy.min_free_bytes or not self._reserve_ready(free):
            return "disk_full", free
        return None, free

    def _reserve_ready(self, free: int) -> bool:
        if self._reserve.present():
            return True
        return free >= self.policy.min_free_bytes + self._reserve.size and self._reserve.ensure()

    def pause(self, free: int, reason: str) -> None:
        if self.paused:
            return
        self.paused = True
        self._next = self.clock.monotonic() + self._every
        # The space reserve kept for events and the audit log counts as needed until it exists again.
        reserve = self._reserve.present() or self.store.readonly
        needed = self.policy.min_free_bytes + (0 if reserve else self._reserve.size)
        log.warning(
            "recording on %s paused (%s): %d MiB free, %d MiB needed%s; held clips cannot be deleted",
            self.camera, reason, free // MiB, needed // MiB,
            "" if reserve else " (the space reserve for events was used up)",
        )
        self._publish(Event("system", self.camera, self.clock.now(), {
            "status": "recording_paused", "reason": reason, "free_bytes": free,
            "min_free_bytes": self.policy.min_free_bytes, "reserve_used": not reserve,
        }))

    def resume(self, free: int) -> None:
        self.paused = False
        log.warning("recording on %s resumed: %d MiB free", self.camera, free // MiB)
        self._publish(Event("system", self.camera, self.clock.now(), {"status": "recording_resumed",
                                                                       "free_bytes": free}))
