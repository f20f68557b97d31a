"""Event snapshots: the recent masked frames, and each event's JPEG taken from the one nearest its time."""

from __future__ import annotations

import collections
import logging
from datetime import datetime

from edge.errors import StorageError
from edge.events.bus import Event
from edge.recording.codec import encode_jpeg
from edge.recording.writer import ClipWriter
from edge.types import Image

log = logging.getLogger(__name__)

SNAPSHOT_CANDIDATES = 4  # recent masked frames kept to pick the one nearest an event's time


class Snapshots:
    """The events waiting for a snapshot and the frames they may get."""

    def __init__(self, quality: int, candidates: int = SNAPSHOT_CANDIDATES) -> None:
        self.quality = quality
        self._recent: collections.deque[tuple[datetime, Image]] = collections.deque(maxlen=candidates)
        self._pending: list[Event] = []

    @property
    def latest(self) -> datetime | None:
        """The time of the newest frame kept (None: none since the last clear)."""
        return self._recent[-1][0] if self._recent else None

    def add_frame(self, ts: datetime, image: Image) -> None:
        self._recent.append((ts, image))

    def clear_frames(self) -> None:
        self._recent.clear()

    def want(self, event: Event) -> None:
        self._pending.append(event)

    def serve(self, final: bool, target: ClipWriter | None) -> int:
        """Give each pending event the recent frame nearest its time, once a frame at or after the event has
        arrived (or now, when its clip `target` is ending: `final`). Returns how many snapshots were stored."""
        if not self._pending or not self._recent:
            if final:
                self._pending.clear()
            return 0
        latest = self._recent[-1][0]
        waiting = []
        taken = 0
        for event in self._pending:
            if latest < event.ts and not final:
                waiting.append(event)
                continue
            if target is None:
                if not final:
                    waiting.append(event)  # its clip starts at the next keyframe
                continue
            ts, image = min(self._recent, key=lambda item: abs((item[0] - event.ts).total_seconds()))
            try:
                target.add_snapshot(event.id, ts, encode_jpeg(image, self.quality))
                taken += 1
            except StorageError as exc:
                log.error("snapshot for event %s failed: %s", event.id, exc)
        self._pending = waiting
        return taken
